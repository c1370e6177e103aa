"""fastio.read_files: many whole files in one call, against the stdlib
(open().read()) as oracle, on every backend that works here."""
import asyncio
import gc
import inspect
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastio
from fastio import _core

import probes
from conftest import count_fds

SIZES = [0, 1, 2, 4095, 4096, 4097, 8191, 12288, 65537, 1 << 20]


def count_threads():
    # io_uring's kernel workers (iou-wrk-*, iou-sqp-*) are listed as threads
    # of the process and come and go on their own: not ours to count.
    n = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                if f.read().startswith("iou-"):
                    continue
        except FileNotFoundError:
            continue
        n += 1
    return n


@pytest.fixture(params=["io_uring", "threads"])
def backend(request):
    name = request.param
    if name == "io_uring":
        try:
            fastio.read_files([__file__], backend="io_uring")
        except fastio.BackendUnavailable as e:
            probes.fail_or_skip("io_uring", probes.io_uring(), str(e))
    return name


def _child_says(code, word, timeout):
    """Run code in a child Python (a hang or a crash must not take the suite
    with it); it must exit 0 having printed word."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0 and word in proc.stdout, proc.stdout + proc.stderr


def make(d, sizes, prefix="f"):
    paths = []
    for i, n in enumerate(sizes):
        p = os.path.join(d, f"{prefix}{i:05d}.bin")
        with open(p, "wb") as f:
            f.write(os.urandom(n))
        paths.append(p)
    return paths


def oracle(p):
    with open(p, "rb") as f:
        return f.read()


def check(files, paths):
    assert len(files) == len(paths)
    assert files.offsets.dtype == np.int64 and files.sizes.dtype == np.int64
    assert files.offsets.shape == (len(paths) + 1,)
    assert files.data.dtype == np.uint8 and files.data.flags.c_contiguous
    for i, p in enumerate(paths):
        want = oracle(p)
        assert files.sizes[i] == len(want)
        assert files[i].tobytes() == want, p
        assert np.shares_memory(files[i], files.data) or len(want) == 0


@pytest.mark.parametrize("depth", [1, 3, 64])
def test_sizes_against_stdlib(tmp_path, backend, depth):
    paths = make(tmp_path, SIZES)
    files = fastio.read_files(paths, backend=backend, depth=depth)
    check(files, paths)
    assert files.backend == backend
    assert files.errors == {}
    # Arrow-style: contiguous, offsets[i+1] - offsets[i] == sizes[i]
    assert files.offsets[0] == 0
    assert (np.diff(files.offsets) == files.sizes).all()
    assert files.data.nbytes == sum(SIZES)
    assert [bytes(v) for v in files] == [oracle(p) for p in paths]


def test_many_files(tmp_path, backend):
    rng = np.random.default_rng(7)
    sizes = [int(x) for x in rng.integers(0, 20000, 1500)]
    paths = make(tmp_path, sizes)
    files = fastio.read_files(paths, backend=backend, depth=16)
    check(files, paths)


def test_path_types_and_duplicates(tmp_path, backend):
    a, b = make(tmp_path, [10, 5000])
    files = fastio.read_files([a, os.fsencode(b), tmp_path / os.path.basename(a), a],
                              backend=backend)
    assert [bytes(v) for v in files] == [oracle(a), oracle(b), oracle(a), oracle(a)]
    assert files.paths[1] == os.fsencode(b)


def test_empty_list():
    files = fastio.read_files([])
    assert len(files) == 0 and list(files) == []
    assert files.data.nbytes == 0 and list(files.offsets) == [0]
    assert files.errors == {} and files.backend is None


def test_files_object(tmp_path):
    paths = make(tmp_path, [3, 0, 7])
    files = fastio.read_files(paths)
    assert files[-1].tobytes() == oracle(paths[2])
    with pytest.raises(IndexError, match="file index out of range: 3"):
        files[3]
    with pytest.raises(TypeError, match="Files indices must be integers"):
        files["a"]
    assert "3 files, 10 bytes, 0 errors" in repr(files)
    assert files.paths == tuple(paths)


def test_out(tmp_path, backend):
    paths = make(tmp_path, [100, 4096, 3])
    out = np.full(10000, 0xEE, np.uint8)
    files = fastio.read_files(paths, out=out, backend=backend)
    check(files, paths)
    assert np.shares_memory(files.data, out)
    assert (out[4199:] == 0xEE).all()  # nothing past the files written
    ba = bytearray(4199)
    files = fastio.read_files(paths, out=ba, backend=backend)
    assert bytes(ba) == b"".join(oracle(p) for p in paths)


def test_pattern(tmp_path):
    make(tmp_path, [5, 6], prefix="a")
    make(tmp_path, [7], prefix="b")
    (tmp_path / "adir.bin").mkdir()  # matches the glob, left out
    sub = tmp_path / "sub"
    sub.mkdir()
    make(sub, [8], prefix="a")
    files = fastio.read_files(tmp_path, pattern="a*.bin")
    assert [os.path.basename(p) for p in files.paths] == ["a00000.bin", "a00001.bin"]
    assert list(files.sizes) == [5, 6]
    files = fastio.read_files(str(tmp_path), pattern="**/a*.bin")
    assert sorted(files.sizes) == [5, 6, 8]


def test_missing_raise_is_the_first(tmp_path, backend):
    paths = make(tmp_path, [10, 10])
    bad = [paths[0], str(tmp_path / "nope1"), paths[1], str(tmp_path / "nope2")]
    with pytest.raises(FileNotFoundError, match=r"paths\[1\]") as ei:
        fastio.read_files(bad, backend=backend)
    assert ei.value.filename == bad[1]


def test_missing_skip(tmp_path, backend):
    paths = make(tmp_path, [10, 4096, 20])
    os.mkfifo(tmp_path / "fifo")
    mixed = [paths[0], str(tmp_path / "nope"), paths[1], str(tmp_path), paths[2],
             str(tmp_path / "fifo")]
    files = fastio.read_files(mixed, backend=backend, missing="skip")
    assert sorted(files.errors) == [1, 3, 5]
    assert isinstance(files.errors[1], FileNotFoundError)
    assert isinstance(files.errors[3], IsADirectoryError)
    assert type(files.errors[5]) is OSError and "FIFO" in str(files.errors[5])
    for i in (1, 3, 5):
        assert files.sizes[i] == 0 and files[i].nbytes == 0
    for i, p in ((0, paths[0]), (2, paths[1]), (4, paths[2])):
        assert files[i].tobytes() == oracle(p)


def test_max_size(tmp_path, backend):
    paths = make(tmp_path, [100, 101])
    files = fastio.read_files(paths[:1], max_size=100, backend=backend)
    assert files.sizes[0] == 100  # equal is allowed
    with pytest.raises(OSError, match=r"101 bytes, larger than max_size=100; paths\[1\]"):
        fastio.read_files(paths, max_size=100, backend=backend)
    files = fastio.read_files(paths, max_size=100, backend=backend, missing="skip")
    assert list(files.errors) == [1]


def test_fifo_refused_without_blocking(tmp_path):
    # A read of a FIFO with no writer would block forever: the stat refuses
    # it first. In a child, with a timeout, so a regression cannot hang.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    code = textwrap.dedent(f"""
        import fastio
        for backend in ("auto", "threads"):
            try:
                fastio.read_files([{str(fifo)!r}], backend=backend)
            except OSError as e:
                assert "FIFO" in str(e), e
            else:
                raise SystemExit("not refused")
        print("refused")
    """)
    _child_says(code, "refused", timeout=60)


@pytest.mark.parametrize("writer", ["none", "silent"])
def test_fifo_swapped_in_after_stat(tmp_path, backend, writer):
    # The race: paths replaced by FIFOs between the stat and the open, with
    # no writer (a blocking open would wait for one forever: io_uring's
    # openat did before it used O_NONBLOCK) or held open by a writer that
    # writes nothing (io_uring polls a FIFO's read: it waited forever before
    # the fadvise check). Deterministic: the allocator called between the
    # phases does the swap; every other file of 40, depth 2, so the slots
    # of the refused files must be closed and reused. In a child, with a
    # timeout.
    code = textwrap.dedent(f"""
        import os, numpy as np
        from fastio import _core
        paths = []
        for i in range(40):
            p = os.path.join({str(tmp_path)!r}, f"x{{i}}")
            with open(p, "wb") as f:
                f.write(bytes([i]) * 5000)
            paths.append(os.fsencode(p))
        keep = []
        def alloc(n):
            for p in paths[1::2]:
                os.unlink(p)
                os.mkfifo(p)
                if {writer!r} == "silent":
                    keep.append(os.open(p, os.O_RDONLY | os.O_NONBLOCK))
                    keep.append(os.open(p, os.O_WRONLY | os.O_NONBLOCK))
            return np.zeros(n, np.uint8)
        buf, offs, sizes, errors, used = _core._read_files(
            tuple(paths), alloc, {backend!r}, 2, -1, False, False)
        assert used == {backend!r} and sorted(errors) == list(range(1, 40, 2)), errors
        for e in errors.values():
            assert e.errno == 22 and "FIFO" in str(e), e
        sizes = np.frombuffer(sizes, np.int64)
        offs = np.frombuffer(offs, np.int64)
        for i in range(0, 40, 2):
            assert sizes[i] == 5000 and bytes(buf[offs[i]:offs[i + 1]]) == bytes([i]) * 5000
        print("ok")
    """)
    _child_says(code, "ok", timeout=60)


@pytest.mark.parametrize("change", ["truncate", "grow"])
def test_changed_between_stat_and_read(tmp_path, backend, change):
    # Deterministic: the C call asks the Python layer for its output buffer
    # between the stat phase and the reads; this allocator changes a file
    # there.
    paths = make(tmp_path, [5000, 5000, 5000])
    victim = paths[1]

    def alloc(n):
        with open(victim, "r+b") as f:
            if change == "truncate":
                f.truncate(100)
            else:
                f.seek(0, 2)
                f.write(b"x")
        return np.full(n, 0xEE, np.uint8)

    enc = tuple(os.fsencode(p) for p in paths)
    buf, offs, sizes, errors, used = _core._read_files(enc, alloc, backend, 8, -1, False,
                                                       False)
    assert used == backend
    assert list(errors) == [1]
    assert errors[1].errno == 5 and "changed size" in str(errors[1])
    sizes = np.frombuffer(sizes, np.int64)
    offs = np.frombuffer(offs, np.int64)
    assert list(sizes) == [5000, 0, 5000]
    assert (buf[offs[1]:offs[2]] == 0).all()  # zeroed, not half-copied
    assert buf[offs[0]:offs[1]].tobytes() == oracle(paths[0])
    assert buf[offs[2]:offs[3]].tobytes() == oracle(paths[2])


def test_direct(tmp_path, backend):
    if not probes.o_direct(tmp_path):
        probes.skip_unless("O_DIRECT", probes.o_direct(tmp_path))
    paths = make(tmp_path, [1, 4096, 5000, 0, 1 << 16])
    files = fastio.read_files(paths, direct=True, backend=backend)
    for i, p in enumerate(paths):
        assert files[i].tobytes() == oracle(p)
    assert (files.offsets[:-1] % 4096 == 0).all()
    assert files.data.ctypes.data % 4096 == 0


def test_backend_names(tmp_path, monkeypatch):
    paths = make(tmp_path, [10])
    for name in ("linux_aio", "posix_aio"):
        files = fastio.read_files(paths, backend=name)
        assert files.backend == "threads"
        assert files.backend_reason.startswith(f"{name} cannot open files")
    monkeypatch.setenv("FASTIO_BACKEND", "threads")
    assert fastio.read_files(paths).backend == "threads"


@pytest.mark.parametrize("case", ["ok", "missing", "skip", "small_out", "changed"])
def test_no_leaks(tmp_path, backend, case):
    paths = make(tmp_path, [10, 20000, 0] * 20)

    def once():
        if case == "ok":
            fastio.read_files(paths, backend=backend, depth=8)
        elif case == "missing":
            with pytest.raises(FileNotFoundError):
                fastio.read_files(paths + [str(tmp_path / "nope")] + paths, backend=backend)
        elif case == "skip":
            fastio.read_files(paths + [str(tmp_path)], backend=backend, missing="skip")
        elif case == "small_out":
            with pytest.raises(ValueError):
                fastio.read_files(paths, backend=backend, out=bytearray(10))
        else:
            def alloc(n):
                with open(paths[1], "ab") as f:
                    f.write(b"y")
                return bytearray(n)
            enc = tuple(os.fsencode(p) for p in paths)
            errors = _core._read_files(enc, alloc, backend, 4, -1, False, False)[3]
            assert 1 in errors

    once()  # warm-up: lazy imports, the probe cache
    gc.collect()
    fds, threads = count_fds(), count_threads()
    for _ in range(20):
        once()
    gc.collect()
    assert count_fds() == fds, "file descriptors leaked"
    assert count_threads() == threads, "threads left running"


def test_async(tmp_path, backend):
    paths = make(tmp_path, SIZES)

    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        t = asyncio.ensure_future(ticker())
        files = await fastio.read_files_async(paths, backend=backend)
        again = await fastio.aio.read_files(paths, backend=backend)   # the same coroutine
        assert fastio.aio.read_files is fastio.read_files_async
        assert bytes(again.data) == bytes(files.data)
        t.cancel()
        return files, ticks

    files, ticks = asyncio.run(main())
    check(files, paths)
    assert ticks >= 1  # the loop ran while the files were read


SIGINT_CHILD = "import os\n" + inspect.getsource(count_threads) + textwrap.dedent("""
    import signal, sys, threading, time, fastio
    d, backend = sys.argv[1], sys.argv[2]
    paths = sorted(os.path.join(d, n) for n in os.listdir(d))

    def evict():
        for p in paths:
            fd = os.open(p, os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)

    evict()
    t0 = time.monotonic()
    fastio.read_files(paths, backend=backend)
    full = time.monotonic() - t0
    evict()
    fds, threads = len(os.listdir("/proc/self/fd")), count_threads()
    sent = []
    def kill():
        sent.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)
    threading.Timer(0.02, kill).start()
    got = None
    t0 = time.monotonic()
    try:
        got = fastio.read_files(paths, backend=backend)
    except KeyboardInterrupt:
        pass
    end = time.monotonic()
    time.sleep(0.01)  # the timer's thread ends
    assert got is None, "the call completed"
    # Stopped midway: files it never reached are still cold (before the
    # fix the call read them all, then raised).
    from fastio.blocks import residency_of
    cold = 0
    for p in paths[::10]:
        fd = os.open(p, os.O_RDONLY)
        cold += residency_of(fd, [0], 4096) == 0
        os.close(fd)
    assert cold > 0, "every file was read"
    assert sent, "no signal sent"
    assert len(os.listdir("/proc/self/fd")) == fds, "fds left open"
    assert count_threads() == threads, "threads left running"
    print(f"full {full:.3f} s, interrupted after {end - t0:.3f} s, {cold} of "
          f"{len(paths[::10])} sampled files unread, "
          f"{end - sent[0]:.3f} s after the signal")
    assert end - sent[0] < 2.0
""")


def test_sigint_stops_the_call(tmp_path, backend):
    # Ctrl-C during a long call (20,000 files, evicted: cold) stops it
    # within 2 s: no new file starts, what is in flight ends (io_uring:
    # cancelled), every fd, ring and thread is gone, and KeyboardInterrupt
    # comes out of read_files (the result is dropped).
    d = tmp_path / "many"
    d.mkdir()
    blob = os.urandom(4096)
    for i in range(20000):
        with open(d / f"f{i:05d}", "wb") as f:
            f.write(blob)
    os.sync()
    proc = subprocess.run([sys.executable, "-c", SIGINT_CHILD, str(d), backend],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    print(proc.stdout)


def test_sigint_ends_a_stuck_read(tmp_path):
    # The race docs/readfiles.md leaves open on io_uring: a path swapped
    # after the stat for a symlink to a terminal (here a new pty master,
    # /dev/ptmx, that nobody writes to) leaves its read waiting: io_uring
    # polls it. A Ctrl-C ends the call (the read is cancelled), nothing left.
    if not os.path.exists("/dev/ptmx"):
        pytest.skip("no /dev/ptmx")
    code = textwrap.dedent(f"""
        import os, signal, sys, threading, time, numpy as np
        import fastio
        from fastio import _core
        try:
            fastio.read_files([sys.executable], backend="io_uring")
        except fastio.BackendUnavailable:
            raise SystemExit(77)
        p = os.path.join({str(tmp_path)!r}, "x")
        with open(p, "wb") as f:
            f.write(b"a" * 100)
        def alloc(n):
            os.unlink(p)
            os.symlink("/dev/ptmx", p)
            return np.zeros(n, np.uint8)
        fds = len(os.listdir("/proc/self/fd"))
        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
        t0 = time.monotonic()
        try:
            _core._read_files((os.fsencode(p),), alloc, "io_uring", 8, -1, False, False)
        except KeyboardInterrupt:
            pass
        else:
            raise SystemExit("no KeyboardInterrupt (the read was not stuck?)")
        assert time.monotonic() - t0 < 2.3
        assert len(os.listdir("/proc/self/fd")) == fds
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    if proc.returncode == 77:
        pytest.skip("io_uring cannot read files here")
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stdout + proc.stderr


def test_direct_size_near_int64_max_is_refused_not_wrapped():
    # tmpfs allows a sparse file of ~2**63 bytes. With direct=True each
    # reservation is rounded up to 4096: that rounding wrapped negative, two
    # such files summed to an empty output, and the read wrote ~2 GiB past
    # it (review finding). Now the size is checked before the rounding.
    path = f"/dev/shm/fastio-test-huge-{os.getpid()}"
    with open(path, "wb") as f:
        f.truncate(2**63 - 808)
    try:
        for kwargs in ({}, {"out": fastio.empty(1 << 16)}):
            with pytest.raises(OverflowError, match="does not fit"):
                fastio.read_files([path, path], direct=True, **kwargs)
    finally:
        os.unlink(path)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["io_uring"], indirect=True)   # threads always looped
def test_a_file_past_one_read_call_is_read_whole(tmp_path, backend):
    # One read(2)/READV moves at most 2 GiB - 4 KiB (MAX_RW_COUNT): io_uring's
    # single READV reported every larger file as "changed size". Such files
    # are now read by the looping path. A sparse file: zeros, plus a mark.
    path = tmp_path / "big.bin"
    size = (2 << 30) + 4096 + 7
    with open(path, "wb") as f:
        f.truncate(size)
        f.seek(size - 4)
        f.write(b"tail")
    files = fastio.read_files([str(path)], backend=backend)
    assert files.sizes.tolist() == [size] and not files.errors
    assert bytes(files[0][-4:]) == b"tail" and not files[0][:-4].any()
