"""Drop-in promises: fastio's supersets against the originals they replace.

One test per row of docs/dropin.md (each pins a deliberate difference,
running the original beside fastio's on this Python), plus signature
checks: every parameter of the original exists in fastio's, with the same
kind and default. shutil.copyfile is the oracle for every copyfile case.
"""
import asyncio
import inspect
import mmap
import os
import pathlib
import pickle
import shutil
import socket
import subprocess
import sys
import threading
import time
from multiprocessing import shared_memory as stdlib_shm

import numpy as np
import pytest

import fastio
import fastio.aio

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastio.__file__)))


def assert_superset(ours, original, renamed=()):
    """Every parameter of original is in ours: same kind (or a more
    permissive one) and default; ours may add keyword-only ones. renamed:
    original's parameter names that ours calls otherwise (a listed row)."""
    a = inspect.signature(ours).parameters
    b = inspect.signature(original).parameters
    renamed = dict(renamed)
    ours_positional = [p for p in a.values() if p.kind in (p.POSITIONAL_ONLY,
                                                            p.POSITIONAL_OR_KEYWORD)]
    for i, p in enumerate(b.values()):
        name = renamed.get(p.name, p.name)
        assert name in a, f"{ours.__name__} lacks {p.name!r}"
        q = a[name]
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            assert ours_positional[i].name == name, f"{p.name} is not at position {i}"
        if p.kind == p.KEYWORD_ONLY:
            assert q.kind in (q.KEYWORD_ONLY, q.POSITIONAL_OR_KEYWORD), p.name
        if p.default is not p.empty:
            assert q.default == p.default, (p.name, q.default, p.default)
    for name, q in a.items():
        if name not in [renamed.get(n, n) for n in b]:
            assert q.default is not q.empty or q.kind == q.VAR_KEYWORD, (
                f"{name} is new and required: calls written for the original break")


def outcome(fn):
    """('ok', value) or (exception type, None)."""
    try:
        return "ok", fn()
    except Exception as e:  # noqa: BLE001 - the type is what is compared
        return type(e), None


# ---------------------------------------------------------------- signatures

def test_signatures_are_supersets():
    assert_superset(fastio.memmap, np.memmap)
    assert_superset(fastio.SharedMemory, stdlib_shm.SharedMemory)
    assert_superset(fastio.copyfile, shutil.copyfile)
    assert_superset(fastio.sendfile, os.sendfile, renamed={"out_fd": "out", "in_fd": "in_"})
    # fastio.aio.sendfile against loop.sock_sendfile: its own test below
    # (method= instead of fallback=, a listed row).


def test_aio_sendfile_against_sock_sendfile():
    loop = asyncio.new_event_loop()
    try:
        ours = inspect.signature(fastio.aio.sendfile).parameters
        theirs = inspect.signature(loop.sock_sendfile).parameters
    finally:
        loop.close()
    assert list(ours)[:4] == list(theirs)[:4] == ["sock", "file", "offset", "count"]
    assert "fallback" in theirs and "fallback" not in ours and "method" in ours

    async def run(a, b, path):
        with open(path, "rb") as f:
            n = await fastio.aio.sendfile(a, f, 0, None, method="auto")
        return n

    a, b = socket.socketpair()
    try:
        a.setblocking(False)
        path = os.path.abspath(__file__)   # any file: this one (the package may be installed)
        n = asyncio.run(run(a, b, path))
        a.close()
        got = b"".join(iter(lambda: b.recv(65536), b""))
        assert isinstance(n, int) and isinstance(n, fastio.Transferred)
        assert n == os.path.getsize(path) and got == open(path, "rb").read()
    finally:
        a.close()
        b.close()


# ---------------------------------------------------------------- mmap

@pytest.fixture
def datafile(tmp_path):
    p = tmp_path / "data.bin"
    p.write_bytes(bytes(range(256)) * 64)
    return p


def test_mmap_any_offset(datafile):
    with open(datafile, "rb") as f:
        assert outcome(lambda: mmap.mmap(f.fileno(), 10, access=mmap.ACCESS_READ,
                                         offset=3))[0] is OSError
        with fastio.mmap(f.fileno(), 10, access=fastio.ACCESS_READ, offset=3) as m:
            assert m[:3] == bytes([3, 4, 5])


def test_mmap_close_with_live_view(datafile):
    with open(datafile, "r+b") as f:
        s = mmap.mmap(f.fileno(), 0)
        v = memoryview(s)
        assert outcome(s.close)[0] is BufferError
        v.release()
        s.close()
        m = fastio.mmap(f.fileno(), 0)
        v = memoryview(m)
        m.close()
        assert m.closed and v[5] == 5   # the view still reads the mapping
        v.release()


def test_mmap_same_where_not_listed(datafile):
    """Return values and exception types that must not differ."""
    with open(datafile, "r+b") as f:
        fd = f.fileno()
        for call in (lambda M: M.mmap(fd, 0).flush(), lambda M: M.mmap(fd, 0).write(b"ab"),
                     lambda M: M.mmap(fd, 0).find(b"\x05", 3),
                     lambda M: M.mmap(fd, 0).madvise(M.MADV_NORMAL),
                     lambda M: M.mmap(fd, -1), lambda M: M.mmap(fd, 1 << 30),
                     lambda M: M.mmap(fd, 0, access=M.ACCESS_READ).write(b"x"),
                     lambda M: (lambda m: (m.close(), m.read(1)))(M.mmap(fd, 0))):
            assert outcome(lambda: call(mmap)) == outcome(lambda: call(fastio))


# ---------------------------------------------------------------- memmap

def test_memmap_offset_past_end(datafile):
    assert outcome(lambda: np.memmap(datafile, "u1", "r", offset=1 << 20))[0] is OverflowError
    with pytest.raises(ValueError, match="offset=1048576"):
        fastio.memmap(datafile, "u1", "r", offset=1 << 20)


def test_memmap_same_where_not_listed(datafile, tmp_path):
    for mode in ("r", "r+", "c"):
        a, b = np.memmap(datafile, "u2", mode, 6, (100,)), fastio.memmap(datafile, "u2", mode, 6, (100,))
        assert isinstance(b, np.memmap) and isinstance(b[:3], type(a[:3]))
        assert (a.filename, a.offset, a.mode, a.shape) == (b.filename, b.offset, b.mode, b.shape)
        assert np.array_equal(a, b) and b.flush() is a.flush() is None
        del a, b
    for bad in (dict(mode="x"), dict(mode="w+"), dict(shape=(1 << 20,))):
        assert outcome(lambda: np.memmap(datafile, "u1", **bad))[0] is \
            outcome(lambda: fastio.memmap(datafile, "u1", **bad))[0]
    missing = tmp_path / "missing"
    assert outcome(lambda: np.memmap(missing, "u1", "r"))[0] is FileNotFoundError
    assert outcome(lambda: fastio.memmap(missing, "u1", "r"))[0] is FileNotFoundError


# ---------------------------------------------------------------- SharedMemory

@pytest.fixture
def std_shm():
    """A stdlib segment without its resource tracker's warnings."""
    made = []

    def make(**kw):
        s = stdlib_shm.SharedMemory(create=True, size=64, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()
        try:
            s.unlink()
        except FileNotFoundError:
            pass


def test_shm_creator_close_unlinks(std_shm):
    s = std_shm()
    s.close()
    assert os.path.exists(f"/dev/shm/{s.name}")      # the original keeps it
    f = fastio.SharedMemory(create=True, size=64)
    f.close()
    assert not os.path.exists(f"/dev/shm/{f.name}")
    p = fastio.SharedMemory(create=True, size=64, persist=True)
    p.close()
    assert os.path.exists(f"/dev/shm/{p.name}")
    p.unlink()


def test_shm_unlink_twice(std_shm):
    s = std_shm()
    s.unlink()
    assert outcome(s.unlink)[0] is FileNotFoundError
    f = fastio.SharedMemory(create=True, size=64)
    f.unlink()
    assert f.unlink() is None
    f.close()


def test_shm_buf_after_close(std_shm):
    s = std_shm()
    s.close()
    assert s.buf is None
    f = fastio.SharedMemory(create=True, size=64)
    f.close()
    with pytest.raises(ValueError, match="closed"):
        f.buf


def test_shm_bad_name():
    assert outcome(lambda: stdlib_shm.SharedMemory("a/b"))[0] is OSError
    with pytest.raises(ValueError, match="name"):
        fastio.SharedMemory("a/b")


def test_shm_track_keyword():
    f = fastio.SharedMemory(create=True, size=64, track=False)
    assert f.persist
    f.close()
    assert os.path.exists(f"/dev/shm/{f.name}")      # the caller unlinks
    f.unlink()
    g = fastio.SharedMemory(create=True, size=64, track=True)
    assert not g.persist
    h = fastio.SharedMemory(g.name, track=False)     # attach: no effect
    h.close()
    g.close()
    assert not os.path.exists(f"/dev/shm/{g.name}")


def test_shm_same_where_not_listed(std_shm):
    for kw in (dict(create=True, size=0), dict(create=True, size=-1), dict()):
        assert outcome(lambda: stdlib_shm.SharedMemory(**kw))[0] is \
            outcome(lambda: fastio.SharedMemory(**kw))[0] is ValueError
    assert outcome(lambda: fastio.SharedMemory("fastio-no-such-segment"))[0] is \
        outcome(lambda: stdlib_shm.SharedMemory("fastio-no-such-segment"))[0] is FileNotFoundError
    s = std_shm()
    assert outcome(lambda: fastio.SharedMemory(s.name, create=True, size=64))[0] is FileExistsError
    f = fastio.SharedMemory(s.name)          # attach: the real size, like the stdlib
    assert (f.name, f.size) == (s.name, s.size) and f.close() is None
    assert s.close() is None


ATTACH_AND_EXIT = r"""
import sys
import fastio
fastio.SharedMemory(sys.argv[1])   # attach, then exit without closing
"""


def test_shm_attacher_exit_keeps_segment():
    f = fastio.SharedMemory(create=True, size=64)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", ATTACH_AND_EXIT, f.name], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "leaked" not in out.stderr, out.stderr
    assert os.path.exists(f"/dev/shm/{f.name}")
    f.close()


# ---------------------------------------------------------------- copyfile, shutil as oracle

def _both(tmp_path, case):
    """Run case(copy, root) with shutil.copyfile and fastio.copyfile, each in
    a fresh copy of the same tree; the outcomes (result or exception type,
    and the destination's bytes) must agree."""
    results = []
    for name, copy in (("shutil", shutil.copyfile), ("fastio", fastio.copyfile)):
        root = tmp_path / name
        root.mkdir()
        (root / "src.bin").write_bytes(b"source bytes")
        (root / "old.bin").write_bytes(b"old contents, longer than the source")
        (root / "dir").mkdir()
        os.symlink("src.bin", root / "link")
        os.symlink("nowhere", root / "dangling")
        os.mkfifo(root / "fifo")
        cwd = os.getcwd()
        os.chdir(root)
        try:
            kind, value = outcome(lambda: case(copy))
        finally:
            os.chdir(cwd)
        tree = {}
        for p in sorted(root.iterdir()):
            if p.is_symlink():
                tree[p.name] = ("link", os.readlink(p))
            elif p.is_file():
                tree[p.name] = p.read_bytes()
        results.append((kind, value, tree))
    (k1, v1, t1), (k2, v2, t2) = results
    assert k1 is k2, f"shutil: {k1}, fastio: {k2}"
    assert t1 == t2
    if k1 == "ok":
        assert v1 == v2 and type(v2) in (type(v1), fastio.CopiedPath, fastio.CopiedBytesPath) \
            or isinstance(v2, type(v1))
    return v2


COPY_CASES = {
    "new file": lambda c: c("src.bin", "new.bin"),
    "over an existing file": lambda c: c("src.bin", "old.bin"),
    "bytes paths": lambda c: c(b"src.bin", b"new.bin"),
    "pathlib": lambda c: c(pathlib.Path("src.bin"), pathlib.Path("new.bin")),
    "dst a directory": lambda c: c("src.bin", "dir"),
    "dst in a missing directory, trailing slash": lambda c: c("src.bin", "nodir/does_not_exist/"),
    "dst in a missing directory": lambda c: c("src.bin", "nodir/x.bin"),
    "dst a missing name with a trailing slash": lambda c: c("src.bin", "new_dir/"),
    "src a directory": lambda c: c("dir", "new.bin"),
    "src missing": lambda c: c("missing.bin", "new.bin"),
    "same file": lambda c: c("src.bin", "src.bin"),
    "same file through a link": lambda c: c("link", "src.bin"),
    "src a named pipe": lambda c: c("fifo", "new.bin"),
    "dst a named pipe": lambda c: c("src.bin", "fifo"),
    "src a link, followed": lambda c: c("link", "new.bin"),
    "src a link, not followed": lambda c: c("link", "new.bin", follow_symlinks=False),
    "src a link not followed onto an existing file": lambda c: c("link", "old.bin",
                                                                  follow_symlinks=False),
    "src a dangling link": lambda c: c("dangling", "new.bin"),
    "dst a dangling link": lambda c: c("src.bin", "dangling"),
    "keyword arguments": lambda c: c(src="src.bin", dst="new.bin"),
    "a positional follow_symlinks": lambda c: c("src.bin", "new.bin", False),
}


@pytest.mark.parametrize("case", list(COPY_CASES))
def test_copyfile_against_shutil(tmp_path, case):
    _both(tmp_path, COPY_CASES[case])


def test_copyfile_result_carries_method(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * 10000)
    for dst in (str(tmp_path / "a"), os.fsencode(tmp_path / "b"), tmp_path / "c"):
        r = fastio.copyfile(src, dst)
        assert r == dst and hash(r) == hash(dst) and repr(r) == repr(dst)
        assert r.method in fastio.COPYFILE_METHODS
        assert isinstance(r, type(dst))
        back = pickle.loads(pickle.dumps(r))
        assert back == dst
    assert type(pickle.loads(pickle.dumps(fastio.copyfile(src, tmp_path / "d")))) is type(tmp_path)
    r = fastio.copyfile(src, str(tmp_path / "e"), method="readwrite")
    assert r.method == "readwrite"
    os.symlink("src.bin", tmp_path / "l")
    assert fastio.copyfile(tmp_path / "l", str(tmp_path / "f"), follow_symlinks=False).method \
        == "symlink"
    with os.scandir(tmp_path) as it:
        entry = next(e for e in it if e.name == "src.bin")
        assert fastio.copyfile(entry, str(tmp_path / "g")) == str(tmp_path / "g")
        assert fastio.copyfile(src, entry.path + ".h") == entry.path + ".h"


def test_copyfile_refuses_descriptors(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"abc")
    fd = os.open(src, os.O_RDONLY)
    try:
        with pytest.raises(TypeError):
            fastio.copyfile(fd, tmp_path / "x")
        os.fstat(fd)  # still ours
    finally:
        os.close(fd)
    fd = os.open(src, os.O_RDONLY)
    shutil.copyfile(fd, tmp_path / "y")      # the original takes it, and closes it
    with pytest.raises(OSError):
        os.fstat(fd)


# ---------------------------------------------------------------- sendfile

def test_sendfile_against_os(tmp_path):
    src = tmp_path / "src.bin"
    data = os.urandom(3 << 20)
    src.write_bytes(data)
    a, b = socket.socketpair()
    got = bytearray()
    t = threading.Thread(target=lambda: got.extend(
        b"".join(iter(lambda: b.recv(1 << 20), b""))))
    t.start()
    try:
        with open(src, "rb") as f:
            n_os = os.sendfile(a.fileno(), f.fileno(), 0, 100)      # positional: same
            n = fastio.sendfile(a.fileno(), f.fileno(), 100, len(data) - 100)
            assert type(n_os) is int and isinstance(n, int) and n == len(data) - 100
            assert n.method in fastio.SENDFILE_METHODS
            # A negative offset: a value error naming it (os: OSError EINVAL).
            assert outcome(lambda: os.sendfile(a.fileno(), f.fileno(), -1, 10))[0] is OSError
            with pytest.raises(ValueError, match="offset"):
                fastio.sendfile(a.fileno(), f.fileno(), -1, 10)
            with pytest.raises(TypeError):
                fastio.sendfile(out_fd=a.fileno(), in_fd=f.fileno(), offset=0, count=1)
            os.sendfile(out_fd=a.fileno(), in_fd=f.fileno(), offset=0, count=0)
    finally:
        a.close()
        t.join(30)
        b.close()
    assert bytes(got) == data[:100] + data[100:]


def test_sendfile_nonblocking_waits(tmp_path):
    src = tmp_path / "src.bin"
    data = os.urandom(8 << 20)   # far more than a socket buffer
    src.write_bytes(data)
    a, b = socket.socketpair()
    a.setblocking(False)
    try:
        with open(src, "rb") as f:
            with pytest.raises(BlockingIOError):
                while True:
                    os.sendfile(a.fileno(), f.fileno(), 0, len(data))
        while select_readable(b):      # drain what the original sent
            b.recv(1 << 20)
        got = bytearray()
        t = threading.Thread(target=lambda: got.extend(read_n(b, len(data))))
        t.start()
        n = fastio.sendfile(a, src)
        t.join(60)
        assert n == len(data) and bytes(got) == data
    finally:
        a.close()
        b.close()


def select_readable(s):
    import select
    return bool(select.select([s], [], [], 0)[0])


def read_n(s, n):
    out = bytearray()
    while len(out) < n:
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        out += chunk
    return out


# ---------------------------------------------------------------- aio coroutines

def test_aio_read_write_against_os(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(bytes(range(256)) * 16)
    fd = os.open(p, os.O_RDWR)

    async def main():
        buf, ref = bytearray(100), bytearray(100)
        n = await fastio.aio.read(fd, buf, 10)
        assert n == os.preadv(fd, [ref], 10) and buf == ref and type(n) is int
        assert await fastio.aio.write(fd, b"abc", 5) == os.pwrite(fd, b"abc", 5) == 3
        assert await fastio.aio.read(fd, buf, 1 << 20) == os.preadv(fd, [ref], 1 << 20) == 0
        assert outcome(lambda: os.pread(fd, 10, -1))[0] is OSError
        with pytest.raises(ValueError, match="offset"):
            await fastio.aio.read(fd, buf, -1)
        with open(p, "rb") as f:               # a file object too
            assert await fastio.aio.read(f, buf, 0) == 100

    try:
        asyncio.run(main())
    finally:
        os.close(fd)


def test_aio_fsync_returns_none(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"x")
    fd = os.open(p, os.O_RDWR)

    async def main():
        return await fastio.aio.fsync(fd)

    try:
        assert os.fsync(fd) is None
        assert asyncio.run(main()) is None
    finally:
        os.close(fd)
