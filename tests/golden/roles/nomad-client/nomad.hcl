# Rendered by hashi-supervisor from the role file; edits are overwritten.

bind_addr = "0.0.0.0"
data_dir = "/var/lib/hashi-supervisor/data/nomad"
datacenter = "ams2"
leave_on_interrupt = true
leave_on_terminate = false
log_level = "DEBUG"
name = "combo-01"
region = "eu"

advertise {
  http = "10.0.1.31"
  rpc = "10.0.1.31"
  serf = "10.0.1.31"
}

client {
  enabled = true
  drain_on_shutdown {
    deadline = "60s"
  }
  server_join {
    retry_join = ["10.0.1.13"]
  }
}

consul {
  auto_advertise = false
  client_auto_join = false
  server_auto_join = false
}

telemetry {
  prometheus_metrics = true
  publish_node_metrics = true
}
