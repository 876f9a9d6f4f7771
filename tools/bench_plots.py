"""Charts of report.html and history.html drawn with matplotlib (Debian's
python3-matplotlib; tools/setup.sh installs it), each returned as an <img>
whose PNG is inlined as a data: URI, so the page stays one self-contained
file. Without matplotlib every function returns "" and the pages say so.

- size_curves: speed against message size, one line per implementation,
  log-log, error bars from the repetitions (min to max).
- ratio_chart: mp/peer against the raw peers that goals name, on a linear
  axis, the goal band (goal .. parity) shaded and the goal drawn in red.
- scaling_chart: per scaling grid, speed and efficiency against workers.
- history_chart: mp's ratio to its raw peer per workload across runs.
"""
import base64
import html
import io
import os
import re
import sys

from tools import bench_lib as lib

# Debian's python3-matplotlib lives here; a python3 from elsewhere (pyenv,
# a virtualenv) of the same version can load it from there too.
DEBIAN_DIST_PACKAGES = "/usr/lib/python3/dist-packages"


def _import_pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot
    return matplotlib.pyplot


try:
    plt = _import_pyplot()
except ImportError:
    if DEBIAN_DIST_PACKAGES in sys.path or not os.path.isdir(DEBIAN_DIST_PACKAGES):
        plt = None
    else:
        sys.path.append(DEBIAN_DIST_PACKAGES)
        try:
            plt = _import_pyplot()
        except Exception:    # another Python version: its extensions do not load
            plt = None
if plt is not None:
    from matplotlib.patches import Rectangle

MP_COLOUR = "#1f5fa8"
CPYTHON_COLOUR = "#f58518"
OTHERS = ["#54a24b", "#b279a2", "#9d755d", "#e45756", "#72b7b2", "#bab0ac", "#eeca3b"]
DPI = 80


def available():
    return plt is not None


def missing_note():
    return ('<p class="meta">Charts need python3-matplotlib (tools/setup.sh installs it); '
            'this page was written without it.</p>')


def _colour(impl, others):
    if impl == "mp":
        return MP_COLOUR
    if lib.is_mp_impl(impl):
        return "#86a9d6"
    if lib.is_cpython_impl(impl):
        return CPYTHON_COLOUR
    if impl not in others:
        others.append(impl)
    return OTHERS[others.index(impl) % len(OTHERS)]


def _img(fig, alt):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    return (f'<img class="plot" alt="{html.escape(alt, quote=True)}" '
            f'src="data:image/png;base64,{data}">')


def _errors(values, spreads):
    lo = [v - s[0] for v, s in zip(values, spreads)]
    hi = [s[1] - v for v, s in zip(values, spreads)]
    return [lo, hi]


_SIZE = re.compile(r"^(\d+)([kKmMgG]?)(i?B)?$")
_MULT = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def size_of(component):
    m = _SIZE.match(component)
    return int(m.group(1)) * _MULT[m.group(2).lower()] if m else None


def sweeps(rs):
    """{(family, prefix): {impl: [(size, Bench)]}} for workloads whose last
    argument is a size that takes three or more values (scaling grids aside)."""
    out = {}
    for b in rs.benches.values():
        if not b.runs or lib.grid_point(b.name) is not None or not b.name.args:
            continue
        parts = b.name.args.split("/")
        size = size_of(parts[-1])
        if size is None:
            continue
        key = (b.name.family, "/".join(parts[:-1]))
        out.setdefault(key, {}).setdefault(b.name.impl, []).append((size, b))
    return {k: v for k, v in out.items()
            if max(len(points) for points in v.values()) >= 3}


def size_curves(rs):
    if not available():
        return ""
    found = sweeps(rs)
    if not found:
        return ""
    n = len(found)
    cols = 2 if n > 1 else 1
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 3.8 * rows), squeeze=False)
    for ax, ((family, prefix), impls) in zip(axes.flat, found.items()):
        others = []
        metric = lib.common_metric(*(b for pts in impls.values() for _, b in pts))
        for impl in sorted(impls, key=lambda i: (not lib.is_mp_impl(i), i)):
            pts = sorted(impls[impl], key=lambda p: p[0])
            xs = [s for s, _ in pts]
            ys = [b.median(metric) for _, b in pts]
            sp = [lib.spread(b, metric) for _, b in pts]
            ax.errorbar(xs, ys, yerr=_errors(ys, sp), label=impl, marker="o", ms=3,
                        capsize=3, color=_colour(impl, others),
                        lw=2.2 if lib.is_mp_impl(impl) else 1.3)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(f"{family}{'/' + prefix if prefix else ''}", fontsize=10)
        ax.set_xlabel("message size (bytes)")
        ax.set_ylabel(lib.METRIC_UNITS[metric])
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.tight_layout()
    return _img(fig, "speed against message size, one line per implementation")


def ratio_chart(goal_results):
    """Goals against raw peers (ratios near 1) on a linear axis."""
    if not available():
        return ""
    shown = [r for r in goal_results if r.ratio is not None
             and not lib.is_cpython_impl(r.pair.peer.name.impl) and r.goal.min_ratio <= 2]
    if not shown:
        return ""
    fig, ax = plt.subplots(figsize=(12, 0.36 * len(shown) + 1.3))
    labels, top = [], 1.2
    limit = 2.0             # past twice the peer, a bar is drawn to the edge and labelled
    for i, r in enumerate(shown):
        goal = r.goal.min_ratio
        band_hi = max(1.0, goal)
        ax.add_patch(Rectangle((goal, i - 0.42), band_hi - goal, 0.84, color="#2ca02c",
                               alpha=0.15, lw=0))
        ax.plot([goal, goal], [i - 0.42, i + 0.42], color="#d62728", lw=1.5)
        samples = lib.ratio_samples(r.pair.mp, r.pair.peer, r.pair.metric)
        err = None
        if len(samples) > 1:
            err = [[max(0.0, r.ratio - min(samples))], [max(0.0, max(samples) - r.ratio)]]
        colour = MP_COLOUR if r.status == "met" else "#d62728"
        if r.ratio > limit:
            ax.barh(i, limit, height=0.5, color=colour)
            ax.text(limit * 0.98, i, f"{lib.ratio_text(r.ratio)} (off scale)", va="center",
                    ha="right", fontsize=8, color="white")
        else:
            ax.barh(i, r.ratio, height=0.5, color=colour, xerr=err, capsize=3,
                    error_kw={"elinewidth": 1})
            ax.text(r.ratio + 0.03, i + 0.3, lib.ratio_text(r.ratio), fontsize=8)
        labels.append(f"{r.pair.workload} {r.pair.mp.name.impl}/{r.pair.peer.name.impl}")
        top = max(top, r.ratio * 1.15, band_hi * 1.1)
    ax.axvline(1.0, color="#555", ls="--", lw=1)
    ax.set_yticks(range(len(shown)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, min(top, limit))
    ax.set_xlabel("mp / raw peer (linear; green: goal band from the goal to parity; "
                  "red tick: the goal)")
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    return _img(fig, "mp over its raw peer per goal, linear axis, goal band shaded")


def scaling_chart(rs):
    if not available():
        return ""
    grids = lib.scaling(rs)
    if not grids:
        return ""
    n = len(grids)
    fig, axes = plt.subplots(2, n, figsize=(3.6 * n + 0.8, 6.4), squeeze=False)
    for col, ((family, series), impls) in enumerate(grids.items()):
        others = []
        for impl in sorted(impls, key=lambda i: (not lib.is_mp_impl(i), i)):
            s = impls[impl]
            ws = sorted(s.points)
            speeds = [s.speed(w) for w in ws]
            sp = [lib.spread(s.points[w], "items_per_second") for w in ws]
            c = _colour(impl, others)
            axes[0][col].errorbar(ws, speeds, yerr=_errors(speeds, sp), marker="o", ms=3,
                                  capsize=3, color=c, label=impl)
            effs = [s.efficiency(w) for w in ws]
            axes[1][col].plot([w for w, e in zip(ws, effs) if e is not None],
                              [e for e in effs if e is not None], marker="o", ms=3, color=c,
                              label=impl)
        axes[0][col].set_title(f"{family}/{series}", fontsize=9)
        axes[0][col].set_yscale("log")
        axes[0][col].set_ylabel("items/s")
        axes[0][col].legend(fontsize=7)
        axes[1][col].set_ylim(0, 1.15)
        axes[1][col].axhline(1.0, color="#555", ls="--", lw=1)
        axes[1][col].set_ylabel("efficiency")
        axes[1][col].set_xlabel("workers")
        ticks = sorted({w for s in impls.values() for w in s.points})
        for row in (0, 1):
            axes[row][col].set_xscale("log", base=2)
            axes[row][col].set_xticks(ticks)
            axes[row][col].set_xticklabels([str(w) for w in ticks])
            axes[row][col].minorticks_off()
            axes[row][col].grid(True, alpha=0.3)
    fig.tight_layout()
    return _img(fig, "speed and efficiency against workers per scaling grid")


def history_chart(points, xlabels=()):
    """points: {family: {workload: [(run label, x index, ratio)]}} -> one
    subplot per family, one line per workload, x the run's index."""
    if not available() or not points:
        return ""
    n = len(points)
    fig, axes = plt.subplots(n, 1, figsize=(10, 2.8 * n), squeeze=False)
    for ax, (family, lines) in zip(axes.flat, points.items()):
        others = []
        for workload, pts in lines.items():
            ax.plot([p[1] for p in pts], [p[2] for p in pts], marker="o", ms=3,
                    color=_colour(workload, others), label=workload)
        ax.set_title(family, fontsize=10)
        if xlabels:
            ax.set_xticks(range(len(xlabels)))
            ax.set_xticklabels(xlabels, fontsize=7)
        ax.set_ylabel("mp / raw peer")
        values = [p[2] for pts in lines.values() for p in pts if p[2] > 0]
        if values and max(values) / min(values) > 20:
            ax.set_yscale("log")      # BM_Spawn: 0.01x (spawn) beside 150x (big parent)
        else:
            ax.set_ylim(bottom=0)
        ax.axhline(1.0, color="#555", ls="--", lw=1)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return _img(fig, "mp's ratio to its raw peer across runs, one line per workload")
