#!/usr/bin/env python3
"""Memory gate (CI): a whole node's settled memory, as the packages ship it.

Builds the static musl release binary the way packaging/build.sh does (the
same cargo command and C compiler, so after the packaging step this is a
no-op), strips a copy as packaging/gen-assets.sh does, runs `supervisor run`
on one node over STAND-IN agents (test support, not HashiCorp's Consul and
Nomad) exactly as node_memory.py does (ready, 200 polls of each health
endpoint, a SIGKILLed Nomad restarted, a reload, idle) and reads the
supervisor's USS (`Private_*` of `/proc/<pid>/smaps_rollup`, agents
excluded). It fails when the highest settled USS exceeds BUDGET_MIB, so a
change that makes the steady state keep more memory is caught on that
change. It prints the measured figure and the budget either way.

It never skips: when the musl target cannot be added or there is no musl C
compiler, it fails (the packages would not be the static build it gates).

usage (from the repository root, Linux; root to install what is missing):
    python3 benches/supervise/memory_gate.py               # the gate
    python3 benches/supervise/memory_gate.py --set-budget  # re-measure, rewrite BUDGET_MIB
--set-budget runs the node RUNS times (default 3), takes the highest settled
USS of all runs, adds 0.5 MiB, rounds up to 0.1 MiB and rewrites the
BUDGET_MIB line below with the date and this command.
Env: RUNS (--set-budget, 3), IDLE_SECS / SETTLE_SECS / POLLS (node_memory.py).
"""
import datetime, math, os, re, shutil, subprocess, sys, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import node_memory  # noqa: E402  (next to this file)

ROOT = node_memory.ROOT
TRIPLE = "x86_64-unknown-linux-musl"

# The one budget (MiB of settled USS, musl build, stripped, x86_64). Set by
# `python3 benches/supervise/memory_gate.py --set-budget`: highest settled USS of
# its runs + 0.5 MiB, rounded up to 0.1 MiB.
# 2026-12-03 (issue 16): 5.1 on settled 4.46-4.55 MiB. Raised the same day
# (issues 17/18: discovery runtime, fleet, hickory-resolver and mdns-sd
# linked, the observer's settling polls) to what the merged node settles
# at, 5.64-5.67 MiB: +1.1 MiB not yet analysed (the gate's node runs with
# mDNS and DNS off; the steady-state link order predates the new code).
# --set-budget replaces the line below.
BUDGET_MIB = 7.3  # 2026-12-04 05:27, clean-clone CI after issue 20's gate: settled 6.79 MiB (one run; was 6.24) + 0.5


def say(msg):
    print("memory_gate: " + msg, flush=True)


def fail(msg):
    say("FAIL: " + msg)
    sys.exit(1)


def run(cmd, **kw):
    say("$ " + " ".join(cmd))
    subprocess.run(cmd, check=True, cwd=ROOT, **kw)


def can_install():
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def prepare_musl():
    """The musl target and C compiler packaging/build.sh uses; fails if missing."""
    installed = subprocess.run(["rustup", "target", "list", "--installed"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.split()
    if TRIPLE not in installed:
        if subprocess.run(["rustup", "target", "add", TRIPLE], cwd=ROOT).returncode != 0:
            fail("rustup cannot add %s: the gate measures the static musl build the packages ship"
                 % TRIPLE)
    if shutil.which("musl-gcc") is None and can_install():
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "-qq", "musl-tools"], env=env)
    if shutil.which("musl-gcc") is None:
        fail("no musl-gcc (apt-get install musl-tools): ring needs a C compiler for %s" % TRIPLE)


def build():
    """Path of a stripped copy of the musl release supervisor; the stand-in
    and mirror tool come from the debug build (their memory is not measured)."""
    prepare_musl()
    env = dict(os.environ, CC_x86_64_unknown_linux_musl="musl-gcc")
    # packaging/build.sh's command, so the packaging step's build is reused.
    run(["cargo", "build", "--release", "--locked", "--target", TRIPLE, "--bin", "supervisor"],
        env=env)
    # The README's test build (CI has it already).
    run(["cargo", "build", "--workspace", "--bins"])
    built = os.path.join(ROOT, "target", TRIPLE, "release", "supervisor")
    stripped = os.path.join(ROOT, "target", TRIPLE, "release", "supervisor.gate-stripped")
    run([os.environ.get("STRIP", "strip"), "-o", stripped, built])
    # A freshly written file's page-cache pages are dirty until written back,
    # and smaps counts them as Private_Dirty: write them back first.
    os.sync()
    return stripped


def measure(supervisor, runs):
    """The highest settled USS (MiB) of `runs` runs of the node, and each run's."""
    node_memory.SUPERVISOR = supervisor
    node_memory.REL = os.path.join(ROOT, "target", "debug")
    work = tempfile.mkdtemp(prefix="memory-gate-")
    # As root the agents run as `consul` and `nomad`: they must reach their
    # binaries and data under the work dir.
    os.chmod(work, 0o755)
    # The debug stand-in, stripped: the release download the supervisor
    # verifies and unzips at start-up stays small, as a release build's.
    standin = os.path.join(work, "hashi-standin")
    run([os.environ.get("STRIP", "strip"), "-o", standin,
         os.path.join(ROOT, "target", "debug", "hashi-standin")])
    mirror, key = node_memory.build_mirror(work, standin)
    figures = []
    for i in range(runs):
        rows = node_memory.one_run(work, mirror, key, 0)
        for phase, r in rows:
            say("run %d: %-20s USS %.2f MiB (dirty %.2f)" % (i + 1, phase, r["uss"], r["dirty"]))
        figures.append(node_memory.settled_max(rows))
    shutil.rmtree(work, ignore_errors=True)
    return max(figures), figures


def set_budget(measured, figures):
    budget = math.ceil((measured + 0.5) * 10 - 1e-9) / 10
    path = os.path.abspath(__file__)
    with open(path) as f:
        text = f.read()
    line = "BUDGET_MIB = %.1f  # %s, memory_gate.py --set-budget: settled %s MiB, max %.2f + 0.5" % (
        budget, datetime.date.today().isoformat(),
        " ".join("%.2f" % x for x in figures), measured)
    text, n = re.subn(r"^BUDGET_MIB = .*$", line, text, count=1, flags=re.M)
    if n != 1:
        fail("no BUDGET_MIB line in " + path)
    with open(path, "w") as f:
        f.write(text)
    say("wrote " + line)


def main():
    if sys.platform != "linux":
        fail("Linux only (/proc/<pid>/smaps_rollup)")
    setting = "--set-budget" in sys.argv[1:]
    binary = build()
    runs = int(os.environ.get("RUNS", "3")) if setting else 1
    measured, figures = measure(binary, runs)
    if setting:
        set_budget(measured, figures)
        return
    say("settled USS %.2f MiB, budget %.1f MiB (%s, stripped, as packaged)"
        % (measured, BUDGET_MIB, TRIPLE))
    if measured > BUDGET_MIB:
        fail("settled USS %.2f MiB exceeds the budget of %.1f MiB: something new stays mapped "
             "or allocated once the node is steady (BENCHMARKS.md \"A whole node\" says how to "
             "find what; a deliberate increase re-measures with --set-budget)"
             % (measured, BUDGET_MIB))
    say("ok")


if __name__ == "__main__":
    main()
