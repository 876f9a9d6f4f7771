"""tools/bench_bundle.sh: a bundle of the benchmarks runs with run_all.sh
outside the workspace, and its results carry the label, the commit and the
compiler of the build, ready to be copied into reports/runs/. The binaries
are fake_bench stand-ins and the bundling tool a stand-in for
../shared/tools/bundle-binaries.sh (which copies binaries and libraries)."""
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

STAND_IN_TOOL = """#!/usr/bin/env bash
# bundle-binaries.sh stand-in: OUTDIR BINARY... -> copies, a lib/ and run.sh.
set -eu
out=$1; shift
mkdir -p "$out/lib"
for b in "$@"; do cp -L "$b" "$out/"; done
printf '#!/usr/bin/env bash\\nexec "$(dirname "$0")/$1" "${@:2}"\\n' > "$out/run.sh"
chmod +x "$out/run.sh"
"""


class BundleTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        root = pathlib.Path(self.tmp.name)
        self.ws = root / "ws"
        for rel in ("tools/bench_bundle.sh", "benchmarks/run_all.py", "benchmarks/goals.json",
                    "tools/bench_lib.py", "tools/bench_report.py", "tools/bench_stats.py",
                    "tools/bench_html.py", "tools/bench_plots.py"):
            (self.ws / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / rel, self.ws / rel)
        (self.ws / "benchmarks" / "peers").mkdir()
        (self.ws / "benchmarks" / "spawn_bench.cc").write_text("// stand-in\n")
        fb.make_binary(self.ws / "bazel-bin" / "benchmarks", "spawn", {"benchmarks": [
            {"name": "BM_Spawn/mp_process/real_time", "items_per_second": 950.0},
            {"name": "BM_Spawn/raw_fork/real_time", "items_per_second": 1000.0}]})
        fb.make_peer(self.ws / "benchmarks", "spawn_peer", {"benchmarks": [
            {"name": "BM_Spawn/cpython_process", "items_per_second": 70.0}]})
        self.tool = root / "bundle-binaries.sh"
        self.tool.write_text(STAND_IN_TOOL)
        self.tool.chmod(0o755)
        git = ["git", "-C", str(self.ws), "-c", "user.name=t", "-c", "user.email=t@t"]
        subprocess.run(git[:3] + ["init", "-q"], check=True)
        subprocess.run(git + ["add", "-A"], check=True)
        subprocess.run(git + ["commit", "-qm", "ws"], check=True)
        self.commit = subprocess.run(git[:3] + ["rev-parse", "--short", "HEAD"], check=True,
                                     capture_output=True, text=True).stdout.strip()
        self.bundle = root / "elsewhere" / "mp-bench"

    def tearDown(self):
        self.tmp.cleanup()

    def test_bundle_runs_elsewhere_and_labels_its_results(self):
        env = dict(os.environ, MP_BUNDLE_TOOL=str(self.tool), MP_BUNDLE_NO_BUILD="1")
        r = subprocess.run(["bash", str(self.ws / "tools" / "bench_bundle.sh"), str(self.bundle)],
                           capture_output=True, text=True, env=env, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        info = json.loads((self.bundle / "benchmarks" / "BUNDLE.json").read_text())
        self.assertEqual(info["git_commit"], self.commit)
        env = {k: v for k, v in os.environ.items() if not k.startswith("BUILD_")}
        r = subprocess.run([str(self.bundle / "run_all.sh"), "--label", "big 16", "--quick"],
                           capture_output=True, text=True, env=env, timeout=120,
                           cwd=self.tmp.name)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        [run] = list((self.bundle / "reports" / "runs").iterdir())
        self.assertTrue(run.name.endswith("-big_16"), run.name)
        ctx = json.loads((run / "context.json").read_text())
        self.assertEqual(ctx["label"], "big 16")
        self.assertEqual(ctx["git_commit"], self.commit)
        self.assertEqual(ctx["bundle"]["git_commit"], self.commit)
        self.assertTrue((run / "spawn.json").exists())
        self.assertTrue((run / "spawn_peer.json").exists())
        self.assertTrue((run / "report.html").exists())


if __name__ == "__main__":
    testmain.main()
