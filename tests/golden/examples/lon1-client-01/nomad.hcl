# Rendered by hashi-supervisor from the role file; edits are overwritten.

bind_addr = "0.0.0.0"
data_dir = "/var/lib/hashi-supervisor/data/nomad"
datacenter = "lon1"
leave_on_interrupt = true
leave_on_terminate = false
log_level = "INFO"
name = "lon1-client-01"
region = "eu"

acl {
  enabled = true
}

advertise {
  http = "10.0.2.21"
  rpc = "10.0.2.21"
  serf = "10.0.2.21"
}

client {
  enabled = true
  drain_on_shutdown {
    deadline = "60s"
  }
}

consul {
  address = "10.0.2.11:8501"
  auto_advertise = true
  ca_file = "/etc/hashi-supervisor/security/ca.pem"
  cert_file = "/etc/hashi-supervisor/security/node.pem"
  client_auto_join = true
  client_service_name = "nomad-client"
  key_file = "/etc/hashi-supervisor/security/nomad-key.pem"
  server_auto_join = true
  server_service_name = "nomad"
  ssl = true
  token = "0a9e7a41-0000-4000-8000-000000000005"
  verify_ssl = true
}

tls {
  ca_file = "/etc/hashi-supervisor/security/ca.pem"
  cert_file = "/etc/hashi-supervisor/security/node.pem"
  http = true
  key_file = "/etc/hashi-supervisor/security/nomad-key.pem"
  rpc = true
  verify_https_client = false
  verify_server_hostname = true
}
