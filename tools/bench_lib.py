"""Reading benchmark result sets: names, figures, mp/peer pairs and goals.

Shared by benchmarks/run_all.py (the glance table at the end of a run) and
tools/bench_report.py (the regression report). Standard library only.

A *result set* (a "run") is a directory of Google Benchmark JSON files, one
per benchmark binary (`spawn.json`) or peer script (`spawn_peer.json`), plus
`context.json` describing the machine. reports/runs/<timestamp>/ and
reports/baseline/ are result sets.

Names. A benchmark is named `<family>/<impl>/<args...>`, e.g.
`BM_Queue/mp/64`, `BM_Queue/raw_ring/64`, `BM_Queue/cpython/64`,
`BM_Spawn/mp_process`. Google Benchmark's modifiers (`/real_time`,
`/min_time:0.01`, `/iterations:N`, `/repeats:N`, ...) are dropped. The
*workload* is the family plus the args (`BM_Queue/64`); every impl measured
on the same workload is compared with mp's. An impl is mp's when it is `mp`
or starts with `mp_`; everything else is a peer (a raw OS primitive, the
C++ standard library, CPython).

Figures. Every comparison is a *speed*: items/s when the benchmark reports
it, else bytes/s, else iterations/s (1/real_time). Ratios are mp speed /
peer speed, so >1 means mp is faster.
"""
import fnmatch
import json
import math
import os
import pathlib
import re
import statistics

# Google Benchmark name components that configure a run, not the workload.
_MODIFIER = re.compile(
    r"^(real_time|process_time|manual_time|min_time:.*|min_warmup_time:.*|"
    r"iterations:.*|repeats:.*)$")

# Files in a run directory that are not benchmark results.
NON_RESULT_FILES = {"context.json", "goals.json", "comparison.json"}


class ResultError(Exception):
    """A result set or goals file that cannot be read; the message says why."""


def normalize_name(name):
    """`BM_Queue/mp/64/real_time` -> `BM_Queue/mp/64` (modifiers dropped)."""
    parts = [p for p in name.split("/") if not _MODIFIER.match(p)]
    return "/".join(parts)


class Name:
    """A parsed benchmark name: family, impl, args."""

    __slots__ = ("full", "family", "impl", "args")

    def __init__(self, name):
        self.full = normalize_name(name)
        parts = self.full.split("/")
        self.family = parts[0]
        self.impl = parts[1] if len(parts) > 1 else ""
        self.args = "/".join(parts[2:])

    @property
    def workload(self):
        return f"{self.family}/{self.args}" if self.args else self.family

    @property
    def is_mp(self):
        return is_mp_impl(self.impl)

    def __repr__(self):
        return f"Name({self.full!r})"


def is_mp_impl(impl):
    return impl == "mp" or impl.startswith("mp_") or impl == ""


class Bench:
    """One benchmark of a result set: every repetition of it."""

    def __init__(self, name, suite):
        self.name = Name(name)
        self.suite = suite          # file stem it came from: spawn, queue_peer
        self.runs = []              # the JSON objects, run_type "iteration"
        self.error = None           # error_message when the benchmark failed

    def has_metric(self, metric):
        return bool(self.runs) and all(metric_value(r, metric) is not None
                                       for r in self.runs)

    def samples(self, metric):
        """The per-repetition speeds for `metric` (see METRICS)."""
        out = []
        for r in self.runs:
            v = metric_value(r, metric)
            if v is not None:
                out.append(v)
        return out

    def median(self, metric):
        s = self.samples(metric)
        return statistics.median(s) if s else None


# Speeds, best first. iterations/s comes from real_time and always exists.
METRICS = ("items_per_second", "bytes_per_second", "iterations_per_second")
METRIC_UNITS = {"items_per_second": "items/s", "bytes_per_second": "B/s",
                "iterations_per_second": "iter/s"}

_TIME_UNIT_NS = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}


def metric_value(run, metric):
    if metric == "iterations_per_second":
        t = run.get("real_time")
        unit = _TIME_UNIT_NS.get(run.get("time_unit", "ns"))
        if not isinstance(t, (int, float)) or t <= 0 or unit is None:
            return None
        return 1e9 / (t * unit)
    v = run.get(metric)
    return float(v) if isinstance(v, (int, float)) and v > 0 else None


def common_metric(*benches):
    """The best speed every one of `benches` (those that ran) reports."""
    present = [b for b in benches if b.runs]
    for m in METRICS:
        if all(b.has_metric(m) for b in present):
            return m
    return "iterations_per_second"


class ResultSet:
    """Every benchmark of one run, keyed by normalized name."""

    def __init__(self, path=None):
        self.path = pathlib.Path(path) if path else None
        self.benches = {}           # full name -> Bench
        self.contexts = {}          # suite -> the file's "context"
        self.machine = {}           # context.json, when present
        self.files = []

    def add_file(self, path):
        path = pathlib.Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ResultError(f"{path}: not a readable benchmark JSON file: {e}")
        self.add_json(data, path.stem, str(path))
        self.files.append(path)

    def add_json(self, data, suite, where="<json>"):
        if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
            raise ResultError(f"{where}: no \"benchmarks\" list (not Google Benchmark JSON)")
        self.contexts[suite] = data.get("context", {})
        for entry in data["benchmarks"]:
            if not isinstance(entry, dict) or "name" not in entry:
                raise ResultError(f"{where}: a benchmark entry without a name: {entry!r}")
            if entry.get("run_type", "iteration") != "iteration":
                continue            # aggregates: we compute our own medians
            key = normalize_name(entry.get("run_name", entry["name"]))
            bench = self.benches.get(key)
            if bench is None:
                bench = self.benches[key] = Bench(key, suite)
            if entry.get("error_occurred"):
                bench.error = entry.get("error_message") or "error"
                continue
            bench.runs.append(entry)

    def __len__(self):
        return len(self.benches)

    def workloads(self):
        """{workload: {impl: Bench}} in first-seen order."""
        out = {}
        for b in self.benches.values():
            out.setdefault(b.name.workload, {})[b.name.impl] = b
        return out


def load(path):
    """Reads a result set: a run directory, or one JSON file."""
    path = pathlib.Path(path)
    rs = ResultSet(path)
    if path.is_dir():
        ctx = path / "context.json"
        if ctx.exists():
            try:
                rs.machine = json.loads(ctx.read_text())
            except ValueError as e:
                raise ResultError(f"{ctx}: unreadable: {e}")
        files = sorted(p for p in path.glob("*.json") if p.name not in NON_RESULT_FILES)
        if not files:
            raise ResultError(f"{path}: no benchmark JSON files in this directory")
        for f in files:
            rs.add_file(f)
    elif path.is_file():
        rs.add_file(path)
    else:
        raise ResultError(f"{path}: no such result set (directory or JSON file)")
    return rs


# ---------------------------------------------------------------- pairing

class Pair:
    """mp's benchmark beside one peer's, on the same workload."""

    def __init__(self, workload, mp, peer):
        self.workload, self.mp, self.peer = workload, mp, peer
        self.metric = common_metric(mp, peer)

    @property
    def ratio(self):
        a, b = self.mp.median(self.metric), self.peer.median(self.metric)
        if a is None or b is None:
            return None
        return a / b


def primary_mp(impls):
    """The mp impl a workload's peers are compared with: `mp` if present,
    else `mp_process`, else the first `mp_*` in name order."""
    mps = sorted(i for i in impls if is_mp_impl(i))
    for preferred in ("mp", "mp_process"):  # mp_process: the default start method
        if preferred in mps:
            return preferred
    return mps[0] if mps else None


def pairs(rs):
    """Every (workload, mp, peer) of a result set: [(workload, mp Bench,
    [Pair...])], workloads without an mp benchmark left out."""
    out = []
    workloads = rs.workloads()
    # Families stay together, in the order they first appear.
    family_rank = {}
    for impls in workloads.values():
        family_rank.setdefault(next(iter(impls.values())).name.family, len(family_rank))
    ordered = sorted(workloads.items(), key=lambda kv: family_rank[
        next(iter(kv[1].values())).name.family])
    for workload, impls in ordered:
        mp = primary_mp(impls)
        if mp is None:
            continue
        peers = [Pair(workload, impls[mp], impls[i]) for i in impls if i != mp]
        out.append((workload, impls[mp], peers))
        # The workload's other mp impls (BM_Spawn's mp_forkserver, mp_spawn:
        # other start methods) each get a block of their own against the
        # non-mp peers, so each is read against the OS and CPython too.
        for other in sorted(i for i in impls if i != mp and is_mp_impl(i) and
                            i.startswith("mp_") and mp == "mp_process"):
            out.append((workload, impls[other],
                        [Pair(workload, impls[other], impls[i]) for i in impls
                         if not is_mp_impl(i)]))
    return out


# ---------------------------------------------------------------- goals

class Goal:
    """One target from an issue: mp at least `min_ratio` times a peer's speed.

    JSON: {"issue": 3, "family": "BM_Queue", "mp": "mp", "peer": "raw_ring",
    "args": ["*"], "min_ratio": 0.5, "text": "..."}; `mp`, `peer` and `args`
    are shell-style patterns (fnmatch) over the impl and the args; instead of
    min_ratio, "max_slowdown": 1.15 means "mp takes at most 1.15x the peer's
    time" (min_ratio = 1/1.15)."""

    def __init__(self, d):
        try:
            self.issue = d.get("issue")
            self.family = d["family"]
            self.mp = d.get("mp", "mp")
            self.peer = d["peer"]
            self.args = d.get("args", ["*"])
            if isinstance(self.args, str):
                self.args = [self.args]
            if "min_ratio" in d:
                self.min_ratio = float(d["min_ratio"])
                self.bound = f">= {self.min_ratio:g}x"
            else:
                self.min_ratio = 1.0 / float(d["max_slowdown"])
                self.bound = f">= 1/{float(d['max_slowdown']):g}x"
            self.text = d.get("text", "")
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
            raise ResultError(f"goal {d!r}: {e!r} (needs family, peer and "
                              "min_ratio or max_slowdown)")

    def label(self):
        args = "" if self.args in (["*"], [""]) else "/" + ",".join(self.args)
        return f"{self.family}/{self.mp}{args} vs {self.peer}"

    def matches(self, pair):
        n, p = pair.mp.name, pair.peer.name
        return (n.family == self.family and fnmatch.fnmatchcase(n.impl, self.mp)
                and fnmatch.fnmatchcase(p.impl, self.peer)
                and any(fnmatch.fnmatchcase(n.args, a) for a in self.args))


class GoalResult:
    def __init__(self, goal, pair):
        self.goal, self.pair = goal, pair
        self.ratio = pair.ratio if pair else None

    @property
    def status(self):
        if self.pair is None or self.ratio is None:
            return "no data"
        # A tiny tolerance so that 0.9 printed as 0.90x is not "missed".
        return "met" if self.ratio >= self.goal.min_ratio * (1 - 1e-9) else "missed"


def load_goals(path):
    path = pathlib.Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ResultError(f"{path}: goals file unreadable: {e}")
    goals = data.get("goals") if isinstance(data, dict) else data
    if not isinstance(goals, list):
        raise ResultError(f"{path}: expected {{\"goals\": [...]}}")
    return [Goal(g) for g in goals]


def evaluate_goals(goals, rs):
    """One GoalResult per (goal, matching pair); a goal nothing matches gets
    one result with no data, so a missing benchmark is visible."""
    # Every mp impl of a workload against every peer that is not mp's: a
    # workload may hold several mp impls (BM_Spawn/mp_process, mp_forkserver,
    # mp_spawn), each with goals of its own.
    all_pairs = []
    for workload, impls in rs.workloads().items():
        for m in impls:
            if not is_mp_impl(m):
                continue
            all_pairs += [Pair(workload, impls[m], impls[p]) for p in impls
                          if p != m and not is_mp_impl(p)]
    out = []
    for g in goals:
        hits = [GoalResult(g, p) for p in all_pairs if g.matches(p)]
        out.extend(hits or [GoalResult(g, None)])
    return out


def goals_for_pair(results, pair):
    key = (pair.mp.name.full, pair.peer.name.full)
    return [r for r in results
            if r.pair is not None and (r.pair.mp.name.full, r.pair.peer.name.full) == key]


# ---------------------------------------------------------------- formatting

def si(value, unit=""):
    """3 significant figures with an SI prefix: 1.23M items/s."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if value == 0:
        return f"0 {unit}".strip()
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1, ""),
                           (1e-3, "m"), (1e-6, "u"), (1e-9, "n")):
        if abs(value) >= factor:
            break
    v = value / factor
    digits = 0 if abs(v) >= 100 else 1 if abs(v) >= 10 else 2
    return f"{v:.{digits}f}{prefix} {unit}".strip() if unit else f"{v:.{digits}f}{prefix}"


def figure(bench, metric):
    if bench.error and not bench.runs:
        return f"error: {bench.error}"
    return si(bench.median(metric), METRIC_UNITS[metric])


def ratio_text(r):
    if r is None:
        return "-"
    # Three significant figures, truncated, never rounded up: 0.8995x must not
    # read as a met 0.9x goal.
    if r >= 100:
        return f"{math.floor(r):.0f}x"
    if r <= 0:
        return "0x"
    digits = max(0, 2 - math.floor(math.log10(r)))
    v = math.floor(r * 10 ** digits + 1e-9) / 10 ** digits
    return f"{v:.{digits}f}x"


def text_table(header, rows):
    """A fixed-width table, columns sized to fit."""
    rows = [[str(c) for c in r] for r in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    return "\n".join([line([str(h) for h in header]),
                      line(["-" * w for w in widths])] + [line(r) for r in rows])


def md_table(header, rows):
    esc = lambda c: str(c).replace("|", "\\|")
    out = ["| " + " | ".join(esc(h) for h in header) + " |",
           "|" + "|".join(" --- " for _ in header) + "|"]
    out += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def glance_rows(rs, goal_results):
    """Rows for the at-a-glance table: one line per workload with mp's figure,
    then one per peer with its figure, the ratio and the goals on that pair."""
    header = ["workload", "mp", "peer", "peer figure", "mp/peer", "goal"]
    rows = []
    for workload, mp, peers in pairs(rs):
        metric = common_metric(mp, *[p.peer for p in peers]) if peers else common_metric(mp)
        rows.append([workload, f"{mp.name.impl or mp.name.full}: {figure(mp, metric)}", "", "", "", ""])
        for p in peers:
            goals = goals_for_pair(goal_results, p)
            gtext = "; ".join(f"{r.goal.bound} {r.status.upper() if r.status == 'missed' else r.status}"
                              f" (#{r.goal.issue})" for r in goals)
            rows.append(["", "", p.peer.name.impl, figure(p.peer, p.metric),
                         ratio_text(p.ratio), gtext])
    return header, rows


def goal_rows(goal_results):
    header = ["issue", "goal", "workload", "mp/peer", "target", "status"]
    rows = []
    for r in goal_results:
        rows.append([f"#{r.goal.issue}", r.goal.label(),
                     r.pair.workload + " vs " + r.pair.peer.name.impl if r.pair else "-",
                     ratio_text(r.ratio), r.goal.bound, r.status])
    return header, rows


def goal_summary(goal_results):
    counts = {"met": 0, "missed": 0, "no data": 0}
    for r in goal_results:
        counts[r.status] += 1
    return f"goals: {counts['met']} met, {counts['missed']} missed, {counts['no data']} without data"


def default_goals_path():
    """benchmarks/goals.json: from the runfiles tree, else the workspace of
    `bazel run`, else the source tree this file lives in."""
    bases = [pathlib.Path(os.path.dirname(os.path.abspath(__file__))).parent]
    if os.environ.get("BUILD_WORKSPACE_DIRECTORY"):
        bases.append(pathlib.Path(os.environ["BUILD_WORKSPACE_DIRECTORY"]))
    bases.append(pathlib.Path(__file__).resolve().parent.parent)
    for base in bases:
        p = base / "benchmarks" / "goals.json"
        if p.exists():
            return p
    return None


# ---------------------------------------------------------------- reference peers

def is_cpython_impl(impl):
    return impl.startswith("cpython")


def is_raw_impl(impl):
    """A peer measured in the same binary as mp (raw OS primitive, C++
    standard library): neither mp's nor CPython's."""
    return not is_mp_impl(impl) and not is_cpython_impl(impl)


def reference_impl(impls, mp_impl, goals=()):
    """The raw peer mp's impl on a workload is judged against: one that a goal
    names for this mp impl, else the first `raw_*` in name order, else the
    first other raw peer; None when the workload has only CPython peers."""
    raw = sorted(i for i in impls if is_raw_impl(i))
    if not raw:
        return None
    any_bench = next(iter(impls.values()))
    for g in goals:
        if g.family != any_bench.name.family or not fnmatch.fnmatchcase(mp_impl, g.mp):
            continue
        if not any(fnmatch.fnmatchcase(any_bench.name.args, a) for a in g.args):
            continue
        hits = [i for i in raw if fnmatch.fnmatchcase(i, g.peer)]
        if hits:
            return hits[0]
    prefixed = [i for i in raw if i.startswith("raw_")]
    return (prefixed or raw)[0]


def ratio_samples(mp, peer, metric):
    """Per-repetition mp/peer ratios: repetition i of mp over repetition i of
    the peer when both ran the same number of times (interleaved in one
    binary, so the two sides of each ratio share their minute), else each
    mp sample over the peer's median."""
    a, b = mp.samples(metric), peer.samples(metric)
    if not a or not b:
        return []
    if len(a) == len(b):
        return [x / y for x, y in zip(a, b)]
    mid = statistics.median(b)
    return [x / mid for x in a]


# ---------------------------------------------------------------- scaling grids

# args `<series>/<workers>` of a scaling grid: BM_Pool/<impl>/cpu_work/<task_us>/<workers>
# and BM_Lock/<impl>/contended/<processes>.
_GRID = re.compile(r"^(?P<series>cpu_work/\d+|contended)/(?P<workers>\d+)$")


def grid_point(name):
    """(series, workers) when `name` is a point of a scaling grid, else None."""
    m = _GRID.match(name.args)
    return (m.group("series"), int(m.group("workers"))) if m else None


class Series:
    """One implementation's curve on one scaling grid: speed by workers."""

    def __init__(self, family, series, impl):
        self.family, self.series, self.impl = family, series, impl
        self.points = {}            # workers -> Bench

    @property
    def label(self):
        return f"{self.family}/{self.series}"

    def speed(self, workers, metric="items_per_second"):
        b = self.points.get(workers)
        return b.median(metric) if b else None

    def efficiency(self, workers, metric="items_per_second"):
        """rate(W) / (W x rate(1)); None without both figures."""
        one, many = self.speed(1, metric), self.speed(workers, metric)
        if not one or not many:
            return None
        return many / (workers * one)


def scaling(rs):
    """{(family, series): {impl: Series}} for every scaling grid of a run."""
    out = {}
    for b in rs.benches.values():
        point = grid_point(b.name)
        if point is None or not b.runs:
            continue
        series, workers = point
        key = (b.name.family, series)
        s = out.setdefault(key, {}).setdefault(b.name.impl, Series(b.name.family, series,
                                                                    b.name.impl))
        s.points[workers] = b
    return out


def scaling_rows(rs):
    """A table of efficiencies: one row per (grid, impl), a column per worker
    count."""
    grids = scaling(rs)
    workers = sorted({w for impls in grids.values() for s in impls.values() for w in s.points})
    header = ["grid", "impl"] + [f"{w}w" for w in workers]
    rows = []
    for (family, series), impls in grids.items():
        for impl in sorted(impls, key=lambda i: (not is_mp_impl(i), is_cpython_impl(i), i)):
            s = impls[impl]
            cells = []
            for w in workers:
                e = s.efficiency(w)
                speed = s.speed(w)
                cells.append("-" if speed is None else
                             f"{si(speed)}" + ("" if e is None or w == 1 else f" ({e:.0%})"))
            rows.append([f"{family}/{series}", impl] + cells)
    return header, rows


# ---------------------------------------------------------------- load

def load_info(rs):
    """(noisy, [reasons]) from context.json's run.load (run_all's load
    samples): noisy when any suite saw other work above the threshold."""
    run = (rs.machine or {}).get("run", {})
    load = run.get("load") or {}
    reasons = list(load.get("reasons", []))
    return bool(load.get("noisy")), reasons


def noisy_suites(rs):
    run = (rs.machine or {}).get("run", {})
    suites = (run.get("load") or {}).get("suites", {})
    return {name for name, s in suites.items() if s.get("noisy")}


# ---------------------------------------------------------------- compact table

def compact_rows(rs, goal_results):
    """One line per workload: mp's figure, its fastest peer, the ratio, and
    the goals on the workload (`>= 0.5x raw_ring met (#3)`). Scaling grids
    are left to scaling_rows."""
    header = ["workload", "mp", "mp figure", "best peer", "peer figure", "mp/peer", "goals"]
    rows = []
    for workload, mp, peers in pairs(rs):
        if grid_point(mp.name) is not None:
            continue
        best = None
        for p in peers:
            v = p.peer.median(p.metric)
            if p.peer.name.is_mp:
                continue
            if v is not None and (best is None or v > best.peer.median(best.metric)):
                best = p
        goals = [r for p in peers for r in goals_for_pair(goal_results, p)]
        gtext = "; ".join(
            f"{r.goal.bound} {r.pair.peer.name.impl} "
            f"{'MISSED' if r.status == 'missed' else r.status}"
            + ("" if best and r.pair.peer.name.full == best.peer.name.full
               else f" ({ratio_text(r.ratio)})") + f" #{r.goal.issue}"
            for r in goals)
        metric = best.metric if best else common_metric(mp)
        rows.append([workload, mp.name.impl or mp.name.full, figure(mp, metric),
                     best.peer.name.impl if best else "-",
                     figure(best.peer, best.metric) if best else "-",
                     ratio_text(best.ratio) if best else "-", gtext])
    return header, rows


def spread(bench, metric):
    """(min, max) over the repetitions, or None."""
    s = bench.samples(metric)
    return (min(s), max(s)) if s else None
