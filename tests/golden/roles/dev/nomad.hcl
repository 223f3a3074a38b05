# Rendered by hashi-supervisor from the role file; edits are overwritten.

bind_addr = "127.0.0.1"
data_dir = "/var/lib/hashi-supervisor/data/nomad"
datacenter = "dc1"
leave_on_interrupt = false
leave_on_terminate = false
log_level = "INFO"
name = "dev-01"
region = "global"

advertise {
  http = "127.0.0.1"
  rpc = "127.0.0.1"
  serf = "127.0.0.1"
}

client {
  enabled = true
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
  bootstrap_expect = 1
  enabled = true
}
