"""fastio.Channel: an SPSC ring in shared memory between two processes."""
import inspect
import multiprocessing
import os
import random
import signal
import threading
import time
import zlib

import numpy as np
import pytest

import fastio
from conftest import LeakCheck, fork, join


# ---------------------------------------------------------------- in one process

@pytest.mark.smoke
def test_bytes_round_trip_in_process():
    with fastio.Channel(4096) as ch:
        assert ch.capacity == 4096
        ch.send(b"hello")
        ch.send(bytearray(b"world"))
        ch.send(memoryview(b"abc")[1:])
        ch.send(b"")
        assert ch.pending > 0
        assert ch.recv() == b"hello"
        assert ch.recv() == b"world"
        assert ch.recv_bytes() == b"bc"
        assert ch.recv() == b""
        assert ch.pending == 0
    assert ch.closed


ARRAYS = [
    np.arange(12, dtype=np.float64).reshape(3, 4),
    np.arange(-5, 5, dtype=np.int8),
    (np.arange(6) + 1j * np.arange(6)).astype(np.complex64).reshape(2, 3, 1),
    np.array([True, False, True]),
    np.array(3.5, dtype=np.float32),                    # 0-d
    np.zeros((0, 7), dtype=np.uint16),                  # empty
    np.arange(24, dtype=">i4").reshape(2, 3, 4),        # big-endian
    np.arange(20, dtype=np.int64)[::3],                 # not contiguous
    np.asfortranarray(np.arange(12.0).reshape(3, 4)),   # Fortran order
    np.array(["2020-01-01", "2021-06-30"], dtype="M8[D]"),
    np.array([b"ab", b"cde"], dtype="S3"),
    np.array(["x", "yz"], dtype="U2"),
    np.array([(1, 2.5, [1, 2])], dtype=[("a", "<i4"), ("b", "<f8"), ("c", "u1", (2,))]),
]


@pytest.mark.parametrize("arr", ARRAYS, ids=lambda a: f"{a.dtype.str}{a.shape}")
@pytest.mark.smoke
def test_arrays_in_process(arr):
    with fastio.Channel(1 << 16) as ch:
        ch.send(arr)
        got = ch.recv()
        assert got.dtype == arr.dtype and got.shape == arr.shape
        assert np.array_equal(got, arr)
        assert got.flags.writeable and got.flags.c_contiguous
        got[...] = 0  # a copy: the ring is not touched
        ch.send(arr)
        view = ch.recv_view()
        assert np.array_equal(view, arr) and not view.flags.writeable
        ch.release()


def test_scalars_and_recv_bytes_on_an_array():
    with fastio.Channel(4096) as ch:
        ch.send(np.float32(1.5))
        got = ch.recv()
        assert got.shape == () and got.dtype == np.float32 and got == 1.5
        ch.send(np.arange(3))
        with pytest.raises(TypeError, match="stays in the Channel"):
            ch.recv_bytes()
        assert ch.recv().tolist() == [0, 1, 2]


@pytest.mark.smoke
def test_recv_view_is_zero_copy_until_release():
    with fastio.Channel(4096) as ch:
        ch.send(np.full(8, 7, dtype=np.int64))
        ch.send(b"next")
        v = ch.recv_view()
        # The view is the ring's memory: nothing freed while held.
        pending = ch.pending
        assert pending > 0 and (v == 7).all()
        m = ch.recv_view()  # frees the first
        assert ch.pending < pending
        assert isinstance(m, memoryview) and m.readonly and bytes(m) == b"next"
        ch.release()
        assert ch.pending == 0
        ch.release()  # nothing held: no-op
        ch.send(np.arange(4.0))
        kept = ch.recv_view()
    # After close() the ring stays mapped while a view uses it.
    assert kept.tolist() == [0.0, 1.0, 2.0, 3.0]


@pytest.mark.smoke
def test_wraps_around_in_one_process():
    # On an empty ring a message of up to capacity/2 never waits, wherever
    # the ring's end is: one process can send and receive alternately.
    rng = random.Random(5)
    cap = 1024
    with fastio.Channel(cap) as ch:
        for i in range(2000):
            n = rng.choice([0, 1, 15, 16, 17, 200, 300, cap // 2 - 16])
            msg = bytes([i % 251]) * n
            ch.send(msg, timeout=0)
            assert ch.recv(timeout=0) == msg


@pytest.mark.smoke
def test_messages_up_to_capacity_across_fork():
    cap = 1024
    rng = random.Random(6)
    sizes = [rng.choice([1, 100, 500, 700, cap - 16]) for _ in range(500)]
    ch = fastio.Channel(cap)

    def producer():
        for i, n in enumerate(sizes):
            ch.send(bytes([i % 251]) * n)  # cap - 16: a frame as large as the ring
        ch.close()

    pid = fork(producer)
    got = [len(m) for m in ch]
    assert got == sizes
    assert join(pid) == 0
    ch.close()


@pytest.mark.smoke
def test_bad_input():
    with pytest.raises(ValueError, match="capacity=0"):
        fastio.Channel(0)
    with pytest.raises(ValueError, match="capacity=-5"):
        fastio.Channel(-5)
    with pytest.raises(TypeError):
        fastio.Channel(1.5)
    with fastio.Channel(1000) as ch:
        assert ch.capacity == 1024  # rounded up to 64
        with pytest.raises(ValueError, match=r"message of 1009 bytes \(1040 with its framing\) "
                                             r"exceeds the Channel capacity of 1024 bytes"):
            ch.send(b"x" * 1009)
        with pytest.raises(TypeError, match="Python objects"):
            ch.send(np.array([object()]))
        with pytest.raises(TypeError):
            ch.send("text is not bytes")
        with pytest.raises(ValueError, match="timeout=-1"):
            ch.recv(timeout=-1)
        ch.send(b"ok")  # nothing half-sent before
        assert ch.recv() == b"ok"
    with pytest.raises(ValueError, match="closed"):
        ch.send(b"x")
    with pytest.raises(ValueError, match="closed"):
        ch.recv()
    with pytest.raises(ValueError, match="holds no fastio.Channel"):
        fastio.Channel.attach(fastio.mmap(-1, 4096))
    with pytest.raises(ValueError, match="capacity=8192 does not fit"):
        fastio.Channel(8192, buffer=fastio.mmap(-1, 4096))
    with pytest.raises(TypeError, match="writable buffer"):
        fastio.Channel(buffer=b"x" * 4096)


def test_timeouts():
    with fastio.Channel(256) as ch:
        with pytest.raises(TimeoutError):
            ch.recv(timeout=0)
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            ch.recv(timeout=0.1)
        assert time.monotonic() - t0 >= 0.09
        ch.send(b"x" * 200)
        with pytest.raises(TimeoutError, match="full"):
            ch.send(b"y" * 100, timeout=0.05)
        assert ch.recv() == b"x" * 200


def test_in_process_close_wakes_waiter():
    ch = fastio.Channel(256)
    errors = []

    def waiter():
        try:
            ch.recv(timeout=30)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.1)
    ch.close()
    t.join(10)
    assert not t.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], (ValueError, EOFError))


def test_second_sending_thread_refused():
    with fastio.Channel(256) as ch:
        ch.send(b"x" * 200)  # full: the next send waits
        started = threading.Event()
        errors = []

        def blocked_sender():
            started.set()
            try:
                ch.send(b"y" * 100, timeout=30)
            except BaseException as exc:
                errors.append(exc)

        t = threading.Thread(target=blocked_sender)
        t.start()
        started.wait()
        refused = None
        while refused is None and t.is_alive():
            # until the thread is inside send (its wait releases the GIL),
            # this try finds the ring full
            try:
                ch.send(b"z", timeout=0)
            except RuntimeError as exc:
                refused = str(exc)
            except TimeoutError:
                pass
        assert "another thread is sending" in refused
        assert ch.recv() == b"x" * 200  # room: the blocked send completes
        t.join(30)
        assert not errors
        assert ch.recv() == b"y" * 100


class _Interrupted(Exception):
    pass


def test_wait_interrupted_by_signal():
    def handler(signum, frame):
        raise _Interrupted

    old = signal.signal(signal.SIGALRM, handler)
    try:
        with fastio.Channel(256) as ch:
            signal.setitimer(signal.ITIMER_REAL, 0.1)
            with pytest.raises(_Interrupted):
                ch.recv(timeout=30)
            ch.send(b"still works")
            assert ch.recv() == b"still works"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ---------------------------------------------------------------- across fork

def _checked(i, rng):
    body = rng.randbytes(rng.randrange(0, 300))
    return i.to_bytes(4, "little") + body + zlib.crc32(body).to_bytes(4, "little")


def test_10k_messages_ordered_and_intact():
    ch = fastio.Channel(4096)  # small: the sender waits on a full ring often

    def producer():
        rng = random.Random(11)
        for i in range(10_000):
            ch.send(_checked(i, rng))
        ch.close()

    pid = fork(producer)
    n = 0
    for msg in ch:
        assert int.from_bytes(msg[:4], "little") == n
        body = msg[4:-4]
        assert zlib.crc32(body) == int.from_bytes(msg[-4:], "little")
        n += 1
    assert n == 10_000
    assert join(pid) == 0
    ch.close()


def test_arrays_across_fork_both_directions():
    to_child = fastio.Channel(1 << 20)
    to_parent = fastio.Channel(1 << 20)

    def child():
        for a in to_child:
            to_parent.send(a * 2)
        to_parent.close()

    pid = fork(child)
    rng = np.random.default_rng(3)
    sent = [rng.random((17, 33)), rng.integers(0, 255, 100_000).astype(np.uint8),
            np.arange(10, dtype=np.int16).reshape(5, 2)] * 20
    for a in sent:
        to_child.send(a)
    to_child.close()
    got = list(to_parent)
    assert join(pid) == 0
    assert len(got) == len(sent)
    for a, b in zip(sent, got):
        assert b.dtype == a.dtype and np.array_equal(b, a * 2)
    to_parent.close()


def test_eof_when_sender_closes_after_draining():
    ch = fastio.Channel(4096)

    def producer():
        for i in range(5):
            ch.send(bytes([i]))
        ch.close()

    pid = fork(producer)
    assert join(pid) == 0
    assert [ch.recv() for _ in range(5)] == [bytes([i]) for i in range(5)]
    with pytest.raises(EOFError, match="closed"):
        ch.recv()
    with pytest.raises(EOFError):  # sticky
        ch.recv(timeout=0)
    ch.close()


def test_broken_pipe_when_receiver_closes():
    ch = fastio.Channel(4096)

    def consumer():
        assert ch.recv() == b"one"
        ch.close()

    pid = fork(consumer)
    ch.send(b"one")
    assert join(pid) == 0
    with pytest.raises(BrokenPipeError, match="closed"):
        ch.send(b"two")
    ch.close()


def test_sender_killed_gives_eof_not_hang():
    ch = fastio.Channel(4096)

    def producer():
        ch.send(b"last words")
        os.kill(os.getpid(), signal.SIGKILL)

    pid = fork(producer)
    assert ch.recv(timeout=10) == b"last words"
    with pytest.raises(EOFError, match="died"):
        ch.recv(timeout=30)  # noticed on a wait slice, not after 30 s
    # (a hang would end in TimeoutError after 30 s, not EOFError)
    assert join(pid) == -signal.SIGKILL
    ch.close()


def test_receiver_killed_gives_broken_pipe_not_hang():
    ch = fastio.Channel(1024)

    def consumer():
        ch.recv()
        os.kill(os.getpid(), signal.SIGKILL)

    pid = fork(consumer)
    with pytest.raises(BrokenPipeError, match="died"):
        for _ in range(1000):  # fills the ring, then waits for space
            ch.send(b"x" * 100, timeout=30)
    # (a hang would end in TimeoutError, not BrokenPipeError)
    assert join(pid) == -signal.SIGKILL
    ch.close()


def test_second_live_sender_refused():
    ch = fastio.Channel(4096)
    ch.send(b"mine")
    r, w = os.pipe()

    def other():
        try:
            ch.send(b"theirs")
        except RuntimeError as exc:
            os.write(w, b"1" if "single-producer" in str(exc) else b"0")

    assert join(fork(other)) == 0
    assert os.read(r, 1) == b"1"
    os.close(r)
    os.close(w)
    assert ch.recv() == b"mine"
    ch.close()


# ---------------------------------------------------------------- spawn

def _spawn_sender(path):
    m = fastio.mmap(path, mode="r+")
    ch = fastio.Channel.attach(m)
    for i in range(100):
        ch.send(np.full((10, 10), i, dtype=np.int32))
    ch.send(b"done")
    ch.close()


def test_spawn_child_attaches_by_file(tmp_path):
    shm_dir = "/dev/shm" if os.path.isdir("/dev/shm") else str(tmp_path)
    path = os.path.join(shm_dir, f"fastio-test-channel-{os.getpid()}")
    size = fastio.Channel.segment_size(64 * 1024)
    m = fastio.mmap(path, size, mode="w+")
    try:
        ch = fastio.Channel(buffer=m)
        assert ch.capacity == 64 * 1024
        p = multiprocessing.get_context("spawn").Process(target=_spawn_sender, args=(path,))
        p.start()
        for i in range(100):
            a = ch.recv(timeout=60)
            assert a.shape == (10, 10) and (a == i).all()
        assert ch.recv(timeout=60) == b"done"
        with pytest.raises(EOFError):
            ch.recv(timeout=60)
        p.join(60)
        assert p.exitcode == 0
        ch.close()
    finally:
        m.close()
        os.unlink(path)


def test_anonymous_channel_and_lock_do_not_pickle():
    import pickle
    with fastio.Channel(4096) as ch:
        with pytest.raises(TypeError, match="fork only.*SharedMemory"):
            pickle.dumps(ch)
    lock = fastio.Lock(fastio.mmap(-1, 4096))
    with pytest.raises(TypeError, match="fork only"):
        pickle.dumps(lock)
    with pytest.raises(TypeError, match="pickle as a copy.*not its .buf"):
        pickle.dumps(fastio.Semaphore(bytearray(128)))


class FileSegment(fastio.mmap):
    """A segment that pickles as an attach by path, as fastio.SharedMemory
    does by name: what a Channel or Lock needs to reach a spawned child."""

    __slots__ = ("path",)

    @classmethod
    def open(cls, path, size=None):
        seg = cls(path, size, mode="w+" if size else "r+")
        seg.path = path
        return seg

    def __reduce_ex__(self, protocol):  # fastio.mmap refuses in __reduce_ex__
        return (FileSegment.open, (self.path,))


def _spawn_pickled(ch, lock, sem):
    assert isinstance(ch, fastio.Channel) and isinstance(lock, fastio.Lock)
    with lock:
        ch.send(np.arange(5) * 3)
    sem.release()
    ch.close()


def test_channel_and_lock_pickle_to_spawn_child(tmp_path):
    shm_dir = "/dev/shm" if os.path.isdir("/dev/shm") else str(tmp_path)
    path = os.path.join(shm_dir, f"fastio-test-pickle-{os.getpid()}")
    seg = FileSegment.open(path, 128 + fastio.Channel.segment_size(4096))
    try:
        lock = fastio.Lock(seg, 0)
        sem = fastio.Semaphore(seg, 64, value=0)
        ch = fastio.Channel(buffer=seg, offset=128)
        p = multiprocessing.get_context("spawn").Process(
            target=_spawn_pickled, args=(ch, lock, sem))
        p.start()
        assert np.array_equal(ch.recv(timeout=60), np.arange(5) * 3)
        assert sem.acquire(timeout=60)
        with pytest.raises(EOFError):
            ch.recv(timeout=60)
        p.join(60)
        assert p.exitcode == 0
        ch.close()
        lock.close()
        sem.close()
    finally:
        seg.close()
        os.unlink(path)


def _spawn_by_name(name):
    with fastio.Channel.attach(name) as ch:
        for i in range(50):
            ch.send(np.full(1000, i, dtype=np.float64))


def _spawn_pickled_shared(ch):
    ch.send(b"from the pickled handle")
    ch.close()


def test_shared_memory_channel_by_name_and_by_pickle():
    names = []
    ctx = multiprocessing.get_context("spawn")
    with fastio.Channel(1 << 16, shared=True) as ch:
        assert ch.name and ch.capacity == 1 << 16
        names.append(ch.name)
        p = ctx.Process(target=_spawn_by_name, args=(ch.name,))
        p.start()
        for i in range(50):
            a = ch.recv(timeout=60)
            assert a.shape == (1000,) and (a == i).all()
        with pytest.raises(EOFError):  # the child's handle closed at exit
            ch.recv(timeout=60)
        p.join(60)
        assert p.exitcode == 0
    with fastio.Channel(4096, shared=True) as ch:
        names.append(ch.name)
        p = ctx.Process(target=_spawn_pickled_shared, args=(ch,))
        p.start()
        assert ch.recv(timeout=60) == b"from the pickled handle"
        p.join(60)
        assert p.exitcode == 0
    with pytest.raises(FileNotFoundError):
        fastio.Channel.attach(ch.name)  # the creator's close() unlinked it
    with pytest.raises(ValueError, match="shared=True"):
        fastio.Channel(4096, buffer=fastio.mmap(-1, 8192), shared=True)
    # No segment of this test's left behind (only its own: other processes,
    # another test run among them, may be making segments meanwhile).
    assert not [n for n in names if os.path.exists("/dev/shm/" + n.lstrip("/"))]


def test_lock_in_shared_memory_pickles_to_spawn_child():
    seg = fastio.SharedMemory(create=True, size=4096)
    try:
        lock = fastio.Lock(seg, 0)
        sem = fastio.Semaphore(seg, 64, value=0)
        counter = np.frombuffer(seg, dtype=np.int64, count=1, offset=128)
        p = multiprocessing.get_context("spawn").Process(
            target=_spawn_lock_worker, args=(lock, sem, seg))
        p.start()
        for _ in range(300):
            with lock:
                counter[0] += 1
        assert sem.acquire(timeout=60)
        p.join(60)
        assert p.exitcode == 0 and counter[0] == 600
        del counter
        lock.close()
        sem.close()
    finally:
        seg.close()


def _spawn_lock_worker(lock, sem, seg):
    counter = np.frombuffer(seg, dtype=np.int64, count=1, offset=128)
    for _ in range(300):
        with lock:
            counter[0] += 1
    sem.release()


# ---------------------------------------------------------------- leaks, introspection

def test_no_leaks():
    check = LeakCheck()
    for _ in range(100):
        with fastio.Channel(8192) as ch:
            ch.send(np.arange(10))
            v = ch.recv_view()
            ch.send(b"x")
            assert ch.recv() == b"x"
        del v
    for _ in range(50):
        try:
            fastio.Channel(buffer=fastio.mmap(-1, 100))
        except ValueError:
            pass
    ch = fastio.Channel(4096)
    pid = fork(lambda c=ch: c.send(b"a"))
    assert join(pid) == 0
    assert ch.recv() == b"a"
    ch.close()
    del ch
    check.check()


def test_signatures_and_stubs():
    import ast
    stub = ast.parse(open(os.path.join(os.path.dirname(fastio.__file__), "_core.pyi")).read())
    cls = next(n for n in stub.body if isinstance(n, ast.ClassDef) and n.name == "Channel")
    stubbed = {n.name for n in cls.body if isinstance(n, ast.FunctionDef)}
    core = fastio._core.Channel
    for name in vars(core):
        if not name.startswith("__") and name != "HEADER":
            assert name in stubbed
            if callable(getattr(core, name)):
                inspect.signature(getattr(core, name))
    for name in ("send", "recv", "recv_view", "attach", "segment_size", "close"):
        inspect.signature(getattr(fastio.Channel, name))
