#!/usr/bin/env python3
"""bazel run //benchmarks:all -- [--quick] [--filter REGEX] [--repetitions N]

Runs every benchmark binary (//benchmarks:<area>, one per <area>_bench.cc) and
every CPython peer script (benchmarks/peers/<area>_peer.py, run with the
machine's python3; skipped with a note when there is none), one at a time,
with a live progress line. Writes one result set under
reports/runs/<timestamp>/ in the source tree:

  <area>.json        Google Benchmark JSON of //benchmarks:<area>
  <area>_peer.json   the peer script's output, same schema
  <area>.log         the binary's console output and stderr
  context.json       machine (CPU, cores, kernel, compiler, python) and run
                     (flags, which suites ran, failed or were skipped, notes)
  report.md/.html    the tables and charts of tools/bench_report for this run

and prints a table to read at a glance: each workload, mp's speed, its
fastest peer's, mp/peer, and the issues' goals (benchmarks/goals.json) met or
missed (--full: every peer), then the scaling grids as efficiency. Around
every suite it records the load average, the CPU governor and the CPU time
other processes used (context.json: run.load); above --noisy-cores or
--noisy-load it warns in the live line and marks the run noisy.
Compare with the committed baseline afterwards:

  bazel run //tools:bench_report -- latest --baseline reports/baseline

Flags:
  --quick          CI mode: --benchmark_min_time=0.05, in every size sweep only
                   sizes <= 4096 (--quick-max-size), on the scaling grids only
                   1, 2 and all CPUs; peers get MP_BENCH_QUICK=1. The six
                   suites and their peers took 65 s on 2 cores at load 7-8.
  --filter REGEX   only benchmarks whose name matches (Google Benchmark's
                   --benchmark_filter for binaries, re.search on peers' names)
  --repetitions N  repeat each benchmark N times (bench_report's U test needs
                   e.g. 5 in the baseline and 3 in the run, or 4 and 4, to call
                   a change significant)
  --peer-repetitions N  runs of each peer script (default: --repetitions)
  --no-peers       skip the CPython peer scripts
  --full           end with every peer of every workload
  --label NAME     names the machine (context.json, the run's directory)
  --noisy-cores C  a suite is noisy when others keep > C cores busy (0.25)
  --noisy-load L   the run is noisy when the load per core is > L before it (1.0)
  -- ARGS          extra flags for every benchmark binary

Peer scripts may read these environment variables (all optional to honour):
MP_BENCH_QUICK=1 (run shorter), MP_PEER_MIN_TIME (seconds per workload; set
to 0.1 with --quick unless already set), MP_BENCH_FILTER (the --filter regex;
run_all also filters what peers print). When a peer prints one run per
benchmark, it is run --repetitions times and the runs are merged.

MPI benchmarks (MPI_BINARIES: //benchmarks:mpi_pool) run as MPI jobs:
`mpirun -n 3 --oversubscribe BINARY ...` (rank 0 measures, two worker ranks;
--allow-run-as-root when run as root), for --benchmark_list_tests too. Without
mpirun they are skipped with a note, as is a peer that prints no benchmark
and a "skipped" reason (peers/mpi_pool_peer.py, without mpirun or mpi4py).

Interruption: each binary and peer runs in its own process group (session),
so every process it forks is in that group. On Ctrl-C, SIGTERM or a timeout
(--timeout per binary, --peer-timeout per peer) the whole group gets SIGTERM,
then SIGKILL after 2 s: no benchmark child outlives the run. A binary that
exits but leaves processes behind in its group has them killed too, and the
run notes it. (A process that starts its own session escapes this; mp's
benchmarks do not do that. mpirun puts each rank in a process group of its
own, in the same session, and ends its ranks when it gets SIGTERM.)

Exit status: 0 when every suite ran, 1 when one failed or timed out, 130 when
interrupted. Missed goals are reported, not failed.
"""
import argparse
import datetime
import json
import os
import pathlib
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

HERE = pathlib.Path(os.path.dirname(os.path.abspath(__file__)))     # runfiles, not resolved
SOURCE = pathlib.Path(__file__).resolve().parent                     # the source tree
for root in (HERE.parent, SOURCE.parent):
    if (root / "tools" / "bench_lib.py").exists() and str(root) not in sys.path:
        sys.path.insert(0, str(root))
from tools import bench_lib as lib            # noqa: E402
from tools import bench_report                # noqa: E402

QUICK_MIN_TIME = "0.05"
QUICK_MAX_SIZE = 4096
QUICK_PEER_MIN_TIME = "0.1"   # seconds per workload, for peers that read MP_PEER_MIN_TIME
GRACE_SECONDS = 2.0
NOT_BINARIES = {"all", "run_all", "goals"}
MPI_BINARIES = {"mpi_pool"}   # run under mpirun (mpi_command)
MPI_RANKS = 3                 # rank 0 and two workers, as the Pool(2) benchmarks


# ---------------------------------------------------------------- discovery

def discover(bench_dir):
    """(binaries, peers): every executable without an extension in
    bench_dir, and every peers/*_peer.py, sorted by name."""
    bins, peers = [], []
    if bench_dir.is_dir():
        for p in sorted(bench_dir.iterdir()):
            if ("." in p.name or p.name in NOT_BINARIES or not p.is_file()
                    or not os.access(p, os.X_OK)):
                continue
            bins.append((p.name, p))
        peer_dir = bench_dir / "peers"
        if peer_dir.is_dir():
            peers = [(p.stem, p) for p in sorted(peer_dir.glob("*_peer.py"))]
    return bins, peers


_SIZE = re.compile(r"^(\d+)([kKmMgG]?)(i?B)?$")
_MULT = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def size_of(component):
    m = _SIZE.match(component)
    return int(m.group(1)) * _MULT[m.group(2).lower()] if m else None


def quick_selection(names, max_size=QUICK_MAX_SIZE):
    """Drops the big sizes of size sweeps: an arg position that takes several
    numeric values within one family+impl is a sweep; keep values <= max_size
    (at least the smallest). Single-valued numeric args are not sizes."""
    parsed = [lib.Name(n) for n in names]
    sweeps = {}
    for n in parsed:
        for i, a in enumerate(n.args.split("/") if n.args else []):
            if size_of(a) is not None:
                sweeps.setdefault((n.family, n.impl, i), set()).add(size_of(a))
    keep = []
    for raw, n in zip(names, parsed):
        ok = True
        for i, a in enumerate(n.args.split("/") if n.args else []):
            values = sweeps.get((n.family, n.impl, i))
            s = size_of(a)
            if s is not None and values and len(values) > 1 and s > max(max_size, min(values)):
                ok = False
        if ok:
            keep.append(raw)
    return keep


def quick_grid(names, cpus):
    """--quick trims the scaling grids (`.../cpu_work/<us>/<workers>`,
    `.../contended/<processes>`) to 1, 2 and all usable CPUs: on 2 cores
    that is the whole grid, on 16 it is 3 points of 5."""
    keep = []
    for raw in names:
        point = lib.grid_point(lib.Name(raw))
        if point is None or point[1] in (1, 2, cpus):
            keep.append(raw)
    return keep


def usable_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def posix_ere_escape(name):
    """Escapes a name for Google Benchmark's filter (std::regex, extended)."""
    return re.sub(r"([.\[\]{}()*+?^$|\\])", r"\\\1", name)


# ---------------------------------------------------------------- processes

class Child:
    """A benchmark process in its own session; kill() ends its whole group."""

    current = None          # the one running now, for the signal handlers

    def __init__(self, cmd, stdout, stderr, env=None):
        self.proc = subprocess.Popen(cmd, stdout=stdout, stderr=stderr, env=env,
                                     start_new_session=True, stdin=subprocess.DEVNULL)
        self.pgid = self.proc.pid
        Child.current = self

    def group_alive(self):
        """Whether a live (not zombie) process is left in the group."""
        try:
            os.killpg(self.pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        # killpg also succeeds on zombies waiting for init to reap them;
        # /proc tells live members apart.
        members = self.group_stats()
        if members is None:
            return True
        return any(fields[0] not in ("Z", "X") for fields in members)

    def group_stats(self):
        """The /proc/<pid>/stat fields after the name (state first) of every
        process in the group, or None without /proc."""
        try:
            pids = [p for p in os.listdir("/proc") if p.isdigit()]
        except OSError:
            return None
        out = []
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == self.pgid:
                out.append(fields)
        return out

    def group_cpu(self):
        """CPU seconds of the group's live members, each with the children
        it has reaped (utime + stime + cutime + cstime from /proc)."""
        members = self.group_stats()
        if members is None:
            return None
        hz = os.sysconf("SC_CLK_TCK")
        return sum(sum(int(x) for x in fields[11:15]) for fields in members) / hz

    def kill(self):
        """SIGTERM to the group, SIGKILL after a grace period; reaps."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + GRACE_SECONDS
            while time.monotonic() < deadline:
                if self.proc.poll() is not None and not self.group_alive():
                    break
                time.sleep(0.02)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    def done(self):
        """After the leader exited: kills what it left behind in its group.
        Returns True when there was something to kill."""
        Child.current = None
        if self.group_alive():
            self.kill()
            return True
        return False


class Interrupted(Exception):
    pass


def _on_signal(signum, frame):
    child = Child.current
    if child is not None:
        child.kill()
    raise Interrupted(signal.Signals(signum).name)


# ---------------------------------------------------------------- load

NOISY_OTHERS = 0.25      # cores busy with other work during a suite that make it noisy
NOISY_LOAD = 1.0         # load average per usable core before the run that makes it noisy


def _cpu_jiffies():
    """(busy, steal) seconds of every CPU since boot, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    steal = fields[7] if len(fields) > 7 else 0
    return (user + nice + system + irq + softirq) / hz, steal / hz


def become_subreaper():
    """Makes this process the reaper of its orphaned descendants (Linux
    PR_SET_CHILD_SUBREAPER), so that a helper a suite leaves behind (CPython's
    forkserver and resource tracker outlive the peer that started them) is
    reaped here and its CPU counted as the run's own, not as other work."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def reap_orphans(limit=2.0):
    """Waits (at most `limit` seconds) for the orphans this process adopted
    as subreaper to end, and reaps them, so _own_cpu() includes them."""
    until = time.monotonic() + limit
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return  # no child left
        if pid == 0:
            if time.monotonic() >= until:
                return
            time.sleep(0.01)


def _own_cpu():
    """CPU seconds of this process and every child it has waited for."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def governor():
    """The CPU frequency governor(s), e.g. "performance", or "none" where the
    machine exposes no cpufreq (most VMs)."""
    found = set()
    for p in pathlib.Path("/sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq/scaling_governor"):
        try:
            found.add(p.read_text().strip())
        except OSError:
            pass
    return ",".join(sorted(found)) or "none"


class LiveLoad:
    """While a binary runs: every second, the cores that processes outside
    its group kept busy over that second, for the live line's warning."""

    def __init__(self, child, limit, period=1.0):
        self.child, self.limit, self.period = child, limit, period
        self.last = self._now()

    def _now(self):
        return time.monotonic(), _cpu_jiffies(), self.child.group_cpu(), _own_cpu()

    def poll(self):
        """The others' cores when above the limit at the end of a period,
        0.0 when below, None between periods or without /proc."""
        t0, cpu0, group0, own0 = self.last
        if time.monotonic() - t0 < self.period:
            return None
        self.last = now = self._now()
        t1, cpu1, group1, own1 = now
        if None in (cpu0, cpu1, group0, group1) or group1 < group0:
            return None
        others = (cpu1[0] + cpu1[1] - cpu0[0] - cpu0[1]
                  - (group1 - group0) - (own1 - own0)) / (t1 - t0)
        return others if others > self.limit else 0.0


class LoadSample:
    """What else the machine did while one suite ran: the load average and
    governor before and after, and the CPU time of every process that is not
    this run (busy time from /proc/stat less this process and its children),
    in cores. A suite is noisy when others kept more than `others_limit`
    cores busy. The load average counts this run's own processes too, so it
    only judges the idle sample before the first suite (`check_load`): noisy
    when it is above `load_limit` per usable core."""

    def __init__(self, cores, others_limit=NOISY_OTHERS, load_limit=NOISY_LOAD,
                 check_load=False):
        self.cores, self.others_limit, self.load_limit = cores, others_limit, load_limit
        self.check_load = check_load
        self.before = self._now()
        self.after = None

    @staticmethod
    def _now():
        return {"t": time.monotonic(), "load": list(os.getloadavg()), "governor": governor(),
                "cpu": _cpu_jiffies(), "own": _own_cpu()}

    def finish(self):
        self.after = self._now()
        return self.record()

    def others_cores(self, until=None):
        end = until or self._now()
        if self.before["cpu"] is None or end["cpu"] is None:
            return None
        wall = end["t"] - self.before["t"]
        if wall <= 0.05:
            return None
        busy = end["cpu"][0] - self.before["cpu"][0]
        steal = end["cpu"][1] - self.before["cpu"][1]
        own = end["own"] - self.before["own"]
        return max(0.0, busy + steal - own) / wall

    def reasons(self):
        out = []
        per_core = self.before["load"][0] / max(1, self.cores)
        if self.check_load and per_core > self.load_limit:
            out.append(f"load average {self.before['load'][0]:.1f} on {self.cores} cores")
        others = self.others_cores(self.after)
        if others is not None and others > self.others_limit:
            out.append(f"other processes kept {others:.2f} cores busy")
        return out

    def record(self):
        others = self.others_cores(self.after)
        return {"load_before": [round(x, 2) for x in self.before["load"]],
                "load_after": [round(x, 2) for x in self.after["load"]],
                "governor_before": self.before["governor"],
                "governor_after": self.after["governor"],
                "others_cores": None if others is None else round(others, 3),
                "noisy": bool(self.reasons()), "reasons": self.reasons()}


# ---------------------------------------------------------------- progress

class Progress:
    """One live status line on a terminal; plain lines otherwise."""

    def __init__(self, total, stream=sys.stderr):
        self.total, self.stream = total, stream
        self.tty = stream.isatty()
        self.start = time.monotonic()
        self.index, self.suite = 0, ""
        self.warning = ""           # set while the machine looks busy

    def begin(self, suite, kind):
        self.index += 1
        self.suite = f"{suite} ({kind})"
        self.update(0, 0, "")
        if not self.tty:
            warn = f" (! {self.warning})" if self.warning else ""
            print(f"[{self.index}/{self.total}] {self.suite} ...{warn}", file=self.stream,
                  flush=True)

    def update(self, done, count, current):
        if not self.tty:
            return
        elapsed = int(time.monotonic() - self.start)
        bench = f" {done}/{count}" if count else ""
        warn = f"  ! {self.warning}" if self.warning else ""
        line = (f"[{self.index}/{self.total}] {self.suite}{bench}  {current}"
                f"  {elapsed // 60}:{elapsed % 60:02d}{warn}")
        width = shutil.get_terminal_size((100, 20)).columns - 1
        self.stream.write("\r\033[K" + line[:width])
        self.stream.flush()

    def end(self, status):
        if self.tty:
            self.stream.write("\r\033[K")
        print(f"[{self.index}/{self.total}] {self.suite}: {status}", file=self.stream, flush=True)


# ---------------------------------------------------------------- running

def mpi_command():
    """The launcher an MPI benchmark runs under, or None without mpirun."""
    mpirun = shutil.which("mpirun")
    if mpirun is None:
        return None
    cmd = [mpirun, "-n", str(MPI_RANKS), "--oversubscribe"]
    if os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    return cmd


def list_benchmarks(path, user_filter, timeout=60, launcher=()):
    cmd = [*launcher, str(path), "--benchmark_list_tests=true"]
    if user_filter:
        cmd.append(f"--benchmark_filter={user_filter}")
    child = Child(cmd, subprocess.PIPE, subprocess.PIPE)
    try:
        out, err = child.proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        raise RuntimeError(f"--benchmark_list_tests did not finish in {timeout}s")
    finally:
        child.done()
    if child.proc.returncode != 0:
        raise RuntimeError(f"--benchmark_list_tests exited {child.proc.returncode}: "
                           f"{err.decode(errors='replace').strip()[-300:]}")
    lines = [l.strip() for l in out.decode(errors="replace").splitlines()]
    return [l for l in lines if l and not l.startswith("Failed to match")]


def run_binary(name, path, out_dir, args, progress, notes):
    """Runs one benchmark binary; returns a status string."""
    launcher = []
    if name in MPI_BINARIES:
        launcher = mpi_command()
        if launcher is None:
            return ("skipped: mpirun not found, and this is an MPI benchmark "
                    "(install openmpi-bin: tools/setup.sh)")
    try:
        names = list_benchmarks(path, args.filter, launcher=launcher)
    except (RuntimeError, OSError) as e:
        return f"failed: {e}"
    if args.quick:
        names = quick_grid(quick_selection(names, args.quick_max_size), usable_cpus())
    if not names:
        return "skipped: no benchmark matches"
    reps = max(1, args.repetitions)
    cmd = [*launcher, str(path), f"--benchmark_out={out_dir / (name + '.json')}",
           "--benchmark_out_format=json", "--benchmark_color=false",
           f"--benchmark_repetitions={reps}"]
    if reps > 1:
        # Interleave the repetitions of mp and its in-binary peers, so that
        # drift on a shared machine hits both sides of every ratio alike.
        cmd.append("--benchmark_enable_random_interleaving=true")
    if args.filter or args.quick:
        cmd.append("--benchmark_filter=^(" + "|".join(posix_ere_escape(n) for n in names) + ")$")
    min_time = args.min_time or (QUICK_MIN_TIME if args.quick else None)
    if min_time:
        cmd.append(f"--benchmark_min_time={min_time}")
    cmd += args.extra
    total = len(names) * reps
    known = set(names)
    log_path = out_dir / (name + ".log")
    timeout = args.timeout or (120 if args.quick else 1800)
    with open(log_path, "wb") as log:
        log.write(("$ " + " ".join(cmd) + "\n").encode())
        log.flush()
        child = Child(cmd, subprocess.PIPE, log)
        done = [0, ""]

        def reader():
            for raw in child.proc.stdout:
                log.write(raw)
                first = raw.decode(errors="replace").split(" ", 1)[0]
                if first in known:
                    done[0] += 1
                    done[1] = first
        t = threading.Thread(target=reader, daemon=True)
        t.start()
        deadline = time.monotonic() + timeout
        timed_out = False
        live = LiveLoad(child, args.noisy_cores)
        while child.proc.poll() is None:
            if time.monotonic() > deadline:
                timed_out = True
                child.kill()
                break
            others = live.poll()
            if others:
                progress.warning = f"busy machine: others use {others:.1f} cores now"
            progress.update(done[0], total, done[1])
            time.sleep(0.1)
        t.join(timeout=5)
        leftovers = child.done()
    if leftovers:
        notes.append(f"{name}: left processes behind in its process group; killed them")
    if timed_out:
        _drop_partial(out_dir / (name + ".json"))
        return f"failed: timed out after {timeout}s (process group killed; see {log_path.name})"
    rc = child.proc.returncode
    if rc != 0:
        _drop_partial(out_dir / (name + ".json"))
        how = f"killed by signal {-rc}" if rc < 0 else f"exit status {rc}"
        return f"failed: {how} (see {log_path.name})"
    try:
        data = json.loads((out_dir / (name + ".json")).read_text())
        count = sum(1 for b in data.get("benchmarks", []) if b.get("run_type") != "aggregate")
    except (OSError, ValueError) as e:
        return f"failed: no readable JSON output ({e})"
    return f"ok: {count} runs"


def _drop_partial(path):
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def run_peer_once(python, path, env, timeout, log):
    child = Child([python, str(path)], subprocess.PIPE, log, env=env)
    try:
        out, _ = child.proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.done()
        raise RuntimeError(f"timed out after {timeout}s (process group killed)")
    if child.done():
        log.write(b"run_all: the peer left processes behind in its group; killed them\n")
    if child.proc.returncode != 0:
        raise RuntimeError(f"exit status {child.proc.returncode}")
    try:
        data = json.loads(out.decode(errors="replace"))
    except ValueError as e:
        raise RuntimeError(f"stdout is not JSON ({e})")
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise RuntimeError("stdout JSON has no \"benchmarks\" list")
    return data


def run_peer(stem, path, out_dir, args, python, progress):
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)          # Bazel's runfiles path is not the peer's business
    env.pop("PYTHONSAFEPATH", None)
    if args.quick:
        env["MP_BENCH_QUICK"] = "1"
        env.setdefault("MP_PEER_MIN_TIME", QUICK_PEER_MIN_TIME)
    if args.filter:
        env["MP_BENCH_FILTER"] = args.filter
    timeout = args.peer_timeout or (60 if args.quick else 300)
    reps = max(1, args.peer_repetitions or args.repetitions)
    merged = None
    with open(out_dir / (stem + ".log"), "wb") as log:
        rep = 0
        while rep < reps:
            progress.update(rep, reps, "repetition")
            try:
                data = run_peer_once(python, path, env, timeout, log)
            except (RuntimeError, OSError) as e:
                return f"failed: {e} (see {stem}.log)"
            entries = [b for b in data["benchmarks"] if isinstance(b, dict) and "name" in b]
            if not entries and data.get("skipped"):
                return f"skipped: {data['skipped']}"
            if args.filter:
                try:
                    rx = re.compile(args.filter)
                    entries = [b for b in entries if rx.search(b["name"])]
                except re.error:
                    pass
            if args.quick:
                keep = set(quick_grid(quick_selection([b["name"] for b in entries],
                                                      args.quick_max_size), usable_cpus()))
                entries = [b for b in entries if b["name"] in keep]
            names = [lib.normalize_name(b.get("run_name", b["name"])) for b in entries
                     if b.get("run_type", "iteration") == "iteration"]
            self_repeats = len(names) != len(set(names))
            for b in entries:
                b.setdefault("run_name", b["name"])
                b.setdefault("run_type", "iteration")
                if not self_repeats:
                    b["repetition_index"] = rep
                    b["repetitions"] = reps
            if merged is None:
                merged = {"context": data.get("context", {}), "benchmarks": entries}
            else:
                merged["benchmarks"].extend(entries)
            rep = reps if self_repeats else rep + 1
    if not merged["benchmarks"]:
        return "skipped: no benchmark matches"
    (out_dir / (stem + ".json")).write_text(json.dumps(merged, indent=1) + "\n")
    return f"ok: {len(merged['benchmarks'])} runs"


# ---------------------------------------------------------------- context

def _cmd_output(cmd, timeout=10):
    try:
        r = subprocess.run(cmd, capture_output=True, timeout=timeout, text=True)
        return r.stdout.strip() if r.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def _cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _compiler(binaries):
    """From the first binary's .comment section (what really built it)."""
    for _, path in binaries:
        out = _cmd_output(["readelf", "-p", ".comment", str(path)])
        found = re.findall(r"GCC: .*|clang version .*", out)
        if found:
            return found[-1].strip()
    first = _cmd_output(["c++", "--version"]).splitlines()
    return first[0] if first else "unknown"


def bundle_info(bench_dir):
    """BUNDLE.json of a bundle made by tools/bench_bundle.sh: the commit and
    the machine that built the binaries; {} when not running from a bundle."""
    try:
        return json.loads((bench_dir / "BUNDLE.json").read_text())
    except (OSError, ValueError):
        return {}


def machine_context(binaries, python, workspace, bundle=None, label=""):
    bundle = bundle or {}
    try:
        cores_usable = len(os.sched_getaffinity(0))
    except AttributeError:
        cores_usable = os.cpu_count()
    try:
        mem = next(l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal"))
        mem = f"{int(mem) // 1024} MiB"
    except (OSError, StopIteration, ValueError):
        mem = "unknown"
    uname = platform.uname()
    commit = _cmd_output(["git", "-C", str(workspace), "rev-parse", "--short", "HEAD"])
    dirty = _cmd_output(["git", "-C", str(workspace), "status", "--porcelain", "--untracked-files=no"])
    if not commit and bundle.get("git_commit"):
        commit, dirty = bundle["git_commit"], ""
    return {
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": uname.node,
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": cores_usable,
        "memory": mem,
        "kernel": f"{uname.system} {uname.release} {uname.version}",
        "compiler": bundle.get("compiler") or _compiler(binaries),
        "benchmark_library": _cmd_output(["dpkg-query", "-W", "-f=${Version}", "libbenchmark-dev"])
                             or "unknown",
        "python": (_cmd_output([python, "--version"]) if python else "") or "none (peers skipped)",
        "load_average": list(os.getloadavg()),
        "git_commit": (commit + ("-dirty" if dirty else "")) if commit else "unknown",
        "label": label or "",
        "governor": governor(),
        "bundle": bundle,
    }


# ---------------------------------------------------------------- main

def parse_args(argv):
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(prog="bazel run //benchmarks:all --", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--filter", default="", help="benchmark name regex")
    ap.add_argument("--quick", action="store_true", help="short run for CI")
    ap.add_argument("--repetitions", type=int, default=1, help="repetitions per benchmark")
    ap.add_argument("--peer-repetitions", type=int,
                    help="runs of each peer script (default: --repetitions)")
    ap.add_argument("--min-time", help="--benchmark_min_time for every binary (seconds)")
    ap.add_argument("--quick-max-size", type=int, default=QUICK_MAX_SIZE,
                    help="largest size kept in a size sweep with --quick")
    ap.add_argument("--no-peers", action="store_true", help="skip the CPython peer scripts")
    ap.add_argument("--python", default="python3", help="interpreter for the peer scripts")
    ap.add_argument("--timeout", type=float, help="seconds per binary (default 1800, quick 120)")
    ap.add_argument("--peer-timeout", type=float,
                    help="seconds per peer run (default 300, quick 60)")
    ap.add_argument("--out", help="result directory (default reports/runs/<timestamp>/)")
    ap.add_argument("--bench-dir", help="where the binaries and peers/ are (default: next to "
                    "this script)")
    ap.add_argument("--goals", help="goals JSON (default benchmarks/goals.json)")
    ap.add_argument("--no-report", action="store_true", help="do not write report.md/.html")
    ap.add_argument("--full", action="store_true",
                    help="end with every peer of every workload (default: one line per workload)")
    ap.add_argument("--label", default="",
                    help="names this machine in context.json and the run's directory "
                         "(e.g. c7i-16core when the run is made from a bundle elsewhere)")
    ap.add_argument("--noisy-cores", type=float, default=NOISY_OTHERS,
                    help="a suite is noisy when other processes keep more than this many "
                         f"cores busy while it runs (default {NOISY_OTHERS})")
    ap.add_argument("--noisy-load", type=float, default=NOISY_LOAD,
                    help="the run is noisy when the load average per usable core is above "
                         f"this before its first suite (default {NOISY_LOAD})")
    args = ap.parse_args(argv)
    args.extra = extra
    if args.repetitions < 1 or (args.peer_repetitions is not None and args.peer_repetitions < 1):
        ap.error("--repetitions and --peer-repetitions must be at least 1")
    if args.filter:
        try:
            re.compile(args.filter)
        except re.error as e:
            ap.error(f"--filter is not a valid regex: {e}")
    return args


def user_path(arg):
    """A path as typed: relative to where `bazel run` was invoked."""
    p = pathlib.Path(arg).expanduser()
    return p if p.is_absolute() else pathlib.Path(
        os.environ.get("BUILD_WORKING_DIRECTORY", os.getcwd())) / p


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    workspace = pathlib.Path(os.environ.get("BUILD_WORKSPACE_DIRECTORY") or SOURCE.parent)
    bench_dir = user_path(args.bench_dir) if args.bench_dir else HERE
    if args.goals:
        args.goals = str(user_path(args.goals))
    if args.out:
        out_dir = user_path(args.out)
    else:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        if args.label:
            stamp += "-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", args.label)
        out_dir = workspace / "reports" / "runs" / stamp
    out_dir.mkdir(parents=True, exist_ok=True)

    binaries, peers = discover(bench_dir)
    notes = []
    python = shutil.which(args.python)
    if args.no_peers:
        if peers:
            notes.append(f"peers skipped (--no-peers): {', '.join(s for s, _ in peers)}")
        peers = []
    elif peers and python is None:
        notes.append(f"{args.python} not found: CPython peers skipped "
                     f"({', '.join(s for s, _ in peers)}); install python3 to compare with CPython")
        peers = []
    if not binaries:
        notes.append(f"no benchmark binaries found in {bench_dir}")

    context = {"machine": machine_context(binaries, python, workspace, bundle_info(bench_dir),
                                          args.label)}
    run_info = {"flags": {"filter": args.filter, "quick": args.quick,
                          "repetitions": args.repetitions,
                          "peer_repetitions": args.peer_repetitions or args.repetitions,
                          "min_time": args.min_time or (QUICK_MIN_TIME if args.quick else None),
                          "extra": args.extra},
                "suites": {}, "notes": notes,
                "load": {"noisy": False, "reasons": [], "suites": {},
                         "limits": {"others_cores": args.noisy_cores,
                                    "load_per_core": args.noisy_load}}}
    cores = usable_cpus()
    load = run_info["load"]

    def note_load(where, sample):
        rec = sample.finish()
        if where == "idle":
            load["idle"] = rec
        else:
            load["suites"][where] = rec
        if rec["noisy"]:
            load["noisy"] = True
            for r in rec["reasons"]:
                text = f"{where}: {r}"
                load["reasons"].append(text)
            progress.warning = "busy machine: " + "; ".join(rec["reasons"])
        return rec

    def write_context():
        doc = dict(context["machine"])
        doc["run"] = run_info
        (out_dir / "context.json").write_text(json.dumps(doc, indent=1) + "\n")

    print(f"mp benchmarks: {len(binaries)} binaries, {len(peers)} peers -> {out_dir}",
          file=sys.stderr, flush=True)
    for n in notes:
        print(f"note: {n}", file=sys.stderr, flush=True)

    progress = Progress(len(binaries) + len(peers))
    # Half a second doing nothing first: what the machine does without us.
    become_subreaper()
    idle = LoadSample(cores, args.noisy_cores, args.noisy_load, check_load=True)
    time.sleep(0.5)
    rec = note_load("idle", idle)
    if rec["noisy"]:
        print(f"warning: the machine is busy before the run ({'; '.join(rec['reasons'])}): "
              "figures will be noisy", file=sys.stderr, flush=True)
    old = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    failed = False
    try:
        for name, path, kind in ([(n, p, "binary") for n, p in binaries]
                                 + [(n, p, "peer") for n, p in peers]):
            sample = LoadSample(cores, args.noisy_cores, args.noisy_load)
            progress.begin(name, kind)
            t0 = time.monotonic()
            if kind == "binary":
                status = run_binary(name, path, out_dir, args, progress, notes)
            else:
                status = run_peer(name, path, out_dir, args, python, progress)
            if status.startswith("ok"):
                status += f" in {time.monotonic() - t0:.1f}s"
            reap_orphans()
            rec = note_load(name, sample) if not status.startswith("skipped") else None
            if rec and rec["noisy"]:
                status += f" (noisy: {'; '.join(rec['reasons'])})"
            elif rec:
                progress.warning = ""
            run_info["suites"][name] = status
            failed |= status.startswith("failed")
            progress.end(status)
    except Interrupted as e:
        if progress.tty:
            sys.stderr.write("\n")
        notes.append(f"interrupted by {e}: partial results")
        run_info["interrupted"] = True
        write_context()
        print(f"\ninterrupted ({e}); benchmark processes killed; partial results in {out_dir}",
              file=sys.stderr)
        return 130
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    for name, status in run_info["suites"].items():
        if status.startswith("failed"):
            notes.append(f"{name} {status}")
    write_context()
    print_summary(out_dir, args, notes, load)
    return 1 if failed else 0


def print_summary(out_dir, args, notes, load=None):
    goals_path = pathlib.Path(args.goals) if args.goals else lib.default_goals_path()
    try:
        rs = lib.load(out_dir)
    except lib.ResultError as e:
        print(f"\nno results to summarise: {e}")
        return
    goals = []
    if goals_path:
        try:
            goals = lib.load_goals(goals_path)
        except lib.ResultError as e:
            notes.append(str(e))
    results = lib.evaluate_goals(goals, rs)
    if args.full:
        header, rows = lib.glance_rows(rs, results)
        print("\nmp beside its peers (speeds are medians; mp/peer > 1: mp is faster)\n")
    else:
        header, rows = lib.compact_rows(rs, results)
        print("\nmp beside its fastest peer (medians; mp/peer > 1: mp is faster; "
              "--full: every peer)\n")
    print(lib.text_table(header, rows) if rows else "(no workload with an mp benchmark)")
    header, rows = lib.scaling_rows(rs)
    if rows:
        print("\nscaling: speed by workers (efficiency: rate(W) / (W x rate(1)))\n")
        print(lib.text_table(header, rows))
    if goals:
        print("\n" + lib.goal_summary(results))
        missed = [r for r in results if r.status == "missed"]
        for r in missed:
            print(f"  missed #{r.goal.issue}: {r.pair.workload} mp/{r.pair.peer.name.impl} "
                  f"{lib.ratio_text(r.ratio)} (target {r.goal.bound}): {r.goal.text}")
    for n in notes:
        print(f"note: {n}")
    if load and load.get("noisy"):
        reasons = load["reasons"]
        more = ([f"... and {len(reasons) - 4} more (context.json: run.load)"]
                if len(reasons) > 4 else [])
        print("\nNOISY RUN: other work ran beside the benchmarks; figures and verdicts are "
              "suspect:\n  " + "\n  ".join(reasons[:4] + more))
    if not args.no_report:
        report_args = [str(out_dir), "--quiet"]
        if goals_path:
            report_args += ["--goals", str(goals_path)]
        bench_report.main(report_args)
    print(f"\nresults: {out_dir}")
    print(f"compare: bazel run //tools:bench_report -- {out_dir} --baseline reports/baseline")


if __name__ == "__main__":
    sys.exit(main())
