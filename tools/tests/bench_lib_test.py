"""Parsing result sets, naming, mp/peer pairing and goals (tools/bench_lib.py)."""
import json
import os
import pathlib
import sys
import tempfile
import unittest

ROOT = pathlib.Path(os.path.abspath(__file__)).parents[2]
sys.path.insert(0, str(ROOT))
from tools import bench_lib as lib           # noqa: E402
from tools.tests import fake_bench as fb     # noqa: E402
from tools.tests import testmain             # noqa: E402


def goals(*dicts):
    return [lib.Goal(d) for d in dicts]


class NameTest(unittest.TestCase):
    def test_google_benchmark_modifiers_are_dropped(self):
        self.assertEqual(lib.normalize_name("BM_Queue/mp/64/real_time"), "BM_Queue/mp/64")
        self.assertEqual(lib.normalize_name("BM_X/mp/1/min_time:0.010/repeats:3"), "BM_X/mp/1")
        self.assertEqual(lib.normalize_name("BM_X/mp/iterations:5/threads:2"), "BM_X/mp/threads:2")

    def test_name_splits_into_family_impl_and_args(self):
        n = lib.Name("BM_Queue/raw_ring/4096/real_time")
        self.assertEqual((n.family, n.impl, n.args, n.workload),
                         ("BM_Queue", "raw_ring", "4096", "BM_Queue/4096"))
        self.assertFalse(n.is_mp)

    def test_mp_and_mp_prefixed_impls_are_mp(self):
        self.assertTrue(lib.Name("BM_Queue/mp/8").is_mp)
        self.assertTrue(lib.Name("BM_Spawn/mp_process").is_mp)
        self.assertFalse(lib.Name("BM_Spawn/raw_fork").is_mp)
        self.assertFalse(lib.Name("BM_Queue/cpython/8").is_mp)
        self.assertEqual(lib.Name("BM_Spawn/mp_process").workload, "BM_Spawn")


class LoadTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = pathlib.Path(self.tmp.name)

    def tearDown(self):
        self.tmp.cleanup()

    def test_repetitions_are_collected_and_aggregates_ignored(self):
        entries = fb.runs("BM_Queue/mp/8/real_time", [10.0, 12.0, 11.0])
        entries.append(dict(entries[0], name="BM_Queue/mp/8/real_time_mean",
                            run_type="aggregate", aggregate_name="mean", items_per_second=999.0))
        fb.result_set(self.dir, {"queue": entries})
        rs = lib.load(self.dir)
        b = rs.benches["BM_Queue/mp/8"]
        self.assertEqual(b.samples("items_per_second"), [10.0, 12.0, 11.0])
        self.assertEqual(b.median("items_per_second"), 11.0)
        self.assertEqual(b.suite, "queue")

    def test_context_and_report_files_are_not_results(self):
        fb.result_set(self.dir, {"spawn": fb.runs("BM_Spawn/mp_process", [1.0])})
        (self.dir / "context.json").write_text(json.dumps({"cpu": "X", "cores": 2}))
        (self.dir / "comparison.json").write_text("{}")
        rs = lib.load(self.dir)
        self.assertEqual(list(rs.benches), ["BM_Spawn/mp_process"])
        self.assertEqual(rs.machine["cpu"], "X")

    def test_failed_benchmark_keeps_its_error_message(self):
        fb.result_set(self.dir, {"pipe": [{"name": "BM_Pipe/mp/1", "run_type": "iteration",
                                           "error_occurred": True, "error_message": "boom"}]})
        b = lib.load(self.dir).benches["BM_Pipe/mp/1"]
        self.assertEqual((b.error, b.runs), ("boom", []))
        self.assertEqual(lib.figure(b, "items_per_second"), "error: boom")

    def test_unreadable_inputs_raise_result_error_naming_the_file(self):
        with self.assertRaisesRegex(lib.ResultError, "no such result set"):
            lib.load(self.dir / "missing")
        with self.assertRaisesRegex(lib.ResultError, "no benchmark JSON"):
            lib.load(self.dir)
        (self.dir / "bad.json").write_text("{not json")
        with self.assertRaisesRegex(lib.ResultError, "bad.json"):
            lib.load(self.dir)

    def test_json_without_benchmarks_list_is_rejected(self):
        (self.dir / "x.json").write_text(json.dumps({"context": {}}))
        with self.assertRaisesRegex(lib.ResultError, "benchmarks"):
            lib.load(self.dir)

    def test_iterations_per_second_comes_from_real_time_and_unit(self):
        run = {"real_time": 2.0, "time_unit": "ms"}
        self.assertAlmostEqual(lib.metric_value(run, "iterations_per_second"), 500.0)


class PairingTest(unittest.TestCase):
    def make(self, files):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        return lib.load(fb.result_set(tmp.name, files))

    def test_mp_is_paired_with_every_peer_of_its_workload_across_files(self):
        rs = self.make({
            "queue": fb.runs("BM_Queue/mp/64/real_time", [3e6]) + fb.runs("BM_Queue/raw_ring/64/real_time", [6e6])
                     + fb.runs("BM_Queue/mp/8/real_time", [5e6]),
            "queue_peer": fb.runs("BM_Queue/cpython/64", [1e5])})
        got = {w: (mp.name.impl, sorted((p.peer.name.impl, round(p.ratio, 3)) for p in ps))
               for w, mp, ps in lib.pairs(rs)}
        self.assertEqual(got["BM_Queue/64"], ("mp", [("cpython", 30.0), ("raw_ring", 0.5)]))
        self.assertEqual(got["BM_Queue/8"], ("mp", []))

    def test_spawn_names_pair_mp_process_with_raw_fork_and_std_thread(self):
        rs = self.make({"spawn": fb.runs("BM_Spawn/mp_process/real_time", [900.0])
                        + fb.runs("BM_Spawn/raw_fork/real_time", [1000.0])
                        + fb.runs("BM_Spawn/std_thread/real_time", [20000.0])})
        [(w, mp, ps)] = lib.pairs(rs)
        self.assertEqual((w, mp.name.impl), ("BM_Spawn", "mp_process"))
        self.assertEqual({p.peer.name.impl: round(p.ratio, 3) for p in ps},
                         {"raw_fork": 0.9, "std_thread": 0.045})

    def test_workload_without_mp_benchmark_is_not_paired(self):
        rs = self.make({"x": fb.runs("BM_X/raw/1", [1.0]) + fb.runs("BM_X/cpython/1", [2.0])})
        self.assertEqual(lib.pairs(rs), [])

    def test_ratio_uses_a_speed_both_sides_report(self):
        mp = fb.runs("BM_P/mp/1", [100.0])
        peer = fb.runs("BM_P/cpython/1", [50.0], field="bytes_per_second")
        for e in peer:
            e.pop("items_per_second", None)
        rs = self.make({"p": mp, "p_peer": peer})
        [(_, _, [pair])] = lib.pairs(rs)
        self.assertEqual(pair.metric, "iterations_per_second")   # items/s missing on the peer
        self.assertAlmostEqual(pair.ratio, 2.0)


class GoalTest(unittest.TestCase):
    def make(self, files):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        return lib.load(fb.result_set(tmp.name, files))

    def test_goal_is_met_missed_or_without_data(self):
        rs = self.make({"spawn": fb.runs("BM_Spawn/mp_process", [950.0]) + fb.runs("BM_Spawn/raw_fork", [1000.0]),
                        "thread": fb.runs("BM_Thread/mp/start_join", [10.0])
                        + fb.runs("BM_Thread/std_thread/start_join", [20.0])})
        res = lib.evaluate_goals(goals(
            {"issue": 2, "family": "BM_Spawn", "mp": "mp_process", "peer": "raw_fork", "min_ratio": 0.9},
            {"issue": 7, "family": "BM_Thread", "peer": "std_thread", "min_ratio": 0.8},
            {"issue": 3, "family": "BM_Queue", "peer": "raw_ring", "min_ratio": 0.5}), rs)
        self.assertEqual([r.status for r in res], ["met", "missed", "no data"])
        self.assertIn("0 without data", lib.goal_summary([]))
        self.assertEqual(lib.goal_summary(res), "goals: 1 met, 1 missed, 1 without data")

    def test_ratio_exactly_at_the_goal_is_met(self):
        rs = self.make({"s": fb.runs("BM_Spawn/mp_process", [900.0]) + fb.runs("BM_Spawn/raw_fork", [1000.0])})
        [r] = lib.evaluate_goals(goals({"family": "BM_Spawn", "mp": "mp_*", "peer": "raw_fork",
                                        "min_ratio": 0.9}), rs)
        self.assertEqual(r.status, "met")

    def test_max_slowdown_bounds_mp_time_against_peer_time(self):
        rs = self.make({"p": fb.runs("BM_PipePingPong/mp/1", [100.0])
                        + fb.runs("BM_PipePingPong/raw_socketpair/1", [110.0])
                        + fb.runs("BM_PipePingPong/mp/2", [100.0])
                        + fb.runs("BM_PipePingPong/raw_socketpair/2", [120.0])})
        res = lib.evaluate_goals(goals({"family": "BM_PipePingPong", "peer": "raw_socketpair",
                                        "max_slowdown": 1.15}), rs)
        self.assertEqual({r.pair.workload: r.status for r in res},
                         {"BM_PipePingPong/1": "met", "BM_PipePingPong/2": "missed"})

    def test_args_patterns_select_the_sizes_a_goal_covers(self):
        rs = self.make({"q": fb.runs("BM_Queue/mp/8", [31.0]) + fb.runs("BM_Queue/mp/4096", [1.0]),
                        "q_peer": fb.runs("BM_Queue/cpython/8", [1.0]) + fb.runs("BM_Queue/cpython/4096", [1.0])})
        res = lib.evaluate_goals(goals({"family": "BM_Queue", "peer": "cpython*", "args": ["8", "64"],
                                        "min_ratio": 30}), rs)
        self.assertEqual([(r.pair.workload, r.status) for r in res], [("BM_Queue/8", "met")])

    def test_goal_without_a_ratio_is_rejected(self):
        with self.assertRaisesRegex(lib.ResultError, "min_ratio"):
            lib.Goal({"family": "BM_X", "peer": "raw"})

    def test_repository_goals_cover_issues_2_to_7_14_19_and_20(self):
        gs = lib.load_goals(ROOT / "benchmarks" / "goals.json")
        self.assertEqual(sorted({g.issue for g in gs}), [2, 3, 4, 5, 6, 7, 14, 19, 20])
        spawn = [g for g in gs if g.family == "BM_Spawn"]
        self.assertEqual([(g.mp, g.peer, g.args, g.min_ratio) for g in spawn],
                         [("mp_process", "raw_fork", ["*"], 0.9),
                          ("mp_forkserver", "raw_fork", [""], 0.5),
                          ("mp_forkserver", "raw_fork", ["big_parent"], 10),
                          ("mp_spawn", "cpython_spawn", [""], 20)])

    def test_start_method_goals_pick_their_own_rows(self):
        gs = [g for g in lib.load_goals(ROOT / "benchmarks" / "goals.json") if g.issue == 14]
        rows = [("BM_Spawn/raw_fork", 1000.0), ("BM_Spawn/mp_forkserver", 400.0),
                ("BM_Spawn/raw_fork/big_parent", 20.0), ("BM_Spawn/mp_forkserver/big_parent", 300.0),
                ("BM_Spawn/mp_spawn", 800.0), ("BM_Spawn/cpython_spawn", 30.0)]
        runs = []
        for name, speed in rows:
            runs += fb.runs(name, [speed])
        rs = GoalTest.make(self, {"spawn": runs})
        res = lib.evaluate_goals(gs, rs)
        self.assertEqual(sorted((r.pair.workload, r.pair.mp.name.impl, r.status) for r in res),
                         [("BM_Spawn", "mp_forkserver", "missed"),
                          ("BM_Spawn", "mp_spawn", "met"),
                          ("BM_Spawn/big_parent", "mp_forkserver", "met")])


class ScalingTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.root = pathlib.Path(self.tmp.name)

    def tearDown(self):
        self.tmp.cleanup()

    def test_grid_points_are_read_as_efficiency(self):
        rs = lib.load(fb.result_set(self.root / "r", {"pool": (
            fb.runs("BM_Pool/mp/cpu_work/50/1/real_time", [1000.0])
            + fb.runs("BM_Pool/mp/cpu_work/50/2/real_time", [1800.0])
            + fb.runs("BM_Pool/mp/cpu_work/50/4/real_time", [2000.0])
            + fb.runs("BM_Lock/mp/contended/1/real_time", [10.0])
            + fb.runs("BM_Lock/mp/contended/2/real_time", [5.0])
            + fb.runs("BM_Pool/mp/work1ms/2/real_time", [5.0]))}))
        grids = lib.scaling(rs)
        self.assertEqual(set(grids), {("BM_Pool", "cpu_work/50"), ("BM_Lock", "contended")})
        s = grids[("BM_Pool", "cpu_work/50")]["mp"]
        self.assertAlmostEqual(s.efficiency(1), 1.0)
        self.assertAlmostEqual(s.efficiency(2), 0.9)
        self.assertAlmostEqual(s.efficiency(4), 0.5)
        self.assertAlmostEqual(grids[("BM_Lock", "contended")]["mp"].efficiency(2), 0.25)
        header, rows = lib.scaling_rows(rs)
        self.assertEqual(header, ["grid", "impl", "1w", "2w", "4w"])
        self.assertIn(["BM_Pool/cpu_work/50", "mp", "1.00k", "1.80k (90%)", "2.00k (50%)"], rows)

    def test_grid_point_needs_a_known_series(self):
        self.assertEqual(lib.grid_point(lib.Name("BM_Pool/mp/cpu_work/1000/16")),
                         ("cpu_work/1000", 16))
        self.assertEqual(lib.grid_point(lib.Name("BM_Lock/cpython/contended/2/real_time")),
                         ("contended", 2))
        self.assertIsNone(lib.grid_point(lib.Name("BM_Pool/mp/work1ms/2")))
        self.assertIsNone(lib.grid_point(lib.Name("BM_Queue/mp/64")))

    def test_ratio_samples_pair_repetitions_when_counts_agree(self):
        rs = lib.load(fb.result_set(self.root / "r", {"q": (
            fb.runs("BM_Q/mp/8", [10.0, 20.0, 30.0]) + fb.runs("BM_Q/raw/8", [20.0, 40.0, 60.0])
            + fb.runs("BM_Q/raw_two/8", [10.0, 20.0]))}))
        mp, raw, two = (rs.benches[n] for n in ("BM_Q/mp/8", "BM_Q/raw/8", "BM_Q/raw_two/8"))
        self.assertEqual(lib.ratio_samples(mp, raw, "items_per_second"), [0.5, 0.5, 0.5])
        self.assertEqual(lib.ratio_samples(mp, two, "items_per_second"), [10 / 15, 20 / 15, 2.0])


class CompactTableTest(unittest.TestCase):
    def test_one_line_per_workload_with_the_fastest_peer_and_every_goal(self):
        with tempfile.TemporaryDirectory() as tmp:
            rs = lib.load(fb.result_set(pathlib.Path(tmp) / "r", {"spawn": (
                fb.runs("BM_Spawn/mp_process", [900.0]) + fb.runs("BM_Spawn/mp_spawn", [500.0])
                + fb.runs("BM_Spawn/raw_fork", [1000.0])
                + fb.runs("BM_Spawn/std_thread", [20000.0])
                + fb.runs("BM_Pool/mp/cpu_work/1/1", [1.0]))}))
            results = lib.evaluate_goals(goals(
                {"issue": 2, "family": "BM_Spawn", "mp": "mp_process", "peer": "raw_fork",
                 "min_ratio": 0.9}), rs)
            header, rows = lib.compact_rows(rs, results)
        self.assertEqual(len(rows), 2)          # mp_process and mp_spawn; the grid left out
        self.assertEqual(rows[0][:6], ["BM_Spawn", "mp_process", "900 items/s", "std_thread",
                                       "20.0k items/s", "0.0450x"])
        self.assertEqual(rows[0][6], ">= 0.9x raw_fork met (0.900x) #2")


class FormatTest(unittest.TestCase):
    def test_si_prefixes_and_three_figures(self):
        self.assertEqual(lib.si(1234567, "items/s"), "1.23M items/s")
        self.assertEqual(lib.si(950.0), "950")
        self.assertEqual(lib.si(0.0123), "12.3m")
        self.assertEqual(lib.si(None), "-")

    def test_ratio_text_keeps_three_figures_and_never_rounds_up(self):
        self.assertEqual([lib.ratio_text(r) for r in (0.9, 0.8995, 0.4966, 12.34, 250.7, None)],
                         ["0.900x", "0.899x", "0.496x", "12.3x", "250x", "-"])

    def test_text_table_aligns_columns(self):
        t = lib.text_table(["a", "bb"], [["xxx", "y"]]).splitlines()
        self.assertEqual(t, ["a    bb", "---  --", "xxx  y"])


if __name__ == "__main__":
    testmain.main()
