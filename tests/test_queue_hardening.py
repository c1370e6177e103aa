"""Issue 12, the asynchronous I/O part: each test crashed, hung or
corrupted memory before its fix (crash-prone ones run in a subprocess and
assert on its exit status; hangs have a timeout).

- close() re-entered from a finalizer (a tag's __del__, weakref.finalize);
- close() twice, or close() and wait(), from two threads at once;
- batches re-reading the caller's lengths/offsets after validating them
  (dest overlapping the lengths array; another thread editing it);
- __buffer__ (Python 3.12+) clearing the list a batch walks;
- a cycle through a registered buffer never collected (ring fd leak);
- wait(timeout=inf) or a huge timeout returning at once;
- posix_aio's partial lio_listio leaving blocks to complete twice;
- floats where integers are meant (offsets, size, depth...);
- the io_uring thread id cached across fork.
"""
import gc
import math
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import fastio

from test_aio import JOIN_TIMEOUT, PROBED, Stuck
from test_sync_hardening import _Index, _Refuses

HERE = Path(__file__).resolve().parent
TIMEOUT = 60


def run_child(code, *args, env=None, timeout=TIMEOUT):
    """Run code in a fresh interpreter with this fastio; return the process."""
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(HERE)] + sys.path)
    e.update(env or {})
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
                          capture_output=True, text=True, env=e, timeout=timeout)


def check_child(proc):
    if proc.returncode == 77:
        pytest.skip(proc.stdout.strip() or "skipped by the child")
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout.strip().endswith("ok"), proc.stdout


def need(backend):
    info = PROBED[backend]
    if not info.available:
        pytest.skip(f"{backend} does not work here: {info.reason}")


@pytest.fixture
def blob(tmp_path):
    data = os.urandom(64 * 1024)
    p = tmp_path / "blob.bin"
    p.write_bytes(data)
    fd = os.open(p, os.O_RDONLY)
    yield p, fd, data
    os.close(fd)


# ---------------------------------------------------------------- finding 1

FINALIZER_CLOSE = """
    import os, sys, weakref, fastio
    backend, path, how = sys.argv[1:]
    fd = os.open(path, os.O_RDONLY)
    q = fastio.Queue(4, backend)
    calls = []

    class Tag:
        def __del__(self):
            calls.append("tag")
            q.close()

    class Buf(bytearray):
        pass

    for i in range(3):
        buf = Buf(64)
        if how == "tag":
            q.read(fd, buf, 64 * i, Tag())
        else:
            weakref.finalize(buf, lambda: (calls.append("fin"), q.close()))
            q.read(fd, buf, 64 * i)
        del buf
    q.submit()
    q.close()   # releases the slots: the finalizers call close() again
    assert q.closed and calls, calls
    q.close()
    try:
        q.read(fd, bytearray(4), 0)
    except ValueError as e:
        assert "closed" in str(e)
    else:
        raise AssertionError("read on a closed queue")
    print("ok")
"""


@pytest.mark.parametrize("how", ["tag", "finalize"])
@pytest.mark.parametrize("backend", ["threads", "io_uring", "posix_aio"])
def test_close_reentered_from_a_finalizer(backend, how, blob):
    """A tag's __del__ (or a weakref.finalize on a buffer) calls q.close()
    while close() releases the done slots: segfaulted (ops->close(NULL))."""
    need(backend)
    check_child(run_child(FINALIZER_CLOSE, backend, blob[0], how))


def test_dealloc_with_a_finalizer_closing_the_queue(blob):
    # The same through the queue's own collection: a tag refers to the queue.
    check_child(run_child("""
        import gc, os, sys, fastio
        fd = os.open(sys.argv[1], os.O_RDONLY)

        class Tag:
            def __del__(self):
                self.q.close()

        q = fastio.Queue(4, "threads")
        t = Tag()
        t.q = q
        q.read(fd, bytearray(64), 0, t)
        q.submit()
        del q, t
        gc.collect()
        print("ok")
    """, blob[0]))


# ---------------------------------------------------------------- finding 2

TWO_THREADS = """
    import os, sys, threading, time
    from pathlib import Path
    sys.argv.pop(0)
    backend, tmp, second = sys.argv
    import pytest, fastio
    from test_aio import Stuck
    # A queue whose close() runs in a thread, draining a read stuck under
    # way: (stuck, q, thread, out), or None when the read ended by itself
    # first. Under load the kernel sometimes ends the read that faults on
    # the userfaultfd page (seen: close() returned with the worker threads
    # joined, none left in the fault, so the read had completed); that is
    # no test of a second call during a drain: try again.
    def first_close_draining():
        try:
            stuck = Stuck(backend, Path(tmp))
        except pytest.skip.Exception as e:
            print(e)
            sys.exit(77)
        q = fastio.Queue(4, backend)
        q.read(stuck.fd, stuck.buf, 0, "stuck")
        q.submit()
        # Under way, not only queued: a request no thread has taken yet is
        # cancelled by close(), which then has nothing to wait for.
        assert stuck.wait_started(), "the stuck read never started"
        out = {}

        def first():
            try:
                out["first"] = q.close()   # drains: the read cannot be cancelled
            except BaseException as e:
                out["first"] = e

        t = threading.Thread(target=first, daemon=True)
        t.start()
        # Until the first close() has begun (closed is set before its
        # drain): a fixed sleep was too short on a loaded machine, and the
        # second call then came first.
        deadline = time.monotonic() + 20
        while not q.closed and time.monotonic() < deadline:
            time.sleep(0.01)
        assert q.closed, "the first close() never began"
        time.sleep(0.2)                    # inside close's drain, GIL released
        if t.is_alive():
            return stuck, q, t, out
        assert out["first"] is None, out
        stuck.release()
        stuck.close()
        return None

    for attempt in range(5):
        got = first_close_draining()
        if got is not None:
            break
    else:
        raise AssertionError("close() did not wait for the stuck read, 5 times")
    stuck, q, t, out = got
    t0 = time.monotonic()
    try:
        if second == "close":
            out["second"] = q.close()
        else:
            out["second"] = q.wait(1, timeout=5)
    except BaseException as e:
        out["second"] = e
    took = time.monotonic() - t0
    assert took < 2, f"the second call waited {took:.1f} s"
    assert q.closed
    stuck.release()
    t.join(30)
    assert not t.is_alive(), "close() never returned"
    assert out["first"] is None, out
    if second == "close":
        assert out["second"] is None, out
    else:
        assert isinstance(out["second"], ValueError), out
        assert "closed" in str(out["second"]), out
    assert not stuck.pinned()
    stuck.close()
    print("ok")
"""


@pytest.mark.parametrize("second", ["close", "wait"])
@pytest.mark.parametrize("backend", ["threads", "posix_aio"])
def test_close_while_another_thread_closes(backend, second, tmp_path):
    """Thread A's close() drains a request that cannot be cancelled, with
    the GIL released; thread B calls close() or wait(). B used to run a
    second drain on the same backend (a hang, or ops->close twice). Now B's
    close returns at once (A finishes) and B's wait raises ValueError."""
    need(backend)
    check_child(run_child(TWO_THREADS, backend, tmp_path, second))


def test_close_from_a_waiting_threads_view(tmp_path):
    # The documented path still works in-process: close() from another
    # thread while one waits; the waiter raises ValueError naming the cause.
    need("io_uring")
    r, w = os.pipe()
    buf = fastio.Buffer(16)
    q = fastio.Queue(4, "io_uring")
    q.read(r, buf, 0)
    got = []

    def waiter():
        try:
            got.append(q.wait(1))
        except ValueError as e:
            got.append(e)

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.2)
    q.close()
    q.close()  # twice: nothing more to do
    t.join(JOIN_TIMEOUT)
    assert not t.is_alive()
    assert isinstance(got[0], ValueError) and "another thread" in str(got[0])
    os.close(r)
    os.close(w)
    assert buf.exports == 0


# ---------------------------------------------------------------- finding 3

FILE_LENGTHS = 1 << 20  # what the file holds: a length 128 times dest's size


@pytest.fixture
def lengths_file(tmp_path):
    """8 KiB of int64 values 1 MiB: read over a lengths array, they would
    make the next request 1 MiB long."""
    p = tmp_path / "lengths.bin"
    p.write_bytes(np.full(1024, FILE_LENGTHS, np.int64).tobytes())
    fd = os.open(p, os.O_RDONLY)
    yield fd
    os.close(fd)


@pytest.mark.parametrize("backend", ["threads", "io_uring", "posix_aio", "linux_aio"])
def test_batch_dest_overlapping_lengths(backend, lengths_file):
    """Request 0 reads over the lengths array itself (dest overlaps it):
    request 1 used to take its length from the new bytes and write 1 MiB
    past an 8 KiB dest. The guard after dest must stay zero."""
    need(backend)
    arena = np.zeros(8192 + 2 * FILE_LENGTHS, np.uint8)
    dest = arena[:8192]
    lengths = dest[:16].view(np.int64)  # inside dest, where request 0 lands
    lengths[:] = 4096
    with fastio.Queue(1, backend) as q:  # one at a time: 0 ends before 1 starts
        res = q.read_batch(lengths_file, [0, 4096], lengths, dest)
    assert list(res) == [4096, 4096]
    assert not arena[8192:].any(), "the batch wrote past dest"
    assert (dest.view(np.int64) == FILE_LENGTHS).all()


def test_batch_lengths_edited_by_another_thread(lengths_file):
    """Another thread flips lengths between 16 and 1 MiB while batches run
    with the GIL released: only the validated copy may be used."""
    arena = np.zeros(64 * 16 + 2 * FILE_LENGTHS, np.uint8)
    dest = arena[:64 * 16]
    lengths = np.full(64, 16, np.int64)
    offsets = np.arange(64, dtype=np.int64) * 16
    stop = threading.Event()

    def flip():
        while not stop.is_set():
            lengths[1:] = FILE_LENGTHS
            lengths[1:] = 16

    t = threading.Thread(target=flip)
    t.start()
    try:
        with fastio.Queue(2, "threads", threads=1) as q:
            for _ in range(200):
                lengths[:] = 16
                try:
                    q.read_batch(lengths_file, offsets, lengths, dest)
                except ValueError:
                    pass  # validated while the other thread made it 1 MiB: fine
                assert not arena[dest.nbytes:].any(), "the batch wrote past dest"
    finally:
        stop.set()
        t.join()


def test_batch_results_are_the_callers_after_the_call(blob):
    # results is written from the private copy at the end.
    p, fd, data = blob
    with fastio.Queue(4, "threads") as q:
        out = np.empty((8, 100), np.uint8)
        res = q.read_batch(fd, np.arange(8) * 100, 100, out)
    assert list(res) == [100] * 8
    assert out.tobytes() == data[:800]


def test_batch_total_that_wraps_is_refused(blob):
    # n * size or a sum of lengths past 2**64 used to wrap to a small total
    # that passed the dest check.
    p, fd, data = blob
    with fastio.Queue(4, "threads") as q:
        with pytest.raises(ValueError, match="dest holds 16 bytes"):
            q._batch(False, fd, np.zeros(4, np.int64), None, 1 << 62, bytearray(16),
                     np.zeros(4, np.int64))
        with pytest.raises(ValueError, match="dest holds 16 bytes"):
            q._batch(False, fd, np.zeros(3, np.int64),
                     np.array([1 << 62, 1 << 62, 1 << 62], np.int64), 0, bytearray(16),
                     np.zeros(3, np.int64))
        with pytest.raises(OverflowError, match=r"offsets\[0\] \+ length"):
            q.read_batch(fd, [(1 << 63) - 8], 16, bytearray(16))


# ---------------------------------------------------------------- finding 6

BUFFER_CLEARS_LIST = """
    import os, sys, fastio
    fd = os.open(sys.argv[1], os.O_RDONLY)
    dest = []

    class Evil:
        def __buffer__(self, flags):
            dest.clear()            # the list the batch is walking
            return memoryview(bytearray(16))

    dest.extend(Evil() for _ in range(8))
    q = fastio.Queue(4, "threads")
    res = q.read_batch(fd, [0] * 8, 16, dest)
    assert list(res) == [16] * 8, res
    if fastio.backends()["io_uring"].available:
        regs = [Evil() for _ in range(8)]
        dest = regs
        with fastio.Queue(4, "io_uring") as u:
            try:
                u.register_buffers(regs)
            except OSError:
                pass   # a memlock limit: the walk is what is tested
    print("ok")
"""


def test_buffer_protocol_clearing_the_list(blob):
    """On 3.12+ __buffer__ runs Python code that cleared the list a batch
    (or register_buffers) walked: a read past the list's items."""
    if sys.version_info < (3, 12):
        pytest.skip("__buffer__ needs Python 3.12")
    check_child(run_child(BUFFER_CLEARS_LIST, blob[0]))


# ---------------------------------------------------------------- finding 9

def _ring_fds():
    n = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            if "io_uring" in os.readlink(f"/proc/self/fd/{name}"):
                n += 1
        except OSError:
            pass
    return n


def test_cycle_through_a_registered_buffer_is_collected():
    need("io_uring")
    if "register_buffers" not in PROBED["io_uring"].features:
        pytest.skip("io_uring without registered buffers here")

    class Buf(bytearray):
        pass

    gc.collect()
    before = _ring_fds()
    for _ in range(10):
        b = Buf(4096)
        q = fastio.Queue(4, "io_uring")
        try:
            q.register_buffers([b])
        except OSError as e:
            q.close()
            pytest.skip(f"register_buffers: {e}")
        b.q = q  # buffer -> queue -> registered buffer: a cycle
        del b, q
    gc.collect()
    assert _ring_fds() == before


# ---------------------------------------------------------------- finding 10

@pytest.mark.parametrize("timeout", [math.inf, 1e9, float("1e9")])
def test_wait_with_no_limit_waits(timeout, tmp_path):
    """wait(timeout=inf) (or a long finite one) returned [] at once: the
    cast of t * 1e9 to an integer overflowed."""
    stuck = Stuck("threads", tmp_path)
    q = fastio.Queue(4, "threads")
    q.read(stuck.fd, stuck.buf, 0, "stuck")
    q.submit()
    time.sleep(0.3)  # a worker runs it, not the waiting thread
    got = []
    t = threading.Thread(target=lambda: got.append(q.wait(1, timeout=timeout)))
    t.start()
    time.sleep(0.5)
    assert t.is_alive(), f"wait(timeout={timeout}) returned {got} at once"
    stuck.release()
    t.join(JOIN_TIMEOUT)
    assert not t.is_alive()
    assert got == [[("stuck", len(stuck.buf))]]
    q.close()
    stuck.close()


@pytest.mark.parametrize("timeout, exc, words", [
    (float("nan"), ValueError, "timeout must be a non-negative number of seconds or None, "
                               "got timeout=nan"),
    (-1, ValueError, "timeout must be a non-negative number of seconds or None, got timeout=-1"),
    (-math.inf, ValueError, "timeout must be a non-negative number of seconds or None, "
                            "got timeout=-inf"),
    (1e300, OverflowError, "timeout is too large: at most 1000000000 seconds"),
    (1e9 + 1, OverflowError, "timeout is too large: at most 1000000000 seconds"),
    ("1", TypeError, "timeout must be a number of seconds or None, got timeout of type str"),
])
def test_wait_bad_timeouts(timeout, exc, words):
    with fastio.Queue(4, "threads") as q:
        with pytest.raises(exc) as info:
            q.wait(1, timeout=timeout)
        assert words in str(info.value)


def test_wait_small_timeout_still_times_out(tmp_path):
    stuck = Stuck("threads", tmp_path)
    with fastio.Queue(4, "threads") as q:
        q.read(stuck.fd, stuck.buf, 0)
        q.submit()
        time.sleep(0.3)  # a worker runs it, not the waiting thread
        t0 = time.monotonic()
        assert q.wait(1, timeout=0.2) == []
        assert 0.15 < time.monotonic() - t0 < 5
        stuck.release()
        q.drain()
    stuck.close()


def test_huge_min_complete_is_clamped(blob):
    # (unsigned)(2**32 + 1 - have) was 1: wait returned after one.
    p, fd, data = blob
    with fastio.Queue(4, "threads") as q:
        for i in range(3):
            q.read(fd, bytearray(10), 10 * i, i)
        got = q.wait(2**32 + 1, timeout=10)
        assert sorted(t for t, _ in got) == [0, 1, 2]


# ---------------------------------------------------------------- finding 13

SHIM = r"""
#define _GNU_SOURCE
#include <aio.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
/* lio_listio64 that queues only the blocks named in FASTIO_SHIM_QUEUE (a
 * string of 0/1 per block, missing: 0), one by one through the real one,
 * then fails with FASTIO_SHIM_ERRNO if it left any. */
int lio_listio64(int mode, struct aiocb64 *const list[restrict], int nent,
                 struct sigevent *restrict sev)
{
    static int (*real)(int, struct aiocb64 *const[], int, struct sigevent *);
    if (!real) real = (int (*)(int, struct aiocb64 *const[], int, struct sigevent *))
                          dlsym(RTLD_NEXT, "lio_listio64");
    const char *q = getenv("FASTIO_SHIM_QUEUE"), *e = getenv("FASTIO_SHIM_ERRNO");
    size_t len = 0;
    while (q && q[len]) len++;
    int left = 0;
    for (int i = 0; i < nent; i++) {
        if ((size_t)i < len && q[i] == '1') {
            if (real(mode, &list[i], 1, NULL) < 0) return -1;
        }
        else left = 1;
    }
    if (!left) return 0;
    errno = e ? atoi(e) : ENOSYS;
    return -1;
}
"""

POSIX_PARTIAL = """
    import os, sys, fastio
    fd = os.open(sys.argv[1], os.O_RDWR)
    data = open(sys.argv[1], "rb").read()
    q = fastio.Queue(8, "posix_aio")
    bufs = [bytearray(100) for _ in range(4)]
    q.read(fd, bufs[0], 0, "r0")
    q.read(fd, bufs[1], 100, "r1")
    q.read(fd, bufs[2], 200, "r2")
    q.fsync(fd, "f")
    q.read(fd, bufs[3], 300, "r3")
    got = []
    while len(got) < 5:
        more = q.wait(1, timeout=10)
        assert more, got
        got += more
    got += q.wait(0, 0.3)      # a block completing twice shows up here
    tags = sorted(t for t, _ in got)
    assert tags == ["f", "r0", "r1", "r2", "r3"], got
    for t, res in got:
        if t != "f" and isinstance(res, int):
            i = int(t[1])
            assert res == 100 and bytes(bufs[i]) == data[100 * i:100 * i + 100], (t, res)
    print(sorted(got, key=lambda x: x[0]))
    q.close()
    print("ok")
"""


@pytest.fixture(scope="module")
def lio_shim(tmp_path_factory):
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler to build the lio_listio shim")
    d = tmp_path_factory.mktemp("shim")
    (d / "shim.c").write_text(SHIM)
    subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", str(d / "shim.so"),
                    str(d / "shim.c"), "-ldl"], check=True, capture_output=True)
    return d / "shim.so"


@pytest.mark.parametrize("queued, err", [
    ("", 38),       # nothing queued, ENOSYS: used to segfault
    ("1", 12),      # the first queued, then ENOMEM
    ("101", 22),    # a hole: the second not queued, the third queued
    ("", 11),       # EAGAIN: given back, retried by the queue
])
def test_posix_aio_partial_lio_listio(lio_shim, blob, queued, err):
    """Finding 13, shown true: when lio_listio (before an fsync, or at the
    end of a submit) fails, blocks it did not queue stayed in live[] and
    were reaped as if they had run (completing requests twice: a crash).
    Under ASan the shim goes after libasan in LD_PRELOAD."""
    need("posix_aio")
    preload = " ".join(filter(None, [os.environ.get("LD_PRELOAD"), str(lio_shim)]))
    proc = run_child(POSIX_PARTIAL, blob[0],
                     env={"LD_PRELOAD": preload, "FASTIO_SHIM_QUEUE": queued,
                          "FASTIO_SHIM_ERRNO": str(err)})
    check_child(proc)
    if queued == "":
        # Every read failed with the errno (or, for EAGAIN, was retried:
        # then it failed again the same way, since the shim never queues).
        assert f"({err}, " in proc.stdout


# ---------------------------------------------------------------- floats, ranges

@pytest.mark.parametrize("call, exc, words", [
    ("fastio.read_blocks(P, [0.5, 4096.0], 4096)", TypeError,
     "offsets must hold integers, got offsets[0]=0.5"),
    ("fastio.read_blocks(P, np.array([0.5]), 4096)", TypeError,
     "offsets must hold integers, got an array of float64 (offsets[0]=0.5)"),
    ("fastio.read_blocks(P, [0, 2**64 - 1], 4096)", OverflowError,
     "offsets must fit in int64, got offsets[1]=18446744073709551615"),
    ("fastio.read_blocks(P, [0], 4096.0)", TypeError,
     "size must be an integer, got size=4096.0"),
    ("fastio.read_blocks(P, [0], 16, depth=2.0)", TypeError,
     "depth must be an integer, got depth=2.0"),
    ("fastio.write_blocks(P, [0.5], np.zeros((1, 4), np.uint8))", TypeError,
     "offsets must hold integers"),
    ("Q.read_batch(FD, [0], [4.0], bytearray(4))", TypeError,
     "lengths must hold integers"),
    ("Q.read_batch(FD, [0], 4.0, bytearray(4))", TypeError,
     "lengths must hold integers, got lengths[0]=4.0"),
    ("Q.read(FD, bytearray(4), 1.5)", TypeError,
     "offset must be an integer, got offset=1.5"),
    ("Q.read(FD, bytearray(4), 2**64)", OverflowError,
     "offset out of range [0, 9223372036854775807]: offset=18446744073709551616"),
    ("Q.wait(1.5)", TypeError, "min_complete must be an integer, got min_complete=1.5"),
    ("fastio.Queue(2**70)", OverflowError, "depth out of range [1, 65536]: depth=1180591620717411303424"),
    ("fastio.Queue(4.0)", TypeError, "depth must be an integer, got depth=4.0"),
    ("fastio.Queue(4, 'threads', threads=1.5)", TypeError, "threads must be an integer, got threads=1.5"),
    ("fastio.Queue(4, 'threads', threads=2**40)", OverflowError, "threads out of range [0, 2147483647]"),
    ("fastio.Queue(4, 'threads', submit_batch=2**64)", OverflowError,
     "submit_batch out of range [1, 9223372036854775807]: submit_batch=18446744073709551616"),
    ("fastio.Queue(4, 'threads', sqpoll_idle_ms=-1)", ValueError,
     "sqpoll_idle_ms out of range [0, 2147483647]: sqpoll_idle_ms=-1"),
])
def test_integers_are_integers(call, exc, words, blob):
    p, fd, data = blob
    with fastio.Queue(4, "threads") as q:
        ns = {"fastio": fastio, "np": np, "P": p, "FD": fd, "Q": q}
        with pytest.raises(exc) as info:
            eval(call, ns)
    assert words in str(info.value)


def test_integer_arrays_of_every_integer_kind_work(blob):
    p, fd, data = blob
    for offs in ([0, 100], (0, 100), np.array([0, 100], np.int32),
                 np.array([0, 100], np.uint16), np.array([[0], [100]]), [np.int8(0), 100]):
        out = fastio.read_blocks(fd, offs, 100)
        assert out.tobytes() == data[:200], offs
    assert fastio.read_blocks(fd, [], 100).shape == (0, 100)


# ---------------------------------------------------------------- finding 15 (io_uring part)

def test_io_uring_owner_is_the_child_thread_after_fork():
    """The child's ring works from its main thread and from a thread of its
    own (rebuilt as a plain ring)."""
    need("io_uring")
    if "single_issuer" not in PROBED["io_uring"].features:
        pytest.skip("no single-issuer io_uring here")
    check_child(run_child("""
        import os, sys, threading, fastio
        r, w = os.pipe()
        os.write(w, b"x" * 64)

        def in_thread():
            # This thread's tid cache is set by the Queue below.
            with fastio.Queue(4, "io_uring") as q:
                q.read(r, bytearray(8), 0)
                q.drain()
            pid = os.fork()
            if pid == 0:
                try:
                    q2 = fastio.Queue(4, "io_uring")
                    q2.read(r, bytearray(8), 0)
                    assert q2.wait(1, timeout=10)[0][1] == 8
                    out = []
                    def other():
                        q2.read(r, bytearray(8), 0)
                        out.append(q2.wait(1, timeout=10))
                    t = threading.Thread(target=other)
                    t.start(); t.join()
                    assert out and out[0][0][1] == 8, out
                    q2.close()
                    os._exit(0)
                except BaseException:
                    import traceback; traceback.print_exc()
                    os._exit(1)
            _, st = os.waitpid(pid, 0)
            res.append(os.waitstatus_to_exitcode(st))

        res = []
        t = threading.Thread(target=in_thread)
        t.start(); t.join()
        assert res == [0], res
        print("ok")
    """))


STALE_TID = """
    import os, sys, threading, time, fastio
    r, w = os.pipe()
    os.write(w, b"x" * 4096)
    LAST_PID = "/proc/sys/kernel/ns_last_pid"
    try:
        with open(LAST_PID, "r+") as f:
            f.write(f.read())     # can this process set it? (CAP_SYS_ADMIN)
    except OSError as e:
        print(f"cannot write ns_last_pid: {e}")
        sys.exit(77)
    parent = os.getpid()
    box = {}

    def forker():
        with fastio.Queue(4, "io_uring") as q:   # caches this thread's tid
            q.read(r, bytearray(8), 0)
            q.drain()
        box["tid"] = threading.get_native_id()
        box["pid"] = os.fork()
        if box["pid"] == 0:
            child(box["tid"])

    def child(stale):
        code = 1
        try:
            # The forking thread (tid `stale`) lives on in the parent: wait
            # until it has exited, so its tid can be handed out again.
            while os.path.exists(f"/proc/{parent}/task/{stale}"):
                time.sleep(0.01)
            q = fastio.Queue(4, "io_uring")
            if "single_issuer" not in q.features:
                print("no single-issuer ring"); os._exit(77)
            q.read(r, bytearray(8), 0)
            assert q.wait(1, timeout=10)[0][1] == 8
            for _ in range(50):
                got = {}
                def other():
                    got["tid"] = threading.get_native_id()
                    if got["tid"] != stale:
                        return
                    try:
                        q.read(r, bytearray(8), 0)
                        got["res"] = q.wait(1, timeout=10)
                    except BaseException as e:
                        got["res"] = e
                with open(LAST_PID, "w") as f:
                    f.write(str(stale - 1))
                t = threading.Thread(target=other)
                t.start(); t.join()
                if got["tid"] == stale:
                    break
            else:
                print("never got the stale tid back"); os._exit(77)
            # A thread that is not the ring's creator: the ring is rebuilt
            # as a plain one and the read works. With the parent's tid
            # cached as the owner, it passed for the creator: EEXIST.
            assert isinstance(got["res"], list) and got["res"][0][1] == 8, got
            q.close()
            code = 0
        except BaseException:
            import traceback; traceback.print_exc()
        sys.stdout.flush()
        os._exit(code)

    t = threading.Thread(target=forker)
    t.start(); t.join()
    _, st = os.waitpid(box["pid"], 0)
    code = os.waitstatus_to_exitcode(st)
    if code == 77:
        sys.exit(77)
    assert code == 0, code
    print("ok")
"""


def test_io_uring_stale_tid_is_not_the_owner():
    """Finding 15 (aio_uring.c): the forking thread's cached tid survived
    into the child, so a single-issuer ring the child created recorded a
    parent's thread as owner, and a child thread that the kernel later gave
    that tid (forced here through ns_last_pid) passed for the owner: the
    kernel refused its submissions (EEXIST)."""
    need("io_uring")
    if "single_issuer" not in PROBED["io_uring"].features:
        pytest.skip("no single-issuer io_uring here")
    check_child(run_child(STALE_TID))


# ---------------------------------------------------------------- one integer converter

def test_queue_integers_take_index_and_its_exception_propagates(blob):
    p, fd, data = blob
    with fastio.Queue(_Index(4), "threads", submit_batch=_Index(2), threads=_Index(1),
                      sqpoll_idle_ms=_Index(0)) as q:
        assert q.depth == 4 and q.submit_batch == 2
        buf = bytearray(8)
        q.read(fd, buf, _Index(16), tag="a")
        assert q.wait(_Index(1)) == [("a", 8)]
        assert bytes(buf) == data[16:24]
        # The exception raised by __index__ is the caller's: the old
        # converter replaced it with "... must be an integer".
        for call in (lambda: fastio.Queue(_Refuses(), "threads"),
                     lambda: fastio.Queue(4, "threads", submit_batch=_Refuses()),
                     lambda: q.wait(_Refuses()),
                     lambda: q.read(fd, buf, _Refuses())):
            with pytest.raises(TypeError, match="^refused by __index__$"):
                call()
    assert fastio.Buffer(_Index(64)).nbytes == 64
    with pytest.raises(TypeError, match="^refused by __index__$"):
        fastio.Buffer(_Refuses())


def test_queue_offset_conversion_that_closes_the_queue(blob):
    """__index__ runs before the queue is entered: a close() from inside it
    leaves nothing queued and the call raises the closed error."""
    p, fd, data = blob
    q = fastio.Queue(4, "threads")
    buf = bytearray(8)
    with pytest.raises(ValueError, match="closed"):
        q.read(fd, buf, _Index(0, hook=q.close))
    # buf was never pinned: it can be resized.
    buf.extend(b"x")
    assert len(buf) == 9
