# Rendered by hashi-supervisor from the role file; edits are overwritten.

bind_addr = "0.0.0.0"
data_dir = "/var/lib/hashi-supervisor/data/nomad"
datacenter = "ams2"
leave_on_interrupt = true
leave_on_terminate = false
log_level = "INFO"
name = "ams2-client-01"
region = "eu"

advertise {
  http = "10.0.1.21"
  rpc = "10.0.1.21"
  serf = "10.0.1.21"
}

client {
  enabled = true
  drain_on_shutdown {
    deadline = "60s"
  }
}

consul {
  address = "10.0.1.11:8500"
  auto_advertise = true
  client_auto_join = true
  client_service_name = "nomad-client"
  server_auto_join = true
  server_service_name = "nomad"
}
