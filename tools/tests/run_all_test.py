"""benchmarks/run_all.py against fake benchmark binaries and peer scripts
(tools/tests/fake_bench.py): discovery, flags, result set, peers, the glance
table, failures, and cleanup of process groups on timeout and interruption."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time
import unittest

ROOT = pathlib.Path(os.path.abspath(__file__)).parents[2]
sys.path.insert(0, str(ROOT))
from tools.tests import fake_bench as fb     # noqa: E402
from tools.tests import testmain             # noqa: E402

RUN_ALL = ROOT / "benchmarks" / "run_all.py"

QUEUE = [{"name": f"BM_Queue/{impl}/{size}/real_time", "items_per_second": ips}
         for size in (8, 64, 4096, 65536, 1048576)
         for impl, ips in (("mp", 3e6), ("raw_ring", 4e6))]
SPAWN = [{"name": "BM_Spawn/mp_process/real_time", "items_per_second": 950.0},
         {"name": "BM_Spawn/raw_fork/real_time", "items_per_second": 1000.0},
         {"name": "BM_Spawn/std_thread/real_time", "items_per_second": 20000.0}]
QUEUE_PEER = [{"name": f"BM_Queue/cpython/{s}", "items_per_second": 5e4} for s in (8, 64, 1048576)]


def pid_dead(pid):
    """True when pid is gone or a zombie (killed, waiting to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def wait_for(predicate, seconds=10.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


class RunAllTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.root = pathlib.Path(self.tmp.name)
        self.bench = self.root / "bench"
        self.out = self.root / "out"
        self.record = self.root / "argv.jsonl"
        self.peer_record = self.root / "peer_env.jsonl"

    def tearDown(self):
        self.tmp.cleanup()

    def standard(self, queue_mode="ok"):
        fb.make_binary(self.bench, "queue", {"benchmarks": QUEUE, "mode": queue_mode,
                                             "record": str(self.record)})
        fb.make_binary(self.bench, "spawn", {"benchmarks": SPAWN})
        fb.make_peer(self.bench, "queue_peer", {"benchmarks": QUEUE_PEER,
                                                "record": str(self.peer_record)})

    def run_all(self, *flags, timeout=60, extra_env=None):
        env = dict(os.environ)
        env.pop("BUILD_WORKSPACE_DIRECTORY", None)
        env.update(extra_env or {})
        cmd = [sys.executable, str(RUN_ALL), "--bench-dir", str(self.bench), "--out", str(self.out),
               "--goals", str(ROOT / "benchmarks" / "goals.json"), *flags]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        return r.returncode, r.stdout + r.stderr

    def argvs(self):
        return [json.loads(l) for l in self.record.read_text().splitlines()]

    def test_discovers_every_binary_and_peer_and_writes_a_result_set(self):
        self.standard()
        (self.bench / "notes.txt").write_text("not a binary")
        code, out = self.run_all()
        self.assertEqual(code, 0, out)
        names = sorted(p.name for p in self.out.iterdir())
        for f in ("queue.json", "spawn.json", "queue_peer.json", "context.json",
                  "queue.log", "report.md", "report.html"):
            self.assertIn(f, names)
        ctx = json.loads((self.out / "context.json").read_text())
        for key in ("cpu", "cores", "kernel", "compiler", "python", "timestamp"):
            self.assertTrue(ctx.get(key), key)
        self.assertRegex(ctx["run"]["suites"]["queue"], r"^ok: 10 runs in \d+\.\ds\b")
        self.assertRegex(ctx["run"]["suites"]["queue_peer"], r"^ok: 3 runs in \d+\.\ds\b")
        self.assertIn("[1/3] queue (binary)", out)
        self.assertIn("[3/3] queue_peer (peer)", out)

    def test_compact_table_shows_one_line_per_workload(self):
        self.standard()
        code, out = self.run_all()
        self.assertRegex(out, r"BM_Spawn\s+mp_process\s+950 items/s\s+std_thread\s+20\.0k items/s"
                              r"\s+0\.0475x\s+>= 0\.9x raw_fork met \(0\.950x\) #2")
        self.assertRegex(out, r"BM_Queue/8\s+mp\s+3\.00M items/s\s+raw_ring\s+4\.00M items/s\s+"
                              r"0\.750x\s+>= 0\.5x raw_ring met #3; "
                              r">= 30x cpython met \(60\.0x\) #3")
        self.assertNotRegex(out, r"\n\s+raw_fork\s+1\.00k items/s")

    def test_load_and_governor_are_recorded_around_each_suite(self):
        self.standard()
        code, out = self.run_all("--noisy-cores", "1000", "--noisy-load", "1000")
        self.assertEqual(code, 0, out)
        load = json.loads((self.out / "context.json").read_text())["run"]["load"]
        self.assertEqual(set(load["suites"]), {"queue", "spawn", "queue_peer"})
        q = load["suites"]["queue"]
        for key in ("load_before", "load_after", "governor_before", "governor_after",
                    "others_cores"):
            self.assertIn(key, q)
        self.assertEqual(len(q["load_before"]), 3)
        self.assertFalse(load["noisy"])
        self.assertNotIn("NOISY", out)

    def test_a_busy_machine_is_warned_about_live_and_marks_the_run_noisy(self):
        self.standard()
        # Thresholds below zero: whatever the machine does counts as busy.
        code, out = self.run_all("--noisy-cores=-1", "--noisy-load=-1")
        self.assertEqual(code, 0, out)
        self.assertIn("warning: the machine is busy before the run", out)
        self.assertRegex(out, r"\[2/3\] spawn \(binary\) \.\.\. \(! busy machine: ")
        self.assertIn("NOISY RUN", out)
        load = json.loads((self.out / "context.json").read_text())["run"]["load"]
        self.assertTrue(load["noisy"])
        self.assertIn("NOISY RUN", (self.out / "report.md").read_text())

    def test_label_names_the_machine_in_the_context(self):
        self.standard()
        self.run_all("--label", "big-16core")
        ctx = json.loads((self.out / "context.json").read_text())
        self.assertEqual(ctx["label"], "big-16core")

    def test_glance_table_shows_mp_peers_ratios_and_goals(self):
        self.standard()
        code, out = self.run_all("--full")
        self.assertRegex(out, r"BM_Spawn\s+mp_process: 950 items/s")
        self.assertRegex(out, r"raw_fork\s+1\.00k items/s\s+0\.950x\s+>= 0\.9x met \(#2\)")
        self.assertRegex(out, r"cpython\s+50\.0k items/s\s+60\.0x\s+>= 30x met \(#3\)")
        self.assertRegex(out, r"raw_ring\s+4\.00M items/s\s+0\.750x\s+>= 0\.5x met \(#3\)")
        self.assertRegex(out, r"goals: \d+ met, 0 missed, \d+ without data")

    def test_quick_mode_shortens_min_time_and_drops_big_sizes(self):
        self.standard()
        code, out = self.run_all("--quick")
        self.assertEqual(code, 0, out)
        run = [a for a in self.argvs() if "--benchmark_list_tests=true" not in a][0]
        self.assertIn("--benchmark_min_time=0.05", run)
        data = json.loads((self.out / "queue.json").read_text())
        sizes = sorted({int(b["name"].split("/")[2]) for b in data["benchmarks"]})
        self.assertEqual(sizes, [8, 64, 4096])
        peer = json.loads((self.out / "queue_peer.json").read_text())
        self.assertEqual(sorted(b["name"] for b in peer["benchmarks"]),
                         ["BM_Queue/cpython/64", "BM_Queue/cpython/8"])
        env = json.loads(self.peer_record.read_text().splitlines()[0])
        self.assertEqual((env["MP_BENCH_QUICK"], env["MP_PEER_MIN_TIME"]), ("1", "0.1"))

    def test_filter_and_repetitions_are_passed_through(self):
        self.standard()
        code, out = self.run_all("--filter", "BM_Queue/mp/(8|64)/", "--repetitions", "3")
        self.assertEqual(code, 0, out)
        run = [a for a in self.argvs() if "--benchmark_list_tests=true" not in a][0]
        self.assertIn("--benchmark_repetitions=3", run)
        data = json.loads((self.out / "queue.json").read_text())
        self.assertEqual(len(data["benchmarks"]), 2 * 3)
        self.assertFalse((self.out / "spawn.json").exists())      # nothing matched
        ctx = json.loads((self.out / "context.json").read_text())
        self.assertEqual(ctx["run"]["suites"]["spawn"], "skipped: no benchmark matches")
        # The peer ran 3 times (it reports one run per benchmark) and was filtered.
        self.assertEqual(len(self.peer_record.read_text().splitlines()), 3)
        self.assertFalse((self.out / "queue_peer.json").exists())
        self.assertEqual(ctx["run"]["suites"]["queue_peer"], "skipped: no benchmark matches")

    def test_peer_repetitions_are_merged_with_repetition_indexes(self):
        self.standard()
        code, out = self.run_all("--filter", "BM_Queue/.*/8$|BM_Queue/.*/8/", "--repetitions", "2")
        peer = json.loads((self.out / "queue_peer.json").read_text())
        self.assertEqual([(b["name"], b["repetition_index"]) for b in peer["benchmarks"]],
                         [("BM_Queue/cpython/8", 0), ("BM_Queue/cpython/8", 1)])

    def test_peer_repetitions_can_differ_from_the_binaries(self):
        self.standard()
        code, out = self.run_all("--repetitions", "3", "--peer-repetitions", "1")
        self.assertEqual(code, 0, out)
        self.assertEqual(len(self.peer_record.read_text().splitlines()), 1)
        data = json.loads((self.out / "queue.json").read_text())
        self.assertEqual(len(data["benchmarks"]), len(QUEUE) * 3)

    def test_extra_arguments_after_double_dash_reach_every_binary(self):
        self.standard()
        self.run_all("--", "--benchmark_enable_random_interleaving=true")
        run = [a for a in self.argvs() if "--benchmark_list_tests=true" not in a][0]
        self.assertIn("--benchmark_enable_random_interleaving=true", run)

    def test_peers_are_skipped_with_a_note_when_python3_is_missing(self):
        self.standard()
        code, out = self.run_all("--python", "python3-definitely-missing")
        self.assertEqual(code, 0, out)
        self.assertIn("python3-definitely-missing not found: CPython peers skipped (queue_peer)", out)
        self.assertFalse((self.out / "queue_peer.json").exists())
        ctx = json.loads((self.out / "context.json").read_text())
        self.assertIn("peers skipped", ctx["python"])
        self.assertTrue(any("CPython peers skipped" in n for n in ctx["run"]["notes"]))

    def fake_mpirun(self):
        """A directory whose `mpirun` records its argv and runs the program
        after its own flags (-n N, --oversubscribe, --allow-run-as-root)."""
        bindir = self.root / "mpibin"
        bindir.mkdir()
        mpirun = bindir / "mpirun"
        mpirun.write_text(
            f"#!{sys.executable}\nimport json, os, sys\n"
            f"open({str(self.root / 'mpirun.jsonl')!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
            "a = sys.argv[1:]\n"
            "while a and a[0].startswith('-'):\n"
            "    a = a[2:] if a[0] == '-n' else a[1:]\n"
            "os.execv(a[0], a)\n")
        mpirun.chmod(0o755)
        return bindir

    def test_an_mpi_benchmark_runs_under_mpirun(self):
        fb.make_binary(self.bench, "mpi_pool", {"benchmarks": [
            {"name": "BM_MpiPool/mp/apply_async", "items_per_second": 5e5}],
            "record": str(self.record)})
        path = f"{self.fake_mpirun()}:{os.environ.get('PATH', '')}"
        code, out = self.run_all(extra_env={"PATH": path})
        self.assertEqual(code, 0, out)
        launches = [json.loads(l) for l in (self.root / "mpirun.jsonl").read_text().splitlines()]
        self.assertEqual(len(launches), 2, launches)  # the listing, then the run
        for argv in launches:
            self.assertEqual(argv[:3], ["-n", "3", "--oversubscribe"])
            self.assertIn(str(self.bench / "mpi_pool"), argv)
        self.assertTrue((self.out / "mpi_pool.json").exists())

    def test_an_mpi_benchmark_is_skipped_with_a_note_without_mpirun(self):
        fb.make_binary(self.bench, "mpi_pool", {"benchmarks": [
            {"name": "BM_MpiPool/mp/apply_async", "items_per_second": 5e5}],
            "record": str(self.record)})
        fb.make_binary(self.bench, "spawn", {"benchmarks": SPAWN})
        empty = self.root / "empty"
        empty.mkdir()
        code, out = self.run_all(extra_env={"PATH": str(empty)})
        self.assertEqual(code, 0, out)
        self.assertIn("mpi_pool (binary): skipped: mpirun not found", out)
        self.assertTrue((self.out / "spawn.json").exists())
        self.assertFalse((self.out / "mpi_pool.json").exists())

    def test_a_peer_that_says_why_it_skipped_is_reported_as_skipped(self):
        peers = self.bench / "peers"
        peers.mkdir(parents=True)
        (peers / "mpi_pool_peer.py").write_text(
            "import json\nprint(json.dumps({'benchmarks': [], 'skipped': 'no mpi4py here'}))\n")
        fb.make_binary(self.bench, "spawn", {"benchmarks": SPAWN})
        code, out = self.run_all()
        self.assertEqual(code, 0, out)
        self.assertIn("mpi_pool_peer (peer): skipped: no mpi4py here", out)

    def test_failing_binary_fails_the_run_but_others_still_run(self):
        self.standard(queue_mode="crash")
        code, out = self.run_all()
        self.assertEqual(code, 1)
        self.assertIn("queue (binary): failed: exit status 3", out)
        self.assertTrue((self.out / "spawn.json").exists())
        self.assertFalse((self.out / "queue.json").exists())

    def test_broken_peer_output_is_reported(self):
        fb.make_binary(self.bench, "spawn", {"benchmarks": SPAWN})
        fb.make_peer(self.bench, "spawn_peer", {"benchmarks": [], "mode": "garbage"})
        code, out = self.run_all()
        self.assertEqual(code, 1)
        self.assertIn("spawn_peer (peer): failed: stdout is not JSON", out)

    def test_timeout_kills_the_binary_and_every_process_it_forked(self):
        pidfile = self.root / "child.pid"
        fb.make_binary(self.bench, "pipe", {"benchmarks": SPAWN, "mode": "hang",
                                            "pidfile": str(pidfile)})
        t0 = time.monotonic()
        code, out = self.run_all("--timeout", "2")
        self.assertLess(time.monotonic() - t0, 30)
        self.assertEqual(code, 1)
        self.assertIn("timed out after 2.0s (process group killed", out)
        self.assertTrue(wait_for(lambda: pid_dead(int(pidfile.read_text()))))

    def test_processes_left_behind_by_a_finished_binary_are_killed(self):
        pidfile = self.root / "child.pid"
        fb.make_binary(self.bench, "sync", {"benchmarks": SPAWN, "mode": "orphan",
                                            "pidfile": str(pidfile)})
        code, out = self.run_all()
        self.assertEqual(code, 0, out)
        self.assertIn("sync: left processes behind in its process group; killed them", out)
        self.assertTrue(wait_for(lambda: pid_dead(int(pidfile.read_text()))))

    def test_interrupt_kills_the_running_benchmark_group_and_keeps_partial_results(self):
        pidfile = self.root / "child.pid"
        fb.make_binary(self.bench, "a_first", {"benchmarks": SPAWN})
        fb.make_binary(self.bench, "b_hang", {"benchmarks": SPAWN, "mode": "hang",
                                              "pidfile": str(pidfile)})
        env = dict(os.environ)
        env.pop("BUILD_WORKSPACE_DIRECTORY", None)
        proc = subprocess.Popen([sys.executable, str(RUN_ALL), "--bench-dir", str(self.bench),
                                 "--out", str(self.out)], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=env)
        try:
            self.assertTrue(wait_for(pidfile.exists, 30), "the hanging benchmark never started")
            child = int(pidfile.read_text())
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.assertEqual(proc.returncode, 130, out)
        self.assertIn("interrupted (SIGINT); benchmark processes killed", out)
        self.assertTrue(wait_for(lambda: pid_dead(child)))
        self.assertTrue((self.out / "a_first.json").exists())
        ctx = json.loads((self.out / "context.json").read_text())
        self.assertTrue(ctx["run"]["interrupted"])

    def test_no_binaries_is_a_note_not_a_crash(self):
        self.bench.mkdir()
        code, out = self.run_all()
        self.assertEqual(code, 0, out)
        self.assertIn("no benchmark binaries found", out)


class LiveLoadTest(unittest.TestCase):
    """The live line's measure: CPU of processes outside the benchmark's
    group, per second."""

    def setUp(self):
        sys.path.insert(0, str(ROOT / "benchmarks"))
        import run_all
        self.run_all = run_all
        self.procs = []

    def tearDown(self):
        for p in self.procs:
            p.kill()
            p.wait()

    def spin(self, seconds, **kw):
        p = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\n"
                              f"while time.time() - t < {seconds}: pass"], **kw)
        self.procs.append(p)
        return p

    def test_group_cpu_counts_the_benchmark_and_its_children(self):
        child = self.run_all.Child([sys.executable, "-c",
                                    "import os, time\nif os.fork() == 0:\n"
                                    "    t = time.time()\n"
                                    "    while time.time() - t < 1.5: pass\n"
                                    "    os._exit(0)\nos.wait()"],
                                   subprocess.DEVNULL, subprocess.DEVNULL)
        self.procs.append(child.proc)
        time.sleep(1.0)
        self.assertGreater(child.group_cpu(), 0.1)
        child.proc.wait(timeout=30)

    def test_a_hog_outside_the_group_is_seen_within_a_period(self):
        child = self.run_all.Child([sys.executable, "-c", "import time; time.sleep(5)"],
                                   subprocess.DEVNULL, subprocess.DEVNULL)
        self.procs.append(child.proc)
        self.spin(5)                                 # the hog: another process's busy loop
        live = self.run_all.LiveLoad(child, limit=0.3, period=0.5)
        seen = None
        deadline = time.monotonic() + 4
        while seen is None and time.monotonic() < deadline:
            time.sleep(0.1)
            seen = live.poll()
        self.assertIsNotNone(seen)
        self.assertGreater(seen, 0.3)


class QuickSelectionTest(unittest.TestCase):
    def setUp(self):
        sys.path.insert(0, str(ROOT / "benchmarks"))
        import run_all
        self.run_all = run_all

    def test_only_size_sweeps_lose_their_big_sizes(self):
        names = ["BM_Q/mp/8/real_time", "BM_Q/mp/65536/real_time", "BM_Q/mp/1M",
                 "BM_Pool/mp/apply_async/20000", "BM_Big/mp/65536", "BM_Big/mp/131072"]
        self.assertEqual(self.run_all.quick_selection(names),
                         ["BM_Q/mp/8/real_time", "BM_Pool/mp/apply_async/20000", "BM_Big/mp/65536"])

    def test_quick_trims_scaling_grids_to_one_two_and_every_cpu(self):
        names = [f"BM_Pool/mp/cpu_work/50/{w}/real_time" for w in (1, 2, 4, 8, 16)]
        names += [f"BM_Lock/mp/contended/{p}/real_time" for p in (1, 2, 4, 6)]
        names += ["BM_Queue/mp/8/real_time"]
        self.assertEqual(self.run_all.quick_grid(names, 16),
                         ["BM_Pool/mp/cpu_work/50/1/real_time",
                          "BM_Pool/mp/cpu_work/50/2/real_time",
                          "BM_Pool/mp/cpu_work/50/16/real_time",
                          "BM_Lock/mp/contended/1/real_time", "BM_Lock/mp/contended/2/real_time",
                          "BM_Queue/mp/8/real_time"])
        self.assertEqual(self.run_all.quick_grid(names[:2], 2), names[:2])

    def test_filter_escape_matches_names_literally(self):
        self.assertEqual(self.run_all.posix_ere_escape("BM_X/mp/1.5/min_time:0.01"),
                         r"BM_X/mp/1\.5/min_time:0\.01")
        self.assertEqual(self.run_all.posix_ere_escape("a(b)|c*"), r"a\(b\)\|c\*")


if __name__ == "__main__":
    testmain.main()
