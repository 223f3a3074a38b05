# Rendered by hashi-supervisor from the role file; edits are overwritten.

bind_addr = "0.0.0.0"
data_dir = "/var/lib/hashi-supervisor/data/nomad"
datacenter = "lon1"
leave_on_interrupt = false
leave_on_terminate = false
log_level = "INFO"
name = "lon1-server-01"
region = "eu"

acl {
  enabled = true
}

advertise {
  http = "10.0.2.11"
  rpc = "203.0.113.21"
  serf = "203.0.113.21"
}

consul {
  address = "127.0.0.1:8501"
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

server {
  bootstrap_expect = 3
  enabled = true
  encrypt = "Tm9tYWRHb3NzaXBUZXN0IQ=="
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
