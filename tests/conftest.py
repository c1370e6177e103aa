"""Shared fixtures and helpers: leak counters, temporary files, forked
children.

Tests count what the kernel says a process holds, not what fastio thinks it
holds: open fds in /proc/self/fd, mappings in /proc/self/maps.
"""
import gc
import multiprocessing
import os

import pytest


def count_fds():
    return len(os.listdir("/proc/self/fd"))


def count_maps():
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)


# FASTIO_VALGRIND=1 tells a test that it runs under valgrind's memcheck
# (.ci/run's valgrind step), for the rare one that cannot: it must skip
# saying why.
UNDER_VALGRIND = os.environ.get("FASTIO_VALGRIND") == "1"
# Under valgrind, /proc/self/maps also lists valgrind's own memory (its
# translation cache and arenas, in the same process), which grows as new code
# runs: mappings are counted loosely there, fds still exactly.
VALGRIND_MAP_SLACK = 64


class LeakCheck:
    """Snapshot fds and mappings; check() asserts they came back.

    A little slack for mappings: the allocator may map or unmap an arena of
    its own during a long loop, which is not fastio's doing.
    """

    def __init__(self, map_slack=4):
        self.map_slack = map_slack + (VALGRIND_MAP_SLACK if UNDER_VALGRIND else 0)
        gc.collect()
        self.fds = count_fds()
        self.maps = count_maps()

    def check(self):
        gc.collect()
        assert count_fds() == self.fds, "file descriptors leaked"
        assert count_maps() <= self.maps + self.map_slack, (
            f"mappings leaked: {self.maps} before, {count_maps()} after")


@pytest.fixture
def leakcheck():
    """Usage: def test_x(leakcheck): ...; leakcheck.check() at the end."""
    return LeakCheck()


@pytest.fixture
def datafile(tmp_path):
    """make(n) writes n bytes of deterministic, non-repeating data."""

    def make(n, name="data.bin"):
        p = tmp_path / name
        data = os.urandom(n) if n else b""
        p.write_bytes(data)
        return p, data

    return make


def fork(fn, *args):
    """Run fn(*args) in a forked child; exit code 0 when it returns."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            fn(*args)
        except BaseException:
            import traceback
            traceback.print_exc()
            code = 1
        os._exit(code)
    return pid


def join(pid):
    """Wait for a child from fork(); its exit code."""
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _noop():
    pass


@pytest.fixture(scope="module")
def mp_warm():
    """Load what multiprocessing loads once per process (modules, shared
    libraries) before the leak counters are taken: those are not leaks."""
    ctx = multiprocessing.get_context("fork")
    r, w = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_noop)
    p.start()
    p.join()
    r.close()
    w.close()
