"""fastio.SharedMemory and fastio.memfd: POSIX and memfd shared memory.

The stdlib's multiprocessing.shared_memory is the oracle for the common
interface. Every test runs under `shm_guard`: it gives fastio a private
registry directory, counts fds and mappings, and afterwards removes (and
fails on) any /dev/shm entry the test left, so a failing test leaks nothing.
"""
import gc
import inspect
import json
import multiprocessing
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
import warnings
from multiprocessing import shared_memory as stdlib_shm
from multiprocessing import resource_tracker

import numpy as np
import pytest

import fastio
import fastio.shm
from conftest import LeakCheck

SHM = "/dev/shm"


def shm_names():
    return set(os.listdir(SHM))


# Tests that start threads: glibc maps stacks and malloc arenas for them
# and keeps them. The guard counts their fds, not all their mappings (they
# check their own mappings by name).
_ALLOCATOR_NOISE = {"test_close_while_another_thread_fills"}


@pytest.fixture(autouse=True)
def shm_guard(tmp_path, monkeypatch, mp_warm, request):
    """Private registry, a name prefix of this process's own, leak counters;
    afterwards every /dev/shm entry with our prefixes is unlinked and
    reported."""
    monkeypatch.setenv("FASTIO_SHM_REGISTRY", str(tmp_path / "registry"))
    prefix = f"fio{os.getpid()}t_"
    monkeypatch.setattr(fastio.shm, "_NAME_PREFIX", prefix)
    leaks = LeakCheck()
    yield prefix
    gc.collect()
    left = sorted(n for n in shm_names()
                  if n.startswith((prefix, f"fastio-test-{os.getpid()}-")))
    for n in left:
        os.unlink(os.path.join(SHM, n))
    assert not left, f"/dev/shm entries left: {left}"
    if request.node.originalname in _ALLOCATOR_NOISE:
        assert len(os.listdir("/proc/self/fd")) == leaks.fds, "file descriptors leaked"
    else:
        leaks.check()


def unique_name(tag="x"):
    return f"fastio-test-{os.getpid()}-{tag}-{time.monotonic_ns()}"


# ---------------------------------------------------------------- create and attach

@pytest.mark.smoke
def test_create_attach_roundtrip_and_real_size():
    with fastio.SharedMemory(create=True, size=10000) as a:
        assert a.size == 10000 and a.owner
        assert len(a.buf) == 10000 and bytes(a.buf[:4]) == b"\0" * 4  # zeroed
        a.buf[:5] = b"hello"
        # An attach maps the real size, whatever size it names (stdlib rule).
        b = fastio.SharedMemory(a.name, size=5)
        assert b.size == 10000 and not b.owner
        assert bytes(b.buf[:5]) == b"hello"
        b.buf[9999] = 7
        assert a.buf[9999] == 7
        b.close()
        assert os.path.exists(os.path.join(SHM, a.name))  # attachers never unlink
    assert not os.path.exists(os.path.join(SHM, a.name))  # the creator does


def test_stdlib_positional_signature_and_repr():
    a = fastio.SharedMemory(None, True, 100)
    try:
        assert repr(a) == f"SharedMemory({a.name!r}, size=100)"
        b = fastio.SharedMemory(a.name, False)
        assert b.size == 100
        b.close()
    finally:
        a.close()


@pytest.fixture(scope="module")
def stdlib_tracker():
    """The stdlib's resource tracker keeps a pipe open for good once started:
    start it before the leak counters are taken."""
    resource_tracker.ensure_running()


def test_stdlib_interoperates_both_ways(stdlib_tracker):
    a = fastio.SharedMemory(create=True, size=4096)
    try:
        a.buf[:3] = b"abc"
        s = stdlib_shm.SharedMemory(a.name)
        # Python 3.11's stdlib registers attachers with its resource tracker
        # (which would unlink our segment at its exit): take it back.
        resource_tracker.unregister(s._name, "shared_memory")
        assert bytes(s.buf[:3]) == b"abc" and s.size >= 4096
        s.close()
    finally:
        a.close()
    s = stdlib_shm.SharedMemory(create=True, size=1000, name=unique_name("std"))
    try:
        s.buf[:2] = b"ok"
        f = fastio.SharedMemory(s.name)
        assert bytes(f.buf[:2]) == b"ok" and f.size == s.size
        f.close()
    finally:
        s.close()
        s.unlink()


def test_generated_names_are_secret_unique_and_short():
    segs = [fastio.SharedMemory(create=True, size=1) for _ in range(20)]
    try:
        names = {s.name for s in segs}
        assert len(names) == 20
        for s in segs:
            assert s.name.startswith(fastio.shm._NAME_PREFIX)
            assert "/" not in s.name
            token = s.name[len(fastio.shm._NAME_PREFIX):]
            assert len(token) == 24 and int(token, 16) >= 0  # 96 random bits
    finally:
        for s in segs:
            s.close()
    # The real prefix: within macOS's 31 bytes, with the leading '/'.
    assert len("/" + "fio_" + "0" * 24) <= 31


def test_mode_bits_default_0600_and_exact_when_asked():
    old = os.umask(0o077)  # the mode must not go through the umask
    try:
        with fastio.SharedMemory(create=True, size=1) as a:
            assert os.stat(os.path.join(SHM, a.name)).st_mode & 0o7777 == 0o600
        with fastio.SharedMemory(create=True, size=1, mode=0o640) as b:
            assert os.stat(os.path.join(SHM, b.name)).st_mode & 0o7777 == 0o640
    finally:
        os.umask(old)


def test_create_never_attaches_to_a_planted_segment():
    name = unique_name("planted")
    path = os.path.join(SHM, name)
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o666)
    try:
        os.ftruncate(fd, 4096)
        with pytest.raises(FileExistsError):
            fastio.SharedMemory(name, create=True, size=4096)
        assert os.path.exists(path)  # a failed create unlinks nothing
    finally:
        os.close(fd)
        os.unlink(path)


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("name, exc", [
    ("a/b", ValueError), ("/a/b", ValueError), ("", ValueError), ("/", ValueError),
    ("x" * 256, ValueError), ("a\0b", ValueError), (b"abc", TypeError), (5.0, TypeError),
])
def test_bad_names(name, exc):
    with pytest.raises(exc, match="name"):
        fastio.SharedMemory(name, create=True, size=10)
    with pytest.raises(exc, match="name"):
        fastio.SharedMemory(name)


def test_longest_name_works():
    name = f"fastio-test-{os.getpid()}-" + "n" * (255 - len(f"fastio-test-{os.getpid()}-"))
    with fastio.SharedMemory(name, create=True, size=1) as a:
        assert a.name == name


@pytest.mark.parametrize("size, exc", [(0, ValueError), (-1, ValueError),
                                       (1.5, TypeError), ("10", TypeError),
                                       (True, TypeError)])
@pytest.mark.smoke
def test_bad_sizes_on_create(size, exc):
    with pytest.raises(exc, match="size"):
        fastio.SharedMemory(create=True, size=size)


def test_attach_missing_and_name_required():
    with pytest.raises(FileNotFoundError):
        fastio.SharedMemory(unique_name("missing"))
    with pytest.raises(ValueError, match="name"):
        fastio.SharedMemory()


def test_bad_mode():
    for mode in (-1, 0o10000):
        with pytest.raises(ValueError, match="mode"):
            fastio.SharedMemory(create=True, size=1, mode=mode)
    for mode in ("0600", 0o600 * 1.0, True):
        with pytest.raises(TypeError, match="mode"):
            fastio.SharedMemory(create=True, size=1, mode=mode)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to another user")
def test_no_permission_is_permission_error():
    with fastio.SharedMemory(create=True, size=4096) as a:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            code = 3
            try:
                os.setgid(65534)
                os.setuid(65534)
                try:
                    fastio.SharedMemory(a.name)
                    code = 1
                except PermissionError:
                    code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0


# ---------------------------------------------------------------- lifecycle

def test_owner_unlinks_when_collected_attacher_does_not():
    a = fastio.SharedMemory(create=True, size=100)
    name = a.name
    b = fastio.SharedMemory(name)
    del b
    gc.collect()
    assert os.path.exists(os.path.join(SHM, name))
    del a
    gc.collect()
    assert not os.path.exists(os.path.join(SHM, name))


def test_unlink_is_idempotent_and_never_hits_a_successor():
    name = unique_name("succ")
    a = fastio.SharedMemory(name, create=True, size=10)
    a.unlink()
    a.unlink()
    assert not os.path.exists(os.path.join(SHM, name))
    # Someone makes the name again: closing `a` must not unlink theirs.
    b = fastio.SharedMemory(name, create=True, size=10)
    a.close()
    a.unlink()
    assert os.path.exists(os.path.join(SHM, name))
    b.close()


def test_attacher_may_unlink_explicitly():
    a = fastio.SharedMemory(create=True, size=10)
    b = fastio.SharedMemory(a.name)
    b.unlink()
    b.unlink()
    assert not os.path.exists(os.path.join(SHM, a.name))
    b.close()
    a.close()  # nothing left to unlink: no error


def test_persist_keeps_the_segment_until_unlinked():
    a = fastio.SharedMemory(create=True, size=10, persist=True)
    name = a.name
    a.buf[0] = 42
    a.close()
    del a
    gc.collect()
    b = fastio.SharedMemory(name)
    assert b.buf[0] == 42
    b.unlink()
    b.close()
    assert not os.path.exists(os.path.join(SHM, name))


def test_forked_child_never_unlinks_the_parents_segment():
    a = fastio.SharedMemory(create=True, size=10)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        a.close()  # the inherited owner object: its finalizer must not unlink
        del a
        gc.collect()
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.path.exists(os.path.join(SHM, a.name))
    a.close()


def test_no_warnings_and_nothing_left_at_exit(tmp_path):
    code = (
        "import fastio, sys\n"
        "a = fastio.SharedMemory(create=True, size=1000)\n"
        "keep = [a, a.asarray()]\n"
        "b = fastio.SharedMemory(a.name)\n"
        "cycle = [fastio.SharedMemory(create=True, size=10)]\n"
        "cycle.append(cycle)\n"
        "print(a.name, cycle[0].name)\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    # No warning on a free-threaded Python either: fastio leaves the GIL off
    # (tests/test_freethreading.py).
    out = subprocess.run([sys.executable, "-W", "error", "-c", code], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    for name in out.stdout.split():
        assert not os.path.exists(os.path.join(SHM, name))


# ---------------------------------------------------------------- buffer, numpy, close

@pytest.mark.smoke
def test_close_with_live_views_and_use_after_close():
    leaks = LeakCheck()
    a = fastio.SharedMemory(create=True, size=1 << 20)
    arr = a.asarray("f8")
    arr[:] = 1.5
    mv = a.buf
    a.close()
    a.close()  # idempotent
    assert arr.sum() == 1.5 * (1 << 17)  # still mapped
    assert mv[0] == arr.view("u1")[0]
    for call in (lambda: a.buf, a.fileno, a.populate, lambda: a.asarray(),
                 lambda: a.advise(fastio.MADV_WILLNEED), lambda: a.fill(0)):
        with pytest.raises(ValueError):
            call()
    with pytest.raises(ValueError):
        with a:
            pass
    del arr, mv
    leaks.check()


def test_asarray_shapes_offsets_and_misfits():
    with fastio.SharedMemory(create=True, size=4096) as a:
        x = a.asarray("i4", (4, 8), offset=16)
        x[:] = np.arange(32).reshape(4, 8)
        y = np.frombuffer(a.buf, dtype="i4", count=32, offset=16).reshape(4, 8)
        assert (x == y).all()
        assert a.asarray("f8").shape == (512,)
        with pytest.raises(ValueError, match="shape"):
            a.asarray("f8", (513,))
        with pytest.raises(ValueError, match="offset"):
            a.asarray("u1", None, 5000)
        with pytest.raises(ValueError):
            a.asarray("f8", None, 3)  # 4093 bytes are not whole float64s
        del x


def test_readonly_attach():
    with fastio.SharedMemory(create=True, size=4096) as a:
        a.buf[0] = 9
        r = fastio.SharedMemory(a.name, readonly=True)
        assert r.readonly and r.buf.readonly and r.buf[0] == 9
        assert not r.asarray().flags.writeable
        with pytest.raises(TypeError):
            r.buf[0] = 1
        with pytest.raises(TypeError):
            r.fill(1)
        r.populate()  # MADV_POPULATE_READ
        r.close()
        with pytest.raises(ValueError):
            fastio.SharedMemory(create=True, size=1, readonly=True)


def test_populate_advise_hugepages_fill_fileno():
    size = 4 << 20
    with fastio.SharedMemory(create=True, size=size, populate=True, hugepages=True) as a:
        assert a.size == size
        a.fill(7)  # memset path (populated)
        assert a.asarray().min() == 7
        a.advise(fastio.MADV_WILLNEED)
        a.advise(fastio.MADV_RANDOM, 100, 5000)
        with pytest.raises(ValueError, match="start"):
            a.advise(fastio.MADV_WILLNEED, size + 1)
        with pytest.raises(ValueError, match="length"):
            a.advise(fastio.MADV_WILLNEED, 0, size + 1)
        assert os.fstat(a.fileno()).st_size == size
    with fastio.SharedMemory(create=True, size=size) as b:
        b.fill(3, 4096, 2 << 20)  # pwrite path, part of the segment
        v = b.asarray()
        assert v[:4096].max() == 0 and v[4096:4096 + (2 << 20)].min() == 3
        assert v[4096 + (2 << 20):].max() == 0
        b.fill(5, length=10)
        assert list(v[:11]) == [5] * 10 + [0]
        for bad in (dict(value=256), dict(start=-1), dict(start=size + 1),
                    dict(length=size + 1)):
            with pytest.raises(ValueError):
                b.fill(**bad)
        del v


def test_no_fd_or_mapping_leaks_over_many_cycles():
    leaks = LeakCheck()
    for _ in range(50):
        a = fastio.SharedMemory(create=True, size=8192)
        b = fastio.SharedMemory(a.name)
        arr = b.asarray()
        b.close()
        a.close()
        del arr
        m = fastio.memfd(4096)
        m.close()
    with pytest.raises(FileNotFoundError):
        for _ in range(5):
            fastio.SharedMemory(unique_name("nope"))
    leaks.check()  # and shm_guard checks that no /dev/shm entry is left


def test_pickle_attaches_by_name():
    with fastio.SharedMemory(create=True, size=100) as a:
        a.buf[:2] = b"hi"
        data = pickle.dumps(a)
        assert len(data) < 200  # a reference, not the bytes
        b = pickle.loads(data)
        assert not b.owner and bytes(b.buf[:2]) == b"hi"
        b.close()
    with pytest.raises(ValueError):
        pickle.dumps(a)  # closed


# ---------------------------------------------------------------- memfd

@pytest.mark.smoke
def test_memfd_is_sealed_against_shrinking():
    with fastio.memfd(8192) as m:
        assert m.size == 8192 and m.name == "fastio"
        assert m.seals() == fastio.F_SEAL_SHRINK | fastio.F_SEAL_GROW
        with pytest.raises(PermissionError):
            os.ftruncate(m.fileno(), 4096)
        with pytest.raises(PermissionError):
            os.ftruncate(m.fileno(), 16384)
        m.buf[:3] = b"abc"
        # Freeze the contents for new writers; this mapping stays writable.
        m.add_seals(fastio.F_SEAL_FUTURE_WRITE)
        with pytest.raises(PermissionError):
            os.pwrite(m.fileno(), b"x", 0)
        m.unlink()  # nothing to unlink for a memfd: no error
    with fastio.memfd(4096, "plain", seal=False) as m:
        assert m.seals() == 0
        os.ftruncate(m.fileno(), 8192)  # unsealed: allowed
    with fastio.memfd(4096, seal=fastio.F_SEAL_SHRINK) as m:
        assert m.seals() == fastio.F_SEAL_SHRINK
    with fastio.memfd(4096, seal=fastio.F_SEAL_WRITE) as m:
        assert m.readonly  # sealed for writes from the start


@pytest.mark.smoke
def test_memfd_bad_input():
    for size, exc in ((0, ValueError), (-5, ValueError), (2.0, TypeError)):
        with pytest.raises(exc, match="size"):
            fastio.memfd(size)
    with pytest.raises(ValueError, match="name"):
        fastio.memfd(10, "n" * 250)
    with pytest.raises(TypeError, match="seal"):
        fastio.memfd(10, seal="yes")
    with fastio.SharedMemory(create=True, size=10) as a:
        # shm objects cannot be sealed: F_GET_SEALS says F_SEAL_SEAL (Linux
        # 4.x and later answer so for any file without sealing support).
        assert a.seals() == fastio.F_SEAL_SEAL
        with pytest.raises(PermissionError):
            a.add_seals(fastio.F_SEAL_SHRINK)


def test_memfd_hugepages_falls_back():
    with fastio.memfd(2 << 20, hugepages=True) as m:
        assert m.size >= 2 << 20
        m.fill(1)
        assert m.asarray().min() == 1


def _recv_and_write(sock):
    _, fds = fastio.recv_fds(sock, 1)
    seg = fastio.SharedMemory.from_fd(fds[0])
    os.close(fds[0])
    seg.buf[:5] = b"child"
    size = seg.size
    seg.close()
    sock.sendall(size.to_bytes(8, "little"))


def test_memfd_passed_over_a_unix_socket():
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ctx = multiprocessing.get_context("fork")
    with fastio.memfd(12345) as m, parent, child:
        p = ctx.Process(target=_recv_and_write, args=(child,))
        p.start()
        fastio.send_fds(parent, [m])
        assert int.from_bytes(parent.recv(8), "little") == 12345
        p.join(30)
        assert p.exitcode == 0
        assert bytes(m.buf[:5]) == b"child"


def test_memfd_pickles_through_proc():
    with fastio.memfd(4096) as m:
        m.buf[0] = 11
        other = pickle.loads(pickle.dumps(m))  # same process: a dup
        assert other.buf[0] == 11 and other.fileno() != m.fileno()
        other.close()


# ---------------------------------------------------------------- orphans

def _create_and_hang(conn):
    # No watchdog in this child, as when it could not start or was killed
    # with the process group: the orphan that cleanup_orphans is for. (With
    # it, the segment is gone a moment after the kill: tests/test_left_behind.py.)
    fastio.shm._watchdog = (os.getpid(), None, None, None)
    seg = fastio.SharedMemory(create=True, size=4096)
    keep = fastio.SharedMemory(create=True, size=4096, persist=True)
    conn.send((seg.name, keep.name))
    time.sleep(60)


def test_killed_creator_leaves_an_orphan_that_cleanup_removes():
    ctx = multiprocessing.get_context("fork")
    r, w = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_create_and_hang, args=(w,))
    p.start()
    try:
        name, kept = r.recv()
        listed = {s.name: s for s in fastio.shm_segments()}
        assert listed[name].pid == p.pid and listed[name].alive
        assert not listed[name].persist and listed[kept].persist
        assert fastio.cleanup_orphans() == []  # the creator lives
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.join()
        r.close()
        w.close()
    assert os.path.exists(os.path.join(SHM, name))  # the kernel cannot know
    listed = {s.name: s for s in fastio.shm_segments()}
    assert not listed[name].alive
    removed = fastio.cleanup_orphans()
    assert [s.name for s in removed] == [name]
    assert not os.path.exists(os.path.join(SHM, name))
    assert os.path.exists(os.path.join(SHM, kept))  # persist: not an orphan
    fastio.SharedMemory(kept).unlink()
    assert fastio.shm_segments() == []


def _attach_and_hang(name, conn):
    seg = fastio.SharedMemory(name)
    seg.buf[0] = 1
    conn.send(seg.size)
    time.sleep(60)


def test_attached_child_killed_leaves_nothing():
    ctx = multiprocessing.get_context("fork")
    r, w = ctx.Pipe(duplex=False)
    a = fastio.SharedMemory(create=True, size=4096)
    p = ctx.Process(target=_attach_and_hang, args=(a.name, w))
    p.start()
    try:
        assert r.recv() == 4096
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.join()
        r.close()
        w.close()
    assert a.buf[0] == 1
    name = a.name
    a.close()
    assert not os.path.exists(os.path.join(SHM, name))


def test_registry_refuses_a_directory_others_can_write(tmp_path, monkeypatch):
    """A registry others can write to is never used (they could plant
    records); the create still works, without a record, and says so once."""
    d = tmp_path / "open"
    d.mkdir()
    os.chmod(d, 0o777)
    monkeypatch.setenv("FASTIO_SHM_REGISTRY", str(d))
    monkeypatch.setattr(fastio.shm, "_WARNED", set())
    with pytest.warns(RuntimeWarning, match="without a record"):
        a = fastio.SharedMemory(create=True, size=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        b = fastio.SharedMemory(create=True, size=10)   # once per process
    assert os.listdir(d) == []
    with pytest.raises(PermissionError):
        fastio.registry_dir()
    with pytest.raises(PermissionError):
        fastio.shm_segments()
    a.close()
    b.close()


def test_stale_records_are_pruned():
    a = fastio.SharedMemory(create=True, size=10, persist=True)
    os.unlink(os.path.join(SHM, a.name))  # someone else removed it
    assert fastio.shm_segments() == []
    assert os.listdir(fastio.registry_dir()) == []
    a.close()


# ---------------------------------------------------------------- introspection

def test_signatures_and_stubs_match_runtime():
    import ast
    stub = ast.parse(open(os.path.join(os.path.dirname(fastio.__file__), "_core.pyi")).read())
    classes = {n.name: n for n in stub.body if isinstance(n, ast.ClassDef)}
    funcs = {n.name for n in stub.body if isinstance(n, ast.FunctionDef)}
    cls = fastio._core.SharedMemory
    for name, attr in vars(cls).items():
        if not name.startswith("__") and callable(attr):
            inspect.signature(attr)
    stubbed = {n.name for n in classes["SharedMemory"].body if isinstance(n, ast.FunctionDef)}
    assert {n for n in vars(cls) if not n.startswith("__")} <= stubbed
    for fn in ("shm_unlink", "memfd_create"):
        assert fn in funcs
        inspect.signature(getattr(fastio._core, fn))
    for obj in (fastio.SharedMemory, fastio.memfd, fastio.SharedMemory.from_fd,
                fastio.shm_segments, fastio.cleanup_orphans, fastio.send_fds):
        inspect.signature(obj)


# ---------------------------------------------------------------- threads

@pytest.mark.parametrize("populate", [False, True])
def test_close_while_another_thread_fills(populate):
    """fill() runs with the GIL released (pwrite, or memset after populate);
    a close() meanwhile defers the unmap, and the fill completes. Threads
    make glibc map stacks and malloc arenas of its own, so the check here is
    on our mappings by name (and fds), not on the count of all mappings."""
    import threading
    fds = len(os.listdir("/proc/self/fd"))
    names = []
    for _ in range(3):
        a = fastio.SharedMemory(create=True, size=32 << 20, populate=populate)
        names.append(a.name)
        errors = []

        def fill(a):
            try:
                a.fill(1)
            except ValueError:
                pass  # closed before it started: fine
            except BaseException as e:  # pragma: no cover
                errors.append(e)

        t = threading.Thread(target=fill, args=(a,))
        t.start()
        a.close()
        t.join()
        assert not errors
        del a
    gc.collect()
    with open("/proc/self/maps") as f:
        ours = [line for line in f if any(n in line for n in names)]
    assert ours == [], "a segment is still mapped"
    assert len(os.listdir("/proc/self/fd")) == fds


def test_generated_names_come_from_secrets_and_retry_on_collision(monkeypatch):
    tokens = iter(["a" * 24, "a" * 24, "b" * 24])
    monkeypatch.setattr(fastio.shm.secrets, "token_hex", lambda n: next(tokens))
    prefix = fastio.shm._NAME_PREFIX
    with fastio.SharedMemory(create=True, size=10) as a:
        assert a.name == prefix + "a" * 24
        with fastio.SharedMemory(create=True, size=10) as b:  # "a..." taken: retried
            assert b.name == prefix + "b" * 24


def _die_after_create(conn):
    # Killed between the create and the final record: only the pending
    # record names the segment.
    fastio.shm.SharedMemory._init = lambda *args, **kwargs: os._exit(0)
    conn.send(fastio.shm._NAME_PREFIX)
    fastio.SharedMemory(create=True, size=4096)


def test_creator_dying_during_create_is_still_cleaned_up():
    ctx = multiprocessing.get_context("fork")
    r, w = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_die_after_create, args=(w,))
    p.start()
    prefix = r.recv()
    p.join()
    r.close()
    w.close()
    listed = fastio.shm_segments()
    assert len(listed) == 1 and listed[0].name.startswith(prefix)
    assert listed[0].pid == p.pid and not listed[0].alive
    assert os.path.exists(os.path.join(SHM, listed[0].name))
    assert [s.name for s in fastio.cleanup_orphans()] == [listed[0].name]
    assert not os.path.exists(os.path.join(SHM, listed[0].name))


def test_a_failed_create_keeps_the_existing_segments_record():
    name = unique_name("rec")
    a = fastio.SharedMemory(name, create=True, size=10)
    with pytest.raises(FileExistsError):
        fastio.SharedMemory(name, create=True, size=10)
    assert [s.name for s in fastio.shm_segments()] == [name]
    a.close()
    assert fastio.shm_segments() == []


@pytest.mark.parametrize("rec", [
    [1, 2],                                                    # not an object
    {"kind": "sysv", "pid": 1, "start": None, "persist": False, "size": 8},  # no id
    {"kind": "sysv", "id": 2**32 + 5, "key": 1, "ctime": 1, "pid": 1, "start": None,
     "persist": False, "size": 8},                             # id past shmid's int
    {"kind": "sysv", "id": "7", "key": 1, "ctime": 1, "pid": 1, "start": None,
     "persist": False, "size": 8},                             # id a str
    {"kind": "posix", "name": 5, "ino": None, "pid": 1, "start": None,
     "persist": False, "size": 8},                             # name not a str
    {"kind": "other", "pid": 1, "start": None, "persist": False, "size": 8},
])
def test_a_malformed_record_is_passed_over(rec, shm_guard):
    """A record cut short or edited by hand neither crashes the listing
    (KeyError) nor reaches sysv_remove with an id its range check refuses:
    it is passed over like an unreadable one, and the real records still
    count."""
    d = fastio.registry_dir()
    with open(os.path.join(d, "sysv-bad"), "w") as f:
        json.dump(rec, f)
    with fastio.SharedMemory(create=True, size=10) as a:
        assert [s.name for s in fastio.shm_segments()] == [a.name.lstrip("/")]
        assert fastio.cleanup_orphans() == []
        assert fastio.cleanup_orphans(dry_run=True) == []
