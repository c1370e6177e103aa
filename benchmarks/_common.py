"""What every benchmark prints and needs: the machine, the file's filesystem
and page-cache state, a test file, sizes.

Benchmarks are not tests: each measures fastio and its baseline in the same
run and prints the ratio, with the conditions below so a figure can be
compared with another one honestly.
"""
import os
import platform
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import fastio  # noqa: E402


def parse_size(text):
    """'256M', '1G', '4k', '4096' -> bytes."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = str(text).strip().upper()
    for suffix in ("IB", "B"):
        if t.endswith(suffix) and len(t) > len(suffix):
            t = t[: -len(suffix)]
    if t and t[-1] in units:
        return int(float(t[:-1]) * units[t[-1]])
    return int(t)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def filesystem_of(path):
    """'ext4 on /dev/vda at /' for the mount that holds path."""
    path = os.path.realpath(path)
    best, fstype = "", "unknown"
    try:
        with open("/proc/mounts") as fh:
            for line in fh:
                dev, mnt, typ = line.split()[:3]
                inside = path == mnt or path.startswith(mnt.rstrip("/") + "/")
                if inside and len(mnt) >= len(best):
                    best, fstype = mnt, f"{typ} on {dev} at {mnt}"
    except OSError:
        pass
    return fstype


def _read(path, default="?"):
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return default


def machine_info(path=None):
    """Print the machine, kernel, versions and (with path) the filesystem."""
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    print(f"machine : {platform.machine()}, {cpu_model()}")
    print(f"cpus    : {os.cpu_count()} (usable {len(os.sched_getaffinity(0))}), "
          f"RAM {mem:.1f} GiB, load {os.getloadavg()[0]:.2f}, "
          f"THP {_read('/sys/kernel/mm/transparent_hugepage/enabled')}")
    print(f"kernel  : Linux {platform.release()}; Python {platform.python_version()}, "
          f"numpy {np.__version__}, fastio {fastio.__version__}")
    if path is not None:
        print(f"file    : {path} on {filesystem_of(path)}")


def residency(path):
    """Fraction of the file in the page cache (mincore through fastio.mmap)."""
    if os.path.getsize(path) == 0:
        return 1.0
    with fastio.mmap(os.fspath(path), mode="r") as m:
        frac, _ = m.residency()
    return frac


def cache_state(path):
    return f"{residency(path) * 100:.1f}% of the file in the page cache (mincore)"


def make_file(path, size, chunk=64 << 20):
    """Write size bytes of deterministic, non-constant data (fsynced)."""
    block = np.arange(chunk // 8, dtype="<u8").view("u1")
    with open(path, "wb") as fh:
        left = size
        while left:
            n = min(left, block.nbytes)
            fh.write(block[:n])
            left -= n
        fh.flush()
        os.fsync(fh.fileno())


def warm(path):
    """Read the whole file once, so that it is in the page cache."""
    with open(path, "rb", buffering=0) as fh:
        while fh.read(16 << 20):
            pass


def evict(path):
    """Drop the file from the page cache (POSIX_FADV_DONTNEED after fsync)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
