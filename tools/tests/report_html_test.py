"""report.html renders offline: its SVG charts are well-formed, its
matplotlib charts are PNGs inlined as data: URIs, and headless Chromium
(Debian's `chromium`) paints the bars in their colours.

The Chromium test is skipped, saying so, when chromium is not installed, and
the image checks when python3-matplotlib is not (tools/setup.sh installs
both)."""
import base64
import collections
import contextlib
import io
import os
import pathlib
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import unittest
import xml.etree.ElementTree as ET
import zlib

ROOT = pathlib.Path(os.path.abspath(__file__)).parents[2]
sys.path.insert(0, str(ROOT))
from tools import bench_html                 # noqa: E402
from tools import bench_plots                # noqa: E402
from tools import bench_report as br         # noqa: E402
from tools.tests import fake_bench as fb     # noqa: E402
from tools.tests import testmain             # noqa: E402


def make_runs(root):
    """A baseline and a current run in which mp's queue got 25% slower."""
    rnd = random.Random(7)
    noisy = lambda v: [v * rnd.uniform(0.98, 1.02) for _ in range(5)]

    def one(name, mp_factor):
        files = {"queue": [], "queue_peer": [], "spawn": []}
        for size in (8, 64, 4096):
            files["queue"] += fb.runs(f"BM_Queue/mp/{size}/real_time", noisy(3e6 * mp_factor / (1 + size / 512)))
            files["queue"] += fb.runs(f"BM_Queue/raw_ring/{size}/real_time", noisy(5e6 / (1 + size / 512)))
            files["queue_peer"] += fb.runs(f"BM_Queue/cpython/{size}", noisy(1.5e5))
        files["spawn"] += fb.runs("BM_Spawn/mp_process/real_time", noisy(880))
        files["spawn"] += fb.runs("BM_Spawn/raw_fork/real_time", noisy(915))
        files["pool"] = []
        for task_us in (1, 50):
            for workers in (1, 2):
                rate = 1e6 / task_us * workers * (0.9 if workers > 1 else 1)
                files["pool"] += fb.runs(f"BM_Pool/mp/cpu_work/{task_us}/{workers}/real_time",
                                         noisy(rate * mp_factor))
        return fb.result_set(root / name, files)

    return one("base", 1.0), one("cur", 0.75)


def write_report(root):
    base, cur = make_runs(root)
    with contextlib.redirect_stdout(io.StringIO()):
        code = br.main([str(cur), "--baseline", str(base), "--goals",
                        str(ROOT / "benchmarks" / "goals.json")])
    assert code == 1, "the mp queue regression should fail the report"
    return cur / "report.html"


def read_png(path):
    """(width, height, rows of RGB tuples) of an 8-bit RGB/RGBA PNG."""
    data = pathlib.Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and interlace == 0, "unsupported PNG"
            bpp = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[i] = (line[i] + pred) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, bpp, rows


def colour_counts(rows, bpp, colours, tolerance=4):
    """How many pixels are within `tolerance` of each colour ("#rrggbb")."""
    seen = collections.Counter()
    for row in rows:
        seen.update(zip(row[0::bpp], row[1::bpp], row[2::bpp]))
    counts = {}
    for c in colours:
        t = tuple(int(c[i:i + 2], 16) for i in (1, 3, 5))
        counts[c] = sum(n for px, n in seen.items()
                        if all(abs(px[i] - t[i]) <= tolerance for i in range(3)))
    return counts


class ReportHtmlTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.root = pathlib.Path(self.tmp.name)
        self.page = write_report(self.root)

    def tearDown(self):
        self.tmp.cleanup()

    def test_every_svg_chart_is_well_formed_xml(self):
        text = self.page.read_text()
        svgs = re.findall(r"<svg.*?</svg>", text, flags=re.S)
        # one peers chart and one baseline chart per family
        # (BM_Queue, BM_Spawn, BM_Pool)
        self.assertEqual(len(svgs), 6)
        for svg in svgs:
            root = ET.fromstring(svg)
            self.assertTrue(root.tag.endswith("svg"))
            self.assertGreater(len(root.findall(".//{http://www.w3.org/2000/svg}rect")), 1)

    def test_page_needs_no_network_and_no_scripts(self):
        text = self.page.read_text()
        self.assertNotIn("<script", text.lower())
        self.assertNotIn("<link", text.lower())
        self.assertEqual(re.findall(r"url\(|href=", text), [])
        # The only sources are images inlined in the page.
        sources = re.findall(r'src="([^"]{0,40})', text)
        self.assertTrue(all(src.startswith("data:image/png;base64,") for src in sources), sources)

    def test_summary_comes_first(self):
        text = self.page.read_text()
        self.assertLess(text.index("<h2>Summary</h2>"), text.index("<h2>mp beside its peers"))
        summary = re.search(r'<pre class="summary">(.*?)</pre>', text, re.S).group(1)
        self.assertIn("goals: ", summary)
        self.assertIn("against the baseline: ", summary)
        self.assertRegex(summary, r"scaling BM_Pool/cpu_work/1 at 2 workers: mp (89|9\d)%")

    def test_charts_are_inlined_pngs(self):
        if not bench_plots.available():
            self.skipTest("python3-matplotlib not installed (tools/setup.sh installs it)")
        text = self.page.read_text()
        images = re.findall(r'<img class="plot" alt="([^"]*)" src="data:image/png;base64,'
                            r'([^"]+)"', text)
        alts = [a for a, _ in images]
        # the goal ratios (linear, goal band), the size curves, the scaling grid
        self.assertEqual(len(images), 3, alts)
        self.assertTrue(any("goal band" in a for a in alts), alts)
        self.assertTrue(any("message size" in a for a in alts), alts)
        self.assertTrue(any("workers" in a for a in alts), alts)
        for alt, data in images:
            png = self.root / "chart.png"
            png.write_bytes(base64.b64decode(data))
            width, height, _, _ = read_png(png)
            self.assertGreater(width, 300, alt)
            self.assertGreater(height, 100, alt)

    def test_chromium_renders_the_bars(self):
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        if not chromium:
            self.skipTest("chromium not installed (apt-get install chromium; tools/setup.sh "
                          "installs it): cannot check that report.html renders")
        shot = self.root / "shot.png"
        profile = self.root / "profile"
        env = dict(os.environ, HOME=str(self.root))
        cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars",
               f"--user-data-dir={profile}", "--window-size=1200,6000",
               f"--screenshot={shot}", self.page.as_uri()]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env,
                           start_new_session=True)
        self.assertTrue(shot.exists(), f"chromium wrote no screenshot (exit {r.returncode}):\n"
                                       f"{r.stderr[-2000:]}")
        width, height, bpp, rows = read_png(shot)
        self.assertEqual((width, height), (1200, 6000))
        counts = colour_counts(rows, bpp, [bench_html.MP_COLOUR, bench_html.PEER_COLOURS[0],
                                           bench_html.CPYTHON_COLOUR,
                                           bench_html.VERDICT_COLOURS["REGRESSION"],
                                           bench_html.VERDICT_COLOURS["same"], "#bbbbbb"])
        for colour, n in counts.items():
            # A bar is at least 16 px high and tens of px wide: thousands of pixels.
            self.assertGreater(n, 1000, f"too few {colour} pixels: {counts}")


if __name__ == "__main__":
    testmain.main()
