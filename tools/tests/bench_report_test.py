"""Verdicts, exit codes and report files of tools/bench_report.py."""
import contextlib
import io
import json
import os
import pathlib
import re
import sys
import tempfile
import unittest

ROOT = pathlib.Path(os.path.abspath(__file__)).parents[2]
sys.path.insert(0, str(ROOT))
from tools import bench_lib as lib           # noqa: E402
from tools import bench_report as br         # noqa: E402
from tools.tests import fake_bench as fb     # noqa: E402
from tools.tests import testmain             # noqa: E402

BASE5 = [100.0, 101.0, 99.0, 100.5, 99.5]


def scaled(values, factor):
    return [v * factor for v in values]


class VerdictTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.root = pathlib.Path(self.tmp.name)

    def tearDown(self):
        self.tmp.cleanup()

    def compare(self, base_values, cur_values, name="BM_Queue/mp/8", threshold=0.10):
        b = lib.load(fb.result_set(self.root / "b", {"q": fb.runs(name, base_values)}))
        c = lib.load(fb.result_set(self.root / "c", {"q": fb.runs(name, cur_values)}))
        [row] = br.compare(b, c, threshold)
        return row

    def test_change_within_threshold_is_same(self):
        row = self.compare(BASE5, scaled(BASE5, 0.95))
        self.assertEqual(row.verdict, "same")
        self.assertAlmostEqual(row.change, -0.05)

    def test_significant_slowdown_past_threshold_is_regression(self):
        row = self.compare(BASE5, scaled(BASE5, 0.8))
        self.assertEqual(row.verdict, "REGRESSION")
        self.assertTrue(row.tested)
        self.assertLess(row.utest.p, 0.05)

    def test_slowdown_the_u_test_cannot_tell_from_noise_is_noise(self):
        base = [100.0, 60.0, 140.0, 70.0, 130.0]
        cur = [95.0, 50.0, 125.0, 65.0, 85.0]      # median -15%, samples interleaved
        row = self.compare(base, cur)
        self.assertEqual(row.verdict, "noise")
        self.assertGreaterEqual(row.utest.p, 0.05)

    def test_slowdown_with_too_few_repetitions_to_test_is_inconclusive(self):
        row = self.compare([100.0], [80.0])
        self.assertFalse(row.tested)
        self.assertEqual(row.verdict, "inconclusive")
        self.assertFalse(row.counts_as_failure("mp"))
        row3 = self.compare([100.0, 101.0, 99.0], [80.0, 81.0, 79.0])
        self.assertFalse(row3.tested)                 # 3 vs 3 cannot reach p < 0.05
        self.assertEqual(row3.verdict, "inconclusive")
        self.assertIn("--repetitions 5", row3.why)

    def test_significant_speedup_is_faster(self):
        self.assertEqual(self.compare(BASE5, scaled(BASE5, 1.5)).verdict, "faster")

    def test_threshold_is_an_option(self):
        self.assertEqual(self.compare(BASE5, scaled(BASE5, 0.93), threshold=0.05).verdict, "REGRESSION")
        self.assertEqual(self.compare(BASE5, scaled(BASE5, 0.93), threshold=0.10).verdict, "same")

    def test_benchmarks_in_only_one_run_are_new_or_gone(self):
        b = lib.load(fb.result_set(self.root / "b", {"q": fb.runs("BM_Q/mp/old", [1.0])}))
        c = lib.load(fb.result_set(self.root / "c", {"q": fb.runs("BM_Q/mp/new", [1.0])}))
        self.assertEqual({r.name: r.verdict for r in br.compare(b, c)},
                         {"BM_Q/mp/new": "new", "BM_Q/mp/old": "gone"})

    def test_benchmark_that_now_fails_is_error(self):
        b = lib.load(fb.result_set(self.root / "b", {"q": fb.runs("BM_Q/mp/1", [1.0])}))
        c = lib.load(fb.result_set(self.root / "c", {"q": [{"name": "BM_Q/mp/1", "error_occurred": True,
                                                             "error_message": "child died"}]}))
        [row] = br.compare(b, c)
        self.assertEqual(row.verdict, "error")
        self.assertTrue(row.counts_as_failure("mp"))
        self.assertIn("child died", row.cells()[-1])


class SameRunPeerTest(unittest.TestCase):
    """mp is judged by its ratio to the raw peer measured in the same run as
    well as by its own speed: a slower machine is drift, not a regression."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.root = pathlib.Path(self.tmp.name)

    def tearDown(self):
        self.tmp.cleanup()

    def runs(self, name, mp, ring, cpython=None, noisy=False, reps=BASE5):
        files = {"queue": fb.runs("BM_Queue/mp/8/real_time", scaled(reps, mp))
                 + fb.runs("BM_Queue/raw_ring/8/real_time", scaled(reps, ring))
                 + fb.runs("BM_Pool/mp/apply", scaled(reps, mp))}
        if cpython is not None:
            files["pool_peer"] = fb.runs("BM_Pool/cpython/apply", scaled(reps, cpython))
        d = fb.result_set(self.root / name, files)
        if noisy:
            fb.noisy_context(d, ["queue"])
        return lib.load(d)

    def verdicts(self, base, cur):
        return {r.name: r for r in br.compare(base, cur)}

    def test_whole_machine_slower_is_drift_not_an_mp_regression(self):
        rows = self.verdicts(self.runs("b", 1.0, 1.5), self.runs("c", 0.7, 1.05))
        self.assertEqual(rows["BM_Queue/raw_ring/8"].verdict, "drift")
        mp = rows["BM_Queue/mp/8"]
        self.assertEqual(mp.verdict, "drift")
        self.assertEqual(mp.reference, "raw_ring")
        self.assertAlmostEqual(mp.ratio_change, 0.0, places=6)
        self.assertIn("the machine moved, not mp", mp.why)
        self.assertFalse(any(r.counts_as_failure("mp") for r in rows.values()
                             if r.parsed.family == "BM_Queue"))

    def test_mp_alone_slower_is_a_regression(self):
        rows = self.verdicts(self.runs("b", 1.0, 1.5), self.runs("c", 0.7, 1.5))
        mp = rows["BM_Queue/mp/8"]
        self.assertEqual(mp.verdict, "REGRESSION")
        self.assertAlmostEqual(mp.ratio_change, -0.3, places=6)
        self.assertTrue(mp.counts_as_failure("mp"))
        self.assertEqual(rows["BM_Queue/raw_ring/8"].verdict, "same")
        self.assertIn("-30.0% vs raw_ring", mp.cells())

    def test_a_peer_moving_is_drift_and_fails_only_with_fail_on_all(self):
        rows = self.verdicts(self.runs("b", 1.0, 1.5), self.runs("c", 1.0, 1.0))
        ring = rows["BM_Queue/raw_ring/8"]
        self.assertEqual(ring.verdict, "drift")
        self.assertFalse(ring.counts_as_failure("mp"))
        self.assertTrue(ring.counts_as_failure("all"))
        self.assertEqual(rows["BM_Queue/mp/8"].verdict, "same")

    def test_without_a_raw_peer_a_noisy_run_is_inconclusive(self):
        # BM_Pool/apply has only a CPython peer: nothing in the same binary
        # tells the machine's minute from mp's.
        quiet = self.verdicts(self.runs("b", 1.0, 1.5, cpython=0.01),
                              self.runs("c", 0.7, 1.05, cpython=0.007))
        self.assertEqual(quiet["BM_Pool/mp/apply"].verdict, "REGRESSION")
        noisy = self.verdicts(self.runs("b2", 1.0, 1.5, cpython=0.01),
                              self.runs("c2", 0.7, 1.05, cpython=0.007, noisy=True))
        self.assertEqual(noisy["BM_Pool/mp/apply"].verdict, "inconclusive")
        self.assertIn("noisy run", noisy["BM_Pool/mp/apply"].why)

    def test_a_goal_names_the_reference_peer(self):
        b = lib.Bench("BM_Queue/mp/8", "q")
        impls = {k: b for k in ("mp", "raw_a", "raw_ring", "cpython")}
        goal = lib.Goal({"family": "BM_Queue", "peer": "raw_ring", "min_ratio": 0.5})
        self.assertEqual(lib.reference_impl(impls, "mp", [goal]), "raw_ring")
        self.assertEqual(lib.reference_impl(impls, "mp"), "raw_a")
        self.assertIsNone(lib.reference_impl({"mp": b, "cpython": b}, "mp"))

    def test_the_committed_baseline_against_itself_has_no_regression(self):
        baseline = ROOT / "reports" / "baseline"
        rs = lib.load(baseline)
        rows = br.compare(rs, rs)
        self.assertTrue(rows)
        self.assertEqual({r.verdict for r in rows}, {"same"})


class MainTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.root = pathlib.Path(self.tmp.name)
        self.goals = self.root / "goals.json"
        self.goals.write_text(json.dumps({"goals": [
            {"issue": 3, "family": "BM_Queue", "peer": "raw_ring", "min_ratio": 0.5},
            {"issue": 3, "family": "BM_Queue", "peer": "cpython*", "args": ["8"], "min_ratio": 30}]}))

    def tearDown(self):
        self.tmp.cleanup()

    def run_set(self, name, mp_factor=1.0, ring_factor=1.0):
        return fb.result_set(self.root / name, {
            "queue": fb.runs("BM_Queue/mp/8/real_time", scaled(BASE5, 1e5 * mp_factor))
                     + fb.runs("BM_Queue/raw_ring/8/real_time", scaled(BASE5, 1.5e5 * ring_factor)),
            "queue_peer": fb.runs("BM_Queue/cpython/8", scaled(BASE5, 1e3))})

    def main(self, *argv):
        out = io.StringIO()
        err = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = br.main([str(a) for a in argv] + ["--goals", str(self.goals)])
        return code, out.getvalue() + err.getvalue()

    def test_no_regression_exits_zero_and_prints_verdict(self):
        self.run_set("base")
        self.run_set("cur", mp_factor=1.02)
        code, out = self.main(self.root / "cur", "--baseline", self.root / "base")
        self.assertEqual(code, 0, out)
        self.assertIn("verdict: 0 regression(s) past 10%", out)

    def test_mp_regression_exits_one(self):
        self.run_set("base")
        self.run_set("cur", mp_factor=0.7)
        code, out = self.main(self.root / "cur", "--baseline", self.root / "base")
        self.assertEqual(code, 1, out)
        self.assertIn("REGRESSION BM_Queue/mp/8: -30.0%", out)

    def test_fail_on_none_reports_but_exits_zero(self):
        self.run_set("base")
        self.run_set("cur", mp_factor=0.7)
        code, out = self.main(self.root / "cur", "--baseline", self.root / "base", "--fail-on", "none")
        self.assertEqual(code, 0)
        self.assertIn("1 regression(s)", out)

    def test_peer_regression_fails_only_with_fail_on_all(self):
        self.run_set("base")
        self.run_set("cur", ring_factor=0.7)
        self.assertEqual(self.main(self.root / "cur", "--baseline", self.root / "base")[0], 0)
        self.assertEqual(self.main(self.root / "cur", "--baseline", self.root / "base",
                                   "--fail-on", "all")[0], 1)

    def test_unreadable_input_exits_two_with_a_message(self):
        code, out = self.main(self.root / "nope")
        self.assertEqual(code, 2)
        self.assertIn("no such result set", out)

    def test_bad_threshold_is_a_usage_error(self):
        self.run_set("cur")
        with self.assertRaises(SystemExit) as e, contextlib.redirect_stderr(io.StringIO()):
            br.main([str(self.root / "cur"), "--threshold", "abc"])
        self.assertEqual(e.exception.code, 2)

    def test_run_alone_prints_one_line_per_workload_by_default(self):
        self.run_set("cur")
        code, out = self.main(self.root / "cur", "--no-files")
        self.assertEqual(code, 0)
        self.assertRegex(out, r"BM_Queue/8\s+mp\s+10\.0M items/s\s+raw_ring\s+15\.0M items/s\s+"
                              r"0\.666x\s+>= 0\.5x raw_ring met #3; >= 30x cpython met \(100x\) #3")
        self.assertIn("summary", out)
        self.assertIn("goals: 2 met, 0 missed, 0 without data", out)

    def test_full_prints_every_peer_with_goals(self):
        self.run_set("cur")
        code, out = self.main(self.root / "cur", "--no-files", "--full")
        self.assertEqual(code, 0)
        self.assertRegex(out, r"raw_ring\s+15\.0M items/s\s+0\.666x\s+>= 0\.5x met \(#3\)")
        self.assertRegex(out, r"cpython\s+100k items/s\s+100x\s+>= 30x met \(#3\)")
        self.assertIn("goals: 2 met, 0 missed, 0 without data", out)

    def test_reports_are_written_self_contained(self):
        self.run_set("base")
        self.run_set("cur", mp_factor=0.7)
        out_dir = self.root / "out"
        self.main(self.root / "cur", "--baseline", self.root / "base", "--out", out_dir)
        md = (out_dir / "report.md").read_text()
        self.assertIn("| BM_Queue/mp/8 |", md)
        self.assertIn("REGRESSION", md)
        page = (out_dir / "report.html").read_text()
        self.assertEqual(page.count("<svg"), 2)          # peers chart + baseline chart
        self.assertNotIn("<script", page.lower())
        self.assertIn("<h2>Summary</h2>", page)
        urls = re.findall(r"(?:src|href)\s*=\s*[\"']?(?:https?:)?//", page)
        self.assertEqual(urls, [])
        self.assertNotIn("@import", page)
        comparison = json.loads((out_dir / "comparison.json").read_text())
        self.assertEqual(comparison["rows"][0]["verdict"], "REGRESSION")

    def test_compact_comparison_hides_same_rows_and_full_shows_them(self):
        self.run_set("base")
        self.run_set("cur", mp_factor=0.7)
        code, out = self.main(self.root / "cur", "--baseline", self.root / "base", "--no-files")
        self.assertIn("(2 rows `same` not shown; --full)", out)
        self.assertNotRegex(out, r"BM_Queue/raw_ring/8 .* same")
        code, out = self.main(self.root / "cur", "--baseline", self.root / "base", "--no-files",
                              "--full")
        self.assertRegex(out, r"BM_Queue/raw_ring/8 .* same")

    def test_noisy_run_is_flagged_in_the_summary_and_the_reports(self):
        self.run_set("base")
        cur = self.run_set("cur")
        fb.noisy_context(cur, ["queue"])
        code, out = self.main(cur, "--baseline", self.root / "base")
        self.assertIn("NOISY RUN: queue: other processes kept 1.00 cores busy", out)
        self.assertIn("NOISY RUN", (cur / "report.md").read_text())
        self.assertIn('class="noisy"', (cur / "report.html").read_text())

    def test_huge_speedup_keeps_the_chart_small(self):
        fb.result_set(self.root / "base", {"q": fb.runs("BM_Queue/mp/8", [1.0, 1.1, 0.9, 1.0, 1.05])})
        fb.result_set(self.root / "cur", {"q": fb.runs("BM_Queue/mp/8", [1e6, 1.1e6, 0.9e6, 1e6, 1e6])})
        self.main(self.root / "cur", "--baseline", self.root / "base")
        page = (self.root / "cur" / "report.html").read_text()
        self.assertLess(len(page), 50_000)
        self.assertIn("(off scale) faster", page)

    def test_report_files_do_not_become_results_of_the_run(self):
        self.run_set("cur")
        self.main(self.root / "cur")
        self.assertTrue((self.root / "cur" / "report.html").exists())
        self.assertEqual(len(lib.load(self.root / "cur")), 3)

    def test_latest_names_the_newest_run_of_the_workspace(self):
        ws = self.root / "ws"
        fb.result_set(ws / "reports" / "runs" / "20260101-000000", {"q": fb.runs("BM_Q/mp/old", [1.0])})
        fb.result_set(ws / "reports" / "runs" / "20260102-000000", {"q": fb.runs("BM_Q/mp/new", [1.0])})
        fb.result_set(ws / "reports" / "runs" / "ci-20260101-120000", {"q": fb.runs("BM_Q/mp/ci", [1.0])})
        import os
        old = os.environ.get("BUILD_WORKSPACE_DIRECTORY")
        os.environ["BUILD_WORKSPACE_DIRECTORY"] = str(ws)
        try:
            self.assertEqual(br.resolve_path("latest").name, "20260102-000000")
        finally:
            if old is None:
                del os.environ["BUILD_WORKSPACE_DIRECTORY"]
            else:
                os.environ["BUILD_WORKSPACE_DIRECTORY"] = old


if __name__ == "__main__":
    testmain.main()
