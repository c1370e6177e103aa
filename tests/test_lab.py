"""fastio.lab in process: methods move the right bytes, records, cache control, outputs.

No timing assertions: figures are checked to be present, positive and
consistent with one another (throughput = bytes / elapsed, p50 <= p99 ...).
"""
import argparse
import json
import os
import statistics
import sys

import numpy as np
import pytest

import fastio
import probes
from conftest import LeakCheck
from fastio import _core, lab
from fastio.lab import GROUPS, METHODS, Job, Results
from fastio.lab.cli import parse_size as cli_parse_size

KIB = 1 << 10
MIB = 1 << 20


@pytest.fixture(scope="module")
def labfile(tmp_path_factory):
    """1 MiB of random bytes on a real (non-tmpfs where possible) filesystem."""
    d = tmp_path_factory.mktemp("lab")
    path = d / "data.bin"
    data = np.random.default_rng(7).bytes(MIB)
    path.write_bytes(data)
    return str(path), data


UNDER_ASAN = "libasan" in os.environ.get("LD_PRELOAD", "") or \
    os.environ.get("FASTIO_SANITIZE") == "1"


def need_matplotlib():
    if UNDER_ASAN:
        pytest.skip("matplotlib's C++ extensions abort under the ASan preload "
                    "(its __cxa_throw interceptor finds no libstdc++ at preload time)")
    pytest.importorskip("matplotlib", reason="plots need matplotlib (fastio[lab])")


def _fs_type(path):
    return lab.filesystem_of(path)["type"]


# ---------------------------------------------------------------- sizes

@pytest.mark.parametrize("text, n", [
    ("4096", 4096), ("1", 1), ("8M", 8 * MIB), ("8m", 8 * MIB), ("8MiB", 8 * MIB),
    ("64k", 64 * KIB), ("1G", 1 << 30), (" 3K ", 3 * KIB), (4096, 4096),
])
def test_parse_size(text, n):
    assert lab.parse_size(text) == n
    if isinstance(text, str):
        assert cli_parse_size(text) == n


@pytest.mark.parametrize("text", ["-1", "0", "", "M", "1.5M", "1X", "ten", 0, -3])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError, match="block_size"):
        lab.parse_size(text, "block_size")
    if isinstance(text, str):
        with pytest.raises(argparse.ArgumentTypeError, match="got"):
            cli_parse_size(text)


# ---------------------------------------------------------------- registry

def test_every_seed_row_has_methods_and_baselines_are_registered():
    for g in GROUPS:
        assert any(m.group == g for m in METHODS.values()), g
    for m in METHODS.values():
        assert m.description and m.group in GROUPS
        if m.baseline is not None:
            assert m.baseline in METHODS


def test_register_rejects_duplicates_and_unknown_baselines():
    with pytest.raises(ValueError, match="'psync' is already registered"):
        lab.register("psync", group="mmap")(lambda j: None)
    with pytest.raises(ValueError, match="baseline='nope'"):
        lab.register("x.y", group="mmap", baseline="nope")(lambda j: None)
    assert "x.y" not in METHODS


def test_selected_adds_baselines_and_groups():
    names = [m.name for m in lab.selected(["mmap"])]
    assert names == ["numpy.memmap", "mmap"]
    names = [m.name for m in lab.selected(groups=["sendfile"])]
    assert names == ["copy.read_write", "sendfile", "copy_file_range", "splice", "socket.send",
                     "sendfile.socket", "splice.socket"]
    names = [m.name for m in lab.selected(["aio.threads"])]
    assert names == ["read.bytearray", "psync", "aio.threads"]   # baselines of baselines
    with pytest.raises(KeyError, match="unknown method 'nope'"):
        lab.selected(["nope"])
    with pytest.raises(KeyError, match="unknown group 'nope'"):
        lab.selected(groups=["nope"])


def test_unavailable_reasons():
    m = lab.Method("t", lambda j: None, "mmap", requires=("mmap", "no_such_thing"))
    assert m.unavailable() == "fastio.no_such_thing is not available in this build of fastio"
    assert "O_DIRECT" in METHODS["mmap"].unavailable("direct")
    assert METHODS["psync"].unavailable("direct") is None
    for name, info in fastio.backends().items():
        why = METHODS[f"aio.{name}"].unavailable()
        if info.available:
            assert why is None
        else:
            assert name in why and info.reason in why


# ---------------------------------------------------------------- C loops

@pytest.mark.smoke
def test_lab_pread_reads_every_block_and_times_it(labfile, leakcheck):
    path, data = labfile
    offs = np.array([4096, 0, 65536], np.int64)
    lat = np.zeros(3, np.int64)
    buf = bytearray(4096)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert _core._lab_pread(fd, buf, offs, lat) == 3 * 4096
        assert bytes(buf) == data[65536:65536 + 4096]
        assert (lat > 0).all()
        with pytest.raises(EOFError):
            _core._lab_pread(fd, buf, np.array([MIB - 100], np.int64), np.zeros(1, np.int64))
        with pytest.raises(ValueError, match="one length"):
            _core._lab_pread(fd, buf, offs, np.zeros(2, np.int64))
    finally:
        os.close(fd)
    with pytest.raises(OSError, match="pread"):
        _core._lab_pread(fd, buf, offs, lat)   # closed fd: EBADF
    leakcheck.check()


@pytest.mark.smoke
def test_lab_copy_checks_offsets_before_copying():
    src = bytes(range(256)) * 16
    dst = bytearray(16)
    lat = np.zeros(2, np.int64)
    assert _core._lab_copy(src, dst, np.array([32, 100], np.int64), lat) == 32
    assert bytes(dst) == src[100:116]
    with pytest.raises(ValueError, match=r"offsets\[1\]=4090"):
        _core._lab_copy(src, dst, np.array([0, 4090], np.int64), lat)
    with pytest.raises(ValueError, match=r"offsets\[0\]=-1"):
        _core._lab_copy(src, dst, np.array([-1, 0], np.int64), lat)


RACE = r"""
import sys, threading, time
import numpy as np
from fastio import _core
src = np.zeros(1 << 16, np.uint8)
dst = np.zeros(4096, np.uint8)
offs = np.zeros(1 << 17, np.int64)
lat = np.zeros_like(offs)
stop = False
def mutate():   # writes an out-of-range offset into the caller's array, again and again
    while not stop:
        offs[::7] = 1 << 40
        offs[::7] = 0
t = threading.Thread(target=mutate)
t.start()
end = time.monotonic() + float(sys.argv[1])
calls = 0
while time.monotonic() < end:
    try:
        _core._lab_copy(src, dst, offs, lat)
        calls += 1
    except ValueError:
        pass
    a = np.zeros(1 << 12, np.int64)   # latencies aliasing the offsets
    _core._lab_copy(src, dst, a[:-1], a[1:])
stop = True
t.join()
print("ok", calls)
"""


def test_lab_copy_uses_its_own_copy_of_the_offsets():
    # Issue 12: _lab_copy validated the caller's offsets, then re-read them
    # with the GIL released: a thread writing into the array made it copy
    # from far outside the source (SIGSEGV). In a subprocess: a crash is an
    # exit status, not a dead test run.
    import subprocess
    p = subprocess.run([sys.executable, "-c", RACE, "1.5"], capture_output=True, text=True,
                       timeout=120, env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                           [os.path.dirname(os.path.dirname(fastio.__file__))] +
                           [x for x in [os.environ.get("PYTHONPATH")] if x])))
    assert p.returncode == 0, (p.returncode, p.stderr[-2000:])
    assert p.stdout.startswith("ok")


ALIAS = r"""
import numpy as np
from fastio import _core
src = np.full(1 << 20, 0x7f, np.uint8)
offs = np.zeros(1024, np.int64)
dst = offs.view(np.uint8)[:4096]      # the copy lands on the offsets themselves
lat = np.zeros(1024, np.int64)
print(_core._lab_copy(src, dst, offs, lat), int(lat.min() >= 0))
"""


def test_lab_copy_into_its_own_offsets():
    # dst overlapping the offsets array: the first copy writes 0x7f7f... into
    # offsets[0..511]; re-read from the caller's memory, the second request
    # copied from 9 EB past the source (SIGSEGV). The C copy is unaffected.
    import subprocess
    p = subprocess.run([sys.executable, "-c", ALIAS], capture_output=True, text=True,
                       timeout=120, env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                           [os.path.dirname(os.path.dirname(fastio.__file__))] +
                           [x for x in [os.environ.get("PYTHONPATH")] if x])))
    assert p.returncode == 0, (p.returncode, p.stderr[-2000:])
    assert p.stdout.split() == [str(1024 * 4096), "1"]


def test_lab_loops_check_their_arguments():
    lat = np.zeros(1, np.int64)
    with pytest.raises(ValueError, match="larger than src"):
        _core._lab_copy(b"abc", bytearray(8), np.zeros(1, np.int64), lat)
    with pytest.raises(ValueError, match="one length"):
        _core._lab_copy(b"abcd", bytearray(2), np.zeros(2, np.int64), lat)
    fd = os.open(os.devnull, os.O_RDONLY)
    try:
        with pytest.raises(ValueError, match=r"offsets\[0\]=-5"):
            _core._lab_pread(fd, bytearray(8), np.array([-5], np.int64), lat)
    finally:
        os.close(fd)


# ---------------------------------------------------------------- methods move the right bytes

@pytest.mark.parametrize("direct", [False, True], ids=["buffered", "direct"])
@pytest.mark.parametrize("name", list(METHODS))
def test_each_method_moves_the_right_bytes(labfile, name, direct):
    path, data = labfile
    m = METHODS[name]
    why = m.unavailable("direct" if direct else "warm")
    if why and m.backend is not None and not fastio.backends()[m.backend].available:
        probes.fail_or_skip(m.backend, probes.backend(m.backend), why)
    if why:
        pytest.skip(why)
    if direct and m.direct == "n/a":
        pytest.skip("does not read the file")
    bs = 64 * KIB
    offs = lab.offsets_for(len(data), bs, "rand", seed=3)
    job = Job(path, len(data), bs, offs, depth=4, direct=direct, pattern="rand", verify=True)
    try:
        out = m.fn(job)
    except OSError as e:
        if direct and e.errno == 22:
            probes.fail_or_skip("O_DIRECT", probes.o_direct(path), e)
        raise
    want = len(data) if m.whole_file else bs * len(offs)
    assert out.nbytes == want
    got = np.asarray(memoryview(out.check).cast("B") if not isinstance(out.check, np.ndarray)
                     else out.check)
    if m.whole_file:
        assert out.requests == 1
        assert got.tobytes() == data
    elif m.group == "malloc/brk":
        assert out.requests == len(offs)
        assert (got[::4096] == 1).all()     # every page touched
        assert out.extra.keys() >= {"brk_moved", "mmapped_blocks", "mmap_threshold"}
    else:
        assert out.requests == len(offs)
        assert got.tobytes() == data[out.check_offset:out.check_offset + bs]
        assert out.check_offset == int(offs[-1])
    lat = lab.latency_summary(out.lat_ns, out.lat_hist)
    assert lat["count"] == out.requests and lat["max"] > 0
    if m.backend:
        assert out.backend == m.backend


def test_methods_do_not_leak(labfile):
    path, data = labfile
    job = Job(path, len(data), 64 * KIB, lab.offsets_for(len(data), 64 * KIB, "seq"))
    live = [m for m in METHODS.values() if not m.unavailable()]
    for m in live:
        m.fn(job)   # first calls may map what stays (lazy imports, arenas)
    leaks = LeakCheck(map_slack=8)
    for m in live:
        m.fn(job)
    leaks.check()


# ---------------------------------------------------------------- percentiles

def test_latency_summary_agrees_with_numpy():
    rng = np.random.default_rng(1)
    for sample in (np.arange(1, 1001), rng.integers(1, 10**6, 777), np.array([5]),
                   rng.lognormal(8, 1, 5000).astype(np.int64)):
        s = lab.latency_summary(sample)
        for p in (50, 90, 99, 99.9):
            assert s[f"p{p:g}"] == pytest.approx(np.percentile(sample, p))
        assert s["min"] == sample.min() and s["max"] == sample.max()
        assert s["mean"] == pytest.approx(sample.mean()) and s["count"] == len(sample)


def test_percentiles_from_histogram():
    hist = [(10, 50), (20, 40), (40, 9), (80, 1)]   # 100 samples
    ps = lab.percentiles_from_hist(hist, (50, 90, 99, 99.9, 100))
    assert ps == {50: 10.0, 90: 20.0, 99: 40.0, 99.9: 80.0, 100: 80.0}
    s = lab.latency_summary(lat_hist=hist)
    assert s["count"] == 100 and s["min"] == 10 and s["max"] == 80
    assert s["mean"] == pytest.approx((500 + 800 + 360 + 80) / 100)
    assert lab.latency_summary()["count"] == 0


# ---------------------------------------------------------------- cache control

def test_warm_cold_direct_are_verified(labfile):
    path, _ = labfile
    warm = lab.set_cache(path, "warm")
    assert warm["mode"] == "warm" and warm["resident_fraction"] == 1.0 and warm["ok"] is True
    assert "mincore" in warm["verified_by"]
    if _fs_type(path) == "tmpfs":
        pytest.skip("tmpfs pages cannot be evicted: cold and direct are not checkable here")
    cold = lab.set_cache(path, "cold")
    assert cold["resident_fraction"] == 0.0 and cold["ok"] is True
    direct = lab.set_cache(path, "direct")
    assert direct["resident_fraction"] == 0.0 and direct["ok"] is True
    with pytest.raises(ValueError, match="cache='hot'"):
        lab.set_cache(path, "hot")


def test_failed_cache_check_is_recorded(labfile, monkeypatch):
    path, _ = labfile
    from fastio.lab import runner
    monkeypatch.setattr(runner, "evict_cache", lambda p: None)   # an eviction that fails
    runner.warm_cache(path)
    res = lab.run(["psync"], file=path, block_size="256k", cache="cold", repeat=1)
    rec = [r for r in res.records if r["method"] == "psync"][0]
    assert rec["cache"]["ok"] is False and rec["cache"]["resident_fraction"] == 1.0
    assert "cache check failed" in res.table()


# ---------------------------------------------------------------- run and its records

RECORD_KEYS = {"method", "group", "baseline", "status", "reason", "params", "repetition",
               "backend", "bytes", "requests", "elapsed_ns", "io_ns", "setup_ns", "throughput_Bps", "iops",
               "latency_ns", "latency_timer", "cpu", "faults", "cache", "direct", "extra"}


@pytest.fixture(scope="module")
def small_results(tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    res = lab.run(["psync", "mmap", "aio.threads", "aio.io_uring", "fastio.empty"],
                  size="1M", block_size="64k", pattern="rand", depth=4, repeat=2, directory=str(d))
    assert list(d.iterdir()) == []   # the temporary file is gone
    return res


def test_run_record_schema(small_results):
    res = small_results
    assert res.ok
    assert {r["method"] for r in res.records} == {
        "psync", "read.bytearray", "mmap", "numpy.memmap", "aio.threads", "aio.io_uring",
        "fastio.empty", "malloc.numpy"}
    assert len(res.records) == 2 * 8
    for r in res.records:
        assert r["params"] == {"pattern": "rand", "block_size": 64 * KIB, "depth": 4,
                               "size": MIB, "cache": "warm", "threads": 1}
        if r["status"] == "unavailable":
            assert r["reason"]
            continue
        assert r.keys() >= RECORD_KEYS, RECORD_KEYS - r.keys()
        assert r["bytes"] == MIB and r["requests"] == 16
        assert r["throughput_Bps"] == pytest.approx(r["bytes"] / (r["io_ns"] / 1e9))
        assert r["iops"] == pytest.approx(r["requests"] / (r["io_ns"] / 1e9))
        assert 0 < r["io_ns"] <= r["elapsed_ns"]
        assert r["setup_ns"] == r["elapsed_ns"] - r["io_ns"]
        if not r["method"].startswith("aio."):
            assert r["io_ns"] == r["elapsed_ns"]
        lat = r["latency_ns"]
        assert 0 <= lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99.9"] \
            <= lat["max"]
        assert lat["count"] == 16
        assert r["cpu"]["user_s"] >= 0 and r["cpu"]["sys_s"] >= 0
        assert r["faults"]["minor"] >= 0 and r["faults"]["major"] >= 0
        if r["group"] != "malloc/brk":
            assert r["cache"]["ok"] is True and r["cache"]["resident_fraction"] == 1.0
    threads = [r for r in res.records if r["method"] == "aio.threads"]
    assert all(r["backend"] == "threads" for r in threads)
    assert "histogram" in threads[0]["latency_timer"]
    assert "C " in [r for r in res.records if r["method"] == "psync"][0]["latency_timer"]
    uring = [r for r in res.records if r["method"] == "aio.io_uring"][0]
    if not fastio.backends()["io_uring"].available:
        assert uring["status"] == "unavailable" and "io_uring" in uring["reason"]
    env = res.env
    assert env["file"]["size"] == MIB and env["file"]["temporary"] is True
    assert env["file"]["filesystem"]["type"]
    m = env["machine"]
    assert m["kernel"] == os.uname().release and m["cpus"] == os.cpu_count()
    assert m["memory"] > 0 and m["aio_backends"]["threads"] is True


def test_run_on_a_given_file_leaves_it(labfile):
    path, data = labfile
    res = lab.run(["fastio.read_file"], file=path, repeat=1, block_size="1M")
    assert res.ok and open(path, "rb").read() == data
    assert all(r["bytes"] == len(data) for r in res.records)
    assert res.env["file"]["temporary"] is False


def test_run_on_the_first_bytes_of_a_file(labfile):
    path, data = labfile
    res = lab.run(["psync", "fastio.read_file"], file=path, size="256k", block_size="64k",
                  repeat=1)
    assert res.ok
    for r in res.records:
        assert r["params"]["size"] == 256 * KIB
        if r["method"] == "psync":
            assert r["bytes"] == 256 * KIB and r["requests"] == 4
        if r["method"] == "fastio.read_file":
            assert r["bytes"] == len(data)    # a whole-file method reads it all


def test_run_with_threads_splits_the_requests(labfile):
    path, _ = labfile
    res = lab.run(["psync", "aio.threads"], file=path, block_size="16k", threads=2, repeat=1)
    assert res.ok
    for r in res.records:
        if r["status"] == "ok":
            assert r["requests"] == 64 and r["bytes"] == MIB
            assert r["latency_ns"]["count"] == 64


def test_run_records_errors_and_goes_on(labfile, monkeypatch):
    path, _ = labfile

    def boom(job):
        raise OSError(5, "disk on fire")
    monkeypatch.setitem(METHODS, "boom", lab.Method("boom", boom, "read/write",
                                                    baseline="psync"))
    res = lab.run(["boom"], file=path, repeat=2, block_size="256k")
    assert not res.ok
    booms = [r for r in res.records if r["method"] == "boom"]
    assert [r["status"] for r in booms] == ["error", "error"]
    assert "disk on fire" in booms[0]["reason"]
    assert all(r["status"] == "ok" for r in res.records if r["method"] == "psync")
    assert "boom: error: OSError" in res.table()


@pytest.mark.parametrize("kw, words", [
    (dict(repeat=0), "repeat=0"), (dict(depth=-1), "depth=-1"), (dict(threads=0), "threads=0"),
    (dict(pattern="zigzag"), "pattern='zigzag'"), (dict(cache="hot"), "cache='hot'"),
    (dict(block_size="2M"), "block_size=2097152 is larger"), (dict(block_size="x"), "block_size"),
])
def test_run_rejects_bad_arguments(labfile, kw, words):
    path, _ = labfile
    with pytest.raises(ValueError, match=words.replace("(", r"\(")):
        lab.run(["psync"], file=path, **kw)


def test_cold_run_reads_from_the_device(labfile):
    path, _ = labfile
    if _fs_type(path) == "tmpfs":
        pytest.skip("tmpfs pages cannot be evicted")
    res = lab.run(["psync"], file=path, block_size="64k", cache="cold", repeat=1)
    rec = [r for r in res.records if r["method"] == "psync"][0]
    assert rec["cache"] == {**rec["cache"], "mode": "cold", "resident_fraction": 0.0,
                            "ok": True}


# ---------------------------------------------------------------- outputs

def test_table_winner_and_ratios(small_results):
    res = small_results
    rows = res.summary()
    by = {r["method"]: r for r in rows}
    assert by["read.bytearray"]["ratio"] == 1.0
    # the median of the ratios paired by round, within its own range
    assert by["psync"]["ratio"] == pytest.approx(statistics.median(by["psync"]["ratios"]))
    reps = {m: {r["repetition"]: r["throughput_Bps"] for r in res.records
                if r["method"] == m and r["status"] == "ok"} for m in ("psync", "read.bytearray")}
    assert by["psync"]["ratios"] == pytest.approx(
        [reps["psync"][k] / reps["read.bytearray"][k] for k in sorted(reps["psync"])])
    assert by["psync"]["ratio_min"] <= by["psync"]["ratio"] <= by["psync"]["ratio_max"]
    for g in {r["group"] for r in rows}:
        measured = [r for r in rows if r["group"] == g and r.get("throughput_Bps")]
        winners = [r for r in measured if r["winner"]]
        assert len(winners) == 1
        assert winners[0]["throughput_Bps"] == max(r["throughput_Bps"] for r in measured)
    text = res.table()
    for name in by:
        assert name in text
    assert "[read/write]" in text and "[aio]" in text and "p99.9us" in text
    lines = {l.split()[1] if l.startswith("*") else l.split()[0]: l
             for l in text.splitlines() if l.strip() and not l.startswith(("[", "method"))}
    win = [r["method"] for r in rows if r["winner"]]
    for w in win:
        assert lines[w].startswith("* ")
    # a chosen baseline
    rows2 = {r["method"]: r for r in res.summary(baseline="psync")}
    assert rows2["psync"]["ratio"] == 1.0 and rows2["mmap"]["ratio_to"] == "psync"
    assert rows2["mmap"]["ratio"] == pytest.approx(statistics.median(
        [a / b for a, b in zip(*([r["throughput_Bps"] for r in sorted(
            (r for r in res.records if r["method"] == m), key=lambda r: r["repetition"])]
            for m in ("mmap", "psync")))]))
    assert "psync" in res.table(baseline="psync")


def test_json_is_fio_like_and_round_trips(small_results, tmp_path):
    res = small_results
    text = res.to_json(str(tmp_path / "o.json"))
    assert (tmp_path / "o.json").read_text() == text
    d = json.loads(text)
    assert d.keys() >= {"fio version", "timestamp", "jobs"}
    assert len(d["jobs"]) == len(res.records)
    job = next(j for j in d["jobs"] if j["jobname"] == "psync")
    assert job["job options"]["rw"] == "randread" and job["job options"]["bs"] == "65536"
    assert job["job options"]["iodepth"] == "4" and job["job options"]["direct"] == "0"
    rd = job["read"]
    assert rd["io_bytes"] == MIB and rd["bw_bytes"] > 0 and rd["iops"] > 0
    assert rd["bw"] == rd["bw_bytes"] // 1024
    assert set(rd["clat_ns"]["percentile"]) == {"50.000000", "90.000000", "99.000000",
                                                "99.900000"}
    assert job["usr_cpu"] >= 0 and job["sys_cpu"] >= 0 and job["minf"] >= 0
    back = Results.from_json(text)
    assert len(back.records) == len(res.records)
    assert back.summary()[0]["throughput_Bps"] == res.summary()[0]["throughput_Bps"]


def test_to_pandas(small_results):
    if os.environ.get("CI"):
        import pandas  # noqa: F401  (in the test extra: CI must not skip this)
    pytest.importorskip("pandas", reason="pandas is optional (fastio[lab])")
    df = small_results.to_pandas()
    recs = small_results.records
    assert len(df) == len(recs)
    assert {"method", "params.block_size", "latency_ns.p99", "throughput_Bps"} <= set(df.columns)
    assert "check" not in df.columns
    for i, r in enumerate(recs):
        assert df["method"][i] == r["method"]
        if r["status"] == "ok":
            assert df["throughput_Bps"][i] == r["throughput_Bps"]
            assert df["latency_ns.p99"][i] == r["latency_ns"]["p99"]
            assert df["params.block_size"][i] == r["params"]["block_size"]


def test_to_pandas_without_pandas_says_how_to_get_it(small_results, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)   # import pandas -> ImportError
    with pytest.raises(ImportError, match="pip install pandas"):
        small_results.to_pandas()


# "sweep" needs a result of lab.sweep: on a plain run it raises ValueError
# (tests/test_lab_plots.py).
@pytest.mark.parametrize("kind", ["bar", "latency"])
def test_plot_returns_a_figure(small_results, kind, tmp_path):
    need_matplotlib()
    import matplotlib.figure
    fig = small_results.plot(kind, path=str(tmp_path / "p.png"))
    assert isinstance(fig, matplotlib.figure.Figure)
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert fig.axes and fig.axes[0].get_title()
    import matplotlib.pyplot as plt
    plt.close(fig)


def test_plot_rejects_an_unknown_kind(small_results):
    need_matplotlib()
    with pytest.raises(ValueError, match="kind='pie'"):
        small_results.plot("pie")


def test_sweep_covers_every_combination_with_a_progress_line(labfile, capsys, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "tqdm", None)        # the fallback counter
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    path, _ = labfile
    res = lab.sweep(["psync", "aio.threads"], block_size=["16k", "256k"], depth=[1, 2],
                    file=path, repeat=1, warmup=False)
    combos = {(r["method"], r["params"]["block_size"], r["params"]["depth"])
              for r in res.records}
    # the synchronous methods run once per block size: depth does not apply to them
    for m in ("psync", "read.bytearray"):
        assert {(b, d) for n, b, d in combos if n == m} == {(16 * KIB, 1), (256 * KIB, 1)}
    assert {(b, d) for n, b, d in combos if n == "aio.threads"} == {
        (16 * KIB, 1), (16 * KIB, 2), (256 * KIB, 1), (256 * KIB, 2)}
    assert len(res.records) == 2 * 2 + 4
    assert all(r["depth_applies"] is False for r in res.records if r["method"] == "psync")
    err = capsys.readouterr().err
    assert "fastio.lab.sweep: 8/8" in err and "left" in err and "elapsed" in err
    # the aio rows at depth 2 still have their ratio to psync (run at depth 1)
    rows = {(r["method"], r["params"]["block_size"], r["params"]["depth"]): r
            for r in res.summary()}
    assert rows[("aio.threads", 16 * KIB, 2)]["ratio"] is not None
    text = res.table()
    assert "n/a" in text and "does not apply" in text
    assert res.env["sweep"]["block_size"] == [16 * KIB, 256 * KIB]
