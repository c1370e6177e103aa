"""Plots of lab Results with matplotlib (the optional extra ``lab``).

Every plot shows the median of the repetitions and, as whiskers, their
minimum and maximum (read from the records: one per repetition), so a
figure never hides how much it moved. An axis whose values span more than
10x is logarithmic (``log=`` forces either way); sizes read 4 KiB, 64 KiB,
1 MiB; legends sit outside the axes; titles name the pattern, block size,
depth, file size and cache state that the figure was measured with.
"""
from typing import Any, Dict, List, Optional, Sequence, Tuple

_KINDS = ("bar", "latency", "sweep")
#: values spanning more than this factor get a log axis (log=None)
LOG_SPAN = 10.0
_PARAM_NAMES = {"pattern": "pattern", "block_size": "block", "depth": "depth",
                "size": "file", "cache": "cache", "threads": "threads"}


def _pyplot():
    try:
        import matplotlib
        if matplotlib.get_backend().lower() not in ("agg",) and not _interactive():
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("Results.plot() needs matplotlib: pip install matplotlib "
                          "(or the lab extra: pip install \".[lab]\" from a clone)") from e
    return plt


def _interactive() -> bool:
    # In Jupyter keep the inline backend; elsewhere draw off screen.
    import sys
    return "ipykernel" in sys.modules


def fmt_size(n: float) -> str:
    """fmt_size(n)

    A byte count as people write it: 4 KiB, 64 KiB, 1 MiB, 1.5 GiB, 512 B.
    """
    n = float(n)
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            v = n / (1 << shift)
            return f"{v:.0f} {unit}" if v == int(v) else f"{v:.3g} {unit}"
    return f"{n:.0f} B"


def _fmt_param(k: str, v: Any) -> str:
    if k in ("block_size", "size"):
        return f"{_PARAM_NAMES[k]} {fmt_size(v)}"
    return f"{_PARAM_NAMES.get(k, k)} {v}"


def _pkey(params: Dict[str, Any]) -> Tuple:
    return tuple(sorted(params.items()))


def repetitions(results, field: str = "throughput_Bps") -> Dict[Tuple, List[float]]:
    """repetitions(results, field='throughput_Bps')

    {(method, params as sorted items): [the field of every repetition that
    ran]}: what the whiskers are drawn from. ``field`` may be a dotted path
    into the record ('latency_ns.p99').
    """
    out: Dict[Tuple, List[float]] = {}
    for r in results.records:
        if r.get("status") != "ok":
            continue
        v: Any = r
        for part in field.split("."):
            v = v.get(part) if isinstance(v, dict) else None
        if v is None or v != v:
            continue
        out.setdefault((r["method"], _pkey(r["params"])), []).append(float(v))
    return out


def _spread(reps: Dict[Tuple, List[float]], row: Dict[str, Any], median: float,
            scale: float) -> Tuple[float, float]:
    """(median - min, max - median) of the row's repetitions, scaled; 0, 0 with none."""
    vals = reps.get((row["method"], _pkey(row["params"])))
    if not vals:
        return 0.0, 0.0
    return max(median - min(vals) / scale, 0.0), max(max(vals) / scale - median, 0.0)


def _want_log(values: Sequence[float], log: Optional[bool]) -> bool:
    if log is not None:
        return bool(log)
    pos = [v for v in values if v and v > 0]
    return bool(pos) and max(pos) / min(pos) > LOG_SPAN


def _fixed_and_varying(rows) -> Tuple[Dict[str, Any], List[str]]:
    keys = list(rows[0]["params"])
    varying = [k for k in keys if len({r["params"][k] for r in rows}) > 1]
    fixed = {k: rows[0]["params"][k] for k in keys if k not in varying}
    return fixed, varying


def _where(fixed: Dict[str, Any], varying: Sequence[str]) -> str:
    """'pattern seq, block 1 MiB, depth 1, file 256 MiB, cache warm' (+ what varies)."""
    parts = [_fmt_param(k, fixed[k]) for k in ("pattern", "block_size", "depth", "size",
                                                "cache", "threads")
             if k in fixed and not (k == "threads" and fixed[k] == 1)]
    parts += [f"{_PARAM_NAMES.get(k, k)} varies" for k in varying]
    return ", ".join(parts)


def _plain_numbers(axis, values):
    """Label a log axis 200, 1000, 20000 rather than 2x10^2, 10^3: the
    figures are read as numbers. Minor ticks get labels too when the values
    span less than two decades (else there would be one or two labels)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter
    fmt = FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:.2g}")
    axis.set_major_formatter(fmt)
    pos = [v for v in values if v and v > 0]
    few = bool(pos) and max(pos) / min(pos) < 100
    axis.set_minor_formatter(FuncFormatter(
        lambda v, _: (f"{v:,.0f}" if v >= 1 else f"{v:.2g}")
        if str(f"{v:.1g}")[0] in "25" else "") if few else NullFormatter())


def _legend_outside(ax, handles=None, labels=None, fontsize=8):
    # Right of the axes, so that no entry ever covers a bar or a line.
    kw = dict(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0,
              fontsize=fontsize, frameon=False)
    if handles is not None:
        return ax.legend(handles, labels, **kw)
    return ax.legend(**kw)


def _label(r: Dict[str, Any], varying: Sequence[str]) -> str:
    extra = ", ".join(_fmt_param(k, r["params"][k]) for k in varying)
    return r["method"] + (f" ({extra})" if extra else "")


def plot(results, kind: str = "bar", *, baseline: Optional[str] = None, ax=None,
         log: Optional[bool] = None):
    """plot(results, kind='bar', *, baseline=None, ax=None, log=None)

    A matplotlib Figure of ``results`` (see Results.plot). ``log``: None
    picks a log axis when the values span more than LOG_SPAN (10x), True or
    False forces it. Raises ValueError for an unknown kind, and for 'sweep'
    on results that do not vary the block size or the depth.
    """
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got kind={kind!r}")
    rows = [r for r in results.summary(baseline) if r.get("throughput_Bps")]
    if kind == "sweep":
        # Checked before drawing anything: no half-made figure is left behind.
        _, varying = _fixed_and_varying(rows) if rows else ({}, [])
        if not {"block_size", "depth"} & set(varying):
            got = ("nothing was measured" if not rows else
                   "every row has " + ", ".join(
                       _fmt_param(k, rows[0]["params"][k]) for k in ("block_size", "depth")))
            raise ValueError(
                "plot('sweep') needs results measured at several block sizes or depths "
                "(lab.sweep(..., block_size=['4k', '64k', '1M']) or `fastio sweep --bs "
                f"4k,64k,1M`); {got}: use plot('bar') or plot('latency') for these")
    plt = _pyplot()
    if ax is None:
        n = len(rows)
        size = (10, max(3.0, 0.3 * n + 1.5)) if kind != "sweep" else (10, 5)
        fig, ax = plt.subplots(figsize=size, constrained_layout=True)
    else:
        fig = ax.figure
    if not rows:
        ax.text(0.5, 0.5, "nothing measured", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    fixed, varying = _fixed_and_varying(rows)
    where = _where(fixed, varying)
    if kind == "bar":
        _bar(ax, rows, varying, repetitions(results), log)
        ax.set_title(f"Throughput, {where}", fontsize=10)
    elif kind == "latency":
        _latency(ax, rows, varying, results, log)
        ax.set_title(f"Latency per request, {where}", fontsize=10)
    else:
        _sweep(ax, rows, varying, repetitions(results), log)
        ax.set_title(f"Sweep, {where}", fontsize=10)
    return fig


def _group_colors(rows):
    from matplotlib import colormaps
    cmap = colormaps["tab10"]
    groups: Dict[str, Any] = {}
    for r in rows:
        groups.setdefault(r["group"], cmap(len(groups) % 10))
    return groups


def _bar(ax, rows, varying, reps, log):
    from matplotlib.patches import Patch
    from matplotlib.lines import Line2D
    colors = _group_colors(rows)
    vals = [r["throughput_Bps"] / 1e6 for r in rows]
    lo_hi = [_spread(reps, r, v, 1e6) for r, v in zip(rows, vals)]
    y = list(range(len(rows)))
    ax.barh(y, vals, color=[colors[r["group"]] for r in rows],
            xerr=[[a for a, _ in lo_hi], [b for _, b in lo_hi]],
            error_kw=dict(ecolor="black", elinewidth=1, capsize=3), height=0.7)
    ax.set_yticks(y, [("* " if r["winner"] else "") + _label(r, varying) for r in rows],
                  fontsize=8)
    ax.invert_yaxis()
    tops = [v + hi for v, (_, hi) in zip(vals, lo_hi)]
    if _want_log(vals + tops, log):
        ax.set_xscale("log")
        _plain_numbers(ax.xaxis, vals + tops)
    ax.set_xlabel("MB/s (10^6 bytes/s), median of the repetitions" +
                  (", log scale" if ax.get_xscale() == "log" else ""))
    for i, r in enumerate(rows):
        if r.get("ratio") is not None and r.get("ratio_to") != r["method"]:
            ax.text(tops[i], i, f"  {r['ratio']:.2f}x {r['ratio_to']}", va="center",
                    fontsize=7)
    # Room on the right for the ratio texts.
    lo, hi = ax.get_xlim()
    ax.set_xlim(lo, hi * (3.0 if ax.get_xscale() == "log" else 1.25))
    n = max((len(v) for v in reps.values()), default=0)
    handles = [Patch(color=c, label=g) for g, c in colors.items()]
    handles.append(Line2D([], [], color="black", marker="|", linestyle="-",
                          label=f"min-max of {n} repetitions"))
    handles.append(Line2D([], [], linestyle="", label="* fastest of its family"))
    _legend_outside(ax, handles, [h.get_label() for h in handles])


def _latency(ax, rows, varying, results, log):
    from matplotlib.lines import Line2D
    # whole-file methods: one request per repetition, no percentile (None)
    rows = [r for r in rows if any(r["latency_ns"].get(p) is not None
                                   for p in ("p50", "p99", "p99.9"))]
    if not rows:
        ax.text(0.5, 0.5, "no latency percentiles: every method made one request per "
                "repetition", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    y = list(range(len(rows)))
    allv: List[float] = []
    for j, (p, c) in enumerate((("p50", "tab:green"), ("p99", "tab:orange"),
                                ("p99.9", "tab:red"))):
        reps = repetitions(results, f"latency_ns.{p}")
        vals, lows, highs = [], [], []
        for r in rows:
            v = r["latency_ns"].get(p)
            v = float("nan") if v is None else v / 1e3
            lo, hi = _spread(reps, r, v, 1e3) if v == v else (0.0, 0.0)
            vals.append(v)
            lows.append(lo)
            highs.append(hi)
        allv += [v for v in vals if v == v]
        ax.barh([i + (j - 1) * 0.27 for i in y], vals, height=0.27, color=c, label=p,
                xerr=[lows, highs], error_kw=dict(ecolor="black", elinewidth=0.8,
                                                  capsize=2))
    ax.set_yticks(y, [_label(r, varying) for r in rows], fontsize=8)
    ax.invert_yaxis()
    if _want_log(allv, log if log is not None else True):
        ax.set_xscale("log")
        _plain_numbers(ax.xaxis, allv)
    ax.set_xlabel("latency per request, µs, median of the repetitions" +
                  (", log scale" if ax.get_xscale() == "log" else ""))
    handles, labels = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], color="black", marker="|", linestyle="-"))
    labels.append("min-max of the repetitions")
    _legend_outside(ax, handles, labels)


def _sweep(ax, rows, varying, reps, log):
    xkey = "block_size" if "block_size" in varying else "depth"
    others = [k for k in varying if k != xkey]
    lines: Dict[Tuple, List[Tuple[float, float, float, float]]] = {}
    for r in rows:
        key = (r["method"],) + tuple(r["params"][k] for k in others)
        v = r["throughput_Bps"] / 1e6
        lo, hi = _spread(reps, r, v, 1e6)
        lines.setdefault(key, []).append((r["params"][xkey], v, lo, hi))
    # One colour per method, one line style per value of the other
    # parameters that vary (the depth, when the x axis is the block size).
    from matplotlib import colormaps
    cmap = colormaps["tab10" if len({k[0] for k in lines}) <= 10 else "tab20"]
    colors: Dict[str, Any] = {}
    styles: Dict[Tuple, str] = {}
    allv: List[float] = []
    for key, pts in lines.items():
        pts.sort()
        color = colors.setdefault(key[0], cmap(len(colors) % cmap.N))
        style = styles.setdefault(key[1:], ("-", "--", ":", "-.")[len(styles) % 4])
        label = key[0] + "".join(f", {_fmt_param(k, v)}" for k, v in zip(others, key[1:]))
        xs = [p[0] for p in pts]
        vs = [p[1] for p in pts]
        allv += vs + [v + hi for _, v, _, hi in pts]
        ax.errorbar(xs, vs, yerr=[[p[2] for p in pts], [p[3] for p in pts]], marker="o",
                    markersize=4, capsize=3, label=label, color=color, linestyle=style)
    xs = sorted({r["params"][xkey] for r in rows})
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [fmt_size(x) if xkey == "block_size" else str(x) for x in xs])
    from matplotlib.ticker import NullLocator
    ax.xaxis.set_minor_locator(NullLocator())   # only the measured sizes are ticks
    ax.set_xlabel("block size" if xkey == "block_size" else "requests in flight (depth)")
    if _want_log(allv, log):
        ax.set_yscale("log")
        _plain_numbers(ax.yaxis, allv)
    ax.set_ylabel("MB/s, median (whiskers: min-max)" +
                  (", log scale" if ax.get_yscale() == "log" else ""))
    ax.grid(True, which="major", alpha=0.3)
    _legend_outside(ax, fontsize=7 if len(lines) > 12 else 8)
