"""Regression tests for issue 12's shared-memory synchronisation findings:
a held robust mutex unmapped (4), create over a live object (7), the
Channel's double fetch (12), Semaphore.release(n) holding the GIL (15),
two threads on one Channel endpoint, SIGBUS on a truncated ring or lock,
and bounded timeouts. Crash-prone ones run in a child process."""
import math
import os
import signal
import threading
import time

import numpy as np
import pytest

import fastio
from conftest import fork, join
from test_sigbus import run_child  # (code, tmp_path): a child; `path` is a 4-page file


# ------------------------------------------------ finding 4: held lock unmapped

def test_held_lock_memory_is_not_reused_under_the_robust_list(tmp_path):
    # The scenario: a Lock held by this thread, its handle dropped
    # and its segment closed, an unrelated mapping made (the kernel reuses
    # the freed address), then another robust lock taken by this thread:
    # glibc links it in front of the first one, writing through the robust
    # list's pointer into the first lock's memory. Before the fix those 8
    # bytes landed in the user's mapping (or the process died).
    r = run_child("""
        import mmap, sys, fastio
        m = fastio.mmap(-1, 4096)
        lock = fastio.Lock(m, 0)
        lock.acquire()
        try:
            lock.close()
        except RuntimeError as e:
            assert "release() it first" in str(e), e
        else:
            sys.exit("close() of a Lock held by this thread was accepted")
        del lock            # collected while held: its memory stays mapped
        m.close()
        u = mmap.mmap(-1, 4096)
        u[:] = b"\\xab" * 4096
        m2 = fastio.mmap(-1, 4096)
        l2 = fastio.Lock(m2, 0)
        for _ in range(3):
            l2.acquire()
            l2.release()
        bad = [i for i in range(4096) if u[i] != 0xAB]
        sys.exit(f"user mapping corrupted at {bad[:8]}" if bad else 0)
    """, tmp_path)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)


def test_close_refused_only_in_the_holding_thread():
    m = fastio.mmap(-1, 4096)
    lock = fastio.Lock(m, 0)
    with lock:
        with pytest.raises(RuntimeError, match=r"offset=0; release\(\) it first"):
            lock.close()
        assert not lock.closed
    lock.close()
    lock.close()  # twice is fine
    assert lock.closed
    # Closed from another thread while this one holds it: accepted (the
    # holder's thread cannot be asked), and the memory stays mapped.
    a = fastio.Lock(m, 64)
    b = fastio.Lock(m, 64, create=False)
    a.acquire()
    t = threading.Thread(target=a.close)
    t.start()
    t.join()
    assert a.closed
    del a
    assert b.locked()
    b.release()  # the same thread releases through the other handle
    assert not b.locked()
    b.close()
    m.close()


def test_waiter_woken_by_close_gives_the_lock_back():
    m = fastio.mmap(-1, 4096)
    lock = fastio.Lock(m, 0)
    other = fastio.Lock(m, 0, create=False)
    held, go = threading.Event(), threading.Event()
    out = []

    def holder():
        with other:
            held.set()
            go.wait(10)

    def waiter():
        try:
            out.append(lock.acquire(timeout=5))
        except ValueError as e:
            out.append(str(e))

    h = threading.Thread(target=holder)
    h.start()
    held.wait(10)
    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.1)
    lock.close()           # the waiter keeps waiting on the mapped memory
    go.set()               # it then takes the lock, sees closed, gives it back
    h.join(10)
    t.join(10)
    assert out == ["Lock is closed"]
    assert not other.locked()
    other.close()
    m.close()


# ------------------------------------------------ finding 7: create over a live object

def _hold_until_told(lock, r, w):
    lock.acquire()
    os.write(w, b"h")
    os.read(r, 1)
    lock.release()


def test_create_over_a_lock_held_by_another_process_is_refused():
    m = fastio.mmap(-1, 4096)
    lock = fastio.Lock(m, 0)
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    pid = fork(_hold_until_told, lock, r2, w1)
    assert os.read(r1, 1) == b"h"
    try:
        # Before the fix: the mutex was re-initialised under its holder.
        with pytest.raises(FileExistsError, match="offset=0 already holds a live "
                                                  "fastio.Lock: attach to it with create=False"):
            fastio.Lock(m, 0)
        assert lock.locked()
        with pytest.raises(FileExistsError, match="a fastio.Semaphore there would destroy it"):
            fastio.Semaphore(m, 0)
        assert fastio.Lock(m, 0, create=False).locked()
    finally:
        os.write(w2, b"x")
    assert join(pid) == 0      # the holder's release still works
    assert not lock.locked()
    for fd in (r1, w1, r2, w2):
        os.close(fd)


def test_create_over_live_semaphore_and_channel_refused():
    m = fastio.mmap(-1, 8192)
    sem = fastio.Semaphore(m, 0, value=3)
    with pytest.raises(FileExistsError, match="offset=0 already holds a live fastio.Semaphore"):
        fastio.Semaphore(m, 0, value=0)
    assert sem.value == 3
    ch = fastio.Channel(buffer=m, offset=4096)
    ch.send_bytes(b"kept")
    with pytest.raises(FileExistsError, match="offset=4096 already holds a live fastio.Channel"):
        fastio.Channel(buffer=m, offset=4096)
    with pytest.raises(FileExistsError, match="fastio.Lock there would destroy it"):
        fastio.Lock(m, 4096)
    assert ch.recv_bytes() == b"kept"
    # Cleared memory (no process uses it any more) may be created anew.
    ch.close()
    m[4096:4096 + fastio.Channel.HEADER] = bytes(fastio.Channel.HEADER)
    fastio.Channel(buffer=m, offset=4096).close()
    sem.close()
    m.close()


def test_concurrent_creators_one_wins():
    # Several processes create at the same offsets at once: the tag's
    # compare-and-swap lets exactly one creator through per offset.
    m = fastio.mmap(-1, 64 * 64)
    start = fastio.Semaphore(m, 0, value=0)
    workers = 4
    r, w = os.pipe()

    def child():
        start.acquire(timeout=10)
        won = []
        for off in range(64, 64 * 64, 64):
            try:
                fastio.Lock(m, off).close()
                won.append(off)
            except FileExistsError:
                pass
        os.write(w, (" ".join(map(str, won)) + "\n").encode())

    pids = [fork(child) for _ in range(workers)]
    start.release(workers)
    assert [join(p) for p in pids] == [0] * workers
    os.close(w)
    with os.fdopen(r) as f:
        lines = f.read().split("\n")
    won = [int(x) for line in lines for x in line.split()]
    assert sorted(won) == list(range(64, 64 * 64, 64))
    for off in won:
        fastio.Lock(m, off, create=False).close()
    start.close()
    m.close()


# ------------------------------------------------ finding 12: the Channel's double fetch

def test_channel_header_rewritten_by_a_hostile_peer(tmp_path):
    # A peer process keeps rewriting the payload length of the frames in a
    # 64-byte ring between a valid 16 and 1 MiB. The receiver must either
    # see the valid frame or call the ring corrupt: before the fix it
    # validated one value and copied with another (past the mapping: a
    # crash, or a 1 MiB message that was never sent).
    r = run_child("""
        import os, signal, sys, time
        import numpy as np
        import fastio
        m = fastio.mmap(-1, fastio.Channel.segment_size(64))
        ch = fastio.Channel(buffer=m)
        words = np.frombuffer(m, np.uint64)
        base = fastio.Channel.HEADER // 8
        pid = os.fork()
        if pid == 0:
            parent = os.getppid()
            lens = [base + 1, base + 5]          # payload_len of the frames at 0 and 32
            while os.getppid() == parent:        # no orphan if the parent dies
                for _ in range(10000):
                    for i in lens:
                        words[i] = 1 << 20
                        words[i] = 16
            os._exit(0)
        try:
            # The peer's writes may tear the producer's (a length of 0, say),
            # after which the ring is out of step for good: that is the peer's
            # doing and ends the run. What must never happen is a message
            # larger than the ring, a read outside it, or a crash.
            deadline = time.monotonic() + 3
            n = corrupt = 0
            while time.monotonic() < deadline:
                try:
                    ch.send_bytes(b"x" * 16, timeout=1)
                except TimeoutError:
                    break
                for _ in range(1000):
                    try:
                        got = ch.recv_bytes(timeout=1)
                        break
                    except RuntimeError as e:
                        assert "corrupt" in str(e), e
                        corrupt += 1
                    except TimeoutError:
                        got = None
                        break
                else:
                    break
                if got is None:
                    break
                assert len(got) <= 64 - 16, len(got)
                n += 1
            print(n, corrupt)
        finally:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    """, tmp_path)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr[-2000:])


# ------------------------------------------------ endpoints used by two threads

def test_two_receiving_threads_never_corrupt():
    # Two threads of one process receive from one Channel (the protocol has
    # one consumer): each either gets an intact message or RuntimeError.
    ch = fastio.Channel(1 << 20)
    n_msgs = 300
    pid = os.fork()
    if pid == 0:
        try:
            for i in range(n_msgs):
                ch.send(np.full(32768, i, dtype=np.int32), timeout=20)
            ch.close()
        finally:
            os._exit(0)
    got, errors, refused = [], [], []

    def receiver():
        while True:
            try:
                a = ch.recv(timeout=20)
            except EOFError:
                return
            except RuntimeError as e:
                refused.append(str(e))
                time.sleep(0)
                continue
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)
                return
            if not (a == a[0]).all():
                errors.append(f"message {a[0]} corrupted")
            got.append(int(a[0]))

    threads = [threading.Thread(target=receiver) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert join(pid) == 0
    assert not errors, errors[:3]
    assert sorted(got) == list(range(n_msgs))
    assert all("another thread is receiving" in e for e in refused)
    ch.close()


def test_release_from_another_thread_while_receiving_refused():
    ch = fastio.Channel(1 << 22)
    big = b"y" * (3 << 20)     # a copy that releases the GIL
    ch.send_bytes(big)
    out = []
    t = threading.Thread(target=lambda: out.append(ch.recv_bytes()))
    t.start()
    refused = 0
    while t.is_alive():
        try:
            ch.release()
        except RuntimeError as e:
            assert "another thread is receiving" in str(e)
            refused += 1
    t.join()
    assert out == [big]
    ch.close()


# ------------------------------------------------ finding 15: Semaphore.release(n)

def test_large_release_lets_other_threads_run():
    m = fastio.mmap(-1, 4096)
    sem = fastio.Semaphore(m, 0, value=0)
    n = 60_000_000
    took = []

    def post():
        t0 = time.monotonic()
        sem.release(n)
        took.append(time.monotonic() - t0)

    t = threading.Thread(target=post)
    t.start()
    time.sleep(0.005)
    # Before the fix the posts ran with the GIL held: this thread could not
    # run again until all of them were done.
    ticks = 0
    while t.is_alive() and ticks < 20:
        ticks += 1
        time.sleep(0.001)
    t.join(120)
    if took[0] < 0.1:
        pytest.skip(f"release({n}) took {took[0]:.3f} s: too fast to observe")
    assert ticks == 20, f"{ticks} ticks while release({n}) ran {took[0]:.2f} s"
    assert sem.value == n
    with pytest.raises(ValueError, match=r"release\(n=2147483647\) would raise the count past"):
        sem.release(2**31 - 1)
    assert sem.value == n
    sem.close()
    m.close()


# ------------------------------------------------ timeouts

def test_timeouts_inf_nan_huge():
    m = fastio.mmap(-1, 4096)
    lock = fastio.Lock(m, 0)
    assert lock.acquire(timeout=float("inf"))  # inf: no limit, as documented
    lock.release()
    for bad, exc in ((float("nan"), ValueError), (1e300, OverflowError), (-0.5, ValueError)):
        with pytest.raises(exc, match="timeout"):
            lock.acquire(timeout=bad)
    ch = fastio.Channel(4096)
    ch.send_bytes(b"a", timeout=float("inf"))
    assert ch.recv_bytes(timeout=float("inf")) == b"a"
    for bad, exc in ((float("nan"), ValueError), (1e300, OverflowError), (2e9, OverflowError)):
        with pytest.raises(exc, match="timeout"):
            ch.recv_bytes(timeout=bad)
    with pytest.raises(TimeoutError):
        ch.recv_bytes(timeout=1e-3)
    ch.close()
    lock.close()
    m.close()


# ------------------------------------------------ SIGBUS: truncated under the object

@pytest.mark.parametrize("what", ["lock", "semaphore", "channel"])
def test_truncated_file_is_mapping_error_not_sigbus(tmp_path, what):
    r = run_child(f"""
        import fastio
        m = fastio.mmap(path, mode="r+")
        what = {what!r}
        if what == "lock":
            obj = fastio.Lock(m, 8192)
            ops = [obj.acquire, obj.locked, obj.release,
                   lambda: fastio.Lock(m, 8192, create=False),
                   lambda: fastio.Lock(m, 4096)]
        elif what == "semaphore":
            obj = fastio.Semaphore(m, 8192)
            ops = [obj.acquire, obj.release, lambda: obj.value, lambda: obj.release(100000)]
        else:
            obj = fastio.Channel(buffer=m, offset=8192)
            obj.send_bytes(b"abc")
            ops = [lambda: obj.send_bytes(b"d"), obj.recv_bytes, obj.recv,
                   lambda: obj.pending, lambda: fastio.Channel.attach(m, 8192)]
        os.truncate(path, 4096)
        for op in ops:
            try:
                op()
            except fastio.MappingError:
                pass
            else:
                raise SystemExit(f"{{op}} did not raise MappingError")
        obj.close()
        print("ok")
    """, tmp_path)
    assert r.returncode == 0 and "ok" in r.stdout, (r.returncode, r.stdout, r.stderr[-2000:])


# ------------------------------------------------ one integer and timeout converter

class _Hooked:
    """A number whose conversion runs `hook` first (Python code that a
    conversion can run: here, closing the object being called)."""

    def __init__(self, value, hook=None):
        self.value, self.hook = value, hook

    def _value(self):
        if self.hook is not None:
            self.hook()
        return self.value


class _Index(_Hooked):
    """An integer through __index__ only."""

    def __index__(self):
        return self._value()


class _Seconds(_Hooked):
    """A number of seconds through __float__ only."""

    def __float__(self):
        return self._value()


class _Refuses:
    def __index__(self):
        raise TypeError("refused by __index__")


def test_sync_integers_take_index_and_its_exception_propagates():
    m = fastio.mmap(-1, 4096)
    lock = fastio.Lock(m, _Index(0))
    sem = fastio.Semaphore(m, _Index(64), value=_Index(3))
    assert sem.value == 3
    sem.release(_Index(2))
    assert sem.value == 5
    assert fastio.Semaphore(m, 128, value=True).value == 1  # a bool is an int
    # The exception raised by __index__ is the caller's, not replaced by
    # "must be an integer" (the old converters did that).
    for call in (lambda: fastio.Lock(m, _Refuses()),
                 lambda: fastio.Semaphore(m, 192, value=_Refuses()),
                 lambda: sem.release(_Refuses()),
                 lambda: fastio.Channel.attach(m, _Refuses())):
        with pytest.raises(TypeError, match="^refused by __index__$"):
            call()
    lock.close()
    sem.close()


def test_sync_conversion_that_closes_the_object_runs_before_it_is_used():
    m = fastio.mmap(-1, 4096)
    sem = fastio.Semaphore(m, 0, value=0)
    with pytest.raises(ValueError, match="closed"):
        sem.release(_Index(1, hook=sem.close))
    lock = fastio.Lock(m, 64)
    with pytest.raises(ValueError, match="closed"):
        lock.acquire(timeout=_Seconds(0.5, hook=lock.close))
    ch = fastio.Channel(4096)
    with pytest.raises(ValueError, match="closed"):
        ch.send_bytes(b"x", timeout=_Seconds(1.0, hook=ch.close))


@pytest.mark.parametrize("args", [(False, -1), (False, -1.0), (True, -1), (True, 0),
                                  (True, 0.01), (False, 0), (False, 0.5), (True, -2),
                                  (True, float("nan")), (True, 1e300), (True, "x")])
def test_acquire_timeout_as_threading_lock(args):
    """threading.Lock.acquire is the oracle for every value it takes or
    refuses by type (its wording and its inf/None answers differ: docs)."""
    def outcome(lock):
        try:
            got = lock.acquire(*args)
        except Exception as e:  # noqa: BLE001 - the type is compared
            return type(e)
        if got:
            lock.release()
        return got

    m = fastio.mmap(-1, 4096)
    ours, theirs = fastio.Lock(m), threading.Lock()
    assert outcome(ours) == outcome(theirs)
    ours.acquire()
    theirs.acquire()
    try:
        # Held by this thread: a non-blocking try answers as threading's
        # (a blocking one is RuntimeError here, documented, not a deadlock).
        if args[0] is False:
            assert outcome(ours) == outcome(theirs)
    finally:
        ours.release()
        theirs.release()
    sem = fastio.Semaphore(m, 64, value=1)
    assert outcome(sem) == outcome(threading.Lock())


def test_acquire_timeout_spellings_of_forever():
    m = fastio.mmap(-1, 4096)
    lock = fastio.Lock(m)
    for t in (None, -1, -1.0, math.inf):
        assert lock.acquire(True, t) is True
        lock.release()
        assert lock.acquire(False, t) is True  # no timeout given, as -1
        lock.release()
    assert lock.acquire(timeout=_Index(1)) is True  # __index__ counts
    lock.release()


def test_send_frame_kind_range():
    ch = fastio.Channel(4096)
    # kind is a uint32: 0 fits and is refused (ValueError), 2**32 and -1
    # do not fit (OverflowError).
    for kind, exc in ((0, ValueError), (2**32, OverflowError), (-1, OverflowError)):
        with pytest.raises(exc, match=rf"kind out of range \[1, 4294967295\]: kind={kind}$"):
            ch._send_frame(kind, b"", b"x", None)
    with pytest.raises(TypeError, match="kind must be an integer"):
        ch._send_frame(1.0, b"", b"x", None)
    ch.close()
