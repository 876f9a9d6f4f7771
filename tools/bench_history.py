#!/usr/bin/env python3
"""bench_history — every run under reports/runs/ on one page.

    bazel run //tools:bench_history -- [RUNS_DIR] [--out FILE] [--baseline DIR]

Reads each result set under RUNS_DIR (default reports/runs/ of the workspace;
runs brought back from other machines included, see reports/README.md),
oldest first by the timestamp in the directory name, and writes
RUNS_DIR/history.html (self-contained: charts inlined as PNG): per benchmark
family, mp's ratio to its raw peer in the same run, one line per workload over
the runs, and a table of mp's absolute speeds. Ratios are the figures that
travel between runs and machines; absolute speeds say which machine it was.
Each run is labelled with its machine (the --label given to run_all, else
host and cores) and marked when its load samples called it noisy.
"""
import argparse
import html
import os
import pathlib
import re
import sys

if __package__ in (None, ""):
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from tools import bench_lib as lib            # noqa: E402
from tools import bench_plots as plots        # noqa: E402
from tools import bench_html                  # noqa: E402


def run_dirs(root):
    """Result sets under root, oldest first (by the timestamp in the name)."""
    if not root.is_dir():
        return []
    stamp = lambda p: (re.sub(r"^\D*", "", p.name), p.stat().st_mtime)
    return sorted((p for p in root.iterdir() if p.is_dir() and any(p.glob("*.json"))),
                  key=stamp)


def run_label(rs):
    m = rs.machine or {}
    who = m.get("label") or f"{m.get('host', '?')} {m.get('cores', '?')}c"
    noisy = " (noisy)" if lib.load_info(rs)[0] else ""
    return f"{rs.path.name} {who}{noisy}"


def collect(sets, goals=()):
    """({family: {workload: [(label, x, ratio)]}}, {name: {x: speed}})."""
    ratios, speeds = {}, {}
    for x, rs in enumerate(sets):
        label = run_label(rs)
        for workload, impls in rs.workloads().items():
            for impl, bench in impls.items():
                if not lib.is_mp_impl(impl) or lib.grid_point(bench.name) is not None:
                    continue
                metric = lib.common_metric(bench)
                speed = bench.median(metric)
                if speed is not None:
                    speeds.setdefault(bench.name.full, {})[x] = (speed, metric)
                ref = lib.reference_impl(impls, impl, goals)
                if ref is None:
                    continue
                pair = lib.Pair(workload, bench, impls[ref])
                if pair.ratio is not None:
                    key = f"{workload} {impl}/{ref}"
                    ratios.setdefault(bench.name.family, {}).setdefault(key, []).append(
                        (label, x, pair.ratio))
    return ratios, speeds


def render(sets, ratios, speeds):
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           "<title>mp benchmark history</title>",
           f"<style>{bench_html.CSS}</style></head><body>",
           "<h1>mp benchmark history</h1>",
           f'<p class="meta">{len(sets)} runs, oldest first. Run x on the charts is row x '
           "of the table below.</p>"]
    out.append(bench_html._table(["x", "run", "machine", "flags"], [
        [str(i), rs.path.name, bench_html_machine(rs), flags(rs)] for i, rs in enumerate(sets)]))
    if not plots.available():
        out.append(plots.missing_note())
    img = plots.history_chart(ratios, [str(i) for i in range(len(sets))])
    if img:
        out.append("<h2>mp over its raw peer, per run</h2>")
        out.append(img)
    out.append("<h2>mp's speed per run</h2>")
    header = ["benchmark"] + [str(i) for i in range(len(sets))]
    rows = []
    for name, by_run in sorted(speeds.items()):
        rows.append([name] + [lib.si(by_run[i][0], lib.METRIC_UNITS[by_run[i][1]])
                              if i in by_run else "-" for i in range(len(sets))])
    out.append(bench_html._table(header, rows))
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def bench_html_machine(rs):
    m = rs.machine or {}
    noisy = "; NOISY" if lib.load_info(rs)[0] else ""
    return (f"{m.get('label') or m.get('host', '?')}: {m.get('cpu', '?')}, "
            f"{m.get('cores', '?')} cores, git {m.get('git_commit', '?')}{noisy}")


def flags(rs):
    f = ((rs.machine or {}).get("run") or {}).get("flags") or {}
    parts = []
    if f.get("quick"):
        parts.append("--quick")
    if f.get("repetitions"):
        parts.append(f"x{f['repetitions']}")
    if f.get("filter"):
        parts.append(f"--filter {f['filter']}")
    return " ".join(parts)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="bench_history", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="?", help="directory of runs (default reports/runs)")
    ap.add_argument("--out", help="page to write (default RUNS/history.html)")
    ap.add_argument("--goals", help="goals JSON (default benchmarks/goals.json)")
    args = ap.parse_args(argv)
    ws = pathlib.Path(os.environ.get("BUILD_WORKSPACE_DIRECTORY")
                      or pathlib.Path(__file__).resolve().parent.parent)
    cwd = pathlib.Path(os.environ.get("BUILD_WORKING_DIRECTORY", os.getcwd()))
    root = (cwd / args.runs) if args.runs else ws / "reports" / "runs"
    sets = []
    for d in run_dirs(root):
        try:
            sets.append(lib.load(d))
        except lib.ResultError as e:
            print(f"bench_history: skipped {d.name}: {e}", file=sys.stderr)
    if not sets:
        print(f"bench_history: no runs under {root}", file=sys.stderr)
        return 2
    goals_path = (cwd / args.goals) if args.goals else lib.default_goals_path()
    goals = lib.load_goals(goals_path) if goals_path else []
    ratios, speeds = collect(sets, goals)
    out = (cwd / args.out) if args.out else root / "history.html"
    out.write_text(render(sets, ratios, speeds))
    print(f"history of {len(sets)} runs: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
