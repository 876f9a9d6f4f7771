"""tools/bench_history.py: the history page over reports/runs/, runs from
other machines (labelled) and noisy runs included."""
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
from tools import bench_history as bh        # noqa: E402
from tools import bench_plots                # noqa: E402
from tools.tests import fake_bench as fb     # noqa: E402
from tools.tests import testmain             # noqa: E402


class HistoryTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.runs = pathlib.Path(self.tmp.name) / "runs"
        for name, mp, label in (("20261201-100000", 0.6, ""), ("ci-20261202-100000", 0.65, ""),
                                ("20261203-100000-big16", 0.8, "big16")):
            d = fb.result_set(self.runs / name, {"queue": (
                fb.runs("BM_Queue/mp/64/real_time", [mp * 1e7] * 3)
                + fb.runs("BM_Queue/raw_ring/64/real_time", [1e7] * 3))})
            (d / "context.json").write_text(json.dumps(
                {"host": "vm", "cores": 16 if label else 2, "label": label, "cpu": "x",
                 "run": {"flags": {"quick": True, "repetitions": 3}, "notes": []}}))
        fb.noisy_context(self.runs / "ci-20261202-100000", ["queue"])

    def tearDown(self):
        self.tmp.cleanup()

    def main(self, *argv):
        with contextlib.redirect_stdout(io.StringIO()) as out, \
                contextlib.redirect_stderr(io.StringIO()):
            code = bh.main([str(a) for a in argv])
        return code, out.getvalue()

    def test_runs_are_read_oldest_first_with_their_machine(self):
        sets = [bh.lib.load(d) for d in bh.run_dirs(self.runs)]
        self.assertEqual([s.path.name for s in sets],
                         ["20261201-100000", "ci-20261202-100000", "20261203-100000-big16"])
        ratios, speeds = bh.collect(sets)
        line = ratios["BM_Queue"]["BM_Queue/64 mp/raw_ring"]
        self.assertEqual([(x, round(r, 3)) for _, x, r in line], [(0, 0.6), (1, 0.65), (2, 0.8)])
        self.assertIn("(noisy)", line[1][0])
        self.assertIn("big16", line[2][0])
        self.assertEqual(sorted(speeds), ["BM_Queue/mp/64"])

    def test_page_is_written_self_contained(self):
        code, out = self.main(self.runs)
        self.assertEqual(code, 0)
        page = (self.runs / "history.html").read_text()
        self.assertIn("history of 3 runs", out)
        self.assertIn("big16: x, 16 cores", page)
        self.assertIn("NOISY", page)
        self.assertNotIn("<script", page)
        self.assertEqual(re.findall(r"href=|url\(", page), [])
        if bench_plots.available():
            self.assertEqual(page.count('src="data:image/png;base64,'), 1)

    def test_no_runs_is_an_error(self):
        code, _ = self.main(pathlib.Path(self.tmp.name) / "none")
        self.assertEqual(code, 2)


if __name__ == "__main__":
    testmain.main()
