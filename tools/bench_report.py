#!/usr/bin/env python3
"""bench_report — how fast is mp, against what, and did it get slower?

    bazel run //tools:bench_report -- <run> [--baseline <run>] [options]

<run> and the baseline are result sets written by `bazel run //benchmarks:all`
(reports/runs/<timestamp>/, reports/baseline/) or single Google Benchmark JSON
files; `latest` names the newest directory under reports/runs/. Relative paths
are taken from the directory you ran bazel in.

Writes report.md and report.html (self-contained: inline SVG charts, no
scripts, no network) into the run's directory, or --out DIR, and prints the
tables. With --baseline, compares every benchmark present in both runs: the
ratio of their median speeds, a two-sided Mann-Whitney U test over the
repetitions (as Google Benchmark's compare.py does), and a verdict:

  same        speed changed by less than the threshold
  faster      sped up by more than the threshold (and the U test agrees)
  REGRESSION  slowed down by more than the threshold, and the U test says it
              is not noise -- or there are too few repetitions to test (fewer
              than 4 in either run: use --repetitions 5 or more to let the test
              dismiss noise)
  noise       moved past the threshold, but the U test (p >= alpha) cannot
              tell it from run-to-run noise
  error       the benchmark failed in this run
  new / gone  present in only one of the two runs

Exit status: 0 when no mp benchmark is a REGRESSION or error, 1 when one is
(--fail-on all: any benchmark, peers included; --fail-on none: never),
2 when the inputs cannot be read.
"""
import argparse
import json
import os
import pathlib
import re
import sys

if __package__ in (None, ""):
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from tools import bench_lib as lib            # noqa: E402
from tools import bench_stats as stats        # noqa: E402
from tools import bench_html                  # noqa: E402

ALPHA = 0.05
EXIT_OK, EXIT_REGRESSION, EXIT_BAD_INPUT = 0, 1, 2


class Row:
    """One benchmark compared between the baseline and the current run."""

    def __init__(self, name, base, cur, threshold, alpha):
        self.name = name
        self.base, self.cur = base, cur
        self.parsed = lib.Name(name)
        self.metric = lib.common_metric(*(b for b in (base, cur) if b))
        self.base_median = base.median(self.metric) if base else None
        self.cur_median = cur.median(self.metric) if cur else None
        self.change = None
        self.utest = None
        self.tested = False
        self.verdict = self._verdict(threshold, alpha)

    def _verdict(self, threshold, alpha):
        if self.cur is None:
            return "gone"
        if self.cur.error and not self.cur.runs:
            return "error"
        if self.base is None or self.base_median is None:
            return "new"
        if self.cur_median is None:
            return "error"
        self.change = self.cur_median / self.base_median - 1.0
        x, y = self.base.samples(self.metric), self.cur.samples(self.metric)
        self.tested = stats.min_p(len(x), len(y)) < alpha
        if x and y:
            self.utest = stats.mann_whitney_u(x, y)
        significant = (not self.tested) or (self.utest is not None and self.utest.p < alpha)
        if self.change <= -threshold:
            return "REGRESSION" if significant else "noise"
        if self.change >= threshold:
            return "faster" if significant else "noise"
        return "same"

    @property
    def is_mp(self):
        return self.parsed.is_mp

    def counts_as_failure(self, fail_on):
        if fail_on == "none" or self.verdict not in ("REGRESSION", "error"):
            return False
        return fail_on == "all" or self.is_mp

    def cells(self):
        unit = lib.METRIC_UNITS[self.metric]
        p = "-" if self.utest is None else f"{self.utest.p:.3f}"
        if self.utest is not None and not self.tested:
            p = "- (too few reps)"
        change = "-" if self.change is None else f"{self.change * 100:+.1f}%"
        ratio = "-" if self.change is None else f"{1 + self.change:.3f}x"
        reps = f"{len(self.base.runs) if self.base else 0}/{len(self.cur.runs) if self.cur else 0}"
        verdict = self.verdict
        if self.verdict == "error" and self.cur is not None:
            verdict = f"error: {self.cur.error}"
        return [self.name, lib.si(self.base_median, unit), lib.si(self.cur_median, unit),
                ratio, change, p, reps, verdict]


COMPARE_HEADER = ["benchmark", "baseline", "current", "current/baseline", "change", "U-test p",
                  "reps b/c", "verdict"]


def compare(base, cur, threshold=0.10, alpha=ALPHA):
    """Rows for every benchmark in either result set, current order first."""
    names = list(cur.benches) + [n for n in base.benches if n not in cur.benches]
    return [Row(n, base.benches.get(n), cur.benches.get(n), threshold, alpha) for n in names]


def verdict_summary(rows, threshold, fail_on):
    count = lambda v: sum(r.verdict == v for r in rows)
    failing = [r for r in rows if r.counts_as_failure(fail_on)]
    text = (f"{count('REGRESSION')} regression(s) past {threshold * 100:g}%, "
            f"{count('faster')} faster, {count('same')} same, {count('noise')} noise, "
            f"{count('error')} error(s), {count('new')} new, {count('gone')} gone")
    return text, failing


def machine_line(rs):
    m = rs.machine or {}
    if not m:
        ctx = next(iter(rs.contexts.values()), {})
        return f"{ctx.get('num_cpus', '?')} CPUs, {ctx.get('host_name', '?')}, {ctx.get('date', '?')}"
    return (f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores, kernel {m.get('kernel', '?')}, "
            f"{m.get('compiler', '?')}, {m.get('python', 'no python3')}, "
            f"{m.get('timestamp', '?')}, git {m.get('git_commit', '?')}")


def render_markdown(cur, base, goal_results, rows, threshold, alpha, summary):
    out = ["# mp benchmark report", ""]
    out.append(f"- run: `{cur.path}` — {machine_line(cur)}")
    if base is not None:
        out.append(f"- baseline: `{base.path}` — {machine_line(base)}")
    note = (cur.machine or {}).get("run", {}).get("notes", [])
    for n in note:
        out.append(f"- note: {n}")
    out += ["", "## mp beside its peers (this run)", "",
            "Speeds (items/s, else bytes/s, else iterations/s), medians over repetitions; "
            "mp/peer > 1 means mp is faster.", ""]
    h, r = lib.glance_rows(cur, goal_results)
    out += [lib.md_table(h, r) if r else "_no workload with an mp benchmark_", ""]
    if goal_results:
        out += ["## Goals from the issues", ""]
        h, r = lib.goal_rows(goal_results)
        out += [lib.md_table(h, r), "", lib.goal_summary(goal_results), ""]
    if rows is not None:
        out += ["## Against the baseline", "",
                f"Threshold {threshold * 100:g}%, U-test alpha {alpha:g}. {summary}", ""]
        out += [lib.md_table(COMPARE_HEADER, [row.cells() for row in rows]), ""]
    return "\n".join(out)


def resolve_path(arg):
    """A path as the user typed it: relative to where `bazel run` was
    invoked; `latest` is the newest reports/runs/<timestamp>/."""
    ws = os.environ.get("BUILD_WORKSPACE_DIRECTORY")
    if arg == "latest":
        root = pathlib.Path(ws or pathlib.Path(__file__).resolve().parent.parent) / "reports" / "runs"
        # By the timestamp in the name (ci-20260101-120000 and 20260101-120000
        # alike), then by modification time.
        stamp = lambda p: (re.sub(r"^\D*", "", p.name), p.stat().st_mtime)
        runs = sorted((p for p in root.glob("*") if p.is_dir()), key=stamp) if root.is_dir() else []
        if not runs:
            raise lib.ResultError(f"`latest`: no runs under {root}")
        return runs[-1]
    p = pathlib.Path(arg).expanduser()
    if not p.is_absolute():
        p = pathlib.Path(os.environ.get("BUILD_WORKING_DIRECTORY", os.getcwd())) / p
    return p


def parse_threshold(text):
    t = text.strip().rstrip("%")
    try:
        v = float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"threshold must be a percentage like 10, got {text!r}")
    if v <= 0 or v >= 100:
        raise argparse.ArgumentTypeError(f"threshold must be between 0 and 100 (percent), got {text!r}")
    return v / 100.0


def main(argv=None):
    ap = argparse.ArgumentParser(prog="bench_report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="result set: run directory, JSON file, or `latest`")
    ap.add_argument("--baseline", help="result set to compare with (e.g. reports/baseline)")
    ap.add_argument("--threshold", type=parse_threshold, default=0.10,
                    help="slowdown (percent of speed) that counts as a regression; default 10")
    ap.add_argument("--alpha", type=float, default=ALPHA,
                    help="U-test significance level; default 0.05")
    ap.add_argument("--fail-on", choices=("mp", "all", "none"), default="mp",
                    help="which regressions make the exit status 1: mp benchmarks "
                         "(default), all (peers too), none")
    ap.add_argument("--goals", help="goals JSON (default: benchmarks/goals.json)")
    ap.add_argument("--out", help="directory for report.md/report.html (default: the run's)")
    ap.add_argument("--no-files", action="store_true", help="print only, write no report files")
    ap.add_argument("--quiet", action="store_true", help="print only the verdict summary")
    args = ap.parse_args(argv)

    try:
        cur_path = resolve_path(args.run)
        cur = lib.load(cur_path)
        base = lib.load(resolve_path(args.baseline)) if args.baseline else None
        goals_path = resolve_path(args.goals) if args.goals else lib.default_goals_path()
        goals = lib.load_goals(goals_path) if goals_path else []
    except lib.ResultError as e:
        print(f"bench_report: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT

    goal_results = lib.evaluate_goals(goals, cur)
    rows = compare(base, cur, args.threshold, args.alpha) if base is not None else None
    summary, failing = ("", [])
    if rows is not None:
        summary, failing = verdict_summary(rows, args.threshold, args.fail_on)

    if not args.quiet:
        h, r = lib.glance_rows(cur, goal_results)
        print("mp beside its peers (mp/peer > 1: mp faster)\n")
        print(lib.text_table(h, r) if r else "(no workload with an mp benchmark)")
        if goal_results:
            print("\n" + lib.goal_summary(goal_results))
        if rows is not None:
            print(f"\nagainst baseline {base.path}\n")
            print(lib.text_table(COMPARE_HEADER, [row.cells() for row in rows]))
    if rows is not None:
        print(f"\nverdict: {summary}")
        for r in failing:
            print(f"  {r.verdict} {r.name}: {r.cells()[4]}")

    if not args.no_files:
        out = resolve_path(args.out) if args.out else (cur_path if cur_path.is_dir() else cur_path.parent)
        out.mkdir(parents=True, exist_ok=True)
        md = render_markdown(cur, base, goal_results, rows, args.threshold, args.alpha, summary)
        (out / "report.md").write_text(md + "\n")
        page = bench_html.render(cur, base, goal_results, rows, args.threshold, args.alpha,
                                 summary, machine_line, COMPARE_HEADER)
        (out / "report.html").write_text(page)
        if rows is not None:
            (out / "comparison.json").write_text(json.dumps(
                {"baseline": str(base.path), "run": str(cur.path), "threshold": args.threshold,
                 "alpha": args.alpha, "summary": summary,
                 "rows": [{"name": r.name, "metric": r.metric, "baseline": r.base_median,
                           "current": r.cur_median, "change": r.change,
                           "p": r.utest.p if r.utest else None, "verdict": r.verdict}
                          for r in rows]}, indent=1) + "\n")
        print(f"\nreport: {out / 'report.md'}\n        {out / 'report.html'}")

    return EXIT_REGRESSION if failing else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
