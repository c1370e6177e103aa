"""read_blocks' copy path copying out of a map of the file made for the call
(csrc/mapcopy.c): the same results as its preads, block by block, a file
truncated meanwhile survived, and no map or fd left behind.

Which path ran is read from _pread_blocks' `mapped` output (the number of
blocks copied out of the map; read_blocks reports it as stats['mapped']):
deterministic, where counting mappings from another thread would race.
"""
import errno
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastio
from conftest import LeakCheck
from fastio import _core

BLOCK = 4096


def write_file(path, nbytes, seed=0):
    data = np.random.default_rng(seed).integers(0, 256, nbytes, np.uint8).tobytes()
    with open(path, "wb") as f:
        f.write(data)
    return data


def maps_of(path):
    """Lines of /proc/self/maps that map path."""
    with open("/proc/self/maps") as f:
        return [line for line in f if line.rstrip().endswith(str(path))]


def pread_blocks(fd, offsets, size, threads, mapped, fill=0x5A):
    """_pread_blocks into a buffer filled with `fill`: (buf, results, bad,
    blocks copied from the map or None)."""
    offsets = np.asarray(offsets, np.int64)
    buf = np.full(len(offsets) * size, fill, np.uint8)
    res = np.empty(len(offsets), np.int64)
    m = np.full(1, -1, np.int64) if mapped else None
    bad = _core._pread_blocks(fd, offsets, size, buf, threads, 0, res, 0, m)
    return buf.reshape(len(offsets), size), res, bad, (None if m is None else int(m[0]))


@pytest.fixture
def mapfile(tmp_path):
    """A file whose size is no multiple of the page, on a filesystem that
    mapcopy maps (else a skip naming it)."""
    p = tmp_path / "map.bin"
    data = write_file(p, (1 << 20) + 123)
    fd = os.open(p, os.O_RDONLY)
    try:
        if pread_blocks(fd, [0], BLOCK, 1, True)[3] != 1:
            pytest.skip(f"the filesystem of {tmp_path} is not one csrc/mapcopy.c maps "
                        f"(a disk filesystem: ext4, xfs, btrfs, ...)")
    finally:
        os.close(fd)
    return p, data


def oracle_offsets(nbytes, n, size, seed):
    """Random offsets, unaligned ones among them, plus blocks straddling the
    end, ending exactly at it, starting at it and past it."""
    rng = np.random.default_rng(seed)
    offs = rng.integers(0, nbytes - size, n)
    offs[::3] = offs[::3] // BLOCK * BLOCK
    edge = [nbytes - size, nbytes - size + 1, nbytes - 1, nbytes, nbytes + 5000, 0]
    offs = np.concatenate([offs, edge]).astype(np.int64)
    rng.shuffle(offs)
    return offs


@pytest.mark.parametrize("size", [BLOCK, 1000, 4032])
@pytest.mark.parametrize("threads", [1, 2, 4])
def test_mapped_copies_equal_pread_block_by_block(mapfile, size, threads):
    p, data = mapfile
    offs = oracle_offsets(len(data), 3000, size, seed=size + threads)
    fd = os.open(p, os.O_RDONLY)
    try:
        got, res, bad, mapped = pread_blocks(fd, offs, size, threads, True)
        want, wres, wbad, _ = pread_blocks(fd, offs, size, threads, False)
        assert not maps_of(p)
        # No map or fd left by a call: five calls would leave five (glibc
        # keeps the stacks of ended threads for the next ones: the calls
        # above made them before the count starts).
        leakcheck = LeakCheck()
        for _ in range(5):
            pread_blocks(fd, offs, size, threads, True)
        leakcheck.check()
    finally:
        os.close(fd)
    # The map path ran: every block wholly inside the file came from it.
    assert mapped == int(np.count_nonzero(offs + size <= len(data)))
    for i, o in enumerate(offs.tolist()):
        expect = data[o:o + size]  # what os.pread gives
        assert res[i] == len(expect), (i, o)
        assert got[i, :res[i]].tobytes() == expect, (i, o)
    assert np.array_equal(res, wres)
    assert bad == wbad == int(np.count_nonzero(res != size))
    # Past a short count both leave the buffer as it was.
    assert np.array_equal(got, want)


@pytest.mark.smoke
def test_read_blocks_reports_the_map_path(mapfile):
    """stats['mapped']: the blocks copied out of the map; None when
    read_blocks did not ask for it (too few blocks per window, uncached, or
    another path), 0 when the C side would not map."""
    p, data = mapfile
    n = 2048  # 1 MiB: 17 windows of 64 KiB, 120 blocks a window
    offs = np.random.default_rng(3).integers(0, len(data) // BLOCK, n) * BLOCK
    want = np.stack([np.frombuffer(data[o:o + BLOCK], np.uint8) for o in offs.tolist()])
    for threads in (1, 2):
        st = {}
        got = fastio.read_blocks(p, offs, BLOCK, mode="copy", threads=threads, stats=st)
        assert st["mapped"] == n
        assert np.array_equal(got, want)
        # A pre-touched out whose rows are 16-byte aligned and one that is not.
        for shift in (0, 1):
            raw = np.ones(n * BLOCK + 64, np.uint8)
            out = raw[shift:shift + n * BLOCK]
            fastio.read_blocks(p, offs, BLOCK, out=out, mode="copy", threads=threads,
                               stats=st)
            assert st["mapped"] == n
            assert np.array_equal(out.reshape(n, BLOCK), want)
    st = {}
    fastio.read_blocks(p, offs[:100], BLOCK, mode="copy", stats=st)
    assert st["mapped"] is None  # too few blocks for the map to pay
    fastio.read_blocks(p, offs // 2, 2 * BLOCK, mode="copy", stats=st)
    assert st["mapped"] is None  # blocks larger than MAPCOPY_MAX_SIZE


def test_non_temporal_copies_of_a_large_call(mapfile):
    """From 64 MiB of destination the copies use non-temporal stores
    (mapcopy.c's NT_MIN_BYTES): the bytes are still pread's."""
    p, data = mapfile
    n = 1 << 14
    offs = np.random.default_rng(4).integers(0, len(data) // BLOCK, n) * BLOCK
    st = {}
    got = fastio.read_blocks(p, offs, BLOCK, mode="copy", threads=2, stats=st)
    assert st["mapped"] == n
    view = memoryview(data)
    for i, o in enumerate(offs.tolist()):
        assert got[i].tobytes() == view[o:o + BLOCK], i


def test_no_map_for_write_only_direct_or_unmappable_files(mapfile, tmp_path):
    p, data = mapfile
    offs = np.zeros(4, np.int64)
    w = os.open(p, os.O_WRONLY)
    try:
        _, res, bad, mapped = pread_blocks(w, offs, BLOCK, 2, True)
        assert mapped == 0 and bad == 4 and set(res.tolist()) == {-errno.EBADF}
    finally:
        os.close(w)
    try:
        d = os.open(p, os.O_RDONLY | os.O_DIRECT)
    except OSError:
        d = None  # no O_DIRECT here: nothing to check
    if d is not None:
        try:
            buf = fastio.empty((4, BLOCK), align=4096)
            res = np.empty(4, np.int64)
            m = np.zeros(1, np.int64)
            _core._pread_blocks(d, offs, BLOCK, buf, 2, 0, res, 0, m)
            assert m[0] == 0 and set(res.tolist()) == {BLOCK}
        finally:
            os.close(d)
    r, wp = os.pipe()
    try:
        os.write(wp, b"x" * 64)
        _, res, bad, mapped = pread_blocks(r, [0], 8, 1, True)
        assert mapped == 0 and res[0] == -errno.ESPIPE
    finally:
        os.close(r)
        os.close(wp)
    memfd = os.memfd_create("fastio-mapcopy", os.MFD_CLOEXEC)
    try:
        os.write(memfd, data)
        got, res, bad, mapped = pread_blocks(memfd, [0, 4096], BLOCK, 1, True)
        # tmpfs: a read fault on a hole would allocate a page: pread stays.
        assert mapped == 0 and got[1].tobytes() == data[4096:8192]
    finally:
        os.close(memfd)


def test_mapped_argument_checked(mapfile):
    p, _ = mapfile
    fd = os.open(p, os.O_RDONLY)
    try:
        res = np.empty(1, np.int64)
        with pytest.raises(ValueError, match="mapped must be None or an aligned int64"):
            _core._pread_blocks(fd, np.zeros(1, np.int64), 8, bytearray(8), 1, 0, res, 0,
                                np.zeros(2, np.int64))
    finally:
        os.close(fd)


def test_no_map_left_after_ctrl_c(mapfile):
    """A handler raising during mapped copies: par_run stops and joins the
    threads, then the map is unmapped before the exception propagates."""
    import signal
    p, data = mapfile
    n = 1 << 14
    offs = np.random.default_rng(5).integers(0, len(data) // BLOCK, n) * BLOCK
    out = fastio.Buffer(n * BLOCK)

    class Alarm(Exception):
        pass

    def handler(signum, frame):
        raise Alarm

    fd = os.open(p, os.O_RDONLY)
    old = signal.signal(signal.SIGALRM, handler)
    st = {}
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(Alarm):
            for _ in range(100_000):
                fastio.read_blocks(fd, offs, BLOCK, out=out, mode="copy", threads=2,
                                   stats=st)
                assert st["mapped"] == n
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        os.close(fd)
    assert not maps_of(p)
    assert out.exports == 0


_TRUNCATE_CHILD = textwrap.dedent(r"""
    import os, sys, threading
    import numpy as np
    import fastio
    path, seconds = sys.argv[1], float(sys.argv[2])
    BLOCK, SMALL = 4096, 1 << 20
    old = open(path, "rb").read()
    big = len(old)
    fd = os.open(path, os.O_RDWR)
    stop = threading.Event()
    cycles = 0

    def truncator():
        global cycles
        while not stop.is_set():
            os.ftruncate(fd, SMALL)
            os.ftruncate(fd, big)
            cycles += 1

    rng = np.random.default_rng(7)
    t = threading.Thread(target=truncator)
    t.start()
    calls = mapped = fell_back = 0
    import time
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            offs = rng.integers(0, big // BLOCK, 4096) * BLOCK
            buf = np.empty(len(offs) * BLOCK, np.uint8)
            res = np.empty(len(offs), np.int64)
            m = np.zeros(1, np.int64)
            bad = fastio._core._pread_blocks(fd, offs, BLOCK, buf, 2, 0, res, 0, m)
            calls += 1
            mapped += int(m[0])
            fell_back += int(m[0]) < len(offs)
            assert bad == int(np.count_nonzero(res != BLOCK))
            rows = buf.reshape(-1, BLOCK)
            for i, o in enumerate(offs.tolist()):
                r = int(res[i])
                # What a read racing the truncation could give: the whole
                # block, old bytes or (past SMALL, once truncated) zeros, or
                # nothing; or, for a block whose copy was under way when
                # its page went and the file grew back before the next
                # load faulted, the old bytes up to that moment and zeros
                # after (docs/readwrite.md: a truncation races any read).
                assert r in (0, BLOCK), (o, r)
                if r == 0:
                    assert o >= SMALL, o
                    continue
                b = rows[i].tobytes()
                if b == old[o:o + BLOCK]:
                    continue
                assert o >= SMALL, o
                k = len(b.rstrip(b"\0"))
                assert b[:k] == old[o:o + k], o
    finally:
        stop.set()
        t.join()
    print(calls, cycles, mapped, fell_back)
""")


def test_truncation_during_mapped_copies_never_crashes(mapfile, tmp_path):
    """Another thread shrinks the file (SIGBUS for a copy touching a page
    past the new end) and grows it back, while the main thread reads with
    mapped copies in a loop: the process lives (a SIGBUS while a worker
    thread blocked it would kill it), every result is one pread could
    give, and the calls where the file shrank fell back to pread."""
    p = tmp_path / "trunc.bin"
    write_file(p, 4 << 20, seed=9)
    proc = subprocess.run([sys.executable, "-c", _TRUNCATE_CHILD, str(p), "3"],
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ))
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    calls, cycles, mapped, fell_back = map(int, proc.stdout.split())
    assert calls > 0 and cycles > 0
    assert mapped > 0  # the map path ran
    assert fell_back > 0  # and met the truncations


_HANDLER_CHILD = textwrap.dedent(r"""
    import faulthandler, os, signal, sys
    import numpy as np
    import fastio
    path = sys.argv[1]
    offs = np.arange(2048, dtype=np.int64) % 256 * 4096
    def mapped():
        st = {}
        fastio.read_blocks(path, offs, 4096, mode="copy", stats=st)
        return st["mapped"]
    seen = [mapped()]
    faulthandler.enable()  # in front of fastio's handler: it chains to it
    seen.append(mapped())
    faulthandler.disable()  # fastio's handler back in front
    seen.append(mapped())
    signal.signal(signal.SIGBUS, lambda *a: None)  # would return into the fault
    seen.append(mapped())
    print(*seen)
""")


def test_map_only_while_fastio_handles_sigbus(mapfile):
    """A SIGBUS handler installed in front of fastio's (a Python one would
    return into the faulting copy forever) keeps the copy path on pread."""
    p, _ = mapfile
    proc = subprocess.run([sys.executable, "-c", _HANDLER_CHILD, str(p)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["2048", "0", "2048", "0"]
