"""Reads that choose their path (mode=, threads=, stats=), uncached=True,
and the asyncio read_blocks / write_blocks (issue 14, parts 2 and 3).

Oracles: os.pread for the bytes, an independent mincore (probes.residency)
for the page cache, /proc/self/fd for leaks.
"""
import asyncio
import errno
import gc
import os
import time

import numpy as np
import pytest

import fastio
import fastio.aio
import probes

BLOCK = 4096


def write_file(path, nbytes, seed=0):
    data = np.random.default_rng(seed).integers(0, 256, nbytes, np.uint8).tobytes()
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return data


def evicted(path):
    """path with its pages dropped from the page cache, or a skip where they
    cannot be (tmpfs keeps its pages)."""
    left = probes.evict(path)
    if left != 0.0:
        pytest.skip(f"the page cache of {path} cannot be emptied here "
                    f"(residency {left} after POSIX_FADV_DONTNEED)")
    return path


def fds():
    """The open fds, number to target, after a garbage collection. Without
    it an earlier test's unreachable objects that hold fds are closed
    whenever the collector happens to run, possibly inside the test: the
    CI's ASan run once saw two fds fewer after a test than before it (not
    reproduced since). With targets, a failure says which fd came or went."""
    gc.collect()
    out = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            pass  # the listing's own directory fd, closed by now
    return out


@pytest.fixture
def blob(tmp_path):
    p = tmp_path / "blob.bin"
    data = write_file(p, 4 << 20)
    return p, data


def oracle(data, offsets, size):
    return np.frombuffer(b"".join(data[o:o + size] for o in offsets), np.uint8).reshape(
        len(offsets), size)


def random_offsets(n, nbytes, seed=1):
    return np.random.default_rng(seed).integers(0, nbytes // BLOCK, n) * BLOCK


# ---------------------------------------------------------------- fastio.aio's names

def test_aio_star_import_gives_its_public_names_only():
    ns = {}
    exec("from fastio.aio import *", ns)
    got = {k for k in ns if k != "__builtins__"}
    assert got == set(fastio.aio.__all__)
    assert not {"np", "os", "socket", "errno", "weakref", "collections"} & set(dir(fastio.aio))
    public = {n for n in dir(fastio.aio) if not n.startswith("_")}
    assert public == set(fastio.aio.__all__)


def test_blocking_and_coroutine_forms_are_apart():
    assert not asyncio.iscoroutinefunction(fastio.read_blocks)
    assert not asyncio.iscoroutinefunction(fastio.write_blocks)
    assert asyncio.iscoroutinefunction(fastio.aio.read_blocks)
    assert asyncio.iscoroutinefunction(fastio.aio.write_blocks)


# ---------------------------------------------------------------- modes

@pytest.mark.parametrize("mode", ["auto", "copy", "queue"])
@pytest.mark.parametrize("threads", [None, 1, 3])
def test_read_blocks_modes_match_pread(blob, mode, threads):
    p, data = blob
    offs = random_offsets(1000, len(data))
    offs[::7] += 123  # unaligned offsets too
    stats = {}
    got = fastio.read_blocks(p, offs, BLOCK - 5, mode=mode, threads=threads, stats=stats)
    assert np.array_equal(got, oracle(data, offs, BLOCK - 5))
    assert stats["mode"] in ("copy", "queue")
    if mode != "auto":
        assert stats["mode"] == mode


def test_read_blocks_into_out_with_copy(blob):
    p, data = blob
    offs = random_offsets(333, len(data))
    out = np.zeros((333, BLOCK), np.uint8)
    with open(p, "rb") as f:
        assert fastio.read_blocks(f, offs, BLOCK, out=out, mode="copy", threads=2) is out
    assert np.array_equal(out, oracle(data, offs, BLOCK))


def test_auto_picks_copy_for_cached_data(blob):
    p, data = blob
    fastio.read_file(p)  # warm
    assert probes.residency(p) == 1.0
    stats = {}
    fastio.read_blocks(p, random_offsets(500, len(data)), BLOCK, stats=stats)
    assert stats["mode"] == "copy" and stats["resident"] == 1.0
    assert stats["threads"] >= 1 and stats["backend"] == "threads"
    stats = {}
    fastio.read_file(p, stats=stats)
    assert stats["mode"] == "copy" and stats["resident"] == 1.0


def test_auto_picks_queue_for_cold_data(blob):
    p, data = blob
    evicted(p)
    offs = random_offsets(200, len(data))
    stats = {}
    got = fastio.read_blocks(p, offs, BLOCK, stats=stats)
    assert np.array_equal(got, oracle(data, offs, BLOCK))
    assert stats["mode"] == "queue" and stats["resident"] < 0.9
    assert stats["backend"] in fastio.aio.BACKENDS
    evicted(p)
    stats = {}
    assert fastio.read_file(p, stats=stats).tobytes() == data
    assert stats["mode"] == "queue" and stats["resident"] == 0.0


def test_auto_takes_queue_when_an_engine_is_named(blob):
    p, data = blob
    fastio.read_file(p)
    stats = {}
    fastio.read_blocks(p, [0, 4096], BLOCK, backend="threads", stats=stats)
    assert stats == {"mode": "queue", "resident": None, "threads": None,
                     "backend": "threads", "mapped": None}
    with fastio.Queue(8, "threads") as q:
        fastio.read_blocks(p, [0], BLOCK, queue=q, stats=stats)
    assert stats["mode"] == "queue"


def test_direct_mode(blob):
    p, data = blob
    probes.skip_unless("O_DIRECT", probes.o_direct(str(p)))
    offs = random_offsets(100, len(data))
    stats = {}
    got = fastio.read_blocks(p, offs, BLOCK, mode="direct", stats=stats)
    assert np.array_equal(got, oracle(data, offs, BLOCK)) and stats["mode"] == "direct"
    stats = {}
    fastio.read_blocks(p, offs, BLOCK, direct=True, stats=stats)
    assert stats["mode"] == "direct"
    # A size that is not a multiple of the alignment: the tail ends short.
    q = p.with_name("odd.bin")
    q.write_bytes(data[:BLOCK * 3 + 17])
    stats = {}
    assert fastio.read_file(q, mode="direct", stats=stats).tobytes() == data[:BLOCK * 3 + 17]
    assert stats["mode"] == "direct"


def _buffer_of(arr):
    b = arr
    while b is not None and not isinstance(b, fastio.Buffer):
        b = b.obj if isinstance(b, memoryview) else getattr(b, "base", None)
    return b


def test_direct_output_is_not_huge_pages(blob):
    # O_DIRECT pins each destination page inside the request: a fresh huge
    # page's first fault (2 MiB zero fill, compaction) landed inside the
    # reads and cut random 4 KiB reads at depth 32 to a quarter
    # (bench_direct_vs_fio.py). The output read_blocks makes for direct
    # reads, 4 MiB here (where 'auto' asks for huge pages), has 4 KiB pages.
    p, data = blob
    probes.skip_unless("O_DIRECT", probes.o_direct(str(p)))
    offs = random_offsets(1024, len(data))
    got = fastio.read_blocks(p, offs, BLOCK, direct=True, depth=32)
    assert np.array_equal(got, oracle(data, offs, BLOCK))
    buf = _buffer_of(got)
    assert buf is not None and buf.nbytes >= 2 << 20 and buf.hugepages is False


@pytest.mark.parametrize("mode", ["auto", "copy", "queue"])
def test_read_file_modes(tmp_path, mode):
    p = tmp_path / "f.bin"
    data = write_file(p, (3 << 20) + 5)
    stats = {}
    assert fastio.read_file(p, mode=mode, stats=stats).tobytes() == data
    assert stats["mode"] in ("copy", "queue")


def test_read_file_threads_argument(tmp_path):
    p = tmp_path / "f.bin"
    data = write_file(p, 20 << 20)
    stats = {}
    assert fastio.read_file(p, mode="copy", threads=3, stats=stats).tobytes() == data
    assert stats["method"] == "threads" and stats["threads"] == 3


def test_copy_mode_reports_eof_and_errors(blob):
    p, data = blob
    with pytest.raises(EOFError, match="request 1 at offset"):
        fastio.read_blocks(p, [0, len(data) - 10], BLOCK, mode="copy")
    wfd = os.open(p, os.O_WRONLY)
    try:
        with pytest.raises(OSError) as ei:
            fastio.read_blocks(wfd, [0], BLOCK, mode="copy")
        assert ei.value.errno == errno.EBADF
    finally:
        os.close(wfd)


def test_copy_mode_uses_its_own_copy_of_offsets(blob):
    """The offsets array is copied before the GIL is released: reads that
    land on it (out overlapping offsets) do not redirect later reads."""
    p, data = blob
    n = 4096
    backing = np.zeros(n * 8 + n * 8, np.uint8)
    offs = backing[:n * 8].view(np.int64)
    offs[:] = random_offsets(n, len(data))
    want = oracle(data, offs.copy(), 8)
    out = backing  # out starts where offsets live
    fastio.read_blocks(p, offs, 8, out=out, mode="copy", threads=2)
    assert np.array_equal(backing[:n * 8].reshape(n, 8), want)


# ---------------------------------------------------------------- uncached=True

def need_dontcache(path):
    probes.skip_unless("RWF_DONTCACHE", probes.dontcache(str(path)))


@pytest.mark.parametrize("mode", ["copy", "queue"])
def test_uncached_read_blocks_leaves_the_cache_as_it_was(blob, mode):
    p, data = blob
    need_dontcache(p)
    evicted(p)
    offs = random_offsets(300, len(data))
    got = fastio.read_blocks(p, offs, BLOCK, mode=mode, uncached=True)
    assert np.array_equal(got, oracle(data, offs, BLOCK))
    assert probes.residency(p) == 0.0
    # Cached pages stay cached.
    fastio.read_file(p)
    fastio.read_blocks(p, offs, BLOCK, mode=mode, uncached=True)
    assert probes.residency(p) == 1.0
    # The same reads without uncached=True fill the cache: the check can fail.
    evicted(p)
    fastio.read_blocks(p, offs, BLOCK, mode=mode)
    assert probes.residency(p) > 0.0


@pytest.mark.parametrize("mode", ["auto", "copy", "queue"])
def test_uncached_read_file(tmp_path, mode):
    p = tmp_path / "f.bin"
    data = write_file(p, 24 << 20)
    need_dontcache(p)
    evicted(p)
    stats = {}
    assert fastio.read_file(p, mode=mode, uncached=True, stats=stats).tobytes() == data
    if mode == "queue":
        # io_uring's buffered reads with RWF_DONTCACHE leave a few pages
        # at times (docs/readwrite.md): the promise is 'auto's and 'copy's.
        assert probes.residency(p) < 0.1
    else:
        assert stats["mode"] == "copy"
        assert probes.residency(p) == 0.0


def test_uncached_write_blocks(tmp_path):
    """Writes into new space of a file (a sparse file here): the pages leave
    the cache once written back. (Overwrites of allocated ext4 blocks stay
    cached on 6.18: their writeback ends in interrupt context, where the
    kernel does not drop pages; docs/readwrite.md says so.)"""
    p = tmp_path / "w.bin"
    with open(p, "wb") as f:
        f.truncate(4 << 20)
    need_dontcache(p)
    evicted(p)
    rows = np.random.default_rng(5).integers(0, 256, (256, BLOCK), np.uint8)
    offs = np.arange(256) * BLOCK * 4
    fastio.write_blocks(p, offs, rows, uncached=True)
    with open(p, "rb") as f:
        os.fsync(f.fileno())
    # RWF_DONTCACHE drops the pages once their writeback ends (started at
    # once by the kernel): wait for it a little.
    deadline = time.monotonic() + 10
    while probes.residency(p) > 0.0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert probes.residency(p) == 0.0
    with open(p, "rb") as f:
        for o, r in zip(offs, rows):
            assert os.pread(f.fileno(), BLOCK, int(o)) == r.tobytes()


def tmpfs_file(nbytes):
    d = "/dev/shm"
    if not os.path.isdir(d) or probes.dontcache(d).present:
        pytest.skip("no tmpfs without RWF_DONTCACHE at /dev/shm to refuse it")
    p = os.path.join(d, f"fastio-test-uncached-{os.getpid()}")
    with open(p, "wb") as f:
        f.write(b"y" * nbytes)
    return p


@pytest.mark.parametrize("call", [
    lambda p: fastio.read_blocks(p, [0, 4096], BLOCK, mode="copy", uncached=True),
    lambda p: fastio.read_blocks(p, [0, 4096], BLOCK, mode="queue", uncached=True),
    lambda p: fastio.read_blocks(p, [0], BLOCK, backend="threads", uncached=True),
    lambda p: fastio.read_file(p, uncached=True),
    lambda p: fastio.read_file(p, mode="queue", uncached=True),
    lambda p: fastio.write_blocks(p, [0], np.zeros((1, BLOCK), np.uint8), uncached=True),
], ids=["copy", "queue", "threads", "read_file", "read_file-queue", "write_blocks"])
def test_uncached_refused_names_the_argument(call):
    """Where RWF_DONTCACHE is refused (tmpfs here; Linux before 6.14
    anywhere), the error says uncached=True and what to do instead."""
    p = tmpfs_file(3 * BLOCK)
    try:
        with pytest.raises(OSError, match=r"uncached=True is not supported here") as ei:
            call(p)
        assert ei.value.errno == errno.EOPNOTSUPP
    finally:
        os.unlink(p)


def test_uncached_refused_on_posix_aio(blob):
    p, _ = blob
    if not fastio.aio.backends()["posix_aio"].available:
        pytest.skip("no posix_aio here")
    with pytest.raises(OSError, match="uncached=True is not supported here .*posix_aio"):
        fastio.read_blocks(p, [0], BLOCK, backend="posix_aio", uncached=True)


# ---------------------------------------------------------------- asyncio

def run(coro):
    return asyncio.run(coro)


@pytest.mark.parametrize("backend", ["auto", "threads"])
def test_async_read_blocks_equals_blocking_and_loop_keeps_ticking(tmp_path, backend):
    p = tmp_path / "big.bin"
    data = write_file(p, 16 << 20)
    offs = random_offsets(20000, len(data))
    want = fastio.read_blocks(p, offs, BLOCK)
    ticks = []

    async def ticker(stop):
        while not stop.is_set():
            ticks.append(time.monotonic())
            await asyncio.sleep(0)

    async def main():
        stop = asyncio.Event()
        t = asyncio.create_task(ticker(stop))
        await asyncio.sleep(0)
        n0 = len(ticks)
        got = await fastio.aio.read_blocks(p, offs, BLOCK, backend=backend, depth=32)
        during = len(ticks) - n0
        stop.set()
        await t
        return got, during

    got, during = run(main())
    assert np.array_equal(got, want)
    # 20000 requests at depth 32: the loop got control back hundreds of times.
    assert during >= 50


def test_async_write_blocks(tmp_path):
    p = tmp_path / "w.bin"
    write_file(p, 1 << 20)
    rows = np.random.default_rng(3).integers(0, 256, (100, BLOCK), np.uint8)
    offs = np.arange(100)[::-1] * BLOCK
    run(fastio.aio.write_blocks(p, offs, rows))
    with open(p, "rb") as f:
        for o, r in zip(offs, rows):
            assert os.pread(f.fileno(), BLOCK, int(o)) == r.tobytes()
    # A list of buffers, as the blocking form takes.
    run(fastio.aio.write_blocks(str(p), [0, BLOCK], [b"a" * 10, b"b" * 10]))
    with open(p, "rb") as f:
        assert os.pread(f.fileno(), 10, 0) == b"a" * 10
        assert os.pread(f.fileno(), 10, BLOCK) == b"b" * 10


def test_async_read_blocks_errors(blob):
    p, data = blob
    with pytest.raises(EOFError, match="fastio.aio.read_blocks: request 1"):
        run(fastio.aio.read_blocks(p, [0, len(data) - 1], BLOCK))
    with pytest.raises(FileNotFoundError):
        run(fastio.aio.read_blocks(str(p) + ".missing", [0], BLOCK))
    with pytest.raises(ValueError, match=r"depth out of range \[1, 65536\]: depth=0"):
        run(fastio.aio.read_blocks(p, [0], BLOCK, depth=0))


@pytest.mark.parametrize("backend", ["auto", "threads"])
def test_async_read_blocks_cancelled_leaves_nothing(tmp_path, backend):
    """Cancelled mid-read: the requests in flight are cancelled or reaped
    before the coroutine ends, so out has no export left (a bytearray can be
    resized again) and no descriptor is left open."""
    p = tmp_path / "big.bin"
    data = write_file(p, 8 << 20)
    offs = random_offsets(50000, len(data))
    before = fds()

    async def main():
        out = bytearray(len(offs) * BLOCK)
        task = asyncio.create_task(fastio.aio.read_blocks(p, offs, BLOCK, out=out,
                                                          backend=backend, depth=16))
        for _ in range(5):
            await asyncio.sleep(0)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        del task
        out.extend(b"x")  # BufferError if a request still pinned it
        return len(out)

    assert run(main()) == len(offs) * BLOCK + 1
    assert fds() == before


def test_aio_read_accepts_a_path(blob):
    p, data = blob
    before = fds()

    async def main():
        buf = bytearray(100)
        n = await fastio.aio.read(p, buf, 4096)
        n2 = await fastio.aio.read(str(p), memoryview(buf)[:10], 0)
        return n, n2, bytes(buf)

    n, n2, got = run(main())
    assert (n, n2) == (100, 10)
    assert got == data[:10] + data[4106:4196]
    run(fastio.aio.write(p, b"xyz", 1))
    assert run(fastio.aio.fsync(p)) is None
    with open(p, "rb") as f:
        assert f.read(8) == data[:1] + b"xyz" + data[4:8]
    assert fds() == before


@pytest.mark.parametrize("call, exc, msg", [
    ("fastio.aio.read(P, bytearray(4), 'x')", TypeError, "offset must be an integer, got offset='x'"),
    ("fastio.aio.read(P, bytearray(4), -1)", ValueError, "offset must be >= 0, got offset=-1"),
    ("fastio.aio.read(P, b'abcd', 0)", TypeError, "buf must be a writable bytes-like object, got a read-only bytes"),
    ("fastio.aio.read(P, 'abcd', 0)", TypeError, "buf must be a writable bytes-like object, got buf of type str"),
    ("fastio.aio.read(1.5, bytearray(4), 0)", TypeError, "file must be a path, a file descriptor or an object with fileno(), got file of type float"),
    ("fastio.aio.read(-3, bytearray(4), 0)", ValueError, "file must be a path or a file descriptor >= 0, got file=-3"),
    ("fastio.aio.write(P, 'abcd', 0)", TypeError, "buf must be a bytes-like object, got buf of type str"),
])
def test_aio_read_write_argument_errors_name_the_argument(blob, call, exc, msg):
    P = blob[0]
    with pytest.raises(exc) as ei:
        run(eval(call, {"fastio": fastio, "P": P}))
    assert str(ei.value) == msg


class _Alarm(Exception):
    pass


def test_copy_path_signal_handler_raises():
    """A handler that raises during a long copy-path read stops it: the
    workers are told to stop and joined, the exception propagates, and out
    is let go (its Buffer has no export left)."""
    import signal
    fd = os.open("/dev/zero", os.O_RDONLY)
    n = 1 << 14
    out = fastio.Buffer(n * BLOCK)
    offs = np.zeros(n, np.int64)

    def handler(signum, frame):
        raise _Alarm

    old = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.02)
        with pytest.raises(_Alarm):
            for _ in range(100_000):
                fastio.read_blocks(fd, offs, BLOCK, out=out, mode="copy", threads=2)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        os.close(fd)
    assert out.exports == 0


def test_copy_path_offsets_checked_in_c():
    """The C entry checks the copy it took, whatever the Python layer did."""
    from fastio import _core
    fd = os.open("/dev/zero", os.O_RDONLY)
    try:
        res = np.empty(1, np.int64)
        with pytest.raises(ValueError, match=r"offsets\[0\] must be within"):
            _core._pread_blocks(fd, np.array([-1], np.int64), 8, bytearray(8), 1, 0, res)
        with pytest.raises(ValueError, match="buf holds 8 bytes; 2 blocks of 8 need more"):
            _core._pread_blocks(fd, np.zeros(2, np.int64), 8, bytearray(8), 1, 0,
                                np.empty(2, np.int64))
        with pytest.raises(ValueError, match="flags may hold RWF_DONTCACHE"):
            _core._pread_blocks(fd, np.zeros(1, np.int64), 8, bytearray(8), 1, 1, res)
        with pytest.raises(ValueError, match="nthreads"):
            _core._pread_blocks(fd, np.zeros(1, np.int64), 8, bytearray(8), 0, 0, res)
    finally:
        os.close(fd)


def test_queue_batch_takes_only_the_dontcache_flag(tmp_path):
    # Queue._batch (what read_blocks/write_blocks use) refuses RWF_* bits
    # other than RWF_DONTCACHE: RWF_APPEND would ignore a write batch's
    # offsets (review finding).
    path = tmp_path / "f"
    path.write_bytes(b"x" * 4096)
    fd = os.open(path, os.O_RDWR)
    try:
        with fastio.Queue(4, "threads") as q:
            for bad in (0x10, 0x8, 0x80 | 0x1):
                with pytest.raises(ValueError, match="RWF_DONTCACHE"):
                    q._batch(False, fd, np.zeros(1, np.int64), None, 4096,
                             bytearray(4096), np.zeros(1, np.int64), bad)
    finally:
        os.close(fd)


# ---------------------------------------------------------------- copy path: a descriptor per worker

@pytest.fixture
def pread_only(monkeypatch):
    """The copy path's threads pread every block (no map made for the call,
    csrc/mapcopy.c): the tests of their own descriptors need the preads."""
    import fastio.blocks
    monkeypatch.setattr(fastio.blocks, "MAPCOPY_MIN_BLOCKS", 1 << 62)


def own_fds_ready():
    probes.skip_unless("own descriptor tables", probes.own_fd_table())
    probes.skip_unless("inotify", probes.inotify())


def enough_blocks(threads):
    """A block count from which read_blocks gives its workers their own fds."""
    from fastio.blocks import OWN_FDS_MIN_BLOCKS
    return OWN_FDS_MIN_BLOCKS * threads


@pytest.mark.parametrize("threads", [2, 4])
def test_copy_path_workers_reopen_and_close(pread_only, blob, threads):
    """From OWN_FDS_MIN_BLOCKS blocks a thread each worker opens the file
    once (inotify sees it; O_PATH probes make no event) and has closed it
    when the call returns; the bytes are os.pread's; no fd is left."""
    own_fds_ready()
    p, data = blob
    n = enough_blocks(threads)
    offs = random_offsets(n, len(data))
    fd = os.open(p, os.O_RDONLY)
    try:
        before = fds()
        with probes.FileEvents(p) as ev:
            got = fastio.read_blocks(fd, offs, BLOCK, mode="copy", threads=threads)
            seen = ev.events()
        assert fds() == before
        want = np.stack([np.frombuffer(os.pread(fd, BLOCK, int(o)), np.uint8) for o in offs])
        assert np.array_equal(got, want)
    finally:
        os.close(fd)
    if threads == 2:
        # One worker: its open and its close, the close before the return.
        assert seen == ["open", "close"]
    else:
        # Identical events in a row are merged by inotify: opens, then closes.
        assert seen and seen[0] == "open" and seen[-1] == "close"


def test_copy_path_small_calls_keep_the_shared_fd(pread_only, blob):
    own_fds_ready()
    p, data = blob
    fd = os.open(p, os.O_RDONLY)
    try:
        with probes.FileEvents(p) as ev:
            fastio.read_blocks(fd, random_offsets(enough_blocks(2) - 1, len(data)), BLOCK,
                               mode="copy", threads=2)
            fastio.read_blocks(fd, random_offsets(4 * enough_blocks(2), len(data)), BLOCK,
                               mode="copy", threads=1)
            assert ev.events() == []
    finally:
        os.close(fd)


def test_copy_path_own_fds_keep_the_callers_posix_locks(pread_only, blob):
    """close() drops every POSIX lock the process holds on the file, by
    whichever descriptor: a worker's reopened fd lives in a table of its
    own, whose close drops none (a reopen in the process's table would
    free the lock below)."""
    import fcntl
    import subprocess
    import sys
    own_fds_ready()
    p, data = blob
    child = ("import fcntl, os, sys\nfd = os.open(sys.argv[1], os.O_RDWR)\n"
             "try:\n    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
             "    print('free')\nexcept OSError:\n    print('held')\n")

    def lock_state():
        return subprocess.run([sys.executable, "-c", child, str(p)], capture_output=True,
                              text=True, check=True).stdout.strip()

    fd = os.open(p, os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX)
        assert lock_state() == "held"
        with probes.FileEvents(p) as ev:
            fastio.read_blocks(fd, random_offsets(enough_blocks(2), len(data)), BLOCK,
                               mode="copy", threads=2)
            assert ev.events() == ["open", "close"]
        assert lock_state() == "held"
    finally:
        os.close(fd)


def test_copy_path_own_fds_on_an_unlinked_file_and_a_memfd(pread_only, tmp_path):
    own_fds_ready()
    data = np.random.default_rng(5).integers(0, 256, 1 << 20, np.uint8).tobytes()
    p = tmp_path / "gone.bin"
    p.write_bytes(data)
    unlinked = os.open(p, os.O_RDONLY)
    os.unlink(p)
    memfd = os.memfd_create("fastio-test", os.MFD_CLOEXEC)
    os.write(memfd, data)
    n = enough_blocks(2)
    offs = np.random.default_rng(6).integers(0, len(data) - 100, n)  # unaligned too
    try:
        for fd in (unlinked, memfd):
            before = fds()
            with probes.FileEvents(f"/proc/self/fd/{fd}") as ev:
                got = fastio.read_blocks(fd, offs, 100, mode="copy", threads=2)
                assert ev.events() == ["open", "close"]
            assert fds() == before
            assert np.array_equal(got, np.stack([np.frombuffer(os.pread(fd, 100, int(o)),
                                                               np.uint8) for o in offs]))
    finally:
        os.close(unlinked)
        os.close(memfd)


def test_copy_path_own_fds_closed_on_errors(pread_only, blob):
    """A block past the end of the file (EOFError) and a descriptor the
    workers cannot reopen (write-only: EBADF from the shared fd, as
    before; a pipe: ESPIPE) leave no fd and no open file behind."""
    own_fds_ready()
    p, data = blob
    n = enough_blocks(2)
    offs = random_offsets(n, len(data))
    offs[n // 2] = len(data) - 10
    fd = os.open(p, os.O_RDONLY)
    wfd = os.open(p, os.O_WRONLY)
    r, w = os.pipe()
    try:
        before = fds()
        with probes.FileEvents(p) as ev:
            with pytest.raises(EOFError, match=f"request {n // 2} at offset"):
                fastio.read_blocks(fd, offs, BLOCK, mode="copy", threads=2)
            assert ev.events() == ["open", "close"]
            with pytest.raises(OSError) as ei:
                fastio.read_blocks(wfd, offs, BLOCK, mode="copy", threads=2)
            assert ei.value.errno == errno.EBADF
            assert ev.events() == []  # a write-only fd is not reopened for reading
        with pytest.raises(OSError) as ei:
            fastio.read_blocks(r, offs, BLOCK, mode="copy", threads=2)
        assert ei.value.errno == errno.ESPIPE
        assert fds() == before
    finally:
        for x in (fd, wfd, r, w):
            os.close(x)


def test_copy_path_own_fds_closed_on_keyboard_interrupt(pread_only, blob):
    """Ctrl-C (a handler raising KeyboardInterrupt) during copy-path reads
    with reopened fds: every worker's open has its close, no fd is left."""
    import signal
    own_fds_ready()
    p, data = blob
    n = 1 << 14
    offs = random_offsets(n, len(data))
    out = fastio.Buffer(n * BLOCK)
    before = fds()
    fd = os.open(p, os.O_RDONLY)

    def handler(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, handler)
    try:
        with probes.FileEvents(p) as ev:
            signal.setitimer(signal.ITIMER_REAL, 0.05)
            with pytest.raises(KeyboardInterrupt):
                for _ in range(100_000):
                    fastio.read_blocks(fd, offs, BLOCK, out=out, mode="copy", threads=2)
            signal.setitimer(signal.ITIMER_REAL, 0)
            seen = ev.events()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        os.close(fd)
    assert fds() == before
    assert out.exports == 0
    # One worker a call: open and close alternate, none merged.
    assert seen and seen.count("open") == seen.count("close")
    assert seen == ["open", "close"] * seen.count("open")


_LEASE_CHILD = r"""
import fcntl, os, sys
import numpy as np
import fastio
fd = os.open(sys.argv[1], os.O_RDONLY)
try:
    fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
except OSError as e:
    print(f"F_SETLEASE F_WRLCK: {e}")
    sys.exit(77)
n, size = int(sys.argv[2]), int(sys.argv[3])
offs = np.random.default_rng(1).integers(0, os.fstat(fd).st_size // size, n) * size
got = fastio.read_blocks(fd, offs, size, mode="copy", threads=2)
assert all(bytes(got[i]) == os.pread(fd, size, int(o)) for i, o in enumerate(offs))
print("lease", fcntl.fcntl(fd, fcntl.F_GETLEASE) == fcntl.F_WRLCK)
"""


def test_copy_path_own_fds_leave_a_write_lease_alone(pread_only, blob):
    """Any other open of a file, even read-only and O_NONBLOCK, breaks a
    write lease (F_SETLEASE) on it: the kernel sends the holder SIGIO,
    whose default action ends the process, and downgrades the lease. A
    worker's reopen did that to the caller; with a lease on the fd the
    workers keep the caller's descriptor: the process lives, the lease
    stays."""
    import subprocess
    import sys
    own_fds_ready()
    p, _ = blob
    r = subprocess.run([sys.executable, "-c", _LEASE_CHILD, str(p), str(enough_blocks(2)),
                        str(BLOCK)], capture_output=True, text=True, timeout=120)
    if r.returncode == 77:
        pytest.skip(f"no write lease here: {r.stdout.strip()}")
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr[-2000:])
    assert r.stdout.split() == ["lease", "True"]


def test_copy_path_own_fds_not_on_proc_files(pread_only):
    """A /proc file is a regular file whose open runs the kernel's code for
    it (/proc/PID/mem takes the mm the process has now): the workers keep
    the caller's descriptor, no second open happens."""
    own_fds_ready()
    fd = os.open("/proc/self/status", os.O_RDONLY)
    n = enough_blocks(2)
    try:
        with probes.FileEvents(f"/proc/self/fd/{fd}") as ev:
            got = fastio.read_blocks(fd, np.zeros(n, np.int64), 4, mode="copy", threads=2)
            seen = ev.events()
    finally:
        os.close(fd)
    assert (got == np.frombuffer(b"Name", np.uint8)).all()
    assert seen == []


def test_copy_path_own_fds_never_open_a_file_swapped_in_under_the_fd(pread_only, tmp_path):
    """Another thread dup2()s a FIFO onto the caller's fd number and back
    while copy-path reads run. A worker checks the file its fd names and
    then reopens it: the reopen must open the very inode it checked, never
    whatever the number names by then (an open can act: a FIFO's, a
    device's, a FUSE file's). inotify on the FIFO sees no open at all (the
    workers' O_PATH probes make no event; the caller's reads of the FIFO
    fail with ESPIPE, which is the caller's doing)."""
    import threading
    own_fds_ready()
    size = 1 << 20
    a, fifo = tmp_path / "a.bin", tmp_path / "fifo"
    write_file(a, size)
    os.mkfifo(fifo)
    before = fds()
    fd = os.open(a, os.O_RDONLY)
    fd_a, fd_fifo = os.dup(fd), os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    offs = random_offsets(enough_blocks(2), size)
    out = np.empty((len(offs), BLOCK), np.uint8)
    stop = threading.Event()

    def swap():
        while not stop.is_set():
            os.dup2(fd_fifo, fd)
            os.dup2(fd_a, fd)

    try:
        with probes.FileEvents(fifo) as ev, probes.FileEvents(a) as ev_a:
            t = threading.Thread(target=swap)
            t.start()
            try:
                deadline = time.monotonic() + 1.5
                calls = read = 0
                while time.monotonic() < deadline:
                    try:
                        fastio.read_blocks(fd, offs, BLOCK, out=out, mode="copy", threads=2)
                        read += 1
                    except OSError:
                        pass
                    calls += 1
            finally:
                stop.set()
                t.join()
            assert calls > 10 and read > 0
            assert ev.events() == []
            assert "open" in ev_a.events()  # the workers did reopen the file
    finally:
        for x in (fd, fd_a, fd_fifo):
            os.close(x)
    assert fds() == before
