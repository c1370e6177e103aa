"""Plots of lab Results with matplotlib (the optional extra fastio[lab])."""
from typing import Optional

_KINDS = ("bar", "latency", "sweep")


def _pyplot():
    try:
        import matplotlib
        if matplotlib.get_backend().lower() not in ("agg",) and not _interactive():
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("Results.plot() needs matplotlib: pip install 'fastio[lab]'") from e
    return plt


def _interactive() -> bool:
    # In Jupyter keep the inline backend; elsewhere draw off screen.
    import sys
    return "ipykernel" in sys.modules


def plot(results, kind: str = "bar", *, baseline: Optional[str] = None, ax=None):
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got kind={kind!r}")
    plt = _pyplot()
    rows = [r for r in results.summary(baseline) if r.get("throughput_Bps")]
    if ax is None:
        fig, ax = plt.subplots(figsize=(9, max(3.0, 0.32 * len(rows) + 1.2))
                               if kind != "sweep" else (8, 4.5))
    else:
        fig = ax.figure
    if not rows:
        ax.text(0.5, 0.5, "nothing measured", ha="center", va="center")
        return fig
    p0 = rows[0]["params"]
    from .results import _fmt_bytes
    where = (f"{p0['pattern']} bs={_fmt_bytes(p0['block_size'])} depth={p0['depth']} "
             f"cache={p0['cache']}")
    if kind == "bar":
        labels = [f"{r['method']} [{r['group']}]" for r in rows]
        vals = [r["throughput_Bps"] / 1e6 for r in rows]
        colors = ["tab:orange" if r["winner"] else "tab:blue" for r in rows]
        ax.barh(range(len(rows)), vals, color=colors)
        ax.set_yticks(range(len(rows)), labels)
        ax.invert_yaxis()
        ax.set_xlabel("MB/s (median; orange: fastest of its row)")
        for i, r in enumerate(rows):
            if r["ratio"] is not None:
                ax.text(vals[i], i, f" {r['ratio']:.2f}x {r['ratio_to']}", va="center",
                        fontsize=8)
        ax.set_title(f"throughput, {where}")
    elif kind == "latency":
        labels = [r["method"] for r in rows]
        for j, (p, c) in enumerate((("p50", "tab:green"), ("p99", "tab:orange"),
                                    ("p99.9", "tab:red"))):
            vals = [(r["latency_ns"][p] or float("nan")) / 1e3 for r in rows]
            ax.barh([i + (j - 1) * 0.27 for i in range(len(rows))], vals, height=0.27,
                    color=c, label=p)
        ax.set_yticks(range(len(rows)), labels)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("latency per request, µs (log)")
        ax.legend()
        ax.set_title(f"latency, {where}")
    else:
        lines = {}
        for r in rows:
            key = (r["method"], r["params"]["depth"], r["params"]["pattern"])
            lines.setdefault(key, []).append((r["params"]["block_size"],
                                              r["throughput_Bps"] / 1e6))
        for (m, d, pat), pts in lines.items():
            pts.sort()
            ax.plot([b for b, _ in pts], [v for _, v in pts], marker="o",
                    label=f"{m} depth={d} {pat}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("block size, bytes")
        ax.set_ylabel("MB/s (median)")
        ax.legend(fontsize=8)
        ax.set_title(f"sweep, cache={p0['cache']}")
    fig.tight_layout()
    return fig
