"""tools/ci_bench.sh, the CI benchmark step, with a stand-in `bazel` that runs
benchmarks/run_all.py on fake benchmark binaries and tools/bench_report.py:
regressions are reported but do not fail the step unless asked; a crashing
benchmark fails it; a missing baseline is a note."""
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import unittest

ROOT = pathlib.Path(os.path.abspath(__file__)).parents[2]
sys.path.insert(0, str(ROOT))
from tools.tests import fake_bench as fb     # noqa: E402
from tools.tests import testmain             # noqa: E402

FAKE_BAZEL = """#!{python}
# Stand-in for `bazel run [flags] //target -- args` in ci_bench_test.
import os, sys
argv = sys.argv[1:]
assert argv[0] == "run", argv
target = next(a for a in argv if a.startswith("//"))
args = argv[argv.index("--") + 1:] if "--" in argv else []
env = dict(os.environ, BUILD_WORKSPACE_DIRECTORY=os.getcwd(), BUILD_WORKING_DIRECTORY=os.getcwd())
if target == "//benchmarks:all":
    cmd = [sys.executable, "{run_all}", "--bench-dir", os.environ["FAKE_BENCH_DIR"],
           "--goals", "{goals}"] + args
elif target == "//tools:bench_report":
    cmd = [sys.executable, "{bench_report}", "--goals", "{goals}"] + args
else:
    sys.exit("fake bazel: unknown target " + target)
os.execve(cmd[0], cmd, env)
"""


def spawn_benchmarks(mp_rate):
    return [{"name": "BM_Spawn/mp_process/real_time", "items_per_second": mp_rate},
            {"name": "BM_Spawn/raw_fork/real_time", "items_per_second": 1000.0}]


class CiBenchTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        root = pathlib.Path(self.tmp.name)
        self.ws = root / "ws"
        (self.ws / "tools").mkdir(parents=True)
        shutil.copy(ROOT / "tools" / "ci_bench.sh", self.ws / "tools" / "ci_bench.sh")
        self.bin = root / "bin"
        self.bin.mkdir()
        bazel = self.bin / "bazel"
        bazel.write_text(FAKE_BAZEL.format(
            python=sys.executable, run_all=ROOT / "benchmarks" / "run_all.py",
            bench_report=ROOT / "tools" / "bench_report.py",
            goals=ROOT / "benchmarks" / "goals.json"))
        bazel.chmod(0o755)
        self.bench = root / "bench"

    def tearDown(self):
        self.tmp.cleanup()

    def record_baseline(self, mp_rate=950.0):
        fb.make_binary(self.bench, "spawn", {"benchmarks": spawn_benchmarks(mp_rate)})
        r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run_all.py"),
                            "--bench-dir", str(self.bench), "--quick", "--repetitions", "5",
                            "--out", str(self.ws / "reports" / "baseline"), "--no-report"],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def ci(self, *args, mp_rate=950.0, mode="ok", **env):
        fb.make_binary(self.bench, "spawn", {"benchmarks": spawn_benchmarks(mp_rate), "mode": mode})
        full_env = dict(os.environ, PATH=f"{self.bin}:{os.environ.get('PATH', '/usr/bin:/bin')}",
                        FAKE_BENCH_DIR=str(self.bench))
        full_env.update(env)
        r = subprocess.run(["bash", str(self.ws / "tools" / "ci_bench.sh"), *args],
                           capture_output=True, text=True, timeout=180, env=full_env)
        return r.returncode, r.stdout + r.stderr

    def test_unchanged_speed_passes_and_prints_the_verdict(self):
        self.record_baseline()
        code, out = self.ci()
        self.assertEqual(code, 0, out)
        self.assertIn("verdict: 0 regression(s) past 10%", out)
        self.assertIn("ci_bench: no mp regression past 10%", out)
        runs = list((self.ws / "reports" / "runs").glob("ci-*"))
        self.assertEqual(len(runs), 1)
        self.assertTrue((runs[0] / "report.html").exists())
        ctx = json.loads((runs[0] / "context.json").read_text())
        self.assertEqual((ctx["run"]["flags"]["quick"], ctx["run"]["flags"]["repetitions"]), (True, 3))

    def test_regression_is_reported_not_failed_by_default(self):
        self.record_baseline()
        code, out = self.ci(mp_rate=600.0)
        self.assertEqual(code, 0, out)
        self.assertIn("REGRESSION BM_Spawn/mp_process: -36.8%", out)
        self.assertIn("REPORTED, not failed", out)

    def test_regression_fails_with_the_flag_or_the_environment(self):
        self.record_baseline()
        code, out = self.ci("--fail-on-regression", mp_rate=600.0)
        self.assertEqual(code, 1, out)
        self.assertIn("ci_bench: FAILED: regression(s) past 10%", out)
        code, out = self.ci(mp_rate=600.0, MP_BENCH_FAIL="1")
        self.assertEqual(code, 1, out)

    def test_threshold_comes_from_the_environment(self):
        self.record_baseline()
        code, out = self.ci("--fail-on-regression", mp_rate=600.0, MP_BENCH_THRESHOLD="50")
        self.assertEqual(code, 0, out)
        self.assertIn("no mp regression past 50%", out)

    def test_crashing_benchmark_fails_the_step(self):
        self.record_baseline()
        code, out = self.ci(mode="crash")
        self.assertEqual(code, 1, out)
        self.assertIn("ci_bench: FAILED: the benchmark run exited 1", out)

    def test_missing_baseline_is_a_note_not_a_failure(self):
        code, out = self.ci()
        self.assertEqual(code, 0, out)
        self.assertIn("ci_bench: no baseline at reports/baseline", out)

    def test_unknown_argument_is_a_usage_error(self):
        code, out = self.ci("--bogus")
        self.assertEqual(code, 2)
        self.assertIn("unknown argument --bogus", out)


if __name__ == "__main__":
    testmain.main()
