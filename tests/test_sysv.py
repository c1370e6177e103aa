"""fastio.SysVSharedMemory and sysv_segments: System V shared memory.

/proc/sysvipc/shm is the oracle for stat(). Every test runs under
`sysv_guard`: a private registry, leak counters, and afterwards any segment
this process created and left is removed and reported.
"""
import gc
import inspect
import multiprocessing
import os
import pickle
import signal
import time

import pytest

import fastio
import probes
from conftest import LeakCheck

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/sysvipc/shm"),
                                reason="no System V IPC in this kernel/namespace")


def my_segments():
    """Ids of segments created by this process (the creator pid stays)."""
    return {s.id for s in fastio.sysv_segments() if s.cpid == os.getpid()}


@pytest.fixture(autouse=True)
def sysv_guard(tmp_path, monkeypatch, mp_warm):
    monkeypatch.setenv("FASTIO_SHM_REGISTRY", str(tmp_path / "registry"))
    before = my_segments()
    leaks = LeakCheck()
    yield
    gc.collect()
    left = my_segments() - before
    for shmid in left:
        try:
            fastio._core.sysv_remove(shmid)
        except OSError:
            pass
    assert not left, f"System V segments left: {left}"
    leaks.check()


def free_key():
    """A key no segment uses (random, checked against the kernel's list)."""
    used = {s.key for s in fastio.sysv_segments()}
    while True:
        key = int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF
        if key and key not in used:
            return key


def row(shmid):
    return next(s for s in fastio.sysv_segments() if s.id == shmid)


# ---------------------------------------------------------------- create, attach, stat

@pytest.mark.smoke
def test_private_segment_and_stat_against_proc():
    with fastio.SysVSharedMemory(None, 10000) as s:
        assert s.key == fastio.IPC_PRIVATE and s.owner and s.size == 10000
        st = s.stat()
        r = row(s.id)
        assert st.size == r.size == 10000
        assert st.nattch == r.nattch == 1
        assert st.cpid == r.cpid == os.getpid() and st.lpid == os.getpid()
        assert st.mode == r.mode == 0o600
        assert (st.uid, st.gid) == (os.geteuid(), os.getegid()) == (r.uid, r.gid)
        assert st.ctime == r.ctime and st.atime == r.atime > 0 and st.dtime == 0
        assert not st.removed and not st.locked
        s.buf[:3] = b"abc"
        assert bytes(s.asarray()[:3]) == b"abc"
    assert s.id not in {x.id for x in fastio.sysv_segments()}


def test_key_zero_is_private_and_owned():
    with fastio.SysVSharedMemory(0, 4096) as a:  # no create=True: still a new one
        assert a.owner and a.key == fastio.IPC_PRIVATE
        shmid = a.id
    assert shmid not in {s.id for s in fastio.sysv_segments()}


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to another user")
def test_readonly_attach_by_another_user_and_permission_error():
    key = free_key()
    with fastio.SysVSharedMemory(key, 4096, create=True, mode=0o644) as a, \
            fastio.SysVSharedMemory(None, 4096) as private:
        a.buf[0] = 5
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            code = 3
            try:
                os.setgid(65534)
                os.setuid(65534)
                r = fastio.SysVSharedMemory(key, readonly=True)
                ok = r.buf[0] == 5
                r.close()
                try:
                    fastio.SysVSharedMemory(key)  # read-write: 0644 forbids
                    code = 1
                except PermissionError:
                    try:
                        fastio.SysVSharedMemory._attach_id(private.id)
                        code = 2
                    except PermissionError:
                        code = 0 if ok else 4
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0


def test_keyed_create_attach_exclusive_and_sizes():
    key = free_key()
    a = fastio.SysVSharedMemory(key, 8192, create=True, mode=0o640)
    try:
        assert a.key == key and row(a.id).mode == 0o640 and a.stat().mode == 0o640
        a.buf[100] = 5
        b = fastio.SysVSharedMemory(key)  # attach at the real size
        assert b.size == 8192 and b.id == a.id and b.buf[100] == 5 and not b.owner
        assert a.stat().nattch == 2
        c = fastio.SysVSharedMemory(key, 4096)  # a smaller size is fine
        assert c.size == 8192
        # The key in hex, the sizes in decimal, on every CPython: 3.10/3.11's
        # PyUnicode_FromFormat printed "%#x" literally, 3.12 raised SystemError.
        with pytest.raises(ValueError, match=(
                rf"^System V key={key:#x} exists with size 8192, smaller than size=16384$")):
            fastio.SysVSharedMemory(key, 8192 * 2)
        with pytest.raises(FileExistsError):
            fastio.SysVSharedMemory(key, 8192, create=True)
        b.close()
        c.close()
        assert a.stat().nattch == 1  # close detaches
    finally:
        a.close()
    with pytest.raises(FileNotFoundError):
        fastio.SysVSharedMemory(key)


def test_keys_with_the_high_bit_are_unsigned_everywhere():
    key = free_key() | 0x80000000
    if key in {s.key for s in fastio.sysv_segments()}:
        pytest.skip("key in use")
    with fastio.SysVSharedMemory(key, 4096, create=True) as a:
        assert a.key == key == a.stat().key == row(a.id).key
        with fastio.SysVSharedMemory(key - (1 << 32)) as b:  # the signed spelling
            assert b.id == a.id
        assert [s.name for s in fastio.shm_segments()] == [a.id]  # record current


def test_ftok_path_keys(tmp_path):
    p = tmp_path / "keyfile"
    p.write_bytes(b"")
    key = fastio.ftok(str(p), 7)
    assert fastio.ftok(str(p), 0x81) > 0  # unsigned, like every key here
    st = os.stat(p)
    # ftok(3): proj_id, st_dev and st_ino bits.
    assert key == ((7 & 0xFF) << 24 | (st.st_dev & 0xFF) << 16 | (st.st_ino & 0xFFFF))
    used = {s.key for s in fastio.sysv_segments()}
    if key in used:
        pytest.skip("the ftok key happens to be in use")
    with fastio.SysVSharedMemory(p, 4096, create=True, proj_id=7) as a:
        assert a.key == key
        with fastio.SysVSharedMemory(str(p), proj_id=7) as b:
            assert b.id == a.id
    with pytest.raises(ValueError, match="proj_id"):
        fastio.SysVSharedMemory(p, 4096, create=True)
    with pytest.raises(FileNotFoundError):
        fastio.ftok(str(tmp_path / "missing"), 1)
    with pytest.raises(ValueError, match="proj_id"):
        fastio.ftok(str(p), 0)


@pytest.mark.smoke
def test_bad_input():
    for size, exc in ((0, ValueError), (-1, ValueError), (1.5, TypeError)):
        with pytest.raises(exc, match="size"):
            fastio.SysVSharedMemory(None, size)
    with pytest.raises(ValueError, match="size"):
        fastio.SysVSharedMemory(free_key(), -1)
    with pytest.raises(TypeError, match="key"):
        fastio.SysVSharedMemory(1.5, 10, create=True)
    with pytest.raises(ValueError, match="mode"):
        fastio.SysVSharedMemory(None, 10, mode=0o1000)
    with pytest.raises(OverflowError, match="key"):
        fastio.SysVSharedMemory(1 << 40, 10, create=True)


# ---------------------------------------------------------------- lifecycle

def test_owner_removes_on_close_or_collect_persist_keeps():
    a = fastio.SysVSharedMemory(None, 4096)
    shmid = a.id
    del a
    gc.collect()
    assert shmid not in {s.id for s in fastio.sysv_segments()}

    key = free_key()
    p = fastio.SysVSharedMemory(key, 4096, create=True, persist=True)
    p.buf[0] = 3
    p.close()
    del p
    gc.collect()
    q = fastio.SysVSharedMemory(key)
    assert q.buf[0] == 3
    q.remove()
    q.remove()  # idempotent
    assert q.stat().removed  # destroyed at the last detach
    q.close()
    with pytest.raises(FileNotFoundError):
        fastio.SysVSharedMemory(key)


def test_removed_while_attached_stays_usable():
    a = fastio.SysVSharedMemory(None, 4096)
    b = fastio.SysVSharedMemory._attach_id(a.id)
    a.close()  # owner: IPC_RMID; b still attached
    b.buf[0] = 1
    assert b.stat().removed and b.stat().nattch == 1
    b.close()


@pytest.mark.smoke
def test_close_with_live_views_and_use_after_close():
    leaks = LeakCheck()
    a = fastio.SysVSharedMemory(None, 1 << 20)
    arr = a.asarray("i8")
    arr[:] = 2
    shmid = a.id
    a.close()
    assert arr.sum() == 2 * (1 << 17)
    assert row(shmid).nattch == 1  # the detach waits for the array
    for call in (lambda: a.buf, a.populate, lambda: a.asarray(), lambda: a.fill(1),
                 lambda: a.advise(fastio.MADV_WILLNEED), lambda: pickle.dumps(a)):
        with pytest.raises(ValueError):
            call()
    del arr
    gc.collect()
    assert shmid not in {s.id for s in fastio.sysv_segments()}
    leaks.check()


def test_readonly_attach_populate_advise_fill():
    with fastio.SysVSharedMemory(None, 1 << 20, populate=True) as a:
        a.fill(9)
        a.advise(fastio.MADV_WILLNEED, 10, 100)
        r = fastio.SysVSharedMemory._attach_id(a.id, readonly=True)
        assert r.readonly and r.buf.readonly and r.buf[5] == 9
        assert not r.asarray().flags.writeable
        with pytest.raises(TypeError):
            r.fill(0)
        r.populate()
        r.close()
        with pytest.raises(ValueError):
            fastio.SysVSharedMemory(None, 10, readonly=True)


def test_lock_unlock_where_permitted():
    with fastio.SysVSharedMemory(None, 1 << 16) as a:
        try:
            a.lock()
        except PermissionError as e:
            pytest.skip(f"SHM_LOCK not permitted here: {e}")
        assert a.stat().locked
        a.unlock()
        assert not a.stat().locked


def test_hugepages_where_reserved():
    try:
        a = fastio.SysVSharedMemory(None, 2 << 20, hugepages=True)
    except OSError as e:
        probes.fail_or_skip("reserved huge pages", probes.hugepages(), e)
    with a:
        a.fill(1)
        assert a.asarray().min() == 1


def test_pickle_attaches_by_id():
    with fastio.SysVSharedMemory(None, 4096) as a:
        a.buf[0] = 77
        b = pickle.loads(pickle.dumps(a))
        assert b.id == a.id and b.buf[0] == 77 and not b.owner
        b.close()


# ---------------------------------------------------------------- other processes

def _attach_and_hang(shmid, conn):
    seg = fastio.SysVSharedMemory._attach_id(shmid)
    seg.buf[1] = 1
    conn.send(seg.stat().nattch)
    time.sleep(60)


def test_attached_child_killed_leaves_nothing():
    ctx = multiprocessing.get_context("fork")
    r, w = ctx.Pipe(duplex=False)
    a = fastio.SysVSharedMemory(None, 4096)
    p = ctx.Process(target=_attach_and_hang, args=(a.id, w))
    p.start()
    try:
        # fork inherits the parent's attach, and the child attaches once more.
        assert r.recv() == 3
        assert a.stat().lpid == p.pid
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.join()
        r.close()
        w.close()
    assert a.buf[1] == 1 and a.stat().nattch == 1  # the kernel detached it
    a.close()


def _create_and_hang(conn):
    seg = fastio.SysVSharedMemory(None, 4096)
    conn.send(seg.id)
    time.sleep(60)


def test_killed_creator_orphan_is_cleaned_up():
    ctx = multiprocessing.get_context("fork")
    r, w = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_create_and_hang, args=(w,))
    p.start()
    try:
        shmid = r.recv()
        seg = {s.name: s for s in fastio.shm_segments()}[shmid]
        assert seg.kind == "sysv" and seg.pid == p.pid and seg.alive
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.join()
        r.close()
        w.close()
    assert shmid in {s.id for s in fastio.sysv_segments()}
    assert not {s.name: s for s in fastio.shm_segments()}[shmid].alive
    assert [s.name for s in fastio.cleanup_orphans()] == [shmid]
    assert shmid not in {s.id for s in fastio.sysv_segments()}


def test_no_leaks_over_many_cycles():
    leaks = LeakCheck()
    for _ in range(50):
        a = fastio.SysVSharedMemory(None, 8192)
        b = pickle.loads(pickle.dumps(a))
        arr = b.asarray()
        b.close()
        a.close()
        del arr
    leaks.check()


def test_signatures_and_stubs_match_runtime():
    import ast
    stub = ast.parse(open(os.path.join(os.path.dirname(fastio.__file__), "_core.pyi")).read())
    cls_stub = next(n for n in stub.body
                    if isinstance(n, ast.ClassDef) and n.name == "SysVSharedMemory")
    stubbed = {n.name for n in cls_stub.body if isinstance(n, ast.FunctionDef)}
    cls = fastio._core.SysVSharedMemory
    for name, attr in vars(cls).items():
        if not name.startswith("__") and callable(attr):
            inspect.signature(attr)
    assert {n for n in vars(cls) if not n.startswith("__")} <= stubbed
    funcs = {n.name for n in stub.body if isinstance(n, ast.FunctionDef)}
    for fn in ("ftok", "sysv_remove", "sysv_stat"):
        assert fn in funcs
        inspect.signature(getattr(fastio._core, fn))
    for obj in (fastio.SysVSharedMemory, fastio.sysv_segments):
        inspect.signature(obj)


def test_ids_out_of_range_are_refused_not_truncated():
    # issue 12, finding 11: (int)PyLong_AsLong truncated id + 2**32 to id,
    # so sysv_remove(id + 2**32) removed segment `id`.
    seg = fastio.SysVSharedMemory(size=4096)
    try:
        # Past a C int: OverflowError; a C int that is no id: ValueError.
        for bad, exc in ((seg.id + 2**32, OverflowError), (seg.id - 2**32, OverflowError),
                         (2**31, OverflowError), (2**70, OverflowError), (-1, ValueError)):
            with pytest.raises(exc, match=r"shmid out of range .*shmid="):
                fastio._core.sysv_remove(bad)
            with pytest.raises(exc, match=r"shmid out of range"):
                fastio._core.sysv_stat(bad)
        for bad in (float(seg.id), "1"):
            with pytest.raises(TypeError, match="shmid must be an integer"):
                fastio._core.sysv_remove(bad)
        assert seg.id in {s.id for s in fastio.sysv_segments()}
        assert seg.stat().nattch == 1
        with pytest.raises(OverflowError, match="mode"):
            fastio._core.SysVSharedMemory(0, 4096, create=True, mode=2**32 + 0o600)
        with pytest.raises(OverflowError, match="proj_id"):
            fastio._core.ftok("/", 2**32 + 1)
        for key in (2**32, -2**31 - 1, 2**70):
            with pytest.raises(OverflowError, match=r"key out of range .*key="):
                fastio._core.SysVSharedMemory(key, 4096)
        with pytest.raises(TypeError, match="key must be an integer"):
            fastio._core.SysVSharedMemory(1.0, 4096)
        with pytest.raises(OverflowError, match=r"id out of range .*id="):
            fastio._core.SysVSharedMemory(seg.id + 2**32, 0, by_id=True)
    finally:
        seg.close()
        seg.remove()
