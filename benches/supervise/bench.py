#!/usr/bin/env python3
"""Supervision benchmark: our supervisor vs supervisord, runit, s6 and a
fork+exec floor, each over the same tiny static C child (child.c: records a
CLOCK_MONOTONIC timestamp first thing, leaves 100 ms after SIGTERM).

Run from the repository root (as root, Debian):
    apt-get update && apt-get install -y supervisor runit s6 gcc
    cargo bench --bench supervise_daemon --no-run
    python3 benches/supervise/bench.py

Env: ROUNDS (start/stop rounds, 5), RESTARTS (restart rounds, 20),
IDLE_SECS (idle window for wakeups, 10; reported per minute), SETTLE_SECS
(11: how long after the last restart the idle window starts), MIN_AGE (a
child is killed for the restart measure only once it is this many seconds
old, 1.1: runit and s6 space launches by 1 s), ONLY (comma
list of system names to measure besides the floor, e.g. "hashi-supervisor"),
DAEMON (path of the supervise_daemon helper; default: the newest build),
BENCH_USER (our helper runs its children as this user, e.g. nobody).
Prints a Markdown table (medians and p95) for BENCHMARKS.md.
"""
import glob, os, shutil, signal, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.join(ROOT, "benches", "supervise")
ROUNDS = int(os.environ.get("ROUNDS", "5"))
RESTARTS = int(os.environ.get("RESTARTS", "20"))
IDLE_SECS = float(os.environ.get("IDLE_SECS", "10"))
# The idle window starts this long after the last restart: past what follows
# it once (the trim when the agents are ready again, src/supervise/trim.rs,
# and the blocking pool's threads ending), which is not a periodic wakeup.
SETTLE_SECS = float(os.environ.get("SETTLE_SECS", "11"))
MIN_AGE = float(os.environ.get("MIN_AGE", "1.1"))
CHILD_COMM = "bchild"
# Bound on any control command or process exit: a hang fails that system's
# measurement, never the whole run.
CMD_TIMEOUT = 15


def run_all(cmds):
    """Runs commands in parallel; raises if one fails or outlives CMD_TIMEOUT."""
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL) for c in cmds]
    end = time.monotonic() + CMD_TIMEOUT
    try:
        for c, p in zip(cmds, procs):
            rc = p.wait(timeout=max(0.1, end - time.monotonic()))
            if rc != 0:
                raise RuntimeError("%s exited %d" % (" ".join(c), rc))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def end_proc(proc):
    """Waits for a supervisor to exit; SIGKILLs it (and its tree) after CMD_TIMEOUT."""
    try:
        proc.wait(timeout=CMD_TIMEOUT)
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid)
        proc.wait()
        raise RuntimeError("pid %d did not exit in time" % proc.pid)


def kill_tree(root):
    for p in reversed(tree(root)):
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def now():
    return time.monotonic_ns()


def build(work):
    child = os.path.join(work, CHILD_COMM)
    floor = os.path.join(work, "bfloor")
    subprocess.check_call(["gcc", "-O2", "-static", "-o", child, os.path.join(HERE, "child.c")])
    subprocess.check_call(["gcc", "-O2", "-static", "-o", floor, os.path.join(HERE, "floor.c")])
    if os.environ.get("DAEMON"):
        return child, floor, os.environ["DAEMON"]
    daemons = sorted(glob.glob(os.path.join(ROOT, "target", "release", "deps", "supervise_daemon-*")),
                     key=os.path.getmtime)
    daemons = [d for d in daemons if os.access(d, os.X_OK) and not d.endswith(".d")]
    if not daemons:
        print("skipped hashi-supervisor: build it first with "
              "cargo bench --bench supervise_daemon --no-run", file=sys.stderr)
        return child, floor, None
    return child, floor, daemons[-1]


def starts(log):
    try:
        with open(log) as f:
            out = []
            for line in f:
                w = line.split()
                if len(w) == 4 and w[0] == "start":
                    out.append((int(w[2]), int(w[3])))
            return out
    except FileNotFoundError:
        return []


def wait(cond, timeout=20.0, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.0005)
    raise RuntimeError("timed out waiting for " + what)


def stat(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            s = f.read()
    except OSError:
        return None
    rest = s[s.rindex(")") + 2:].split()
    comm = s[s.index("(") + 1:s.rindex(")")]
    return comm, rest[0], int(rest[1])


def alive(pid):
    st = stat(pid)
    return st is not None and st[1] != "Z"


def tree(root):
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = stat(int(d))
            if st:
                kids.setdefault(st[2], []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def supervisor_pids(root):
    return [p for p in tree(root) if (stat(p) or ("", "", 0))[0] != CHILD_COMM]


def uss_kib(pids):
    total = 0
    for p in pids:
        try:
            with open("/proc/%d/smaps_rollup" % p) as f:
                for line in f:
                    if line.startswith(("Private_Clean:", "Private_Dirty:", "Private_Hugetlb:")):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def ctxt(pids):
    """Context switches per thread id (threads come and go: compare per tid)."""
    out = {}
    for p in pids:
        for st in glob.glob("/proc/%d/task/*/status" % p):
            tid = int(st.split("/")[4])
            try:
                with open(st) as f:
                    out[tid] = sum(int(l.split()[1]) for l in f if "ctxt_switches" in l)
            except OSError:
                pass
    return out


def ctxt_delta(c0, c1):
    return sum(v - c0.get(t, 0) for t, v in c1.items())


class System:
    n = 3

    def __init__(self, work, child):
        self.work, self.child = work, child
        self.log = os.path.join(work, self.name + ".log")
        self.proc = None

    def env(self):
        e = dict(os.environ)
        e["BENCH_LOG"] = self.log
        return e

    def child_pids(self):
        """Live children, oldest start first."""
        latest = {}
        for pid, ts in starts(self.log):
            latest[pid] = ts
        return [p for p, _ in sorted(latest.items(), key=lambda kv: kv[1]) if alive(p)]

    def started_at(self, pid):
        return max((ts for p, ts in starts(self.log) if p == pid), default=0)


class Ours(System):
    name = "hashi-supervisor"
    n = 2

    def __init__(self, work, child, daemon):
        super().__init__(work, child)
        self.daemon = daemon

    def start(self):
        state = tempfile.mkdtemp(dir=self.work)
        self.proc = subprocess.Popen([self.daemon, self.child, state], env=self.env(),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=CMD_TIMEOUT)

    def cleanup(self):
        pass


class Floor(System):
    name = "floor (fork+exec loop)"

    def __init__(self, work, child, floor):
        super().__init__(work, child)
        self.floor = floor

    def start(self):
        self.proc = subprocess.Popen([self.floor, self.child], env=self.env())

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=CMD_TIMEOUT)

    def cleanup(self):
        pass


def service_dirs(base, child, n):
    os.makedirs(base)
    dirs = []
    for i in range(n):
        d = os.path.join(base, "s%d" % i)
        os.makedirs(d)
        os.symlink(child, os.path.join(d, "run"))  # exec'd directly, no shell
        dirs.append(d)
    return dirs


class Runit(System):
    name = "runit"

    def start(self):
        base = tempfile.mkdtemp(prefix="runit-", dir=self.work)
        os.rmdir(base)
        self.dirs = service_dirs(base, self.child, self.n)
        self.proc = subprocess.Popen(["runsvdir", base], env=self.env())

    def stop(self):
        subprocess.check_call(["sv", "-w", "10", "down"] + self.dirs, stdout=subprocess.DEVNULL,
                              timeout=CMD_TIMEOUT)

    def cleanup(self):
        self.proc.send_signal(signal.SIGHUP)
        end_proc(self.proc)


class S6(System):
    name = "s6"

    def start(self):
        self.base = tempfile.mkdtemp(prefix="s6-", dir=self.work)
        os.rmdir(self.base)
        self.dirs = service_dirs(self.base, self.child, self.n)
        self.proc = subprocess.Popen(["s6-svscan", self.base], env=self.env())

    def stop(self):
        # s6-svc takes ONE service dir (it ignores the rest with a warning:
        # the old harness stopped only s0 and then waited forever for the
        # other two). Down all of them in parallel, each waited for.
        run_all([["s6-svc", "-wd", "-T", str(CMD_TIMEOUT * 1000), "-d", d] for d in self.dirs])

    def cleanup(self):
        # The services are down: the scanner ends its s6-supervise processes.
        run_all([["s6-svscanctl", "-t", self.base]])
        end_proc(self.proc)


class Supervisord(System):
    name = "supervisord"

    def start(self):
        d = tempfile.mkdtemp(prefix="supd-", dir=self.work)
        self.conf = os.path.join(d, "supervisord.conf")
        sock = os.path.join(d, "sock")
        progs = "".join(
            "[program:s%d]\ncommand=%s\nstartsecs=0\nautorestart=true\nstopwaitsecs=10\n"
            "environment=BENCH_LOG=\"%s\"\n" % (i, self.child, self.log) for i in range(self.n))
        with open(self.conf, "w") as f:
            f.write("[supervisord]\nnodaemon=true\nlogfile=%s/log\npidfile=%s/pid\n"
                    "[unix_http_server]\nfile=%s\n[supervisorctl]\nserverurl=unix://%s\n"
                    "[rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = "
                    "supervisor.rpcinterface:make_main_rpcinterface\n%s" % (d, d, sock, sock, progs))
        self.proc = subprocess.Popen(["supervisord", "-c", self.conf],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self):
        subprocess.check_call(["supervisorctl", "-c", self.conf, "stop", "all"], stdout=subprocess.DEVNULL,
                              timeout=CMD_TIMEOUT)

    def cleanup(self):
        self.proc.send_signal(signal.SIGTERM)
        end_proc(self.proc)


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def measure(sys_):
    r = {"start": [], "stop": [], "restart": [], "uss_all": [], "wakeups": None}
    for rnd in range(ROUNDS):
        try:
            os.unlink(sys_.log)
        except FileNotFoundError:
            pass
        t0 = now()
        sys_.start()
        s = wait(lambda: len(starts(sys_.log)) >= sys_.n and starts(sys_.log), what=sys_.name + " start")
        r["start"].append((max(ts for _, ts in s[:sys_.n]) - t0) / 1e6)
        if rnd == 0:
            for _ in range(RESTARTS):
                before = len(starts(sys_.log))
                pids = wait(lambda: len(sys_.child_pids()) >= sys_.n and sys_.child_pids(), what="children up")
                # runsv and s6-supervise space two launches of a service by
                # >= 1 s: kill only a child older than that, so the restart
                # measures their fork/exec path, not their crash-loop brake.
                age = (now() - sys_.started_at(pids[0])) / 1e9
                if age < MIN_AGE:
                    time.sleep(MIN_AGE - age)
                t = now()
                os.kill(pids[0], signal.SIGKILL)
                new = wait(lambda: [ts for _, ts in starts(sys_.log)[before:] if ts > t], what="restart")
                r["restart"].append((min(new) - t) / 1e6)
            wait(lambda: len(sys_.child_pids()) >= sys_.n, what="children up")
            time.sleep(SETTLE_SECS)
            sup = supervisor_pids(sys_.proc.pid)
            c0 = ctxt(sup)
            time.sleep(IDLE_SECS)
            r["wakeups"] = ctxt_delta(c0, ctxt(supervisor_pids(sys_.proc.pid))) * 60.0 / IDLE_SECS
        # USS in every round, once the children run and a second has passed
        # (round 0: after the restarts and the idle window).
        wait(lambda: len(sys_.child_pids()) >= sys_.n, what="children up")
        time.sleep(1.0)
        r["uss_all"].append(uss_kib(supervisor_pids(sys_.proc.pid)) / 1024.0)
        kids = wait(lambda: len(sys_.child_pids()) >= sys_.n and sys_.child_pids(), what="children up")
        t = now()
        sys_.stop()
        wait(lambda: not any(alive(p) for p in kids), what="children gone")
        r["stop"].append((now() - t) / 1e6)
        sys_.cleanup()
    return r


LOAD0 = None


def main():
    global LOAD0
    LOAD0 = " ".join(open("/proc/loadavg").read().split()[:3])
    work = tempfile.mkdtemp(prefix="supbench-")
    # Like /tmp: children run as another user (BENCH_USER) must reach the
    # child binary and append to their log here.
    os.chmod(work, 0o1777)
    child, floor, daemon = build(work)
    systems = [Floor(work, child, floor)]
    if daemon:
        systems.append(Ours(work, child, daemon))
    for cls, tool in [(Runit, "runsvdir"), (S6, "s6-svscan"), (Supervisord, "supervisord")]:
        if shutil.which(tool):
            systems.append(cls(work, child))
        else:
            print("skipped %s: %s not installed" % (cls.name, tool), file=sys.stderr)
    only = os.environ.get("ONLY")
    if only:
        systems = [s for i, s in enumerate(systems) if i == 0 or s.name in only.split(",")]
    results = []
    for s in systems:
        print("measuring %s ..." % s.name, file=sys.stderr)
        try:
            results.append((s, measure(s)))
        except Exception as e:  # one broken tool must not block the others
            print("FAILED %s: %s" % (s.name, e), file=sys.stderr)
            if s.proc is not None:
                kill_tree(s.proc.pid)
                s.proc.wait()
            for p in s.child_pids():
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    print("load average before: %s; after: %s" % (LOAD0, " ".join(open("/proc/loadavg").read().split()[:3])))
    floor_restart = statistics.median(results[0][1]["restart"])
    print("| supervisor | children | restart after SIGKILL ms (median / p95) | x floor | start ms (median / p95) | stop ms (median / p95) | USS MiB (median / max) | idle wakeups/min |")
    print("|---|---|---|---|---|---|---|---|")
    for s, r in results:
        m = statistics.median(r["restart"])
        print("| %s | %d | %.2f / %.2f | %.1f | %.2f / %.2f | %.1f / %.1f | %.2f / %.2f | %.0f |" % (
            s.name, s.n, m, pct(r["restart"], 0.95), m / floor_restart,
            statistics.median(r["start"]), pct(r["start"], 0.95),
            statistics.median(r["stop"]), pct(r["stop"], 0.95),
            statistics.median(r["uss_all"]), max(r["uss_all"]), r["wakeups"]))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
