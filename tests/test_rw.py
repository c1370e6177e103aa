"""pread / pwrite / preadv / pwritev / readinto_full / pread_parallel /
fadvise / readahead, and read_file; os and numpy are the oracles."""
import errno
import gc
import inspect
import mmap as std_mmap
import os
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastio
from fastio import _core, fileio
from conftest import LeakCheck

MiB = 1 << 20
PAGE = os.sysconf("SC_PAGE_SIZE")

hsettings = settings(max_examples=60, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def rfile(datafile):
    """(fd, data) of a read-only file of n bytes; the fd is closed after."""
    fds = []

    def make(n, name="r.bin"):
        p, data = datafile(n, name)
        fd = os.open(p, os.O_RDONLY)
        fds.append(fd)
        return fd, data

    yield make
    for fd in fds:
        os.close(fd)


@pytest.fixture
def wfd(tmp_path):
    fd = os.open(tmp_path / "w.bin", os.O_RDWR | os.O_CREAT, 0o600)
    yield fd
    os.close(fd)


# ------------------------------------------------------------------ pread

@hsettings
@given(size=st.integers(0, 3 * 4096 + 7), offset=st.integers(0, 4 * 4096),
       length=st.integers(0, 4 * 4096))
@pytest.mark.smoke
def test_pread_matches_os(rfile, size, offset, length):
    fd, data = rfile(size, f"p{size}.bin")
    buf = bytearray(length)
    n = fastio.pread(fd, buf, offset)
    expected = os.pread(fd, length, offset)
    assert n == len(expected)  # short near EOF, 0 past it
    assert bytes(buf[:n]) == expected


def test_pread_into_various_buffers(rfile):
    fd, data = rfile(10000)
    arr = np.zeros(100, np.float64)
    assert fastio.pread(fd, arr, 16) == 800
    assert arr.tobytes() == data[16:816]
    buf = fastio.Buffer(4096)
    assert fastio.pread(fd, buf, 0) == 4096
    assert bytes(memoryview(buf)) == data[:4096]
    m = std_mmap.mmap(-1, 5000)
    assert fastio.pread(fd, m, 9000) == 1000
    assert m[:1000] == data[9000:]
    m.close()
    mv = memoryview(bytearray(50))[10:20]
    assert fastio.pread(fd, mv, 3) == 10
    assert bytes(mv) == data[3:13]


def test_pread_fd_with_fileno(datafile):
    p, data = datafile(300)
    with open(p, "rb") as f:
        buf = bytearray(100)
        assert fastio.pread(f, buf, 200) == 100
        assert bytes(buf) == data[200:]
        assert f.tell() == 0  # pread does not move the position


@pytest.mark.smoke
def test_pread_bad_input(rfile, tmp_path):
    fd, _ = rfile(100)
    with pytest.raises(TypeError, match="buf") as ei:
        fastio.pread(fd, b"read-only", 0)
    assert isinstance(ei.value.__cause__, BufferError)
    with pytest.raises(TypeError, match="buf"):
        fastio.pread(fd, memoryview(bytearray(10)).toreadonly(), 0)
    with pytest.raises(TypeError, match="buf"):
        fastio.pread(fd, "not a buffer", 0)
    with pytest.raises(ValueError, match="buf: ndarray is not C-contiguous"):
        fastio.pread(fd, np.zeros((4, 4))[:, 1], 0)
    with pytest.raises(ValueError, match="offset=-1"):
        fastio.pread(fd, bytearray(10), -1)
    with pytest.raises(TypeError, match="offset"):
        fastio.pread(fd, bytearray(10), "0")
    with pytest.raises(OverflowError, match="offset"):
        fastio.pread(fd, bytearray(10), 2**70)
    with pytest.raises(ValueError, match="fd=-1"):
        fastio.pread(-1, bytearray(10), 0)
    with pytest.raises(TypeError):
        fastio.pread("3", bytearray(10), 0)
    with pytest.raises(TypeError, match="3 arguments"):
        fastio.pread(fd, bytearray(10))
    closed = os.open(tmp_path / "c", os.O_RDWR | os.O_CREAT)
    os.close(closed)
    with pytest.raises(OSError) as ei:
        fastio.pread(closed, bytearray(10), 0)
    assert ei.value.errno == errno.EBADF and "pread" in str(ei.value)
    closed_buf = fastio.Buffer(10)
    closed_buf.close()
    with pytest.raises(ValueError, match="buf: Buffer is closed"):
        fastio.pread(fd, closed_buf, 0)


def test_pread_directory_and_pipe(tmp_path):
    dfd = os.open(tmp_path, os.O_RDONLY)
    try:
        with pytest.raises(IsADirectoryError):
            fastio.pread(dfd, bytearray(10), 0)
    finally:
        os.close(dfd)
    r, w = os.pipe()
    try:
        with pytest.raises(OSError) as ei:
            fastio.pread(r, bytearray(10), 0)
        assert ei.value.errno == errno.ESPIPE
    finally:
        os.close(r)
        os.close(w)


def test_signatures():
    for name, params in [("pread", "fd, buf, offset"), ("pwrite", "fd, buf, offset"),
                         ("preadv", "fd, buffers, offset"),
                         ("pwritev", "fd, buffers, offset"),
                         ("readinto_full", "fd, buf, offset=0"),
                         ("fadvise", "fd, offset, length, advice"),
                         ("readahead", "fd, offset, length")]:
        fn = getattr(fastio, name)
        assert fn is getattr(_core, name)  # no Python wrapper on the hot path
        assert str(inspect.signature(fn)) == f"({params}, /)"


# ------------------------------------------------------------------ pwrite

@hsettings
@given(writes=st.lists(st.tuples(st.integers(0, 3 * 4096), st.binary(max_size=5000)),
                       max_size=6))
def test_pwrite_matches_model(tmp_path, writes):
    p = tmp_path / "pw.bin"
    fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        model = bytearray()
        for offset, data in writes:
            assert fastio.pwrite(fd, data, offset) == len(data)
            if data:
                if len(model) < offset:
                    model.extend(bytes(offset - len(model)))
                model[offset:offset + len(data)] = data
        assert p.read_bytes() == bytes(model)
    finally:
        os.close(fd)


@pytest.mark.smoke
def test_pwrite_from_buffers(wfd):
    assert fastio.pwrite(wfd, np.arange(4, dtype="<u2"), 0) == 8
    assert fastio.pwrite(wfd, memoryview(b"xyz"), 8) == 3
    assert os.pread(wfd, 100, 0) == np.arange(4, dtype="<u2").tobytes() + b"xyz"
    with pytest.raises(TypeError, match="buf"):
        fastio.pwrite(wfd, 12, 0)
    with pytest.raises(ValueError, match="offset=-5"):
        fastio.pwrite(wfd, b"x", -5)


def test_pwrite_read_only_fd(rfile):
    fd, _ = rfile(10)
    with pytest.raises(OSError) as ei:
        fastio.pwrite(fd, b"x", 0)
    assert ei.value.errno == errno.EBADF


# ------------------------------------------------------------------ preadv / pwritev


@pytest.mark.skipif(sys.version_info < (3, 12), reason="__buffer__ is Python 3.12+")
@pytest.mark.parametrize("func", ["pwritev", "preadv"])
def test_vector_io_survives_buffer_clearing_the_list(tmp_path, func):
    # issue 12, finding 6: getting a buffer runs Python code on 3.12+
    # (__buffer__); one that clears the list being walked made preadv and
    # pwritev read freed item pointers (segfault). os.pwritev raises
    # IndexError there; fastio walks a private snapshot of the sequence, so
    # it uses the buffers the list held when the call began. In a child.
    import subprocess
    import textwrap
    code = textwrap.dedent(f"""
        import os
        import fastio
        bufs = []
        class Evil:
            def __buffer__(self, flags):
                bufs.clear()
                return memoryview(bytearray(b"x" * 8))
        fd = os.open({str(tmp_path / "v.bin")!r}, os.O_RDWR | os.O_CREAT, 0o600)
        os.write(fd, b"y" * 24)
        bufs[:] = [Evil(), bytearray(b"a" * 8), bytearray(b"b" * 8)]
        print(fastio.{func}(fd, bufs, 0), bufs)
        """)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(fastio.__file__))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       text=True, timeout=60, env=env)
    assert r.returncode == 0, (r.returncode, r.stderr)
    assert r.stdout == "24 []\n"
    if func == "pwritev":
        assert (tmp_path / "v.bin").read_bytes() == b"x" * 8 + b"a" * 8 + b"b" * 8


@hsettings
@given(size=st.integers(0, 20000), offset=st.integers(0, 22000),
       lengths=st.lists(st.integers(0, 6000), max_size=12))
@pytest.mark.smoke
def test_preadv_matches_os(rfile, size, offset, lengths):
    fd, data = rfile(size, f"v{size}.bin")
    ours = [bytearray(n) for n in lengths]
    theirs = [bytearray(n) for n in lengths]
    n = fastio.preadv(fd, ours, offset)
    assert n == os.preadv(fd, theirs, offset)
    assert ours == theirs


@hsettings
@given(chunks=st.lists(st.binary(max_size=3000), max_size=12), offset=st.integers(0, 5000))
@pytest.mark.smoke
def test_pwritev_matches_os(tmp_path, chunks, offset):
    a, b = tmp_path / "a", tmp_path / "b"
    fa = os.open(a, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    fb = os.open(b, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        assert fastio.pwritev(fa, chunks, offset) == os.pwritev(fb, chunks, offset)
    finally:
        os.close(fa)
        os.close(fb)
    assert a.read_bytes() == b.read_bytes()


def test_preadv_bad_input(rfile):
    fd, _ = rfile(100)
    with pytest.raises(TypeError, match="buffers"):
        fastio.preadv(fd, 5, 0)
    with pytest.raises(TypeError, match=r"buffers\[1\]"):
        fastio.preadv(fd, [bytearray(2), b"ro"], 0)
    with pytest.raises(ValueError, match="offset=-1"):
        fastio.preadv(fd, [bytearray(2)], -1)
    with pytest.raises(ValueError, match="at most"):
        fastio.preadv(fd, [bytearray(1)] * (os.sysconf("SC_IOV_MAX") + 1), 0)
    # A failure halfway releases the exports taken so far.
    buf = fastio.Buffer(10)
    with pytest.raises(TypeError):
        fastio.preadv(fd, [buf, "x"], 0)
    assert buf.exports == 0


# ------------------------------------------------------------------ readinto_full

@hsettings
@given(size=st.integers(0, 70000), offset=st.integers(0, 80000),
       length=st.integers(0, 80000))
def test_readinto_full(rfile, size, offset, length):
    fd, data = rfile(size, f"f{size}.bin")
    buf = bytearray(length)
    n = fastio.readinto_full(fd, buf, offset)
    expected = data[offset:offset + length]
    assert n == len(expected)
    assert bytes(buf[:n]) == expected


def test_readinto_full_default_offset_and_large(rfile):
    fd, data = rfile(5 * MiB + 3)
    arr = fastio.empty(len(data))
    assert fastio.readinto_full(fd, arr) == len(data)
    assert arr.tobytes() == data


# ------------------------------------------------------------------ pread_parallel

@pytest.mark.parametrize("size", [1, 4095, 64 * 1024, 64 * 1024 + 1, 1_000_000, 3 * MiB + 17])
@pytest.mark.parametrize("nthreads", [1, 2, 3, 8])
def test_pread_parallel(rfile, size, nthreads):
    fd, data = rfile(size, f"pp{size}.bin")
    buf = bytearray(size)
    assert _core.pread_parallel(fd, buf, 0, nthreads, 64 * 1024) == size
    assert buf == data


@pytest.mark.smoke
def test_pread_parallel_offset_and_short_file(rfile):
    fd, data = rfile(1_000_003)
    # Buffer longer than what is left after the offset: a prefix is read
    # (the file-shrank case of read_file).
    buf = bytearray(2 * MiB)
    n = _core.pread_parallel(fd, buf, 12345, 2, 64 * 1024)
    assert n == len(data) - 12345
    assert bytes(buf[:n]) == data[12345:]
    assert _core.pread_parallel(fd, bytearray(10), 2 * MiB, 2, 64 * 1024) == 0
    assert _core.pread_parallel(fd, bytearray(0), 0, 2, 64 * 1024) == 0


def test_pread_parallel_bad_input(rfile, tmp_path):
    fd, _ = rfile(100)
    with pytest.raises(ValueError, match="nthreads=0"):
        _core.pread_parallel(fd, bytearray(10), 0, 0, 1 << 20)
    with pytest.raises(ValueError, match="chunk=4096"):
        _core.pread_parallel(fd, bytearray(10), 0, 2, 4096)
    with pytest.raises(TypeError, match="buf"):
        _core.pread_parallel(fd, b"ro", 0, 2, 1 << 20)
    with pytest.raises(ValueError, match="offset=-1"):
        _core.pread_parallel(fd, bytearray(10), -1, 2, 1 << 20)
    closed = os.open(tmp_path / "c", os.O_RDWR | os.O_CREAT)
    os.close(closed)
    with pytest.raises(OSError) as ei:
        _core.pread_parallel(closed, bytearray(MiB), 0, 2, 64 * 1024)
    assert ei.value.errno == errno.EBADF


class _Alarm(Exception):
    pass


def test_pread_parallel_signal_handler_raises():
    # A handler that raises during a long parallel read stops it: the workers
    # are told to stop and joined, the exception propagates, the export goes.
    import signal
    fd = os.open("/dev/zero", os.O_RDONLY)
    buf = fastio.Buffer(64 * MiB)

    def handler(signum, frame):
        raise _Alarm

    old = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.02)
        with pytest.raises(_Alarm):
            for _ in range(10_000):
                _core.pread_parallel(fd, buf, 0, 2, 1 << 20)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        os.close(fd)
    assert buf.exports == 0


# ------------------------------------------------------------------ fadvise / readahead

def test_fadvise_constants_and_calls(rfile):
    fd, _ = rfile(10000)
    names = ["NORMAL", "SEQUENTIAL", "RANDOM", "NOREUSE", "WILLNEED", "DONTNEED"]
    for name in names:
        value = getattr(fastio, "POSIX_FADV_" + name)
        assert value == getattr(os, "POSIX_FADV_" + name)
        assert fastio.fadvise(fd, 0, 0, value) is None
    with pytest.raises(ValueError, match="advice=999"):
        fastio.fadvise(fd, 0, 0, 999)
    with pytest.raises(ValueError, match="length=-1"):
        fastio.fadvise(fd, 0, -1, fastio.POSIX_FADV_NORMAL)


def test_readahead(rfile, tmp_path):
    fd, _ = rfile(100000)
    assert fastio.readahead(fd, 0, 100000) is None
    with pytest.raises(ValueError, match="offset=-1"):
        fastio.readahead(fd, -1, 10)
    r, w = os.pipe()
    try:
        with pytest.raises(OSError) as ei:
            fastio.readahead(r, 0, 10)
        assert ei.value.errno == errno.EINVAL and "readahead" in str(ei.value)
    finally:
        os.close(r)
        os.close(w)


# ------------------------------------------------------------------ read_file

SIZES = [0, 1, PAGE - 1, PAGE, PAGE + 1, 3 * MiB + 8, 17 * MiB + 24]


@pytest.mark.parametrize("method", fileio.READ_FILE_METHODS)
@pytest.mark.parametrize("size", SIZES)
def test_read_file_bytes(datafile, method, size):
    p, data = datafile(size)
    arr = fastio.read_file(p, method=method)
    assert arr.dtype == np.uint8 and arr.shape == (size,)
    np.testing.assert_array_equal(arr, np.fromfile(p, np.uint8))
    assert arr.flags.writeable and arr.flags.c_contiguous
    assert arr.ctypes.data % PAGE == 0


@pytest.mark.parametrize("method", fileio.READ_FILE_METHODS)
@pytest.mark.parametrize("dtype", ["<i4", ">f8", np.complex64, "i2", [("a", "<u2"), ("b", "f4")]])
def test_read_file_dtypes(datafile, method, dtype):
    dtype = np.dtype(dtype)
    p, _ = datafile(dtype.itemsize * 100_003)
    arr = fastio.read_file(p, dtype, method=method)
    expected = np.fromfile(p, dtype)
    assert arr.dtype == dtype
    assert arr.tobytes() == expected.tobytes()


def test_read_file_threads_many_chunks(datafile, monkeypatch):
    # A size that is not a multiple of the chunk, many chunks per thread.
    monkeypatch.setattr(fileio, "THREAD_CHUNK", 64 * 1024)
    p, data = datafile(2 * MiB + 12345)
    assert fastio.read_file(p, method="threads").tobytes() == data


def test_read_file_auto_choice(monkeypatch):
    monkeypatch.setattr(fileio, "_ncpus", lambda: 2)
    assert fileio._choose(100) == "pread"
    assert fileio._choose(fileio.THREADS_MIN_SIZE) == "threads"
    monkeypatch.setattr(fileio, "_ncpus", lambda: 1)
    assert fileio._choose(fileio.THREADS_MIN_SIZE) == "pread"


def test_read_file_path_types(datafile):
    p, data = datafile(1000)
    for path in (p, str(p), os.fsencode(p)):
        assert fastio.read_file(path).tobytes() == data


def test_read_file_errors(datafile, tmp_path):
    missing = tmp_path / "missing.bin"
    with pytest.raises(FileNotFoundError) as ei:
        fastio.read_file(missing)
    assert ei.value.filename == str(missing)
    with pytest.raises(IsADirectoryError) as ei:
        fastio.read_file(tmp_path)
    assert ei.value.filename == str(tmp_path)
    p, _ = datafile(10)
    with pytest.raises(ValueError, match=r"10.*dtype=int32") as ei:
        fastio.read_file(p, "i4")
    with pytest.raises(ValueError, match="method='fast'"):
        fastio.read_file(p, method="fast")
    with pytest.raises(TypeError):
        fastio.read_file(p, "not a dtype")
    with pytest.raises(ValueError, match="dtype=object"):
        fastio.read_file(p, object)
    p.chmod(0)
    if os.geteuid() != 0:  # root reads anything
        with pytest.raises(PermissionError) as ei:
            fastio.read_file(p)
        assert ei.value.filename == str(p)


def test_read_file_size_unknown():
    # /proc files say size 0 in stat; they are read to the end anyway.
    arr = fastio.read_file("/proc/self/status")
    assert b"Name:" in arr.tobytes()
    r, w = os.pipe()
    os.write(w, b"through a pipe")
    os.close(w)
    try:
        assert fastio.read_file(f"/proc/self/fd/{r}").tobytes() == b"through a pipe"
    finally:
        os.close(r)


def test_read_file_shrunk_prefix(datafile):
    # The readers return how much was there; read_file keeps that prefix.
    p, data = datafile(3 * MiB)
    for method in ("pread", "threads", "readinto"):
        fd = os.open(p, os.O_RDONLY)
        try:
            buf = fastio.Buffer(4 * MiB)
            assert fileio._READERS[method](fd, buf, 4 * MiB) == len(data)
            assert bytes(memoryview(buf)[:len(data)]) == data
        finally:
            os.close(fd)


def test_read_file_lifetime(datafile):
    p, data = datafile(3 * MiB)
    arr = fastio.read_file(p)
    base = arr.base
    while isinstance(base, np.ndarray):
        base = base.base
    buf = base.obj
    assert isinstance(buf, fastio.Buffer) and buf.exports == 1
    del arr, base
    gc.collect()
    assert buf.exports == 0


def test_read_file_leaks(datafile):
    small, _ = datafile(8192, "small.bin")
    big, _ = datafile(3 * MiB, "big.bin")
    check = LeakCheck()
    for i in range(1000):
        method = fileio.READ_FILE_METHODS[i % len(fileio.READ_FILE_METHODS)]
        path = big if i % 50 == 0 else small
        arr = fastio.read_file(path, method=method)
        del arr
    for _ in range(50):
        with pytest.raises(FileNotFoundError):
            fastio.read_file(small.with_name("nope"))
    check.check()


def test_rw_leaks(rfile):
    fd, _ = rfile(8192)
    check = LeakCheck()
    buf = fastio.Buffer(4096)
    for _ in range(1000):
        fastio.pread(fd, buf, 100)
        fastio.preadv(fd, [buf, bytearray(10)], 0)
        fastio.readinto_full(fd, buf, 5000)
        _core.pread_parallel(fd, buf, 0, 2, 64 * 1024)
    assert buf.exports == 0
    check.check()
