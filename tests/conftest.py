"""Shared fixtures: leak counters and temporary files.

Tests count what the kernel says a process holds, not what fastio thinks it
holds: open fds in /proc/self/fd, mappings in /proc/self/maps.
"""
import gc
import os

import pytest


def count_fds():
    return len(os.listdir("/proc/self/fd"))


def count_maps():
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)


class LeakCheck:
    """Snapshot fds and mappings; check() asserts they came back.

    A little slack for mappings: the allocator may map or unmap an arena of
    its own during a long loop, which is not fastio's doing.
    """

    def __init__(self, map_slack=4):
        self.map_slack = map_slack
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
