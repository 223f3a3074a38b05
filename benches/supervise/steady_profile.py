#!/usr/bin/env python3
"""Which functions a running `supervisor run` executes once it is steady, and
the linker script that puts them next to each other (link/steady-state.ld).

Why: after start-up the daemon gives back the pages of its binary
(src/supervise/trim.rs) and only what the steady state runs comes back. The
kernel maps text in 64 KiB fault-around blocks, so a few hundred small
functions spread over 8 MB of text bring back a few MiB. Linked next to each
other they take a few hundred KiB.

How: the release `supervisor run` of node_memory.py's one-node cluster (over
STAND-IN agents, test support, not HashiCorp's Consul and Nomad), once ready
and past its trim, gets a one-shot breakpoint (int3 written through
/proc/<pid>/mem under ptrace) on the entry of every function of its symbol
table. Each breakpoint that fires records its function and is removed at once
(the original byte put back, the thread resumes at the entry), so each
function costs one stop and the daemon runs at full speed otherwise. Meanwhile
the script polls every health endpoint and lets several agent-check rounds
pass, with NOTIFY_SOCKET and WATCHDOG_USEC set as under systemd. The runs
take turns tracing the steady state after start-up, after a restart of the
Nomad agent and after a reload (the daemon trims again after each); the
union of what they ran is written. The end is
marked by a SIGWINCH to the daemon, which the tracer swallows; then every
breakpoint left is removed and the process detached.

The script writes input-section patterns, not addresses: rustc puts each
function in its own section `.text.<symbol>` (`.text.unlikely.<symbol>` for
cold ones). Each function seen gets two lines: its exact name, and a glob
without the parts that change between builds and targets (crate
disambiguators `Cs<hash>_` and back-references of v0 names, `.llvm.<n>`
suffixes of promoted locals). A section goes to the first line that matches
it, and the exact lines come first, so the copies that ran sit together at
the front of the group and what only a glob matches (other copies of the same
generic or inlined function, or functions whose names moved since the
profile) at its end. A stale line matches nothing and costs nothing: the
order only changes how much memory the daemon keeps, never what it does.

Read-only data, likewise (`.rodata.steady`, after `.rodata`): the binary is
linked once more with a link map (`cargo rustc ... -Wl,-Map`, lld), and the
script takes the jump and lookup tables of the grouped functions and the
small constants (up to 4 KiB) their code refers to, directly or through one
pointer of `.data.rel.ro` (format-string pieces); anonymous constants are
named by their object (`archive:member`, codegen unit kept, crate hash
globbed) and their index, which hold across targets, so GNU ld finds the
same ones in the static musl build. DATA=0 skips this step.

Run as root from the repository root (ptrace and /proc/<pid>/mem):
    cargo build --release --workspace --bins
    python3 benches/supervise/steady_profile.py      # writes link/steady-state.ld
then rebuild and measure: cargo build --release --bin supervisor &&
python3 benches/supervise/node_memory.py
Env: RUNS (3: profiles merged; 0: only rewrite OUT from its own text
lines, with MERGE=1), TRACE_SECS (40: several agent-check rounds,
and longer than the 10 s after which an idle blocking-pool thread ends and
the next use starts a new one), OUT (link/steady-state.ld), MERGE (1: keep
the text patterns already in OUT, for paths this profile did not take, or
another target's exact names), DATA (1: the read-only data step).
"""
import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import node_memory as nm  # noqa: E402

RUNS = int(os.environ.get("RUNS", "3"))
TRACE_SECS = float(os.environ.get("TRACE_SECS", "40"))
OUT = os.environ.get("OUT") or os.path.join(nm.ROOT, "link", "steady-state.ld")
PATHS = ("/health", "/ready", "/v1/status", "/v1/status?verbose", "/metrics", "/")

libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.restype = ctypes.c_long
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
PTRACE_CONT, PTRACE_SINGLESTEP, PTRACE_DETACH = 7, 9, 17
PTRACE_GETREGS, PTRACE_SETREGS = 12, 13
PTRACE_SEIZE, PTRACE_INTERRUPT, PTRACE_O_TRACECLONE = 0x4206, 0x4207, 8
EVENT_CLONE, EVENT_STOP = 3, 128
WALL = 0x40000000
RIP, RSP = 16, 19  # indices in x86_64's struct user_regs_struct


class Regs(ctypes.Structure):
    _fields_ = [("r", ctypes.c_ulonglong * 27)]


def ptrace(req, tid, addr=0, data=0):
    if libc.ptrace(req, tid, ctypes.c_void_p(addr), ctypes.c_void_p(data)) == -1:
        e = ctypes.get_errno()
        raise OSError(e, "ptrace(%#x, %d): %s" % (req, tid, os.strerror(e)))


class Tracer:
    """One-shot breakpoints on `addrs` (run-time addresses) of process `pid`,
    armed when a thread enters `trigger` (the trim that ends start-up, a
    restart or a reload) for the `nth` time: what runs from there on is the
    steady state."""

    def __init__(self, pid, trigger, addrs, nth=1):
        self.pid = pid
        self.trigger, self.addrs = trigger, [a for a in addrs if a != trigger]
        self.skip = nth - 1
        self.stepping = {}  # tid -> trigger byte to put back after one step
        self.tids = set(int(t) for t in os.listdir("/proc/%d/task" % pid))
        for t in self.tids:
            ptrace(PTRACE_SEIZE, t, 0, PTRACE_O_TRACECLONE)
            ptrace(PTRACE_INTERRUPT, t)
        self._wait_interrupted(self.tids)
        self.mem = open("/proc/%d/mem" % pid, "r+b", buffering=0)
        self.orig = {}
        self._arm([trigger])
        self.hits = []
        for t in self.tids:
            ptrace(PTRACE_CONT, t)

    def _arm(self, addrs):
        for a in addrs:
            self.mem.seek(a)
            self.orig[a] = self.mem.read(1)
        for a in addrs:
            self.mem.seek(a)
            self.mem.write(b"\xcc")

    def _on_trap(self, tid):
        """A stop on an int3 of ours: put the byte back, resume at the entry.
        Returns how to resume the thread, or None if the trap is not ours."""
        if tid in self.stepping:  # stepped over a trigger skipped: re-arm it
            self._arm([self.stepping.pop(tid)])
            return PTRACE_CONT
        regs = Regs()
        ptrace(PTRACE_GETREGS, tid, 0, ctypes.addressof(regs))
        a = regs.r[RIP] - 1
        if a not in self.orig:
            return None
        resume = PTRACE_CONT
        if self.orig[a] is not None:  # a second thread may stop on it too
            self.mem.seek(a)
            self.mem.write(self.orig[a])
            self.orig[a] = None
            if a == self.trigger and self.skip > 0:
                # Not yet: run the entry's first instruction, then put the
                # breakpoint back.
                self.skip -= 1
                self.stepping[tid] = a
                resume = PTRACE_SINGLESTEP
            else:
                self.hits.append(a)
            if a == self.trigger and resume == PTRACE_CONT:
                # Any other thread runs on while the breakpoints go in: a
                # function it enters before its byte is written is missed,
                # which would only cost memory, never correctness.
                self._arm(self.addrs)
        regs.r[RIP] = a
        ptrace(PTRACE_SETREGS, tid, 0, ctypes.addressof(regs))
        return resume

    def _handle(self, tid, status):
        """Handles one wait status: None when handled (the thread runs on),
        else ("event", n) or ("signal", n) for the caller to decide on."""
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            self.tids.discard(tid)
            if not self.tids:
                raise RuntimeError("the traced supervisor ended")
            return None
        sig, event = os.WSTOPSIG(status), status >> 16
        if event in (EVENT_CLONE, EVENT_STOP):
            self.tids.add(tid)
            return ("event", event)
        if sig == signal.SIGTRAP:
            resume = self._on_trap(tid)
            if resume is not None:
                ptrace(resume, tid)
                return None
        return ("signal", sig)

    @staticmethod
    def _pass_on(tid, what):
        """Resumes `tid` after a stop that is not ours, with its signal."""
        ptrace(PTRACE_CONT, tid, 0, what[1] if what[0] == "signal" else 0)

    def _wait_interrupted(self, tids):
        pending = set(tids)
        while pending:
            tid, status = os.waitpid(-1, WALL)
            if os.WIFEXITED(status) or os.WIFSIGNALED(status) or status >> 16 == EVENT_STOP:
                pending.discard(tid)

    def run_until_sigwinch(self):
        while True:
            tid, status = os.waitpid(-1, WALL)
            what = self._handle(tid, status)
            if what is None:
                continue
            if what == ("signal", signal.SIGWINCH):
                return tid
            self._pass_on(tid, what)

    def finish(self, stopped):
        """Stops every thread, settles any trap in flight, removes the
        breakpoints left, detaches."""
        others = self.tids - {stopped}
        for t in others:
            ptrace(PTRACE_INTERRUPT, t)
        pending = set(others)
        while pending:
            tid, status = os.waitpid(-1, WALL)
            what = self._handle(tid, status)
            if what == ("event", EVENT_STOP) or tid not in self.tids:
                pending.discard(tid)
            elif what is not None:
                self._pass_on(tid, what)
        for a, b in self.orig.items():
            if b is not None:
                self.mem.seek(a)
                self.mem.write(b)
        self.live = self.stack_code(self.tids)
        for t in self.tids:
            ptrace(PTRACE_DETACH, t)
        return self.hits

    def stack_code(self, tids):
        """Code that runs without being entered: each stopped thread's
        instruction pointer and the return addresses on its stack. Frames
        older than the trim (the runtime's loop in `block_on`, a blocking
        pool thread waiting for work, a thread blocked in `read` on an
        agent's pipe) resume after it, and only the breakpoints at entries
        would never see them. A value on the stack counts when it points
        into the binary's code right after a call instruction."""
        exe = os.path.realpath("/proc/%d/exe" % self.pid)
        maps = []
        with open("/proc/%d/maps" % self.pid) as f:
            for line in f:
                p = line.split()
                lo, hi = (int(x, 16) for x in p[0].split("-"))
                maps.append((lo, hi, "x" in p[1] and len(p) >= 6 and p[5] == exe))
        code = [(lo, hi) for lo, hi, x in maps if x]
        found = set()

        def is_return_address(v):
            if not any(lo + 7 <= v < hi for lo, hi in code):
                return False
            self.mem.seek(v - 7)
            b = self.mem.read(7)
            if b[2] == 0xE8:  # call rel32
                return True
            # call r/m64 (FF /2) of 2, 3, 4, 6 or 7 bytes
            return any(b[i] == 0xFF and (b[i + 1] >> 3) & 7 == 2 for i in (5, 4, 3, 1, 0))

        for t in tids:
            regs = Regs()
            ptrace(PTRACE_GETREGS, t, 0, ctypes.addressof(regs))
            found.add(regs.r[RIP])
            sp = regs.r[RSP]
            top = next((hi for lo, hi, _ in maps if lo <= sp < hi), sp)
            self.mem.seek(sp)
            data = self.mem.read(min(top - sp, 1 << 20))
            for i in range(0, len(data) - 7, 8):
                v = int.from_bytes(data[i:i + 8], "little")
                if is_return_address(v):
                    found.add(v)
        return found


def symbols(exe):
    """{address: [names]} of the functions in `exe`'s symbol table: those
    with a size, and the global ones without (musl's assembly `memcpy`,
    `memset`, `memmove`: no size, entered as often as any)."""
    out = subprocess.run(["nm", "--defined-only", "-S", exe],
                         capture_output=True, text=True, check=True).stdout
    by_addr = {}
    for line in out.splitlines():
        p = line.split()
        if len(p) == 4 and p[2] in "tTwW" and int(p[1], 16) > 0:
            by_addr.setdefault(int(p[0], 16), []).append(p[3])
        elif len(p) == 3 and p[1] == "T":
            by_addr.setdefault(int(p[0], 16), []).append(p[2])
    return by_addr


def function_sizes(exe):
    """{address: size} of the functions in `exe`'s symbol table."""
    out = subprocess.run(["nm", "--defined-only", "-S", exe],
                         capture_output=True, text=True, check=True).stdout
    sizes = {}
    for line in out.splitlines():
        p = line.split()
        if len(p) == 4 and p[2] in "tTwW":
            a = int(p[0], 16)
            sizes[a] = max(sizes.get(a, 0), int(p[1], 16))
    return sizes


def load_bias(pid, exe):
    real = os.path.realpath(exe)
    lows = []
    with open("/proc/%d/maps" % pid) as f:
        for line in f:
            p = line.split()
            if len(p) >= 6 and p[5] == real:
                lows.append(int(p[0].split("-")[0], 16) - int(p[2], 16))
    return min(lows) if lows else None


# What happened before the steady state that is traced, and which entry into
# the trim starts it.
# The daemon trims when all agents become ready and once more
# `trim::SETTLE_AFTER` (10 s) later; the steady state starts at that second
# trim: the one after start-up (2nd), after a restart (ready again: 2nd,
# then its settle: 3rd) or after a reload (the reload's own: 2nd, its
# settle: 3rd).
SCENARIOS = (("start-up", 2), ("restart", 3), ("reload", 3))


def one_profile(work, mirror, key, run, scenario="start-up", nth=1):
    # What systemd gives the unit: a notify socket and a watchdog.
    notify_path = os.path.join(work, "notify-%d.sock" % run)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    env = {"NOTIFY_SOCKET": notify_path, "WATCHDOG_USEC": "2000000"}
    # Read it all along, as systemd does: a full queue blocks the sender.
    notify.settimeout(0.2)
    listening = threading.Event()
    listening.set()

    def drain():
        while listening.is_set():
            try:
                notify.recv(4096)
            except OSError:
                pass

    drainer = threading.Thread(target=drain, daemon=True)
    drainer.start()
    proc, base, state, log = nm.start_node(work, mirror, key, 0, env, tag=100 + run)
    try:
        syms = symbols(nm.SUPERVISOR)
        trigger = [a for a, ns in syms.items()
                   if any("supervise4trim22release_startup_memory" in n for n in ns)]
        if len(trigger) != 1:
            raise RuntimeError("no single release_startup_memory in the symbol table")
        nm.wait(lambda: os.path.exists("/proc/%d/maps" % proc.pid)
                and load_bias(proc.pid, nm.SUPERVISOR) is not None, "exec")
        bias = load_bias(proc.pid, nm.SUPERVISOR)
        # ptrace answers only the thread that attached: the tracer lives in
        # its own thread while this one drives the daemon.
        armed, result = threading.Event(), {}

        def trace():
            try:
                tracer = Tracer(proc.pid, bias + trigger[0], [bias + a for a in syms], nth)
                armed.set()
                result["hits"] = tracer.finish(tracer.run_until_sigwinch())
                result["live"] = tracer.live
            except BaseException as e:  # reported by the main thread
                result["error"] = e
                armed.set()

        th = threading.Thread(target=trace)
        th.start()
        armed.wait()
        ready = lambda: "error" in result or nm.get(base + "/ready")[0] == 200  # noqa: E731
        nm.wait(ready, "/ready")
        time.sleep(1.0)  # past the trim at "all agents ready"
        if scenario == "restart":
            old = nm.nomad_pid(state)
            os.kill(old, signal.SIGKILL)
            nm.wait(lambda: nm.nomad_pid(state) != old and ready(), "nomad back")
            time.sleep(1.0)
        elif scenario == "reload":
            proc.send_signal(signal.SIGHUP)
            time.sleep(2.0)
            nm.wait(ready, "ready after reload")
        # Polled for 10 s out of every 25, idle in between: what an idle
        # node runs (agent checks alone, a blocking-pool thread ending and a
        # new one starting) and what a polled one runs.
        start = time.monotonic()
        while time.monotonic() - start < TRACE_SECS and "error" not in result:
            if (time.monotonic() - start) % 25 < 10:
                for path in PATHS:
                    nm.get(base + path, timeout=5)
            time.sleep(0.5)
        os.kill(proc.pid, signal.SIGWINCH)
        th.join()
        if "error" in result:
            raise result["error"]
        hits = result["hits"]
        live = result["live"]
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
        log.close()
        listening.clear()
        drainer.join()
        notify.close()
    if rc != 0:
        raise RuntimeError("supervisor exited %d (log: %s)" % (rc, log.name))
    names = set()
    for h in hits:
        names.update(syms.get(h - bias, []))
    starts = sorted(syms)
    sizes = function_sizes(nm.SUPERVISOR)
    import bisect
    on_stacks = set()
    for a in live:
        i = bisect.bisect_right(starts, a - bias) - 1
        if i >= 0 and a - bias < starts[i] + sizes.get(starts[i], 0):
            on_stacks.update(syms[starts[i]])
    print("  on the stacks at the end: %d functions, %d not entered while traced"
          % (len(on_stacks), len(on_stacks - names)))
    return names | on_stacks, len(hits)


def pattern(name):
    """The input-section patterns of a function symbol, without the parts
    that change from build to build or target to target. Functions LLVM
    deems cold (`#[cold]`, e.g. the growth paths of Vec) sit in
    `.text.unlikely.<symbol>`."""
    stem, suffix = name, ""
    m = re.match(r"^(.*)\.llvm\.\d+$", name)  # promoted local: per-build number
    if m:
        stem, suffix = m.group(1), ".llvm.*"
    m = re.match(r"^(_ZN.*)17h[0-9a-f]{16}E$", stem)
    if m:  # legacy mangling: the hash changes with every build
        stem = m.group(1) + "17h*"
    elif stem.startswith("_R"):
        # v0 mangling: crate disambiguators (`Cs<hash>_`) depend on the
        # target and the build; back-references (`B<pos>_`) are offsets into
        # the name, which move when a disambiguator's length does.
        stem = re.sub(r"Cs[0-9A-Za-z]+_", "Cs*_", stem)
        stem = re.sub(r"B[0-9A-Za-z]*_", "B*_", stem)
    return [prefix + stem + suffix for prefix in (".text.", ".text.unlikely.")]


def exact(name):
    """The input sections of exactly the function symbol `name`."""
    return [prefix + name for prefix in (".text.", ".text.unlikely.")]


def llvm_variants(pats):
    """Each globbed name with and without the `.llvm.*` suffix: LLVM names a
    local function `<symbol>.llvm.<n>` when it promotes it (another codegen
    unit refers to it) and plain `<symbol>` otherwise, and which one a
    function gets changes from build to build (one changed line elsewhere
    in the crate is enough). Exact names and object lines stay as they are."""
    out = set(pats)
    for p in pats:
        if "*" not in p or "(" in p:
            continue
        out.add(p[:-len(".llvm.*")] if p.endswith(".llvm.*") else p + ".llvm.*")
    return out


def ordered(pats):
    """Exact names first, then globbed ones. A section goes to the first
    line that matches it, so the copies the profile saw run (same name in
    this build) are placed together at the front, and what only a glob
    matches (other copies of a generic or of an inlined local, and the
    functions of a build whose names have moved since the profile) after
    them: still in the group, but at its end, where it costs blocks only
    if it runs."""
    def globbed(p):  # in the section name (a file pattern is always globbed)
        return "*" in p[p.find("(") + 1:]

    return sorted(p for p in pats if not globbed(p)) + sorted(p for p in pats if globbed(p))


def write_script(path, text_pats, data_pats=()):
    """Writes the linker script: the steady functions as `.text.steady`
    before `.text`; their tables and the small constants they use as
    `.rodata.steady` after `.rodata` (in the read-only segment)."""
    rodata = ordered(data_pats)
    with open(path, "w") as f:
        f.write("/* Functions `supervisor run` executes once steady (all agents ready:\n"
                "   agent checks, health endpoint requests, sd_notify watchdog), linked\n"
                "   next to each other so that few 64 KiB blocks of text stay mapped;\n"
                "   likewise their jump and lookup tables and the small constants\n"
                "   they refer to, in read-only data.\n"
                "   Generated by benches/supervise/steady_profile.py (as root) from a\n"
                "   release build; regenerate after large changes. A stale line matches\n"
                "   nothing: the order changes memory use, never behaviour. */\n"
                "SECTIONS\n{\n  .text.steady : ALIGN(0x10000) {\n")
        for p in ordered(text_pats):
            # A section pattern, or a whole `file(section)` line (an
            # object whose functions share one plain `.text`).
            f.write("    %s\n" % (p if "(" in p else "*(%s)" % p))
        # Each group starts and ends on a 64 KiB boundary (the kernel's
        # fault-around block): neither shares a block with its neighbours
        # (a fault in the group's last block mapped 48 KiB of
        # `.eh_frame_hdr` with it).
        f.write("    . = ALIGN(0x10000);\n  }\n}\nINSERT BEFORE .text;\n\n"
                "SECTIONS\n{\n  .rodata.steady : ALIGN(0x10000) {\n")
        for p in rodata:
            f.write("    %s\n" % p)
        f.write("    . = ALIGN(0x10000);\n  }\n}\nINSERT AFTER .rodata;\n")


# Constants larger than this stay where they are: the big tables a steady
# function can reach are mostly on paths it does not take (the URL parser's
# IDNA tables for a host that is an IP address), and each would cost its
# own pages next to the small ones.
MAX_GROUPED_CONSTANT = 4096


def glob_v0(name):
    """`name` with the build- and target-dependent parts of v0 symbols,
    `.llvm.<n>` suffixes and anonymous-constant hashes globbed."""
    name = re.sub(r"\.llvm\.\d+", ".llvm.*", name)
    name = re.sub(r"anon\.[0-9a-f]{32}\.", "anon.*.", name)
    m = re.search(r"_R[0-9A-Za-z_]+", name)
    if m:
        sym = re.sub(r"Cs[0-9A-Za-z]+_", "Cs*_", m.group(0))
        sym = re.sub(r"B[0-9A-Za-z]*_", "B*_", sym)
        name = name[:m.start()] + sym + name[m.end():]
    return name


def file_pattern(path):
    """A linker-script file pattern for an object of the link map: rlib
    members as `archive:member`, crate hashes globbed (they differ between
    targets), codegen unit numbers kept."""
    m = re.match(r"^(.*/)?([^/(]+)\((.+)\)$", path)
    if m:
        archive, member = m.group(2), m.group(3)
    else:
        archive, member = None, os.path.basename(path)
    member = re.sub(r"-[0-9a-f]{16}\.", "-*.", member)
    member = re.sub(r"\.[0-9a-f]{16}-cgu\.", ".*-cgu.", member)
    if archive is None:
        return "*/" + member
    return "*/%s:%s" % (re.sub(r"-[0-9a-f]{16}\.rlib$", "-*.rlib", archive), member)


def map_inputs(map_path, out_name):
    """(address, size, section, file) of the input sections of output
    section `out_name` in a link map of lld or of GNU ld."""
    with open(map_path) as f:
        text = f.read()
    inputs = []
    if "Linker script and memory map" in text:  # GNU ld
        out, pending = None, None
        for line in text[text.index("Linker script and memory map"):].splitlines():
            m = re.match(r"^(\.\S+)(\s+0x|$)", line)
            if m:  # an output section at column 0
                out, pending = m.group(1), None
                continue
            m = re.match(r"^ (\.\S+)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(\S.*)$", line)
            if m:
                sec, addr, size, path = m.group(1), m.group(2), m.group(3), m.group(4)
            else:
                m2 = re.match(r"^ (\.\S+)$", line)
                if m2:  # a long name: its address, size and file on the next line
                    pending = m2.group(1)
                    continue
                m = re.match(r"^\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(\S.*)$", line)
                if not (m and pending):
                    pending = None
                    continue
                sec, addr, size, path = pending, m.group(1), m.group(2), m.group(3)
            pending = None
            if out == out_name and int(size, 16) > 0:
                inputs.append((int(addr, 16), int(size, 16), sec, path))
        return sorted(inputs)
    out = None
    for line in text.splitlines():
        m = re.match(r"^\s+([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+\d+( +)(\S.*)$", line)
        if not m:
            continue
        gap, rest = len(m.group(3)), m.group(4).strip()
        if gap == 1:  # an output section
            out = rest
            continue
        mm = re.match(r"^(.*):\((\S+)\)$", rest)
        if out == out_name and mm and gap < 12:  # an input section, not a symbol
            inputs.append((int(m.group(1), 16), int(m.group(2), 16), mm.group(2), mm.group(1)))
    return sorted(inputs)


def data_patterns(map_path, exe):
    """Patterns of the read-only data of the code in `.text.steady` of `exe`
    (linked with the map `map_path`): the functions' own tables (rustc names
    a function's jump tables `.rodata.<symbol>` or `.rodata.unlikely.<symbol>`,
    LLVM its lookup tables `.rodata..Lswitch.table.<symbol>.<n>`), and the
    small constants the code refers to, directly (RIP-relative operands) or
    through one pointer in `.data.rel.ro` (the pieces of a format string, a
    `&'static str` in a static)."""
    import bisect
    # What an earlier script already grouped counts as much as the rest.
    rodata = sorted(map_inputs(map_path, ".rodata") + map_inputs(map_path, ".rodata.steady"))
    relro = map_inputs(map_path, ".data.rel.ro")
    if not rodata:
        sys.exit("no .rodata input sections in %s" % map_path)
    pats = set()
    by_name = {}
    for sec in rodata:
        name = sec[2]
        m = re.match(r"^\.rodata\.\.Lswitch\.table\.(.*?)(\.\d+)?(\.rel)?$", name)
        if m:
            by_name.setdefault(m.group(1), []).append(name)
        elif re.match(r"^\.rodata\.(unlikely\.)?_R", name):
            by_name.setdefault(re.sub(r"^\.rodata\.(unlikely\.)?", "", name), []).append(name)
    for sec in map_inputs(map_path, ".text.steady"):
        sym = re.sub(r"^\.text\.(unlikely\.)?", "", sec[2])
        for name in by_name.get(sym, []):
            pats.add("*(%s)" % name)
            pats.add("*(%s)" % glob_v0(name))

    def containing(table, starts, addr):
        i = bisect.bisect_right(starts, addr) - 1
        if i >= 0 and table[i][0] <= addr < table[i][0] + max(table[i][1], 1):
            return table[i]
        return None

    ro_starts, rr_starts = [x[0] for x in rodata], [x[0] for x in relro]
    lo = hi = None
    for line in subprocess.run(["readelf", "-SW", exe], capture_output=True, text=True).stdout.splitlines():
        p = line.replace("[ ", "[").split()
        if len(p) > 5 and p[1] == ".text.steady":
            lo, hi = int(p[3], 16), int(p[3], 16) + int(p[5], 16)
    if lo is None:
        sys.exit("%s has no .text.steady" % exe)
    dis = subprocess.run(["objdump", "-d", "--no-show-raw-insn", "--start-address=%d" % lo,
                          "--stop-address=%d" % hi, exe], capture_output=True, text=True).stdout
    refs = set(int(x, 16) for x in re.findall(r"# ([0-9a-f]+) <", dis))
    relative = {}
    for line in subprocess.run(["readelf", "-rW", exe], capture_output=True, text=True).stdout.splitlines():
        p = line.split()
        if len(p) >= 4 and p[2] == "R_X86_64_RELATIVE":
            relative[int(p[0], 16)] = int(p[3], 16)
    places = sorted(relative)
    hot = set()
    for a in refs:
        hot.add(containing(rodata, ro_starts, a))
        d = containing(relro, rr_starts, a)
        if d:
            i = bisect.bisect_left(places, d[0])
            while i < len(places) and places[i] < d[0] + d[1]:
                hot.add(containing(rodata, ro_starts, relative[places[i]]))
                i += 1
    for sec in hot:
        if sec is None or sec[1] > MAX_GROUPED_CONSTANT or sec[3].startswith("<"):
            # lld shows merged strings and literals (`.rodata.str1.1`,
            # `.rodata.cst16`) as `<internal>`; GNU ld's map names their
            # object, so they are placed by object from its map.
            continue
        pats.add("%s(%s)" % (file_pattern(sec[3]), glob_v0(sec[2])))
    return pats


def object_text_patterns(map_path, exe, names):
    """`archive:member(.text)` lines for the profiled functions that sit in
    a plain `.text` input section (no section per function): the C library
    of the static musl build (`epoll_pwait`, `malloc`, `memcpy`, ...), whose
    `.text.<name>` lines match nothing. Names are looked up in `exe`, linked
    with the map `map_path`."""
    import bisect
    inputs = sorted(map_inputs(map_path, ".text") + map_inputs(map_path, ".text.steady"))
    starts = [x[0] for x in inputs]
    pats = set()
    for addr, ns in symbols(exe).items():
        if not names.intersection(ns):
            continue
        i = bisect.bisect_right(starts, addr) - 1
        if i >= 0 and inputs[i][0] <= addr < inputs[i][0] + inputs[i][1] and inputs[i][2] == ".text":
            pats.add("%s(.text)" % file_pattern(inputs[i][3]))
    return pats


def link_map(map_path, target=None):
    """Links the release `supervisor` again (same code) with a link map;
    returns the binary, or None if the target cannot be built here."""
    cmd = ["cargo", "rustc", "--release", "--bin", "supervisor"]
    exe = os.path.join(nm.ROOT, "target", "release", "supervisor")
    if target:
        cmd += ["--target", target]
        exe = os.path.join(nm.ROOT, "target", target, "release", "supervisor")
    if subprocess.call(cmd + ["--", "-C", "link-arg=-Wl,-Map=%s" % map_path], cwd=nm.ROOT) != 0:
        return None
    return exe


def main():
    if os.geteuid() != 0:
        sys.exit("run as root: the profile uses ptrace and /proc/<pid>/mem")
    names = set()
    if RUNS:
        work = tempfile.mkdtemp(prefix="steady-profile-")
        os.chmod(work, 0o755)
        mirror, key = nm.build_mirror(work)
    for run in range(RUNS):
        scenario, nth = SCENARIOS[run % len(SCENARIOS)]
        got, hits = one_profile(work, mirror, key, run, scenario, nth)
        names |= got
        print("run %d (steady after %s): %d functions entered" % (run + 1, scenario, hits))
    pats = set(p for n in names for p in exact(n) + pattern(n))
    data = set()
    if os.environ.get("MERGE") == "1" and os.path.exists(OUT):
        # Keep what earlier profiles found (paths this one did not take),
        # and the constants grouped so far: a constant that two objects
        # share is merged into the copy of the first one in its output
        # section, so a reference moves to the other copy once the first
        # is grouped; a second pass with MERGE=1 groups that one too.
        with open(OUT) as f:
            old = f.read()
        pats |= set(m.group(1) for m in re.finditer(r"^    \*\((\.text\.\S+)\)$", old, re.M))
        pats |= set(m.group(1) for m in re.finditer(r"^    (\*/\S+\(\.text\))$", old, re.M))
        i = old.find(".rodata.steady :")
        if i >= 0:
            data |= set(m.group(1) for m in re.finditer(r"^    (\S+\(\.rodata\S*\))$", old[i:], re.M))
    pats = llvm_variants(pats)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    write_script(OUT, pats, data)
    if os.environ.get("DATA", "1") == "1":
        # Which constants the grouped code refers to: link again with the
        # text order just written and a map, and read the references.
        # Both builds: the glibc one (lld) and the static musl one that
        # the packages ship (GNU ld, whose map also names the object of
        # each merged string section); the other build's lines match
        # nothing or a constant of the same object (harmless).
        tmp = tempfile.mkdtemp(prefix="steady-map-")
        for target in (None, "x86_64-unknown-linux-musl"):
            map_path = os.path.join(tmp, "%s.map" % (target or "host"))
            exe = link_map(map_path, target)
            if exe is None:
                print("no map of the %s build: its constants are not grouped" % (target or "host"))
                continue
            data |= data_patterns(map_path, exe)
            # Plain symbol names (C functions) of the profile, for the
            # objects that hold them.
            plain = set(m.group(1) for p in pats
                        for m in [re.match(r"^\.text\.([A-Za-z_][A-Za-z0-9_]*)$", p)] if m
                        and not m.group(1).startswith(("_R", "_ZN")))
            pats |= object_text_patterns(map_path, exe, plain)
        write_script(OUT, pats, data)
    print("%d functions, %d text and %d constant patterns -> %s" % (len(names), len(pats), len(data), OUT))


if __name__ == "__main__":
    main()
