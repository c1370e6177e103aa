"""fastio on a free-threaded CPython (3.13t): the GIL stays off.

fastio._core declares Py_mod_gil = Py_MOD_GIL_NOT_USED (csrc/module.c): each
object keeps its state consistent under a critical section on itself
(docs/freethreading.md has the model). On a free-threaded build the import
must leave the GIL off, with no warning; PYTHON_GIL=1 still turns it on.
Each import case runs in a fresh interpreter, since a process's GIL state is
decided at start and by the extension modules it imports.

The stress tests below hammer each type from 8 threads at once. On a
free-threaded build they assert that the GIL is off while they run (so the
threads really run in parallel); on a default build they run too, with
smaller counts.
"""
import json
import os
import pathlib
import re
import subprocess
import sys
import sysconfig
import textwrap
import threading
import time

import pytest

import fastio
from fastio import _freethreading

ROOT = pathlib.Path(__file__).resolve().parent.parent
FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
needs_free_threaded = pytest.mark.skipif(
    not FREE_THREADED, reason="not a free-threaded CPython build (Py_GIL_DISABLED unset)")

# Imports fastio in a fresh interpreter and reports the GIL state before and
# after, and every warning the import raised.
CHILD = textwrap.dedent("""
    import json, sys, warnings
    before = getattr(sys, "_is_gil_enabled", lambda: True)()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import fastio
    after = getattr(sys, "_is_gil_enabled", lambda: True)()
    print(json.dumps({"before": before, "after": after, "file": fastio.__file__,
                      "warnings": [[w.category.__name__, str(w.message), w.filename]
                                   for w in caught]}))
""")


def import_in_child(**env_changes):
    env = dict(os.environ)
    env.pop("PYTHON_GIL", None)
    here = os.path.dirname(os.path.dirname(os.path.abspath(fastio.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([here] + [p for p in [env.get("PYTHONPATH")] if p])
    env.update(env_changes)
    p = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["file"] == fastio.__file__, "the child imported another fastio"
    return out


def test_default_build_import_warns_nothing():
    out = import_in_child()
    assert out["warnings"] == []
    if not FREE_THREADED:
        assert out["before"] is True and out["after"] is True


@needs_free_threaded
def test_free_threaded_import_leaves_the_gil_off_without_a_warning():
    out = import_in_child()
    assert out["before"] is False, "the GIL was on before fastio was imported"
    assert out["after"] is False, "importing fastio turned the GIL on"
    assert out["warnings"] == []


@needs_free_threaded
@pytest.mark.parametrize("gil", ["0", "1"])
def test_free_threaded_python_gil_is_honoured_without_a_warning(gil):
    out = import_in_child(PYTHON_GIL=gil)
    assert out["after"] is (gil == "1")
    assert out["warnings"] == []


@needs_free_threaded
def test_this_process_runs_without_the_gil_unless_forced_on():
    # fastio is imported here: the GIL is off, unless PYTHON_GIL=1 / -X gil=1
    # forced it on (sys.flags.gil is 1 then, None when unset).
    assert sys._is_gil_enabled() is (sys.flags.gil == 1)


def test_module_declaration_matches_readme_and_docs():
    # What csrc/module.c declares is what README.md and the docs page state.
    src = (ROOT / "csrc" / "module.c").read_text()
    assert re.findall(r"\{Py_mod_gil, (\w+)\}", src) == ["Py_MOD_GIL_NOT_USED"]
    readme = (ROOT / "README.md").read_text()
    assert "Py_MOD_GIL_NOT_USED" in readme and "docs/freethreading.md" in readme
    docs = (ROOT / "docs" / "freethreading.md").read_text()
    assert "Py_MOD_GIL_NOT_USED" in docs
    assert _freethreading.DOCS in _freethreading.GIL_ENABLED_MESSAGE


# ------------------------------------------------------------------ #
# Stress: 8 threads on one object, with the GIL off where it can be.

NTHREADS = 8
ITERS = 2000 if FREE_THREADED else 300
JOIN_TIMEOUT = 60.0


def gil_off_if_free_threaded():
    if FREE_THREADED and sys.flags.gil != 1:
        assert sys._is_gil_enabled() is False, "the GIL is on: these threads do not overlap"


def run_threads(work, closer=None, close_after=0.05, ok=()):
    """work(i) in NTHREADS threads started together; closer() (if any) runs
    in its own thread close_after seconds in. Returns each thread's result;
    fails on any exception not in ok (per call, work handles its own loop),
    and on a thread alive after JOIN_TIMEOUT (a deadlock)."""
    gil_off_if_free_threaded()
    results, errors = [None] * NTHREADS, []
    start = threading.Barrier(NTHREADS + (closer is not None))

    def run(i):
        start.wait()
        try:
            results[i] = work(i)
        except BaseException as e:  # noqa: BLE001  reported below
            errors.append(e)

    def close():
        start.wait()
        time.sleep(close_after)
        closer()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(NTHREADS)]
    if closer is not None:
        threads.append(threading.Thread(target=close, daemon=True))
    for t in threads:
        t.start()
    deadline = time.monotonic() + JOIN_TIMEOUT
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not [t for t in threads if t.is_alive()], "threads still running: deadlock"
    assert not errors, errors[:3]
    gil_off_if_free_threaded()
    return results


def until_closed(fn, words=("closed",), ok=()):
    """Call fn(k) ITERS times; stop at the first ValueError saying closed.
    Returns how many calls completed."""
    done = 0
    for k in range(ITERS):
        try:
            fn(k)
        except ValueError as e:
            if not any(w in str(e) for w in words):
                raise
            break
        except ok:
            pass
        done += 1
    return done


def test_stress_mmap_stripes_slicing_and_writes(tmp_path):
    # Each thread owns a stripe: what it writes it reads back exactly,
    # while the others slice, search, seek/read and write theirs.
    stripe = 8192
    p = tmp_path / "m.bin"
    p.write_bytes(bytes(stripe * NTHREADS))
    with open(p, "r+b") as f:
        m = fastio.mmap(f.fileno(), 0)

    def work(i):
        lo = i * stripe
        for k in range(ITERS):
            val = bytes([(i * 31 + k) % 256]) * 512
            off = lo + (k * 512) % stripe
            m[off:off + 512] = val
            assert m[off:off + 512] == val
            assert len(m[:]) == len(m)
            m.find(b"\xfe\xfd", lo)
            m.seek((k * 7) % len(m))  # the shared position: any value is fine
            assert len(m.read(16)) <= 16
        return True

    assert run_threads(work) == [True] * NTHREADS
    m.close()


def test_stress_mmap_resize_against_readers_and_exports(tmp_path):
    # A file's map (3.14+ refuses to grow a shared anonymous one, as the
    # stdlib does): resize grows and shrinks the file with it.
    p = tmp_path / "r.bin"
    p.write_bytes(bytes(1 << 17))
    with open(p, "r+b") as f:
        m = fastio.mmap(f.fileno(), 0)
    m[:4] = b"head"
    sizes = [1 << 16, 1 << 17, 3 << 15]

    def work(i):
        grown = refused = 0
        for k in range(ITERS):
            if i == 0:
                try:
                    m.resize(sizes[k % len(sizes)])
                    grown += 1
                except BufferError:
                    refused += 1  # another thread holds an export: documented
            elif i % 2:
                with memoryview(m) as mv:
                    assert bytes(mv[:4]) == b"head"
            else:
                assert m[:4] == b"head" and len(m) in sizes
        return grown, refused

    run_threads(work)
    assert m[:4] == b"head"
    m.resize(1 << 16)  # every export was counted back: a lost count refuses
    m.close()


def test_stress_mmap_closed_by_another_thread(tmp_path):
    p = tmp_path / "c.bin"
    p.write_bytes(os.urandom(1 << 20))
    with open(p, "r+b") as f:
        m = fastio.mmap(f.fileno(), 0)

    def work(i):
        def one(k):
            off = (i * 65536 + k * 64) % ((1 << 20) - (1 << 16))
            if i % 3 == 0:
                len(m[off:off + (1 << 16)])
            elif i % 3 == 1:
                m[off:off + 64] = b"z" * 64
            else:
                with memoryview(m) as mv:
                    mv[off]
        return until_closed(one)

    run_threads(work, closer=m.close)
    assert m.closed


def test_stress_buffer_exports_and_close():
    np = pytest.importorskip("numpy")
    b = fastio.Buffer(1 << 20)

    def work(i):
        def one(k):
            a = np.frombuffer(b, np.uint8)
            a[i * 1000 + k % 1000] = i
            with memoryview(b) as mv:
                assert mv.nbytes == 1 << 20
            del a
        return until_closed(one)

    run_threads(work, closer=b.close)
    assert b.closed and b.exports == 0


def test_stress_shared_memory():
    # Threads' stacks stay mapped in glibc's stack cache after a join: fds
    # are counted exactly, mappings with room for them (as test_threads.py).
    from conftest import LeakCheck
    leakcheck = LeakCheck(map_slack=64)
    s = fastio.SharedMemory(create=True, size=1 << 20)
    name = s.name
    chunk = (1 << 20) // NTHREADS

    def work(i):
        other = fastio.SharedMemory(name)  # an attacher per thread, as in a pool
        try:
            def one(k):
                s.fill(i, i * chunk, chunk)
                with memoryview(other) as mv:
                    assert mv[i * chunk] == i and mv[(i + 1) * chunk - 1] == i
            return until_closed(one)
        finally:
            other.close()

    done = run_threads(work)
    assert done == [ITERS] * NTHREADS
    s.close()
    del s
    leakcheck.check()


def test_stress_lock_counts_exactly():
    seg = fastio.mmap(-1, 4096)
    lk = fastio.Lock(seg, 0)
    count = [0]

    def work(i):
        for _ in range(ITERS):
            with lk:
                v = count[0]   # a read-modify-write that only the lock
                count[0] = v + 1  # makes exact
        return True

    run_threads(work)
    assert count[0] == NTHREADS * ITERS
    lk.close()
    seg.close()


def test_stress_semaphore_bounds_concurrency():
    seg = fastio.mmap(-1, 4096)
    sem = fastio.Semaphore(seg, 0, value=2)
    inside, most = [0], [0]
    guard = threading.Lock()

    def work(i):
        for _ in range(ITERS // 4):
            assert sem.acquire(timeout=10)
            with guard:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            with guard:
                inside[0] -= 1
            sem.release()
        return True

    run_threads(work)
    assert 1 <= most[0] <= 2
    sem.close()
    seg.close()


def test_stress_channel_two_senders_raise_not_corrupt():
    # One sender per Channel is the protocol: two threads sending on it at
    # once get RuntimeError, and every message that was sent arrives intact.
    ch = fastio.Channel(1 << 14)
    sent = [0] * NTHREADS
    received = []
    stop = threading.Event()

    def work(i):
        if i == 0:  # the receiver
            while True:
                try:
                    msg = ch.recv_bytes(timeout=0.5)
                except TimeoutError:
                    if stop.is_set():
                        return len(received)
                    continue
                assert msg == msg[:1] * len(msg), "a torn message"
                received.append(msg[0])
        if i in (1, 2):  # two senders on the one Channel: the misuse
            refused = 0
            for k in range(ITERS // 2):
                try:
                    ch.send_bytes(bytes([i]) * (100 + k % 300), timeout=5)
                    sent[i] += 1
                except RuntimeError as e:
                    assert "another thread is sending" in str(e)
                    refused += 1
            if i == 2:
                time.sleep(0.2)
            return refused
        # the others read its state meanwhile
        for _ in range(ITERS // 2):
            assert ch.pending >= 0 and ch.closed is False
        return 0

    # Stop the receiver once both senders are done.
    done_senders = threading.Barrier(2, action=stop.set)

    def with_stop(i):
        r = work(i)
        if i in (1, 2):
            done_senders.wait()
        return r

    run_threads(with_stop)
    assert received.count(1) == sent[1] and received.count(2) == sent[2]
    ch.close()


@pytest.mark.parametrize("backend", [
    name for name, info in fastio.backends().items() if info.available])
def test_stress_queue_shared_and_per_thread(tmp_path, backend):
    # Threads 0-3: each its own Queue, reads checked against the file;
    # threads 4-7: one shared Queue (busy: RuntimeError), closed by another
    # thread at the end, which ends them with ValueError.
    p = tmp_path / "q.bin"
    data = os.urandom(1 << 16)
    p.write_bytes(data)
    fd = os.open(p, os.O_RDONLY)
    shared = fastio.Queue(16, backend)

    def work(i):
        if i < 4:
            with fastio.Queue(8, backend) as q:
                for k in range(ITERS // 4):
                    off = (k * 4096) % len(data)
                    buf = bytearray(4096)
                    q.read(fd, buf, off, tag=k)
                    q.submit()
                    ((tag, res),) = q.wait(1, timeout=10)
                    assert tag == k and res == 4096 and buf == data[off:off + 4096]
            return True

        def one(k):
            buf = bytearray(512)
            shared.read(fd, buf, (k * 512) % len(data))
            shared.drain()
        return until_closed(one, ok=(RuntimeError, BlockingIOError))

    try:
        run_threads(work, closer=shared.close, close_after=0.2)
    finally:
        os.close(fd)
    assert shared.closed
