#!/usr/bin/env python3
"""bench_report — how fast is mp, against what, and did it get slower?

    bazel run //tools:bench_report -- <run> [--baseline <run>] [options]

<run> and the baseline are result sets written by `bazel run //benchmarks:all`
(reports/runs/<timestamp>/, reports/baseline/) or single Google Benchmark JSON
files; `latest` names the newest directory under reports/runs/. Relative paths
are taken from the directory you ran bazel in.

Writes report.md and report.html (self-contained: inline SVG, matplotlib
charts inlined as PNG, no scripts, no network) into the run's directory, or
--out DIR, and prints a one-screen summary and compact tables (--full: every
peer and every compared row). With --baseline, compares every benchmark
present in both runs: the ratio of their median speeds, for mp's rows the
change of mp's ratio to its raw peer measured in the same run, a two-sided
Mann-Whitney U test over the repetitions (as Google Benchmark's compare.py
does), and a verdict:

  same          speed changed by less than the threshold
  inconclusive  moved past the threshold, but too few repetitions for the U
                test to call anything significant (use --repetitions 5); or
                an mp row without a raw peer in a noisy run
  noise         moved past the threshold; the U test (p >= alpha) cannot tell
                it from run-to-run noise
  REGRESSION    mp slowed down past the threshold, significantly, and so did
                its ratio to its same-run raw peer (rows without a raw peer:
                their own speed alone, in runs that were not noisy)
  faster        the same, sped up
  drift         the machine moved, not mp: a peer changed, or mp changed but
                its ratio to its raw peer held
  error         the benchmark failed in this run
  new / gone    present in only one of the two runs

Exit status: 0 when no mp benchmark is a REGRESSION or error, 1 when one is
(--fail-on all: peers that drifted slower too; --fail-on none: never),
2 when the inputs cannot be read.
"""
import argparse
import json
import os
import pathlib
import re
import statistics
import sys

if __package__ in (None, ""):
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from tools import bench_lib as lib            # noqa: E402
from tools import bench_stats as stats        # noqa: E402
from tools import bench_html                  # noqa: E402

ALPHA = 0.05
EXIT_OK, EXIT_REGRESSION, EXIT_BAD_INPUT = 0, 1, 2


class Row:
    """One benchmark compared between the baseline and the current run.

    `ref_base`/`ref_cur` are the same-run raw peer mp is judged against
    (bench_lib.reference_impl), None for peers and for workloads without one;
    `noisy` says the run's load samples flagged the suite this row ran in."""

    def __init__(self, name, base, cur, threshold, alpha, ref_base=None, ref_cur=None,
                 noisy=False):
        self.name = name
        self.base, self.cur = base, cur
        self.parsed = lib.Name(name)
        self.metric = lib.common_metric(*(b for b in (base, cur, ref_base, ref_cur) if b))
        self.base_median = base.median(self.metric) if base else None
        self.cur_median = cur.median(self.metric) if cur else None
        self.ref_base, self.ref_cur = ref_base, ref_cur
        self.noisy = noisy
        self.change = None          # current / baseline - 1, on the median speed
        self.utest = None
        self.tested = False         # enough repetitions for the U test to reach alpha
        self.ratio_change = None    # the same, on mp's ratio to its same-run raw peer
        self.ratio_utest = None
        self.why = ""
        self.verdict = self._verdict(threshold, alpha)

    @property
    def reference(self):
        return self.ref_cur.name.impl if self.ref_cur is not None else None

    def _ratio(self, alpha):
        """Compares mp's per-repetition ratios to its raw peer between the runs.
        Returns None without a raw peer in both runs, else (change, significant)."""
        if self.ref_base is None or self.ref_cur is None:
            return None
        x = lib.ratio_samples(self.base, self.ref_base, self.metric)
        y = lib.ratio_samples(self.cur, self.ref_cur, self.metric)
        if not x or not y:
            return None
        self.ratio_change = statistics.median(y) / statistics.median(x) - 1.0
        self.ratio_utest = stats.mann_whitney_u(x, y)
        return self.ratio_change, self.ratio_utest.p < alpha

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
        ratio = self._ratio(alpha) if self.is_mp else None
        if abs(self.change) < threshold:
            return "same"
        if not self.tested:
            self.why = (f"{len(x)} and {len(y)} repetitions cannot reach p < {alpha:g}: "
                        "rerun with --repetitions 5")
            return "inconclusive"
        if self.utest.p >= alpha:
            return "noise"
        slower = self.change < 0
        if not self.is_mp:
            self.why = "a peer moved: the machine, not mp"
            return "drift"
        if ratio is not None:
            r_change, r_significant = ratio
            moved = r_significant and (r_change <= -threshold if slower else r_change >= threshold)
            if not moved:
                self.why = (f"mp/{self.reference} moved {r_change * 100:+.1f}%: "
                            "the machine moved, not mp")
                return "drift"
            return "REGRESSION" if slower else "faster"
        if self.noisy:
            self.why = "noisy run and no raw peer in the same run to tell the machine from mp"
            return "inconclusive"
        return "REGRESSION" if slower else "faster"

    @property
    def is_mp(self):
        return self.parsed.is_mp

    def counts_as_failure(self, fail_on):
        if fail_on == "none":
            return False
        if self.verdict in ("REGRESSION", "error"):
            return fail_on == "all" or self.is_mp
        # --fail-on all counts a peer that slowed down past the threshold too.
        return (fail_on == "all" and self.verdict == "drift" and not self.is_mp
                and self.change is not None and self.change < 0)

    def cells(self):
        unit = lib.METRIC_UNITS[self.metric]
        p = "-" if self.utest is None else f"{self.utest.p:.3f}"
        if self.utest is not None and not self.tested:
            p = "- (too few reps)"
        change = "-" if self.change is None else f"{self.change * 100:+.1f}%"
        ratio = "-" if self.change is None else f"{1 + self.change:.3f}x"
        vs_peer = "-"
        if self.ratio_change is not None:
            vs_peer = f"{self.ratio_change * 100:+.1f}% vs {self.reference}"
        reps = f"{len(self.base.runs) if self.base else 0}/{len(self.cur.runs) if self.cur else 0}"
        verdict = self.verdict
        if self.verdict == "error" and self.cur is not None:
            verdict = f"error: {self.cur.error}"
        return [self.name, lib.si(self.base_median, unit), lib.si(self.cur_median, unit),
                ratio, change, vs_peer, p, reps, verdict]


COMPARE_HEADER = ["benchmark", "baseline", "current", "current/baseline", "change",
                  "mp/raw peer change", "U-test p", "reps b/c", "verdict"]
VERDICTS = ("REGRESSION", "faster", "same", "noise", "inconclusive", "drift", "error", "new",
            "gone")


def compare(base, cur, threshold=0.10, alpha=ALPHA, goals=()):
    """Rows for every benchmark in either result set, current order first."""
    names = list(cur.benches) + [n for n in base.benches if n not in cur.benches]
    base_w, cur_w = base.workloads(), cur.workloads()
    noisy = lib.noisy_suites(cur) | lib.noisy_suites(base)
    rows = []
    for n in names:
        b, c = base.benches.get(n), cur.benches.get(n)
        parsed = lib.Name(n)
        ref_b = ref_c = None
        if parsed.is_mp:
            impls = cur_w.get(parsed.workload) or base_w.get(parsed.workload) or {}
            ref = lib.reference_impl(impls, parsed.impl, goals)
            if ref is not None:
                ref_b = base_w.get(parsed.workload, {}).get(ref)
                ref_c = cur_w.get(parsed.workload, {}).get(ref)
        suite = (c or b).suite
        rows.append(Row(n, b, c, threshold, alpha, ref_b, ref_c, noisy=suite in noisy))
    return rows


def verdict_summary(rows, threshold, fail_on):
    count = lambda v: sum(r.verdict == v for r in rows)
    failing = [r for r in rows if r.counts_as_failure(fail_on)]
    text = (f"{count('REGRESSION')} regression(s) past {threshold * 100:g}%, "
            f"{count('faster')} faster, {count('same')} same, {count('noise')} noise, "
            f"{count('inconclusive')} inconclusive, {count('drift')} machine drift, "
            f"{count('error')} error(s), {count('new')} new, {count('gone')} gone")
    return text, failing


def machine_line(rs):
    m = rs.machine or {}
    if not m:
        ctx = next(iter(rs.contexts.values()), {})
        return f"{ctx.get('num_cpus', '?')} CPUs, {ctx.get('host_name', '?')}, {ctx.get('date', '?')}"
    label = f"[{m['label']}] " if m.get("label") else ""
    return (f"{label}{m.get('cpu', '?')}, {m.get('cores', '?')} cores, "
            f"kernel {m.get('kernel', '?')}, "
            f"{m.get('compiler', '?')}, {m.get('python', 'no python3')}, "
            f"{m.get('timestamp', '?')}, git {m.get('git_commit', '?')}")


def machine_drift(rows):
    """The median change of the raw peers that were compared: how much the
    machine itself moved between the two runs (None without peers)."""
    changes = [r.change for r in rows or () if not r.is_mp and r.change is not None
               and lib.is_raw_impl(r.parsed.impl)]
    return (statistics.median(changes), len(changes)) if changes else (None, 0)


def summary_lines(cur, base, goal_results, rows, summary):
    """The one-screen summary at the top of every report: noise, goals met and
    missed, the worst ratios against their goals, the verdict, the machine's
    drift, and the scaling at the most workers."""
    out = []
    noisy, reasons = lib.load_info(cur)
    if noisy:
        more = f" and {len(reasons) - 3} more" if len(reasons) > 3 else ""
        out.append("NOISY RUN: " + "; ".join(reasons[:3]) + more
                   + " (figures suspect; verdicts without a raw peer are inconclusive)")
    if base is not None and lib.load_info(base)[0]:
        out.append("NOISY BASELINE: " + "; ".join(lib.load_info(base)[1][:3]))
    if goal_results:
        out.append(lib.goal_summary(goal_results))
        ranked = sorted((r for r in goal_results if r.ratio is not None),
                        key=lambda r: r.ratio / r.goal.min_ratio)
        for r in ranked[:5]:
            out.append(f"  {'MISSED' if r.status == 'missed' else 'closest'}: "
                       f"{r.pair.workload} {r.pair.mp.name.impl}/{r.pair.peer.name.impl} "
                       f"{lib.ratio_text(r.ratio)} (goal {r.goal.bound}, #{r.goal.issue})")
    if rows is not None:
        out.append(f"against the baseline: {summary}")
        drift, n = machine_drift(rows)
        if drift is not None:
            out.append(f"machine drift: the raw peers moved {drift * 100:+.1f}% (median of {n})")
        for r in rows:
            if r.verdict == "REGRESSION" and r.is_mp:
                out.append(f"  REGRESSION {r.name}: {r.cells()[4]} ({r.cells()[5]})")
    for (family, series), impls in lib.scaling(cur).items():
        parts = []
        for impl in sorted(impls, key=lambda i: (not lib.is_mp_impl(i), i)):
            s = impls[impl]
            top = max(s.points)
            e = s.efficiency(top)
            if e is not None and top > 1:
                parts.append(f"{impl} {e:.0%}")
        if parts:
            top = max(max(s.points) for s in impls.values())
            out.append(f"scaling {family}/{series} at {top} workers: " + ", ".join(parts))
    return out


def render_markdown(cur, base, goal_results, rows, threshold, alpha, summary, full=True):
    out = ["# mp benchmark report", ""]
    out.append(f"- run: `{cur.path}` — {machine_line(cur)}")
    if base is not None:
        out.append(f"- baseline: `{base.path}` — {machine_line(base)}")
    note = (cur.machine or {}).get("run", {}).get("notes", [])
    for n in note:
        out.append(f"- note: {n}")
    out += ["", "## Summary", "", "```"] + summary_lines(cur, base, goal_results, rows,
                                                         summary) + ["```", ""]
    out += ["## mp beside its best peer (this run)", "",
            "Speeds (items/s, else bytes/s, else iterations/s), medians over repetitions; "
            "mp/peer > 1 means mp is faster.", ""]
    h, r = lib.compact_rows(cur, goal_results)
    out += [lib.md_table(h, r) if r else "_no workload with an mp benchmark_", ""]
    h, r = lib.scaling_rows(cur)
    if r:
        out += ["## Scaling", "", "Speed by workers; in brackets the efficiency, "
                "rate(W) / (W x rate(1)).", "", lib.md_table(h, r), ""]
    if goal_results:
        out += ["## Goals from the issues", ""]
        h, r = lib.goal_rows(goal_results)
        out += [lib.md_table(h, r), "", lib.goal_summary(goal_results), ""]
    if rows is not None:
        out += ["## Against the baseline", "",
                f"Threshold {threshold * 100:g}%, U-test alpha {alpha:g}. {summary}", ""]
        out += [lib.md_table(COMPARE_HEADER + ["why"], [row.cells() + [row.why] for row in rows]),
                ""]
    if full:
        out += ["## Every peer (this run)", ""]
        h, r = lib.glance_rows(cur, goal_results)
        out += [lib.md_table(h, r) if r else "_no workload with an mp benchmark_", ""]
    return "\n".join(out)


def print_tables(cur, base, goal_results, rows, full):
    """The terminal tables: compact by default (one line per workload, the
    scaling grids, the compared rows that are not `same`), everything with
    full."""
    if full:
        h, r = lib.glance_rows(cur, goal_results)
        print("mp beside its peers (mp/peer > 1: mp faster)\n")
    else:
        h, r = lib.compact_rows(cur, goal_results)
        print("mp beside its fastest peer (mp/peer > 1: mp faster; --full: every peer)\n")
    print(lib.text_table(h, r) if r else "(no workload with an mp benchmark)")
    h, r = lib.scaling_rows(cur)
    if r:
        print("\nscaling: speed by workers (efficiency: rate(W) / (W x rate(1)))\n")
        print(lib.text_table(h, r))
    if goal_results:
        print("\n" + lib.goal_summary(goal_results))
    if rows is not None:
        shown = rows if full else [row for row in rows if row.verdict != "same"]
        print(f"\nagainst baseline {base.path}"
              + ("" if full else f" ({len(rows) - len(shown)} rows `same` not shown; --full)")
              + "\n")
        if shown:
            print(lib.text_table(COMPARE_HEADER, [row.cells() for row in shown]))


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
    ap.add_argument("--full", action="store_true",
                    help="print every peer of every workload and every compared row (default: "
                         "one line per workload, and only the rows that changed)")
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
    rows = compare(base, cur, args.threshold, args.alpha, goals) if base is not None else None
    summary, failing = ("", [])
    if rows is not None:
        summary, failing = verdict_summary(rows, args.threshold, args.fail_on)

    if not args.quiet:
        print_tables(cur, base, goal_results, rows, args.full)
        print("\nsummary\n  " + "\n  ".join(summary_lines(cur, base, goal_results, rows,
                                                           summary)))
    elif lib.load_info(cur)[0]:
        print("NOISY RUN: " + "; ".join(lib.load_info(cur)[1][:3]))
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
                                 summary, machine_line, COMPARE_HEADER,
                                 summary_lines(cur, base, goal_results, rows, summary))
        (out / "report.html").write_text(page)
        if rows is not None:
            (out / "comparison.json").write_text(json.dumps(
                {"baseline": str(base.path), "run": str(cur.path), "threshold": args.threshold,
                 "alpha": args.alpha, "summary": summary,
                 "rows": [{"name": r.name, "metric": r.metric, "baseline": r.base_median,
                           "current": r.cur_median, "change": r.change,
                           "p": r.utest.p if r.utest else None,
                           "reference": r.reference, "ratio_change": r.ratio_change,
                           "verdict": r.verdict, "why": r.why}
                          for r in rows]}, indent=1) + "\n")
        print(f"\nreport: {out / 'report.md'}\n        {out / 'report.html'}")

    return EXIT_REGRESSION if failing else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
