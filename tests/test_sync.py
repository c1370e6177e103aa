"""fastio.Lock and fastio.Semaphore: process-shared, in any shared buffer."""
import errno
import inspect
import multiprocessing
import os
import signal
import threading
import time

import numpy as np
import pytest

import fastio
from conftest import LeakCheck, fork, join


@pytest.fixture
def shared():
    m = fastio.mmap(-1, 4096)
    yield m
    m.close()


# ---------------------------------------------------------------- Lock basics

@pytest.mark.smoke
def test_lock_basics(shared):
    lock = fastio.Lock(shared)
    assert fastio.Lock.SIZE == 64
    assert lock.offset == 0 and not lock.closed
    assert not lock.locked()
    assert lock.acquire() is True
    assert lock.locked()
    lock.release()
    assert not lock.locked()
    with lock:
        assert lock.locked()
    assert not lock.locked()
    assert lock.acquire(blocking=False) is True
    lock.release()
    lock.close()
    lock.close()
    assert lock.closed
    with pytest.raises(ValueError, match="closed"):
        lock.acquire()


def test_lock_not_reentrant_and_release_unheld(shared):
    lock = fastio.Lock(shared)
    with pytest.raises(RuntimeError, match="release unlocked lock"):
        lock.release()
    lock.acquire()
    with pytest.raises(RuntimeError, match="already holds"):
        lock.acquire()
    lock.release()


def test_lock_attach_and_magic(shared):
    a = fastio.Lock(shared, 128)
    b = fastio.Lock(shared, 128, create=False)
    with a:
        assert b.locked()
        assert b.acquire(blocking=False) is False  # the same thread: EBUSY
    with pytest.raises(ValueError, match=r"offset=192 holds no fastio.Lock"):
        fastio.Lock(shared, 192, create=False)
    # A Semaphore is not a Lock, and the reverse.
    fastio.Semaphore(shared, 256)
    with pytest.raises(ValueError, match="holds no fastio.Lock"):
        fastio.Lock(shared, 256, create=False)
    with pytest.raises(ValueError, match="holds no fastio.Semaphore"):
        fastio.Semaphore(shared, 128, create=False)


@pytest.mark.smoke
def test_lock_bad_arguments(shared):
    with pytest.raises(ValueError, match=r"offset out of range .*offset=-16"):
        fastio.Lock(shared, -16)
    with pytest.raises(ValueError, match=r"64 bytes at offset=4064, but the buffer holds 4096"):
        fastio.Lock(shared, 4064)
    with pytest.raises(ValueError, match=r"multiple of 16.*offset=8"):
        fastio.Lock(shared, 8)
    with pytest.raises(TypeError, match="writable buffer.*bytes"):
        fastio.Lock(b"x" * 64)
    with pytest.raises(TypeError, match="writable buffer.*int"):
        fastio.Lock(5)
    lock = fastio.Lock(shared)
    with pytest.raises(ValueError, match="timeout=-2"):
        lock.acquire(timeout=-2)
    with pytest.raises(ValueError, match="non-blocking"):
        lock.acquire(False, 1.0)


def test_lock_pins_segment():
    m = fastio.mmap(-1, 4096)
    lock = fastio.Lock(m)
    m.close()  # the lock's export keeps the memory mapped
    with lock:
        assert lock.locked()
    lock.close()


def test_lock_timeout_against_other_process(shared):
    lock = fastio.Lock(shared)
    r, w = os.pipe()

    def child():
        lock.acquire()
        os.write(w, b"x")
        time.sleep(30)

    pid = fork(child)
    try:
        os.read(r, 1)
        assert lock.locked()
        assert lock.acquire(blocking=False) is False
        t0 = time.monotonic()
        assert lock.acquire(timeout=0.2) is False
        assert time.monotonic() - t0 >= 0.19
    finally:
        os.kill(pid, signal.SIGTERM)
        join(pid)
        os.close(r)
        os.close(w)
    # The child died holding it (SIGTERM): robust mutex.
    with pytest.raises(fastio.OwnerDeadError):
        lock.acquire()
    lock.mark_consistent()
    lock.release()


def test_lock_mutual_exclusion_across_processes(shared):
    lock = fastio.Lock(shared)
    counter = np.frombuffer(shared, dtype=np.int64, count=1, offset=64)
    counter[0] = 0
    n = 2000

    def work():
        for _ in range(n):
            with lock:
                v = counter[0]
                counter[0] = v + 1  # a lost update without the lock

    pids = [fork(work) for _ in range(2)]
    work()
    assert [join(p) for p in pids] == [0, 0]
    assert counter[0] == 3 * n


# ---------------------------------------------------------------- owner death

def _die_holding(lock, sig):
    lock.acquire()
    os.kill(os.getpid(), sig)


def test_owner_dead_recover(shared):
    lock = fastio.Lock(shared)
    pid = fork(_die_holding, lock, signal.SIGKILL)
    assert join(pid) == -signal.SIGKILL
    with pytest.raises(fastio.OwnerDeadError) as exc_info:
        lock.acquire(timeout=5)
    exc = exc_info.value
    assert isinstance(exc, fastio.FastIOError) and isinstance(exc, RuntimeError)
    assert "mark_consistent()" in str(exc) and "now holds" in str(exc)
    # The caller holds it now: another process cannot take it.
    assert lock.locked()
    lock.mark_consistent()
    lock.release()
    # Usable again, from this and other processes.
    assert lock.acquire(timeout=1)
    lock.release()
    pid = fork(lambda: lock.acquire(timeout=5) and lock.release())
    assert join(pid) == 0


def test_locked_reports_owner_death(shared):
    lock = fastio.Lock(shared)
    assert join(fork(_die_holding, lock, signal.SIGKILL)) == -signal.SIGKILL
    with pytest.raises(fastio.OwnerDeadError):
        lock.locked()  # the try took it: the caller holds it now
    lock.mark_consistent()
    lock.release()
    assert not lock.locked()


def test_owner_dead_unrecovered_is_not_recoverable(shared):
    lock = fastio.Lock(shared)
    assert join(fork(_die_holding, lock, signal.SIGKILL)) == -signal.SIGKILL
    with pytest.raises(fastio.OwnerDeadError):
        lock.acquire()
    lock.release()  # without mark_consistent(): unusable from now on
    with pytest.raises(OSError) as exc_info:
        lock.acquire()
    assert exc_info.value.errno == errno.ENOTRECOVERABLE
    # create=True makes a fresh lock in the same memory.
    lock = fastio.Lock(shared)
    assert lock.acquire()
    lock.release()


def test_mark_consistent_when_consistent(shared):
    lock = fastio.Lock(shared)
    with lock:
        with pytest.raises(RuntimeError, match="not in the owner-died state"):
            lock.mark_consistent()


# ---------------------------------------------------------------- waiting

def test_lock_wait_releases_gil(shared):
    lock = fastio.Lock(shared)
    lock.acquire()
    got = []

    def waiter():
        got.append(lock.acquire(timeout=10))
        lock.release()  # a pthread mutex is released by the thread that holds it

    t = threading.Thread(target=waiter)
    t.start()
    # This thread keeps running Python while the other waits.
    deadline = time.monotonic() + 0.2
    spins = 0
    while time.monotonic() < deadline:
        spins += 1
    assert spins > 1000 and t.is_alive()
    lock.release()
    t.join()
    assert got == [True]
    assert not lock.locked()


def test_thread_exit_while_holding_is_owner_death(shared):
    lock = fastio.Lock(shared)
    t = threading.Thread(target=lock.acquire)
    t.start()
    t.join()
    with pytest.raises(fastio.OwnerDeadError):
        lock.acquire(timeout=5)
    lock.mark_consistent()
    lock.release()


class _Interrupted(Exception):
    pass


def _raise_interrupted(signum, frame):
    raise _Interrupted


@pytest.mark.parametrize("kind", ["lock", "semaphore"])
def test_wait_interrupted_by_signal(shared, kind):
    release = threading.Event()
    if kind == "lock":
        obj = fastio.Lock(shared)
        # Held by another live thread, so this thread waits.
        holding = threading.Event()

        def holder():
            with obj:
                holding.set()
                release.wait(30)

        t = threading.Thread(target=holder)
        t.start()
        holding.wait(10)
    else:
        obj = fastio.Semaphore(shared, value=0)
        t = None
    old = signal.signal(signal.SIGALRM, _raise_interrupted)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        with pytest.raises(_Interrupted):
            obj.acquire(timeout=30)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        release.set()
        if t is not None:
            t.join()


# ---------------------------------------------------------------- Semaphore

@pytest.mark.smoke
def test_semaphore_counts(shared):
    sem = fastio.Semaphore(shared, 64, value=3)
    assert fastio.Semaphore.SIZE == 64
    assert sem.value == 3
    assert all(sem.acquire() for _ in range(3))
    assert sem.value == 0
    assert sem.acquire(blocking=False) is False
    assert sem.acquire(timeout=0.05) is False
    sem.release(2)
    assert sem.value == 2
    with sem:
        assert sem.value == 1
    assert sem.value == 2
    other = fastio.Semaphore(shared, 64, create=False)
    assert other.value == 2
    assert "value=2" in repr(other)


@pytest.mark.smoke
def test_semaphore_bad_arguments(shared):
    with pytest.raises(ValueError, match="value=-1"):
        fastio.Semaphore(shared, value=-1)
    with pytest.raises(OverflowError, match=r"value=\d+"):
        fastio.Semaphore(shared, value=1 << 40)
    sem = fastio.Semaphore(shared)
    with pytest.raises(ValueError, match="n=0"):
        sem.release(0)
    sem.close()
    with pytest.raises(ValueError, match="closed"):
        sem.value


@pytest.mark.smoke
def test_semaphore_across_processes(shared):
    sem = fastio.Semaphore(shared, value=0)
    done = fastio.Semaphore(shared, 64, value=0)

    def child():
        for _ in range(5):
            sem.release()
        assert done.acquire(timeout=10)

    pid = fork(child)
    for _ in range(5):
        assert sem.acquire(timeout=10)
    done.release()
    assert join(pid) == 0
    assert sem.value == 0


# ---------------------------------------------------------------- spawn

def _spawn_child(path, results_offset):
    m = fastio.mmap(path, mode="r+")
    lock = fastio.Lock(m, 0, create=False)
    sem = fastio.Semaphore(m, 64, create=False)
    counter = np.frombuffer(m, dtype=np.int64, count=1, offset=results_offset)
    for _ in range(500):
        with lock:
            counter[0] += 1
    sem.release()


def test_spawn_child_attaches_by_file(tmp_path):
    shm_dir = "/dev/shm" if os.path.isdir("/dev/shm") else str(tmp_path)
    path = os.path.join(shm_dir, f"fastio-test-sync-{os.getpid()}")
    m = fastio.mmap(path, 4096, mode="w+")
    try:
        lock = fastio.Lock(m, 0)
        sem = fastio.Semaphore(m, 64, value=0)
        counter = np.frombuffer(m, dtype=np.int64, count=1, offset=128)
        ctx = multiprocessing.get_context("spawn")
        p = ctx.Process(target=_spawn_child, args=(path, 128))
        p.start()
        for _ in range(500):
            with lock:
                counter[0] += 1
        assert sem.acquire(timeout=60)
        p.join(60)
        assert p.exitcode == 0
        assert counter[0] == 1000
        del counter
        lock.close()
        sem.close()
    finally:
        m.close()
        os.unlink(path)


# ---------------------------------------------------------------- leaks, introspection

def test_no_leaks():
    check = LeakCheck()
    for _ in range(200):
        m = fastio.mmap(-1, 4096)
        lock = fastio.Lock(m)
        sem = fastio.Semaphore(m, 64)
        with lock, sem:
            pass
        lock.close()
        del sem
        m.close()
    try:
        fastio.Lock(fastio.mmap(-1, 4096), 8)
    except ValueError:
        pass
    check.check()


def test_signatures_and_stubs():
    import ast
    stub = ast.parse(open(os.path.join(os.path.dirname(fastio.__file__), "_core.pyi")).read())
    classes = {n.name: n for n in stub.body if isinstance(n, ast.ClassDef)}
    for cls in (fastio.Lock, fastio.Semaphore):
        inspect.signature(cls)
        names = {n for n in vars(cls) if not n.startswith("_")} - {"SIZE"}
        for name in names:
            if callable(getattr(cls, name)):
                inspect.signature(getattr(cls, name))
        stubbed = {n.name for n in classes[cls.__name__].body
                   if isinstance(n, ast.FunctionDef)}
        assert names <= stubbed
    assert {"Lock", "Semaphore", "OwnerDeadError", "Channel"} <= set(fastio.sync.__all__)
    assert issubclass(fastio.OwnerDeadError, (fastio.FastIOError, RuntimeError))
