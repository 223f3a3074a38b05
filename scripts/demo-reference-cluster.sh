#!/usr/bin/env bash
# Offline demo of the five-node reference scenario (DESIGN.md): five network
# namespaces, each running the real `supervisor` binary with its
# config/examples/<node>.toml, installing STAND-IN agents (test support, not
# HashiCorp's Consul and Nomad) from a signed mirror served inside the test
# network. Prints each node's health URL; Ctrl-C stops every node gracefully
# and removes the namespaces.
#
#   sudo scripts/demo-reference-cluster.sh [hashi-demo options]
#   (options: --secure, --work DIR, --base-port 4681, --for SECS, --ready-timeout SECS)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "error: the demo builds network namespaces: run it as root (sudo $0)" >&2
  exit 77
fi
if ! ip netns list >/dev/null 2>&1; then
  echo "error: \`ip netns\` is not available (install iproute2)" >&2
  exit 69
fi

profile="${DEMO_PROFILE:-release}"
if [ "$profile" = release ]; then
  cargo build --release --workspace --bins
else
  cargo build --workspace --bins
fi
exec "target/$profile/hashi-demo" "$@"
