"""report.html for bench_report: one self-contained page (inline CSS, SVG and
PNG images inlined as data: URIs, no scripts, nothing fetched), readable
offline in any browser. It opens with a one-screen summary (noise, goals met
and missed, the worst ratios, the verdict, the machine's drift, scaling).

Charts (the matplotlib ones come from tools/bench_plots.py):
- speed against message size per family, log-log, error bars;
- mp over its raw peer for each goal, linear axis, goal band shaded;
- speed and efficiency against workers for each scaling grid;
- mp beside its peers: per benchmark family, one group of horizontal bars per
  workload (mp first, then each peer), on a log scale because peers differ by
  orders of magnitude; each bar is labelled with its speed and mp/peer ratio,
  and a whisker spans the repetitions (min to max).
- baseline vs current: per family, each benchmark's current speed as a
  percentage of the baseline's (grey bar = baseline, 100%), coloured by verdict,
  with the regression threshold drawn as a dashed line.
"""
import html
import math

from tools import bench_lib as lib
from tools import bench_plots as plots

VERDICT_COLOURS = {"REGRESSION": "#d62728", "faster": "#2ca02c", "same": "#4c78a8",
                   "noise": "#e8a33d", "error": "#7f0000", "new": "#9467bd", "gone": "#999999",
                   "inconclusive": "#c7c7c7", "drift": "#8c8c8c"}
MAX_PERCENT = 300.0              # baseline chart: current speed axis ends here at most
MP_COLOUR = "#1f5fa8"            # mp's own benchmark: always this blue
MP_VARIANT_COLOUR = "#86a9d6"    # other mp_* variants on the same workload
CPYTHON_COLOUR = "#f58518"       # CPython peers: always orange
PEER_COLOURS = ["#54a24b", "#b279a2", "#9d755d", "#e45756", "#72b7b2", "#bab0ac", "#eeca3b"]

CSS = """
body{font:14px/1.45 system-ui,-apple-system,'DejaVu Sans',sans-serif;margin:24px auto;max-width:1100px;
color:#222;padding:0 16px}
h1{font-size:22px;margin:0 0 8px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:18px 0 4px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;white-space:nowrap}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
.met{color:#1a7f37;font-weight:600}.missed{color:#c62828;font-weight:600}.nodata{color:#888}
.v-REGRESSION,.v-error{color:#c62828;font-weight:700}.v-faster{color:#1a7f37}.v-noise{color:#b26a00}
.meta{color:#555;font-size:13px}.chart{margin:6px 0 14px}
svg text{font-family:'DejaVu Sans',sans-serif}
.noisy{background:#fff3cd;border:1px solid #e0b000;padding:6px 10px;font-weight:600}
pre.summary{background:#f6f8fa;border:1px solid #ddd;padding:8px 12px;font-size:13px;
white-space:pre-wrap}
img.plot{max-width:100%;display:block;margin:6px 0 14px}
.v-drift,.v-inconclusive{color:#666}
"""


def esc(s):
    return html.escape(str(s), quote=True)


def _table(header, rows, classes=None):
    out = ["<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>"]
    for i, r in enumerate(rows):
        cls = classes[i] if classes else [""] * len(r)
        out.append("<tr>" + "".join(
            f"<td class=\"{c}\">{esc(v)}</td>" if c else f"<td>{esc(v)}</td>"
            for v, c in zip(r, cls)) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _impl_colour(impl, primary, others):
    """The primary mp benchmark blue, other mp_* variants light blue, CPython
    orange, every other peer a colour of PEER_COLOURS kept for the chart."""
    if primary:
        return MP_COLOUR
    if lib.is_mp_impl(impl):
        return MP_VARIANT_COLOUR
    if impl.startswith("cpython"):
        return CPYTHON_COLOUR
    if impl not in others:
        others.append(impl)
    return PEER_COLOURS[others.index(impl) % len(PEER_COLOURS)]


def peers_chart(family, items):
    """items: [(workload, metric, [(impl, value, ratio_or_None, (min, max) or
    None)])] -> SVG."""
    values = [v for _, _, bars in items for _, v, _, _ in bars if v]
    values += [x for _, _, bars in items for _, _, _, sp in bars if sp for x in sp if x]
    if not values:
        return ""
    lo = 10 ** math.floor(math.log10(min(values)))
    hi = 10 ** math.ceil(math.log10(max(values)))
    if hi <= lo:
        hi = lo * 10
    longest = max(len(impl) for _, _, bars in items for impl, _, _, _ in bars)
    label_w, plot_w, right_w, bar_h, gap = max(160, 7 * longest + 16), 560, 230, 16, 3
    width = label_w + plot_w + right_w
    x = lambda v: label_w + plot_w * (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
    y, parts, order = 24, [], []
    for workload, metric, bars in items:
        parts.append(f'<text x="4" y="{y + 11}" font-size="12" font-weight="600">'
                     f'{esc(workload)} ({esc(lib.METRIC_UNITS[metric])})</text>')
        y += 16
        for i, (impl, v, ratio, sp) in enumerate(bars):
            colour = _impl_colour(impl, i == 0, order)
            parts.append(f'<text x="{label_w - 6}" y="{y + 12}" font-size="12" '
                         f'text-anchor="end">{esc(impl)}</text>')
            if v:
                w = max(1.0, x(v) - label_w)
                note = lib.si(v) + ("" if ratio is None else f"  (mp/{impl} {lib.ratio_text(ratio)})")
                parts.append(f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" '
                             f'fill="{colour}"><title>{esc(impl)}: {esc(lib.si(v))}</title></rect>')
                right = label_w + w
                if sp and sp[0] and sp[1] and sp[1] > sp[0]:
                    a, b = x(sp[0]), x(sp[1])
                    right = max(right, b)
                    parts.append(f'<line x1="{a:.1f}" y1="{y + bar_h / 2}" x2="{b:.1f}" '
                                 f'y2="{y + bar_h / 2}" stroke="#222" stroke-width="1.5">'
                                 f'<title>repetitions {esc(lib.si(sp[0]))} .. '
                                 f'{esc(lib.si(sp[1]))}</title></line>')
                    for xx in (a, b):
                        parts.append(f'<line x1="{xx:.1f}" y1="{y + 3}" x2="{xx:.1f}" '
                                     f'y2="{y + bar_h - 3}" stroke="#222" stroke-width="1.5"/>')
                parts.append(f'<text x="{right + 4:.1f}" y="{y + 12}" font-size="11">'
                             f'{esc(note)}</text>')
            else:
                parts.append(f'<text x="{label_w + 4}" y="{y + 12}" font-size="11" '
                             f'fill="#c62828">no data</text>')
            y += bar_h + gap
        y += 8
    axis = []
    decade = lo
    while decade <= hi * 1.0001:
        xx = x(decade)
        axis.append(f'<line x1="{xx:.1f}" y1="18" x2="{xx:.1f}" y2="{y}" stroke="#ddd"/>'
                    f'<text x="{xx:.1f}" y="12" font-size="10" text-anchor="middle" '
                    f'fill="#666">{esc(lib.si(decade))}</text>')
        decade *= 10
    return (f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" '
            f'height="{y + 4}" viewBox="0 0 {width} {y + 4}" role="img" '
            f'aria-label="{esc(family)}: mp beside its peers">'
            f'<title>{esc(family)}: mp beside its peers (log scale)</title>'
            + "".join(axis) + "".join(parts) + "</svg>")


def baseline_chart(family, rows, threshold):
    """rows: bench_report.Row of one family -> SVG of current as % of baseline."""
    shown = [r for r in rows if r.change is not None]
    if not shown:
        return ""
    # The axis ends at 150%, or past the fastest bar, but never past
    # MAX_PERCENT: a 100x speed-up is drawn to the edge and labelled.
    top = min(MAX_PERCENT, max(150.0, max(100 * (1 + r.change) for r in shown) * 1.1))
    label_w = max(200, 7 * max(len(r.name) for r in shown) + 16)
    plot_w, right_w, bar_h = 520, 170, 11
    width = label_w + plot_w + right_w
    x = lambda pct: label_w + plot_w * pct / top
    y, parts = 22, []
    for r in shown:
        pct = 100 * (1 + r.change)
        colour = VERDICT_COLOURS.get(r.verdict, "#4c78a8")
        parts.append(f'<text x="{label_w - 6}" y="{y + 15}" font-size="12" '
                     f'text-anchor="end">{esc(r.name)}</text>')
        parts.append(f'<rect x="{label_w}" y="{y}" width="{x(100) - label_w:.1f}" height="{bar_h}" '
                     f'fill="#bbbbbb"><title>baseline {esc(lib.si(r.base_median))}</title></rect>')
        drawn = min(pct, top)
        parts.append(f'<rect x="{label_w}" y="{y + bar_h + 1}" width="{max(1.0, x(drawn) - label_w):.1f}" '
                     f'height="{bar_h}" fill="{colour}"><title>current {esc(lib.si(r.cur_median))}'
                     f'</title></rect>')
        label = f"{pct:.0f}%" if pct < 1000 else f"{pct / 100:.0f}x"
        if pct > top:
            label += " (off scale)"
        parts.append(f'<text x="{max(x(drawn), x(100)) + 4:.1f}" y="{y + 2 * bar_h}" font-size="11">'
                     f'{label} {esc(r.verdict)}</text>')
        y += 2 * bar_h + 8
    grid = []
    step = 25 if top <= 200 else 50
    for pct in range(0, int(top) + 1, step):
        grid.append(f'<line x1="{x(pct):.1f}" y1="16" x2="{x(pct):.1f}" y2="{y}" stroke="#eee"/>'
                    f'<text x="{x(pct):.1f}" y="12" font-size="10" text-anchor="middle" '
                    f'fill="#666">{pct}%</text>')
    thr = 100 * (1 - threshold)
    grid.append(f'<line x1="{x(thr):.1f}" y1="16" x2="{x(thr):.1f}" y2="{y}" stroke="#d62728" '
                f'stroke-dasharray="4 3"><title>regression threshold {thr:.0f}%</title></line>')
    grid.append(f'<line x1="{x(100):.1f}" y1="16" x2="{x(100):.1f}" y2="{y}" stroke="#555"/>')
    return (f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" '
            f'height="{y + 4}" viewBox="0 0 {width} {y + 4}" role="img" '
            f'aria-label="{esc(family)}: current vs baseline">'
            f'<title>{esc(family)}: current speed as % of baseline</title>'
            + "".join(grid) + "".join(parts) + "</svg>")


def _peer_items(rs):
    """{family: [(workload, metric, [(impl, value, ratio)])]}"""
    fams = {}
    for workload, mp, peers in lib.pairs(rs):
        metric = lib.common_metric(mp, *[p.peer for p in peers])
        bars = [(mp.name.impl, mp.median(metric), None, lib.spread(mp, metric))]
        for p in peers:
            v = p.peer.median(metric)
            a = mp.median(metric)
            bars.append((p.peer.name.impl, v, a / v if a and v else None,
                         lib.spread(p.peer, metric)))
        fams.setdefault(mp.name.family, []).append((workload, metric, bars))
    return fams


def render(cur, base, goal_results, rows, threshold, alpha, summary, machine_line,
           compare_header=(), summary_lines=()):
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           "<title>mp benchmark report</title>", f"<style>{CSS}</style></head><body>",
           "<h1>mp benchmark report</h1>",
           f'<p class="meta">run <code>{esc(cur.path)}</code><br>{esc(machine_line(cur))}']
    if base is not None:
        out.append(f'<br>baseline <code>{esc(base.path)}</code><br>{esc(machine_line(base))}')
    out.append("</p>")
    for n in (cur.machine or {}).get("run", {}).get("notes", []):
        out.append(f'<p class="meta">note: {esc(n)}</p>')
    noisy, reasons = lib.load_info(cur)
    if noisy:
        more = f" and {len(reasons) - 3} more (context.json: run.load)" if len(reasons) > 3 else ""
        out.append(f'<p class="noisy">Noisy run: {esc("; ".join(reasons[:3]) + more)}. Figures '
                   f'and verdicts are suspect; rerun on an idle machine.</p>')
    if summary_lines:
        out.append("<h2>Summary</h2>")
        out.append('<pre class="summary">' + esc("\n".join(summary_lines)) + "</pre>")
    if not plots.available():
        out.append(plots.missing_note())
    ratio_img = plots.ratio_chart(goal_results)
    if ratio_img:
        out.append("<h2>mp against its raw peers, by goal</h2>")
        out.append(ratio_img)
    curves = plots.size_curves(cur)
    if curves:
        out.append("<h2>Speed against message size</h2>")
        out.append(curves)
    scaling_img = plots.scaling_chart(cur)
    if scaling_img:
        out.append("<h2>Scaling with workers</h2>")
        out.append('<p class="meta">Efficiency: rate(W) / (W x rate(1)); 1 is perfect '
                   'scaling.</p>')
        out.append(scaling_img)
        h, r = lib.scaling_rows(cur)
        out.append(_table(h, r))

    out.append("<h2>mp beside its peers</h2>")
    out.append('<p class="meta">Speeds (items/s, else bytes/s, else iterations/s), medians over '
               'repetitions, log scale. mp/peer &gt; 1 means mp is faster.</p>')
    fams = _peer_items(cur)
    if not fams:
        out.append("<p>No workload with an mp benchmark in this run.</p>")
    for family, items in fams.items():
        out.append(f"<h3>{esc(family)}</h3>")
        out.append(peers_chart(family, items))
    h, r = lib.glance_rows(cur, goal_results)
    if r:
        out.append(_table(h, r))

    if goal_results:
        out.append("<h2>Goals from the issues</h2>")
        h, r = lib.goal_rows(goal_results)
        cls = [["", "", "", "num", "num", {"met": "met", "missed": "missed"}.get(g.status, "nodata")]
               for g in goal_results]
        out.append(_table(h, r, cls))
        out.append(f"<p>{esc(lib.goal_summary(goal_results))}</p>")

    if rows is not None:
        out.append("<h2>Against the baseline</h2>")
        out.append(f"<p>Threshold {threshold * 100:g}%, Mann-Whitney U test alpha {alpha:g}. "
                   f"<b>{esc(summary)}</b></p>")
        fam_rows = {}
        for row in rows:
            fam_rows.setdefault(row.parsed.family, []).append(row)
        for family, frows in fam_rows.items():
            svg = baseline_chart(family, frows, threshold)
            if svg:
                out.append(f"<h3>{esc(family)}</h3>")
                out.append(svg)
        cls = [["", "num", "num", "num", "num", "num", "num", "num", f"v-{row.verdict}", ""]
               for row in rows]
        out.append(_table(list(compare_header) + ["why"], [row.cells() + [row.why] for row in rows],
                          cls))
    out.append("</body></html>")
    return "\n".join(out) + "\n"
