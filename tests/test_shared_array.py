"""fastio.SharedArray / shared_array: ndarrays that pickle by reference.

Cross-process tests use multiprocessing with the fork, spawn and forkserver
start methods and concurrent.futures; numpy itself is the oracle for the
values. The guard removes (and reports) any segment a test leaves.
"""
import concurrent.futures
import gc
import multiprocessing
import os
import pickle

import numpy as np
import pytest

import fastio
import fastio.shm
from conftest import LeakCheck

BACKENDS = ["posix", "memfd", "sysv"]


# Tests whose first run maps memory of its own (hypothesis's arenas): the
# guard counts their fds and segments, not their mappings.
_ALLOCATOR_NOISE = {"test_any_view_pickles_to_the_same_memory"}


def _noop(x):
    return x


@pytest.fixture(scope="module")
def mp_warm():
    """Start what multiprocessing keeps for the life of the process (the
    forkserver, the resource tracker, the pool's modules and libraries)
    before the leak counters are taken: those are not leaks."""
    from multiprocessing import forkserver, resource_tracker
    forkserver.ensure_running()
    resource_tracker.ensure_running()
    with multiprocessing.get_context("fork").Pool(1) as pool:
        pool.map(_noop, [1])
    with concurrent.futures.ProcessPoolExecutor(
            1, mp_context=multiprocessing.get_context("fork")) as ex:
        ex.submit(_noop, 1).result()
    q = multiprocessing.get_context("spawn").Queue()
    q.close()
    q.join_thread()


@pytest.fixture(autouse=True)
def guard(tmp_path, monkeypatch, mp_warm, request):
    monkeypatch.setenv("FASTIO_SHM_REGISTRY", str(tmp_path / "registry"))
    prefix = f"fio{os.getpid()}a_"
    monkeypatch.setattr(fastio.shm, "_NAME_PREFIX", prefix)
    before_sysv = {s.id for s in fastio.sysv_segments() if s.cpid == os.getpid()}
    leaks = LeakCheck()
    yield
    gc.collect()
    left = [n for n in os.listdir("/dev/shm") if n.startswith(prefix)]
    for n in left:
        os.unlink(os.path.join("/dev/shm", n))
    left_sysv = {s.id for s in fastio.sysv_segments()
                 if s.cpid == os.getpid()} - before_sysv
    for shmid in left_sysv:
        fastio._core.sysv_remove(shmid)
    assert not left and not left_sysv, f"segments left: {left} {left_sysv}"
    if request.node.originalname not in _ALLOCATOR_NOISE:
        leaks.check()
    else:
        assert leaks.fds == len(os.listdir("/proc/self/fd")), "file descriptors leaked"


# ---------------------------------------------------------------- in one process

@pytest.mark.parametrize("backend", BACKENDS)
def test_pickles_by_reference_views_and_strides(backend):
    a = fastio.shared_array((64, 32), "f4", backend=backend)
    assert isinstance(a, fastio.SharedArray) and a.shape == (64, 32) and a.dtype == "f4"
    assert not a.any()  # zeroed
    a[:] = np.arange(64 * 32, dtype="f4").reshape(64, 32)
    views = [a, a[3:], a[::-3, 1::5], a.T, a[5], a[2:10].reshape(-1), a[:, 7]]
    for v in views:
        data = pickle.dumps(v, protocol=pickle.HIGHEST_PROTOCOL)
        assert len(data) < 600, "the array's bytes went into the pickle"
        w = pickle.loads(data)
        assert type(w) is fastio.SharedArray
        np.testing.assert_array_equal(w, v)
        assert w.strides == v.strides and w.dtype == v.dtype
    w = pickle.loads(pickle.dumps(a[::-3, 1::5]))
    w[0, 0] = -1
    assert a[63, 1] == -1  # the same memory
    del w


def test_results_of_computations_pickle_by_value():
    a = fastio.shared_array(10, "i8")
    a[:] = 3
    b = a + 1  # new memory
    assert b.segment is None and a[2:].segment is a.segment
    c = pickle.loads(pickle.dumps(b))
    np.testing.assert_array_equal(c, np.full(10, 4))
    c = pickle.loads(pickle.dumps(a.copy()))
    np.testing.assert_array_equal(c, a)


def test_order_zero_size_and_bad_input():
    f = fastio.shared_array((3, 4), "u2", order="F")
    assert f.flags.f_contiguous
    g = pickle.loads(pickle.dumps(f))
    assert g.flags.f_contiguous and g.shape == (3, 4)
    e = fastio.shared_array((0, 5))
    assert e.size == 0 and pickle.loads(pickle.dumps(e)).shape == (0, 5)
    s = fastio.SharedArray(5, "c16", backend="memfd")
    assert s.dtype == "c16" and s.shape == (5,)
    with pytest.raises(ValueError, match="backend"):
        fastio.shared_array(5, backend="nope")
    with pytest.raises(ValueError, match="shape"):
        fastio.shared_array((2, -1))
    with pytest.raises(ValueError, match="dtype"):
        fastio.shared_array(4, object)
    del f, g, e, s


def test_segment_lives_as_long_as_the_creators_array():
    a = fastio.shared_array(1000)
    name = a.segment.name
    path = os.path.join("/dev/shm", name)
    view = a[10:20]
    del a
    gc.collect()
    assert os.path.exists(path)  # a view still holds the segment
    data = pickle.dumps(view)
    del view
    gc.collect()
    assert not os.path.exists(path)
    with pytest.raises(FileNotFoundError):
        pickle.loads(data)


def test_closing_the_segment_under_an_array_is_safe():
    a = fastio.shared_array(1 << 16, "f8", backend="sysv")
    a[:] = 1
    a.segment.close()
    assert a.sum() == 1 << 16  # detach deferred to the array's end
    # A closed segment cannot be referenced any more: pickles by value.
    b = pickle.loads(pickle.dumps(a[:4]))
    assert b.segment is None if isinstance(b, fastio.SharedArray) else True
    del a


# ---------------------------------------------------------------- other processes

def _fill_rows(args):
    arr, lo, hi = args
    arr[lo:hi] = np.arange(lo, hi)[:, None]
    return float(arr[lo:hi].sum())


def _total(arr):
    return float(arr.sum()), os.getpid()


@pytest.mark.parametrize("method, backend", [
    ("fork", "posix"), ("spawn", "posix"), ("forkserver", "posix"),
    ("fork", "memfd"), ("spawn", "memfd"),
    ("fork", "sysv"), ("forkserver", "sysv"),
])
def test_pool_workers_write_and_the_parent_sees(method, backend):
    ctx = multiprocessing.get_context(method)
    a = fastio.shared_array((40, 1000), "f8", backend=backend)
    with ctx.Pool(2) as pool:
        sums = pool.map(_fill_rows, [(a, i, i + 10) for i in range(0, 40, 10)])
        expected = np.repeat(np.arange(40.0), 1000).reshape(40, 1000)
        np.testing.assert_array_equal(a, expected)
        assert sum(sums) == expected.sum()
        # Workers see the parent's (and so each other's) writes.
        a[:] = 2
        total, _ = pool.apply(_total, (a,))
        assert total == 2 * a.size


def _write_marker(arr, value):
    arr[0] = value


def _read_marker(arr, q):
    q.put(float(arr[0]))


def test_one_worker_sees_anothers_writes():
    ctx = multiprocessing.get_context("spawn")
    a = fastio.shared_array(16)
    p = ctx.Process(target=_write_marker, args=(a, 42.0))
    p.start()
    p.join(60)
    q = ctx.Queue()
    r = ctx.Process(target=_read_marker, args=(a, q))
    r.start()
    assert q.get(timeout=60) == 42.0
    r.join(60)
    q.close()
    q.join_thread()
    assert p.exitcode == 0 and r.exitcode == 0


def test_process_pool_executor_copies_nothing():
    a = fastio.shared_array(1 << 20, "f8")
    a[:] = 0.5
    ctx = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as ex:
        total, pid = ex.submit(_total, a).result(timeout=60)
    assert total == 0.5 * a.size and pid != os.getpid()
    assert len(pickle.dumps(a)) < 600


# ---------------------------------------------------------------- any view

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402


def _slices(n):
    return st.builds(slice, st.one_of(st.none(), st.integers(-n - 2, n + 2)),
                     st.one_of(st.none(), st.integers(-n - 2, n + 2)),
                     st.one_of(st.none(), st.integers(-4, 4).filter(bool)))


# The guard fixture runs once around all examples: what it checks (nothing
# left at the end) holds across them. Hypothesis's first run maps memory of
# its own (arenas), so only fds and segments are counted here.
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(s0=_slices(6), s1=_slices(7), transpose=st.booleans(),
       dtype=st.sampled_from(["u1", "i2", "f4", "c16"]))
def test_any_view_pickles_to_the_same_memory(s0, s1, transpose, dtype):
    a = fastio.shared_array((6, 7), dtype)
    a[:] = np.arange(42).reshape(6, 7)
    v = a[s0, s1]
    if transpose:
        v = v.T
    w = pickle.loads(pickle.dumps(v))
    assert w.shape == v.shape and w.strides == v.strides
    np.testing.assert_array_equal(w, v)
    if w.size:
        w[...] = 100
        assert (v == 100).all()  # the same bytes

