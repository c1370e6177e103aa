"""The asynchronous I/O behaviour suite, run against every backend.

Each test takes the `backend` fixture: one run per backend that works here,
a skip naming its probe's reason for one that does not. os.pread/os.pwrite
are the oracle; leaks are counted in /proc (fds, mappings, threads) and in
the export counters of fastio.Buffer.
"""
import errno
import gc
import inspect
import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastio
from fastio import aio

import probes
from conftest import LeakCheck

PROBED = fastio.backends()
# Above any RLIMIT_NOFILE: never an open fd (a just-closed fd number is no
# good: the queue's own ring or eventfd may reuse it).
BAD_FD = 1 << 30

# Under AddressSanitizer every thread gets shadow and fake-stack mappings
# that ASan recycles lazily: count fds exactly, mappings loosely.
with open("/proc/self/maps") as _fh:
    MAP_SLACK = 64 if "libasan" in _fh.read() else 4


@pytest.fixture(params=aio.BACKENDS)
def backend(request):
    info = PROBED[request.param]
    if not info.available:
        probes.fail_or_skip(info.name, probes.backend(info.name), info.reason)
    return request.param


def warm(backend, depth=64):
    """Run a queue once before counting mappings: glibc keeps the stacks of
    joined threads in a cache (mapped, reused by the next threads), which
    is not a leak of ours."""
    with fastio.Queue(depth, backend) as q:
        q.fsync(0)


def count_threads():
    return len(os.listdir("/proc/self/task"))


def settle_threads(before, timeout=3.0):
    """Threads back to `before`. glibc's POSIX aio threads are process-wide
    and exit after an idle second (the shortest glibc allows): wait for it."""
    end = time.monotonic() + timeout
    while count_threads() > before and time.monotonic() < end:
        time.sleep(0.05)
    return count_threads()


@pytest.fixture
def blob(tmp_path):
    data = os.urandom(256 * 1024 + 123)  # not a multiple of a page: EOF mid-block
    p = tmp_path / "blob.bin"
    p.write_bytes(data)
    fd = os.open(p, os.O_RDONLY)
    yield p, fd, data
    os.close(fd)


# ---------------------------------------------------------------- backends()

def test_backends_lists_every_backend_with_reason():
    info = fastio.backends()
    assert list(info) == list(aio.BACKENDS)
    assert info["threads"].available
    for b in info.values():
        assert isinstance(b.features, frozenset)
        if b.available:
            assert b.reason == "" and b.errno == 0
        else:
            assert b.reason and b.errno > 0, b


def test_auto_never_picks_posix_aio(monkeypatch):
    monkeypatch.delenv("FASTIO_BACKEND", raising=False)
    name, _ = aio.resolve_backend("auto", direct=True)
    assert name != "posix_aio"
    name, _ = aio.resolve_backend("auto", direct=False)
    assert name not in ("posix_aio", "linux_aio")  # linux_aio: only with O_DIRECT


def test_env_overrides_auto(monkeypatch):
    monkeypatch.setenv("FASTIO_BACKEND", "threads")
    with fastio.Queue() as q:
        assert q.backend == "threads"
        assert q.fallback == "FASTIO_BACKEND"
    monkeypatch.setenv("FASTIO_BACKEND", "bogus")
    with pytest.raises(ValueError, match="FASTIO_BACKEND"):
        fastio.Queue()


def test_named_backend_that_does_not_work_raises_why():
    broken = [b for b in PROBED.values() if not b.available]
    if not broken:
        pytest.skip("every backend works here")
    b = broken[0]
    with pytest.raises(fastio.BackendUnavailable) as ei:
        fastio.Queue(backend=b.name)
    assert isinstance(ei.value, OSError) and isinstance(ei.value, fastio.FastIOError)
    assert b.name in str(ei.value) and b.reason in str(ei.value)
    assert ei.value.errno == b.errno


@pytest.mark.smoke
def test_bad_arguments():
    with pytest.raises(ValueError, match="depth"):
        fastio.Queue(0, "threads")
    with pytest.raises(ValueError, match="backend"):
        fastio.Queue(4, "nope")
    with fastio.Queue(4, "threads") as q:
        with pytest.raises(ValueError, match="offset"):
            q.read(0, bytearray(1), -1)
        with pytest.raises(TypeError, match="writable"):
            q.read(0, b"immutable", 0)
        with pytest.raises(TypeError, match="keyword"):
            q.read(0, bytearray(1), 0, flag=1)
    with pytest.raises(ValueError, match="closed"):
        q.read(0, bytearray(1), 0)


def test_signatures():
    for name in ("read", "write", "fsync", "submit", "wait", "drain", "close",
                 "register_files", "register_buffers", "latency_histogram"):
        inspect.signature(getattr(fastio.Queue, name))
    assert list(inspect.signature(fastio.Queue.wait).parameters) == [
        "self", "min_complete", "timeout"]
    assert "out" in inspect.signature(fastio.read_blocks).parameters


# ---------------------------------------------------------------- reads and writes

@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reqs=st.lists(st.tuples(st.integers(0, 300 * 1024), st.integers(0, 70000)),
                     min_size=1, max_size=40),
       depth=st.sampled_from([1, 3, 16]))
@pytest.mark.smoke
def test_random_reads_match_pread(backend, blob, reqs, depth):
    p, fd, data = blob
    with fastio.Queue(depth, backend) as q:
        bufs = {}
        for off, n in reqs:
            b = bytearray(n)
            tag = q.read(fd, b, off)
            bufs[tag] = (b, off, n)
        got = q.drain()
        got += q.wait(0)
    assert sorted(t for t, _ in got) == sorted(bufs)
    for tag, res in got:
        b, off, n = bufs[tag]
        want = os.pread(fd, n, off)
        assert res == len(want)  # EOF: short; past EOF: 0
        assert bytes(b[:res]) == want


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(writes=st.lists(st.tuples(st.integers(0, 100000), st.binary(min_size=0, max_size=5000)),
                       min_size=1, max_size=30))
@pytest.mark.smoke
def test_random_writes_match_pwrite(backend, tmp_path, writes):
    p = tmp_path / "w.bin"
    p.write_bytes(b"")
    oracle = tmp_path / "oracle.bin"
    oracle.write_bytes(b"")
    fd = os.open(p, os.O_RDWR)
    ofd = os.open(oracle, os.O_RDWR)
    try:
        # Overlapping writes in flight together have no defined order: one
        # queue round per write keeps the oracle meaningful; the batch
        # tests below run many at once on disjoint ranges.
        with fastio.Queue(8, backend) as q:
            for off, data in writes:
                q.write(fd, data, off)
                (tag, res), = q.drain()
                assert res == len(data)
                os.pwrite(ofd, data, off)
        assert p.read_bytes() == oracle.read_bytes()
    finally:
        os.close(fd)
        os.close(ofd)


def test_tags_and_results(backend, blob):
    p, fd, data = blob
    with fastio.Queue(4, backend) as q:
        assert q.read(fd, bytearray(10), 0) == 0
        assert q.read(fd, bytearray(10), 10) == 1
        key = object()
        assert q.read(fd, bytearray(10), 20, tag=key) is key
        assert q.in_flight == 3
        assert q.submit() == q.in_flight
        done = dict(q.drain())
        assert done == {0: 10, 1: 10, key: 10}
        assert q.in_flight == 0
        assert q.wait() == []  # nothing in flight: no wait
        assert q.wait(5, timeout=0.01) == []


@pytest.mark.parametrize("submit_batch", [1, 3, 64])
def test_submit_batch_caps_each_call_not_the_total(backend, blob, submit_batch):
    # submit_batch bounds the requests per backend call; every request is
    # still submitted (several calls), and batches read the right bytes.
    p, fd, data = blob
    with fastio.Queue(16, backend, submit_batch=submit_batch) as q:
        assert q.submit_batch == min(submit_batch, 16)
        bufs = [bytearray(1000) for _ in range(16)]
        for i, b in enumerate(bufs):
            q.read(fd, b, i * 1000, tag=i)
        assert q.submit() == 16
        assert sorted(q.drain()) == [(i, 1000) for i in range(16)]
        assert b"".join(bufs) == data[:16000]
        offsets = np.random.default_rng(submit_batch).integers(0, len(data) - 4096, 500)
        dest = bytearray(500 * 4096)
        res = q.read_batch(fd, offsets, 4096, dest)
        assert (res == 4096).all()
        got = np.frombuffer(dest, np.uint8).reshape(500, 4096)
        for k in range(0, 500, 37):
            assert got[k].tobytes() == data[offsets[k]:offsets[k] + 4096]


def test_submit_batch_default_and_bad_values():
    with fastio.Queue(64, "threads") as q:
        assert q.submit_batch == 8
    with fastio.Queue(4, "threads") as q:
        assert q.submit_batch == 4  # no more than depth can go in one call
    with pytest.raises(ValueError,
                       match=r"submit_batch out of range \[1, \d+\]: submit_batch=0"):
        fastio.Queue(4, "threads", submit_batch=0)
    with pytest.raises(TypeError):
        fastio.Queue(4, "threads", submit_batch="8")


def test_more_requests_than_depth(backend, blob):
    # q.read on a full queue reaps to make room; nothing is lost.
    p, fd, data = blob
    bufs = [bytearray(100) for _ in range(50)]
    with fastio.Queue(3, backend) as q:
        for i, b in enumerate(bufs):
            q.read(fd, b, i * 100, tag=i)
        done = q.wait(0) + q.drain()
    assert sorted(done) == [(i, 100) for i in range(50)]
    assert b"".join(bufs) == data[:5000]


def test_fsync_and_write(backend, tmp_path):
    p = tmp_path / "f.bin"
    with fastio.open(p, "w+") as f:
        with fastio.Queue(4, backend) as q:
            q.write(f, b"hello", 0, tag="w")
            assert q.drain() == [("w", 5)]
            q.fsync(f, tag="s")
            assert q.drain() == [("s", 0)]
    assert p.read_bytes() == b"hello"


def test_wait_timeout_returns_what_there_is(backend, blob):
    p, fd, data = blob
    with fastio.Queue(4, backend) as q:
        q.read(fd, bytearray(4), 0)
        got = []
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            got = q.wait(1, timeout=0.5)
        assert got == [(0, 4)]


# ---------------------------------------------------------------- per-request errors

@pytest.mark.smoke
def test_per_request_errors(backend, blob, tmp_path):
    p, fd, data = blob
    ro = os.open(p, os.O_RDONLY)
    # A number no fd can have (a closed one could be reused by the ring).
    closed_fd = BAD_FD
    try:
        with fastio.Queue(8, backend) as q:
            good = bytearray(16)
            q.read(fd, good, 0, tag="good")
            q.read(closed_fd, bytearray(16), 0, tag="badfd")
            q.write(ro, b"x" * 16, 0, tag="readonly")
            q.read(fd, bytearray(16), len(data) + 4096, tag="eof")
            q.read(fd, bytearray(16), len(data) - 5, tag="short")
            done = dict(q.drain())
    finally:
        os.close(ro)
    assert done["good"] == 16 and bytes(good) == data[:16]
    assert isinstance(done["badfd"], OSError) and done["badfd"].errno == errno.EBADF
    assert backend in str(done["badfd"]) and "read" in str(done["badfd"])
    assert isinstance(done["readonly"], OSError) and done["readonly"].errno == errno.EBADF
    assert done["eof"] == 0
    assert done["short"] == 5


# ---------------------------------------------------------------- batches

def test_read_blocks_10000(backend, tmp_path):
    size = 4096
    data = np.frombuffer(os.urandom(512 * size), np.uint8)
    p = tmp_path / "b.bin"
    p.write_bytes(data.tobytes())
    rng = np.random.default_rng(1)
    offsets = rng.integers(0, 512, 10000) * size
    want = data.reshape(-1, size)[offsets // size]
    offs2 = rng.integers(0, len(data) - 1000, 10000)
    want2 = data[offs2[:, None] + np.arange(777)]

    def run():
        out = fastio.read_blocks(p, offsets, size, backend=backend, depth=32)
        assert out.shape == (10000, size) and out.dtype == np.uint8
        assert np.array_equal(out, want)
        # unaligned offsets and odd sizes through a given out
        out2 = np.empty((10000, 777), np.uint8)
        assert fastio.read_blocks(str(p), offs2, 777, out=out2, backend=backend) is out2
        assert np.array_equal(out2, want2)

    run()  # the first run maps what numpy and glibc keep for later
    lc = LeakCheck(map_slack=MAP_SLACK)
    threads = count_threads()
    run()
    lc.check()
    assert settle_threads(threads) <= threads


def test_read_batch_lengths_and_list_dest(backend, blob):
    p, fd, data = blob
    offsets = np.array([0, 5, 1000, len(data) - 10, len(data) + 10])
    lengths = np.array([5, 100, 0, 100, 7])
    dest = bytearray(int(lengths.sum()))
    with fastio.Queue(2, backend) as q:
        res = q.read_batch(fd, offsets, lengths, dest)
        assert res.tolist() == [5, 100, 0, 10, 0]
        assert bytes(dest[:105]) == data[:5] + data[5:105]
        assert bytes(dest[105:115]) == data[-10:]
        bufs = [bytearray(int(n)) for n in lengths]
        res = q.read_batch(fd, offsets, lengths, bufs)
        assert res.tolist() == [5, 100, 0, 10, 0]
        assert bytes(bufs[1]) == data[5:105]
        with pytest.raises(ValueError, match="offsets\\[1\\]"):
            q.read_batch(fd, [0, -1], 4, bytearray(8))
        with pytest.raises(ValueError, match="dest holds"):
            q.read_batch(fd, [0, 8], 8, bytearray(8))


def test_read_blocks_errors(backend, blob):
    p, fd, data = blob
    with pytest.raises(EOFError, match="request 1"):
        fastio.read_blocks(fd, [0, len(data) - 10], 100, backend=backend)
    bad = BAD_FD
    with pytest.raises(OSError) as ei:
        fastio.read_blocks(bad, [0], 100, backend=backend)
    assert ei.value.errno == errno.EBADF


def test_write_blocks_10000(backend, tmp_path):
    size = 512
    n = 10000
    p = tmp_path / "wb.bin"
    p.write_bytes(b"\0" * (n * size))
    rows = np.frombuffer(os.urandom(n * size), np.uint8).reshape(n, size)
    order = np.random.default_rng(2).permutation(n)
    fastio.write_blocks(p, order * size, rows, backend=backend, depth=16)
    got = np.frombuffer(p.read_bytes(), np.uint8).reshape(n, size)
    assert np.array_equal(got[order], rows)
    ro = os.open(p, os.O_RDONLY)
    try:
        with pytest.raises(OSError) as ei:
            fastio.write_blocks(ro, [0], rows[:1], backend=backend)
        assert ei.value.errno == errno.EBADF
        # The note says which request failed, on every CPython (3.10 has no
        # add_note: the note is in __notes__ there too).
        assert ei.value.__notes__ == [
            f"write_blocks: request 0 (offset 0, {size} bytes) on {backend}; "
            "1 request(s) failed or came short"]
    finally:
        os.close(ro)


# ---------------------------------------------------------------- O_DIRECT

def _direct_file(tmp_path, nbytes):
    p = tmp_path / "direct.bin"
    data = os.urandom(nbytes)
    p.write_bytes(data)
    try:
        f = fastio.open(p, direct=True)
    except OSError as exc:
        probes.fail_or_skip("O_DIRECT", probes.o_direct(tmp_path), exc)
    return p, f, data


def test_direct_reads(backend, tmp_path):
    p, f, data = _direct_file(tmp_path, 1 << 20)
    with f:
        assert f.direct and f.alignment > 0 and f.mem_alignment > 0
        a = max(f.alignment, 4096)
        buf = fastio.empty(2 * a, align=a)
        with fastio.Queue(8, backend) as q:
            q.read(f, buf, 3 * a, tag="ok")
            assert q.drain() == [("ok", 2 * a)]
        assert buf.tobytes() == data[3 * a:5 * a]
        offsets = np.random.default_rng(3).integers(0, (1 << 20) // a, 1000) * a
        out = fastio.read_blocks(f, offsets, a, backend=backend)
        assert np.array_equal(out, np.frombuffer(data, np.uint8).reshape(-1, a)[offsets // a])


def test_direct_misaligned_errors_name_the_alignment(backend, tmp_path):
    p, f, data = _direct_file(tmp_path, 1 << 16)
    with f:
        al = f.alignment
        buf = fastio.empty(8192, align=4096)
        with fastio.Queue(8, backend) as q:
            q.read(f, buf, al + 1, tag="off")
            q.read(f, buf[: al + 1], 0, tag="len")
            done = dict(q.drain())
        for tag in ("off", "len"):
            exc = done[tag]
            assert isinstance(exc, OSError) and exc.errno == errno.EINVAL
            assert f"aligned to {al}" in str(exc) and "O_DIRECT" in str(exc)
        assert "offset=" in str(done["off"]) and "length=" in str(done["len"])
        with pytest.raises(ValueError, match=f"aligned to {al} bytes"):
            fastio.read_blocks(f, [1], al, backend=backend)
        with pytest.raises(ValueError, match=f"aligned to {al} bytes"):
            fastio.read_blocks(f, [0], al + 1, backend=backend)
    with pytest.raises(ValueError, match="direct=True"):
        fastio.read_blocks(os.open(os.devnull, os.O_RDONLY), [0], 1, direct=True)


def test_open_modes(tmp_path):
    p = tmp_path / "o.bin"
    with fastio.open(p, "w") as f:
        assert os.write(f.fileno(), b"abc") == 3
        assert "fastio.File" in repr(f)
    assert f.closed
    with pytest.raises(ValueError, match="closed"):
        f.fileno()
    with pytest.raises(FileExistsError):
        fastio.open(p, "x")
    with pytest.raises(ValueError, match="mode"):
        fastio.open(p, "a")
    with fastio.open(p, "rb") as f:
        assert os.read(f.fileno(), 3) == b"abc" and f.size == 3


def test_open_perm_is_checked(tmp_path):
    p = tmp_path / "perm.bin"
    lc = LeakCheck()
    for bad in (-1, 0o10000, 1 << 40):
        with pytest.raises(ValueError, match=f"perm=.*{bad}"):
            fastio.open(p, "w", perm=bad)
    for bad in ("644", 420.0, None, True):
        with pytest.raises(TypeError, match="perm"):
            fastio.open(p, "x", perm=bad)
    assert not p.exists()  # refused before anything was created
    lc.check()
    old = os.umask(0)
    try:
        with fastio.open(p, "x", perm=np.int64(0o640)):
            pass
        with fastio.open(tmp_path / "sticky.bin", "w", perm=0o7777):
            pass
    finally:
        os.umask(old)
    assert os.stat(p).st_mode & 0o7777 == 0o640
    assert os.stat(tmp_path / "sticky.bin").st_mode & 0o777 == 0o777


# ---------------------------------------------------------------- lifetimes

@pytest.mark.smoke
def test_buffers_pinned_until_reaped(backend, blob):
    p, fd, data = blob
    buf = fastio.Buffer(4096)
    with fastio.Queue(4, backend) as q:
        q.read(fd, buf, 0)
        assert buf.exports == 1
        # Closing the owner meanwhile is safe: the memory is freed only
        # when the queue releases its export.
        buf.close()
        assert q.drain() == [(0, 4096)]
        assert buf.exports == 0


@pytest.mark.smoke
def test_close_with_io_in_flight_cancels_and_releases(backend, blob):
    p, fd, data = blob
    warm(backend, 16)
    lc = LeakCheck(map_slack=MAP_SLACK)
    threads = count_threads()
    bufs = [fastio.Buffer(65536) for _ in range(40)]
    q = fastio.Queue(16, backend)
    for i, b in enumerate(bufs):
        q.read(fd, b, (i * 4096) % len(data))
    q.submit()
    q.close()
    assert q.closed
    assert all(b.exports == 0 for b in bufs)
    q.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        q.wait()
    # collected with I/O in flight
    q = fastio.Queue(16, backend)
    for b in bufs[:10]:
        q.read(fd, b, 0)
    q.submit()
    del q
    gc.collect()
    assert all(b.exports == 0 for b in bufs)
    del bufs
    lc.check()
    assert settle_threads(threads) <= threads


def test_context_manager_drains_then_closes(backend, blob):
    p, fd, data = blob
    b = bytearray(100)
    with fastio.Queue(4, backend) as q:
        q.read(fd, b, 0)
    assert q.closed and bytes(b) == data[:100]
    with pytest.raises(ZeroDivisionError):
        with fastio.Queue(4, backend) as q:
            q.read(fd, bytearray(100), 0)
            1 / 0
    assert q.closed


def test_many_queues_leak_nothing(backend, blob):
    p, fd, data = blob
    warm(backend, 8)
    lc = LeakCheck(map_slack=MAP_SLACK)
    threads = count_threads()
    for _ in range(20):
        with fastio.Queue(8, backend) as q:
            q.read(fd, bytearray(10), 0)
            q.submit()
            q._eventfd()
    lc.check()
    assert settle_threads(threads) <= threads


def test_latency_histogram(backend, blob):
    p, fd, data = blob
    with fastio.Queue(8, backend, latency=True) as q:
        out = np.empty((500, 64), np.uint8)
        q.read_batch(fd, np.arange(500) * 64, 64, out)
        hist = q.latency_histogram()
        assert sum(c for _, c in hist) == 500
        pct = q.percentiles((50, 99))
        assert 0 < pct[50] <= pct[99]
        q.latency_histogram(reset=True)
        assert q.latency_histogram() == []


def test_registered_files_and_buffers(backend, blob):
    p, fd, data = blob
    with fastio.Queue(4, backend) as q:
        if "register_files" not in q.features:
            with pytest.raises(NotImplementedError):
                q.register_files([fd])
            if backend == "io_uring":  # IORING_REGISTER_FILES: Linux 5.1
                probes.fail_or_skip("io_uring", probes.io_uring(), "no register_files")
            pytest.skip(f"{backend} has no registered files")
        buf = fastio.Buffer(8192)
        q.register_files([fd])
        q.register_buffers([buf])
        assert buf.exports == 1
        q.read(fd, buf, 100, tag="fixed")
        assert q.drain() == [("fixed", 8192)]
        assert memoryview(buf).tobytes() == data[100:8292]
        q.register_buffers([])
        assert buf.exports == 0
        q.register_files([])


def test_thread_safety_guard(blob):
    # A second thread calling a queue while the first is inside it with the
    # GIL released gets RuntimeError, not a race on the slots.
    import threading
    p, fd, data = blob
    errors = []
    stop = threading.Event()
    with fastio.Queue(4, "threads", threads=1) as q:

        def other():
            while not stop.is_set():
                try:
                    q.wait(0)
                except RuntimeError as exc:
                    errors.append(exc)
                time.sleep(0.001)

        out = np.empty((4000, 512), np.uint8)
        q.read_batch(fd, np.zeros(4000, np.int64), 512, out)  # warm
        t = threading.Thread(target=other)
        t.start()
        try:
            for _ in range(200):  # until the other thread ran into a batch
                q.read_batch(fd, np.zeros(4000, np.int64), 512, out)
                if errors:
                    break
        finally:
            stop.set()
            t.join()
        assert (out == np.frombuffer(data[:512], np.uint8)).all()
    assert errors and "another thread" in str(errors[0])


def test_empty_batches(backend, blob):
    p, fd, data = blob
    out = fastio.read_blocks(fd, [], 4096, backend=backend)
    assert out.shape == (0, 4096)
    assert fastio.read_blocks(fd, [0, 1], 0, backend=backend).shape == (2, 0)


# ---------------------------------------------------------------- io_uring made unavailable

SECCOMP_CHILD = textwrap.dedent("""
    import ctypes, json, os, sys
    libc = ctypes.CDLL(None, use_errno=True)

    class SockFilter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte),
                    ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]

    NR_IO_URING_SETUP = 425  # the same number on every architecture
    prog = (SockFilter * 4)(
        SockFilter(0x20, 0, 0, 0),                      # ld [nr]
        SockFilter(0x15, 0, 1, NR_IO_URING_SETUP),      # jeq io_uring_setup
        SockFilter(0x06, 0, 0, 0x00050000 | 1),         # ret ERRNO(EPERM)
        SockFilter(0x06, 0, 0, 0x7FFF0000),             # ret ALLOW
    )
    fprog = SockFprog(4, prog)
    if libc.prctl(38, 1, 0, 0, 0) != 0:                 # PR_SET_NO_NEW_PRIVS
        sys.exit(77)
    if libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) != 0:  # PR_SET_SECCOMP, FILTER
        sys.exit(77)
    os.environ.pop("FASTIO_BACKEND", None)
    import fastio
    info = fastio.backends()["io_uring"]
    with fastio.Queue() as q:
        print(json.dumps({"available": info.available, "errno": info.errno,
                          "reason": info.reason, "backend": q.backend,
                          "fallback": q.fallback}))
""")


def test_auto_falls_back_when_io_uring_is_denied():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    proc = subprocess.run([sys.executable, "-c", SECCOMP_CHILD], capture_output=True,
                          text=True, env=env, timeout=60)
    if proc.returncode == 77:
        pytest.skip("seccomp filters cannot be installed here")
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert not got["available"]
    assert got["backend"] != "io_uring"
    assert got["fallback"] and "io_uring" in got["fallback"]
    assert got["reason"] in got["fallback"]
    if PROBED["io_uring"].available:
        # io_uring works here: the filter is what stopped it, and it says so.
        assert got["errno"] == errno.EPERM, got


def test_batch_on_a_queue_full_of_its_own_requests(backend, blob):
    # The batch waits for room behind requests already in flight; their
    # completions stay for the next wait().
    p, fd, data = blob
    with fastio.Queue(2, backend) as q:
        a, b = bytearray(8), bytearray(8)
        q.read(fd, a, 0, tag="a")
        q.read(fd, b, 8, tag="b")
        q.submit()
        out = np.empty((100, 16), np.uint8)
        res = q.read_batch(fd, np.arange(100) * 16, 16, out)
        assert (res == 16).all()
        assert out.tobytes() == data[:1600]
        assert sorted(q.wait(2)) == [("a", 8), ("b", 8)]
        assert bytes(a + b) == data[:16]


# ---------------------------------------------------------------- close() from another thread

JOIN_TIMEOUT = 30.0
_USERFAULTFD_NR = {"x86_64": 323, "aarch64": 282}


class Stuck:
    """A read that does not complete until release(). On an empty pipe
    (io_uring arms a poll and the request stays in flight; Linux AIO runs it
    inside io_submit; glibc's aio thread blocks in read), or, for the
    threads backend (pread on a pipe is ESPIPE), a read of a regular file
    into an anonymous page registered with userfaultfd: the kernel's copy
    faults and waits until the userfaultfd is closed."""

    def __init__(self, backend, tmp_path):
        self.uffd = self.mm = None
        if backend != "threads":
            self.fd, self.w = os.pipe()
            self.buf = fastio.Buffer(16)
            return
        import ctypes
        import fcntl
        import mmap
        import struct
        nr = _USERFAULTFD_NR.get(os.uname().machine)
        if nr is None:
            pytest.skip("userfaultfd syscall number unknown on this architecture")
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        uffd = libc.syscall(nr, os.O_CLOEXEC)
        if uffd < 0:
            pytest.skip(f"userfaultfd: {os.strerror(ctypes.get_errno())}")
        self.uffd = uffd
        fcntl.ioctl(uffd, 0xC018AA3F, bytearray(struct.pack("QQQ", 0xAA, 0, 0)))  # UFFDIO_API
        self.mm = mmap.mmap(-1, 4096)
        ref = ctypes.c_char.from_buffer(self.mm)
        addr = ctypes.addressof(ref)
        del ref
        # UFFDIO_REGISTER, mode MISSING: the untouched page faults to us
        fcntl.ioctl(uffd, 0xC020AA00, bytearray(struct.pack("QQQQ", addr, 4096, 1, 0)))
        p = tmp_path / "stuck.bin"
        p.write_bytes(b"s" * 4096)
        self.fd = os.open(p, os.O_RDONLY)
        self.w = None
        self.buf = self.mm

    def wait_started(self, timeout=20):
        """Until the read is under way, not only queued (a queued request
        can still be cancelled, and on a loaded machine the backend's
        thread may not have taken it yet): a fault pending on the
        userfaultfd (it polls readable), or a thread of this process asleep
        in the pipe's read (its wchan: anon_pipe_read, or pipe_read /
        pipe_wait on older kernels). False after timeout seconds."""
        import glob
        import select
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.uffd is not None:
                if select.select([self.uffd], [], [], 0.01)[0]:
                    return True
                continue
            for path in glob.glob("/proc/self/task/*/wchan"):
                try:
                    with open(path) as f:
                        if "pipe" in f.read():
                            return True
                except OSError:
                    pass
            time.sleep(0.01)
        return False

    def release(self):
        if self.w is not None:
            os.write(self.w, b"x" * 16)
        elif self.uffd is not None:
            os.close(self.uffd)  # the fault resolves with a fresh page
            self.uffd = None

    def pinned(self):
        if self.mm is None:
            return self.buf.exports > 0
        try:
            # Refused while a buffer export exists. To the size it has: an
            # anonymous shared map cannot grow on Python 3.14+ (ValueError),
            # whatever its exports.
            self.mm.resize(len(self.mm))
        except BufferError:
            return True
        except (OSError, SystemError):
            return False
        return False

    def close(self):
        self.release()
        os.close(self.fd)
        if self.w is not None:
            os.close(self.w)
        if self.mm is not None:
            self.mm.close()  # BufferError if the queue still pinned it
        else:
            self.buf.close()


def _close_under_waiter(backend, call, tmp_path):
    """One round: returns the waiter's exception."""
    import faulthandler
    import threading
    stuck = Stuck(backend, tmp_path)
    q = fastio.Queue(4, backend)
    got = []
    started = threading.Event()

    def waiter():
        try:
            if call == "read_batch":
                started.set()
                got.append(q.read_batch(stuck.fd, [0], 16, stuck.buf))
            else:
                q.read(stuck.fd, stuck.buf, 0)
                started.set()
                got.append(getattr(q, call)())
        except BaseException as e:  # noqa: BLE001  checked below
            got.append(e)

    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    assert started.wait(JOIN_TIMEOUT)
    time.sleep(0.2)  # most often inside by now; if not, it sees closed
    assert q.close() is None  # no RuntimeError, no wait for the waiter
    assert q.closed
    with pytest.raises(ValueError, match="closed"):
        q.submit()
    if backend == "io_uring":
        # A pipe read is cancellable: the waiter leaves on its own.
        t.join(JOIN_TIMEOUT)
        assert not t.is_alive(), "the waiter was not woken by close()"
    elif t.is_alive():
        # The read cannot be cancelled: its buffer stays pinned.
        assert stuck.pinned()
    stuck.release()
    t.join(JOIN_TIMEOUT)
    if t.is_alive():
        faulthandler.dump_traceback(sys.stderr, all_threads=True)
        pytest.fail("the waiter is still inside the Queue: deadlock")
    assert len(got) == 1 and isinstance(got[0], ValueError), got
    assert "closed" in str(got[0])
    assert not stuck.pinned()
    stuck.close()
    return got[0]


@pytest.mark.parametrize("call", ["wait", "drain", "read_batch"])
def test_close_from_another_thread_ends_the_waiter(backend, call, tmp_path):
    """Issue 7: a thread blocked inside the Queue (GIL released) while
    another thread calls close(). close() returns at once; the waiter
    cancels and drains its request (the buffer stays pinned until the
    backend gave it back), frees the backend and raises ValueError."""
    warm(backend, 4)
    _close_under_waiter(backend, call, tmp_path)  # warm: thread stacks, ctypes
    lc = LeakCheck(map_slack=MAP_SLACK)
    threads = count_threads()
    for _attempt in range(5):
        exc = _close_under_waiter(backend, call, tmp_path)
        if "by another thread" in str(exc):
            break  # else it came in after close(): try again
    else:
        pytest.fail("the waiter never got inside the Queue before close()")
    lc.check()
    assert settle_threads(threads) <= threads


def test_io_uring_closed_by_a_thread_other_than_its_creator():
    """A single-issuer ring: only the thread that created it may reap its
    requests. close() from another thread while the creator's read is in
    flight (no thread inside the Queue) cannot get it back: the buffer stays
    pinned for good (docs/aio.md), but the ring's fd and mappings are let
    go (the kernel ends the request when its last fd closes)."""
    import threading
    info = PROBED["io_uring"]
    if not info.available or "single_issuer" not in info.features:
        probes.fail_or_skip("io_uring SINGLE_ISSUER", probes.io_uring_flag("SINGLE_ISSUER"),
                            f"io_uring: {info.reason or sorted(info.features)}")
    r, w = os.pipe()
    buf = fastio.Buffer(16)
    warm("io_uring", 4)
    t = threading.Thread(target=lambda: None)  # thread stacks: not ours
    t.start()
    t.join()
    lc = LeakCheck(map_slack=MAP_SLACK)
    q = fastio.Queue(4, "io_uring")
    assert "single_issuer" in q.features
    q.read(r, buf, 0)
    q.submit()
    t = threading.Thread(target=q.close)
    t.start()
    t.join(JOIN_TIMEOUT)
    assert not t.is_alive() and q.closed
    assert buf.exports == 1  # the kernel may have written into it: pinned
    del q
    lc.check()  # no ring fd, no ring mapping left
    os.write(w, b"x" * 16)
    os.close(r)
    os.close(w)
