# Rendered by hashi-supervisor from the role file; edits are overwritten.

bind_addr = "0.0.0.0"
data_dir = "/var/lib/hashi-supervisor/data/nomad"
datacenter = "ams2"
leave_on_interrupt = false
leave_on_terminate = false
log_level = "INFO"
name = "ams2-server-01"
region = "eu"

advertise {
  http = "10.0.1.11"
  rpc = "203.0.113.11"
  serf = "203.0.113.11"
}

consul {
  address = "127.0.0.1:8500"
  auto_advertise = true
  client_auto_join = true
  client_service_name = "nomad-client"
  server_auto_join = true
  server_service_name = "nomad"
}

server {
  bootstrap_expect = 3
  enabled = true
}
