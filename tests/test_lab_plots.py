"""The lab's plots: whiskers from the repetitions, log axis, size labels,
legends outside the data, titles naming the parameters, sweep errors."""
import os

import pytest

if "libasan" in os.environ.get("LD_PRELOAD", "") or os.environ.get("FASTIO_SANITIZE") == "1":
    pytest.skip("matplotlib's C++ extensions abort under the ASan preload",
                allow_module_level=True)
matplotlib = pytest.importorskip("matplotlib", reason="the lab's plots need matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.container import ErrorbarContainer  # noqa: E402

from fastio import lab  # noqa: E402
from fastio.lab import plots  # noqa: E402

METHODS = ["psync", "mmap", "fastio.pread"]


@pytest.fixture(scope="module")
def res():
    r = lab.run(METHODS, size="1M", block_size="64k", repeat=3, progress=False)
    assert {m: [x["status"] for x in r.records if x["method"] == m] for m in METHODS} == \
        {m: ["ok"] * 3 for m in METHODS}
    return r


@pytest.fixture(scope="module")
def sweep():
    return lab.sweep(["psync"], block_size=["4k", "64k", "1M"], size="1M", repeat=2,
                     progress=False)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def copy_with(res, factor):
    """The same results with fastio.pread's throughput scaled by ``factor``."""
    recs = []
    for r in res.records:
        r = dict(r)
        if r["method"] == "fastio.pread":
            r["throughput_Bps"] *= factor
        recs.append(r)
    return lab.Results(recs, res.env)


def whiskers(ax):
    """{bar index: (low, high)} of the bar plot's error bars, in axis units."""
    out = {}
    for c in ax.containers:
        if isinstance(c, ErrorbarContainer):
            for seg in c.lines[2][0].get_segments():
                (x0, y0), (x1, y1) = seg
                out[round(y0)] = (min(x0, x1), max(x0, x1))
    return out


def test_bar_whiskers_are_min_and_max_of_the_repetitions(res):
    fig = res.plot("bar")
    ax = fig.axes[0]
    labels = [t.get_text().lstrip("* ") for t in ax.get_yticklabels()]
    w = whiskers(ax)
    assert sorted(w) == list(range(len(labels)))
    for i, name in enumerate(labels):
        tps = [r["throughput_Bps"] / 1e6 for r in res.records if r["method"] == name]
        assert len(tps) == 3
        assert w[i] == pytest.approx((min(tps), max(tps)), rel=1e-9)


def test_log_axis_when_values_span_more_than_10x(res):
    assert copy_with(res, 1000.0).plot("bar").axes[0].get_xscale() == "log"


def test_linear_axis_when_they_do_not_and_log_option_forces(res):
    flat = lab.Results([dict(r, throughput_Bps=1e9 + r["repetition"] * 1e7)
                        for r in res.records], res.env)
    assert flat.plot("bar").axes[0].get_xscale() == "linear"
    assert plots.plot(flat, "bar", log=True).axes[0].get_xscale() == "log"
    assert plots.plot(copy_with(res, 1000.0), "bar", log=False).axes[0].get_xscale() == \
        "linear"


def test_sweep_axis_is_log_only_past_10x(sweep):
    flat = lab.Results([dict(r, throughput_Bps=1e9 + r["repetition"] * 1e7)
                        for r in sweep.records], sweep.env)
    assert flat.plot("sweep").axes[0].get_yscale() == "linear"
    steep = lab.Results([dict(r, throughput_Bps=r["params"]["block_size"] * 1e6)
                         for r in sweep.records], sweep.env)
    ax = steep.plot("sweep").axes[0]
    assert ax.get_yscale() == "log"
    ax.figure.canvas.draw()
    assert "1,000,000" in [t.get_text() for t in ax.get_yticklabels()]   # not 10^6


def test_title_names_the_parameters(res):
    title = res.plot("bar").axes[0].get_title()
    for part in ("pattern seq", "block 64 KiB", "depth 1", "file 1 MiB", "cache warm"):
        assert part in title, title
    assert "block 64 KiB" in res.plot("latency").axes[0].get_title()


def test_legend_is_outside_the_axes(res, sweep):
    for fig in (res.plot("bar"), res.plot("latency"), sweep.plot("sweep")):
        fig.canvas.draw()
        ax = fig.axes[0]
        legend = ax.get_legend()
        assert legend is not None
        assert legend.get_window_extent().x0 >= ax.get_window_extent().x1


def test_sweep_ticks_read_as_sizes_and_carry_whiskers(sweep):
    ax = sweep.plot("sweep").axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["4 KiB", "64 KiB", "1 MiB"]
    assert ax.get_xlabel() == "block size"
    assert [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert "block varies" in ax.get_title() and "file 1 MiB" in ax.get_title()


def test_sweep_of_a_result_without_a_sweep_raises_and_draws_nothing(res):
    before = plt.get_fignums()
    with pytest.raises(ValueError, match=r"plot\('sweep'\) needs results measured at "
                       r"several block sizes or depths .*every row has block 64 KiB, "
                       r"depth 1"):
        res.plot("sweep")
    assert plt.get_fignums() == before


def test_unknown_kind(res):
    with pytest.raises(ValueError, match=r"kind must be one of .* got kind='pie'"):
        res.plot("pie")


@pytest.mark.parametrize("n,text", [(512, "512 B"), (4096, "4 KiB"), (65536, "64 KiB"),
                                    (1 << 20, "1 MiB"), (256 << 20, "256 MiB"),
                                    (3 << 29, "1.5 GiB")])
def test_fmt_size(n, text):
    assert plots.fmt_size(n) == text


def test_saved_png(res, tmp_path):
    path = tmp_path / "bar.png"
    res.plot("bar", path=str(path))
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_the_docs_figures_script_runs(tmp_path):
    """docs/lab_figures.py (which draws docs/img/lab-*.png) runs, small."""
    import importlib.util
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "docs", "lab_figures.py")
    if not os.path.exists(script):
        pytest.skip("docs/ is not beside tests/ (not a source checkout)")
    spec = importlib.util.spec_from_file_location("lab_figures", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--size", "1M", "--repeat", "2", "--out", str(tmp_path)]) == 0
    for name in ("lab-bar", "lab-latency", "lab-sweep"):
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
