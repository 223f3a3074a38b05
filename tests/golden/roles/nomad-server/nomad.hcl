# Rendered by hashi-supervisor from the role file; edits are overwritten.

bind_addr = "0.0.0.0"
data_dir = "/var/lib/hashi-supervisor/data/nomad"
datacenter = "ams2"
leave_on_interrupt = false
leave_on_terminate = false
log_level = "DEBUG"
name = "combo-01"
region = "eu"

advertise {
  http = "10.0.1.31"
  rpc = "10.0.1.31"
  serf = "10.0.1.31"
}

consul {
  auto_advertise = false
  client_auto_join = false
  server_auto_join = false
}

server {
  bootstrap_expect = 3
  enabled = true
  encrypt = "Wb0GrMQSBMPZMOcSh1AXtqQlzxEXeKnbO/1zq4h1W9k="
  server_join {
    retry_join = ["10.0.1.13"]
  }
}

telemetry {
  prometheus_metrics = true
  publish_node_metrics = true
}
