#!/usr/bin/env python3
"""Memory of the real `supervisor run` on one node, over STAND-IN agents
(test support, not HashiCorp's Consul and Nomad).

Builds a signed mirror of the stand-in (hashi-mirror), writes a role file of
a one-node cluster (Consul server + Nomad server, bootstrap_expect 1, the
reference scenario's ams2-server-01 on loopback), runs the release build of
`supervisor run` on it and reads `/proc/<pid>/smaps_rollup` of the supervisor
process (agents excluded) at each phase:

  ready     1 s after /ready first answers 200 (install, render and start done)
  settled   SETTLE_SECS later (12: past the trim at readiness,
            src/supervise/trim.rs, and the start-up threads' exit)
  polled    after 200 requests to each of /health, /v1/status, /metrics
  restarted 1 s after the stand-in Nomad was SIGKILLed and is ready again,
            and settled
  reloaded  after a SIGHUP with the role file unchanged, and settled
  idle      after IDLE_SECS (default 35: one agent check interval) untouched

Each phase is measured with the supervisor as built and with
SUPERVISOR_KEEP_STARTUP_PAGES=1 (no return of the start-up pages), so the
two rows show what the trim does.

Run from the repository root (Linux, as any user with free loopback ports):
    cargo build --release --workspace --bins
    python3 benches/supervise/node_memory.py
Env: IDLE_SECS (35), SETTLE_SECS (12), POLLS (200), KEEP (1: measure with the trim off too),
REL_DIR (where the hashi-standin and hashi-mirror binaries are, and the
supervisor unless SUPERVISOR_BIN names another build, e.g.
target/x86_64-unknown-linux-musl/release/supervisor), STANDIN_BIN (another
stand-in binary, e.g. a stripped debug build).

memory_gate.py (next to this file) runs the same node in CI and fails when
its settled USS exceeds a budget.
"""
import json, os, signal, socket, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REL = os.environ.get("REL_DIR") or os.path.join(ROOT, "target", "release")
# SUPERVISOR_BIN: another build of `supervisor` to measure (e.g. the static
# musl build the packages ship); the stand-in and mirror tool stay from REL.
SUPERVISOR = os.environ.get("SUPERVISOR_BIN") or os.path.join(REL, "supervisor")
IDLE_SECS = float(os.environ.get("IDLE_SECS", "35"))
SETTLE_SECS = float(os.environ.get("SETTLE_SECS", "12"))
POLLS = int(os.environ.get("POLLS", "200"))
CONSUL, NOMAD = "1.21.4", "1.10.4"


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def rollup(pid):
    out = {}
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[2] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1])
    return {
        "rss": out["Rss"] / 1024.0,
        "uss": (out["Private_Clean"] + out["Private_Dirty"]) / 1024.0,
        "dirty": out["Private_Dirty"] / 1024.0,
    }


def get(url, timeout=2.0):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return None, b""


def wait(pred, what, secs=60.0):
    end = time.monotonic() + secs
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise RuntimeError("timed out waiting for " + what)


def nomad_pid(state):
    # The supervisor's pidfile of the Nomad agent.
    with open(os.path.join(state, "run", "nomad.pid")) as f:
        return int(f.read().split()[0])


def start_node(work, mirror, key, keep, extra_env=None, tag=None):
    """Writes the one-node role file and starts `supervisor run` on it (with
    the trim off if `keep`); files are named after `tag` (default: keep).
    Returns (process, health base URL, state dir, log file)."""
    tag = keep if tag is None else tag
    ports = free_ports(9)
    state = os.path.join(work, "state-%d" % tag)
    role = os.path.join(work, "node-%d.toml" % tag)
    with open(role, "w") as f:
        f.write("""schema = 1
roles = ["consul-server", "nomad-server"]
region = "eu"
datacenter = "ams2"
node_name = "ams2-server-01"

[addresses]
bind = "127.0.0.1"
private = "127.0.0.1"

[consul]
version = "%s"
bootstrap_expect = 1

[consul.extra.ports]
http = %d
serf_lan = %d
serf_wan = %d
server = %d

[nomad]
version = "%s"
bootstrap_expect = 1

[nomad.extra.ports]
http = %d
rpc = %d
serf = %d

[release]
mirror = "file://%s"
trust_hashicorp_key = false
trusted_key_files = ["%s"]

[health]
listen = "127.0.0.1:%d"

[paths]
config_dir = "%s"
state_dir = "%s"

# The gate measures the same plaintext node as before issue 19 (no TLS
# material here), so its numbers stay comparable.
[security]
plaintext = true
""" % (CONSUL, ports[0], ports[1], ports[2], ports[3], NOMAD, ports[4], ports[5], ports[6],
           mirror, key, ports[7], os.path.join(work, "etc-%d" % tag), state))
    env = {k: v for k, v in os.environ.items() if k != "SUPERVISOR_KEEP_STARTUP_PAGES"}
    if keep:
        env["SUPERVISOR_KEEP_STARTUP_PAGES"] = "1"
    env.update(extra_env or {})
    log = open(os.path.join(work, "supervisor-%d.log" % tag), "w")
    proc = subprocess.Popen([SUPERVISOR, "run", "-c", role],
                            stdout=log, stderr=log, env=env)
    return proc, "http://127.0.0.1:%d" % ports[7], state, log


def build_mirror(work, standin=None):
    """A signed mirror of the stand-in (`standin`, default REL's) under both
    versions; (mirror, key)."""
    mirror = os.path.join(work, "mirror")
    key = os.path.join(work, "key.asc")
    subprocess.check_call([os.path.join(REL, "hashi-mirror"), "build", "--out", mirror,
                           "--product", "consul=" + CONSUL, "--product", "nomad=" + NOMAD,
                           "--binary", standin or os.path.join(REL, "hashi-standin"), "--key-out", key],
                          stdout=subprocess.DEVNULL)
    return mirror, key


# The phases that count as settled: what the node keeps between events
# (memory_gate.py checks the highest of them).
SETTLED_PHASES = ("ready, settled", "polled", "restarted, settled", "reloaded, settled", "idle")


def settled_max(rows):
    """The highest USS (MiB) of the settled phases of one run's rows."""
    return max(r["uss"] for phase, r in rows if phase.startswith(SETTLED_PHASES))


def one_run(work, mirror, key, keep):
    proc, base, state, log = start_node(work, mirror, key, keep)
    rows = []
    try:
        def settled(phase):
            time.sleep(SETTLE_SECS)
            rows.append((phase + ", settled", rollup(proc.pid)))

        wait(lambda: get(base + "/ready")[0] == 200, "/ready")
        time.sleep(1.0)
        rows.append(("ready", rollup(proc.pid)))
        settled("ready")
        for _ in range(POLLS):
            for path in ("/health", "/v1/status", "/metrics"):
                get(base + path)
        time.sleep(1.0)
        rows.append(("polled", rollup(proc.pid)))
        old = nomad_pid(state)
        os.kill(old, signal.SIGKILL)
        wait(lambda: nomad_pid(state) != old and get(base + "/ready")[0] == 200, "nomad back")
        time.sleep(1.0)
        rows.append(("restarted", rollup(proc.pid)))
        settled("restarted")
        proc.send_signal(signal.SIGHUP)
        time.sleep(2.0)
        wait(lambda: get(base + "/ready")[0] == 200, "ready after reload")
        rows.append(("reloaded", rollup(proc.pid)))
        settled("reloaded")
        time.sleep(IDLE_SECS)
        rows.append(("idle %ds" % IDLE_SECS, rollup(proc.pid)))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        log.close()
    if rc != 0:
        raise RuntimeError("supervisor exited %d (log: %s)" % (rc, log.name))
    return rows


def main():
    standin = os.environ.get("STANDIN_BIN") or os.path.join(REL, "hashi-standin")
    for b in (SUPERVISOR, standin, os.path.join(REL, "hashi-mirror")):
        if not os.path.exists(b):
            sys.exit("missing %s: cargo build --release --workspace --bins" % b)
    work = tempfile.mkdtemp(prefix="node-memory-")
    # As root the agents run as `consul` and `nomad`: they must reach their
    # binaries and data under the work dir.
    os.chmod(work, 0o755)
    mirror, key = build_mirror(work, os.environ.get("STANDIN_BIN"))
    modes = [0, 1] if os.environ.get("KEEP", "1") == "1" else [0]
    results = {m: one_run(work, mirror, key, m) for m in modes}
    print("| phase | " + " | ".join(
        ("start-up pages kept" if m else "as built") + ": USS / dirty / RSS MiB" for m in modes) + " |")
    print("|---|" + "---|" * len(modes))
    for i, (phase, _) in enumerate(results[0]):
        cells = ["%.2f / %.2f / %.2f" % (results[m][i][1]["uss"], results[m][i][1]["dirty"],
                                         results[m][i][1]["rss"]) for m in modes]
        print("| %s | %s |" % (phase, " | ".join(cells)))
    for m in modes:
        print("settled USS, highest%s: %.2f MiB" % (" (start-up pages kept)" if m else "",
                                                   settled_max(results[m])))


if __name__ == "__main__":
    main()
