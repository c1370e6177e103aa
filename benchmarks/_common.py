"""What every benchmark prints and needs: the machine, the file's filesystem
and page-cache state, a test file, sizes.

Benchmarks are not tests: each measures fastio and its baseline in the same
run and prints the ratio, with the conditions below so a figure can be
compared with another one honestly.
"""
import os
import platform
import statistics
import sys
import time

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


def mount_of(path):
    """(device, mount point, filesystem type) of the mount that holds path:
    the longest mount point that is path or a parent of it."""
    path = os.path.realpath(path)
    best = ("?", "", "unknown")
    try:
        with open("/proc/self/mounts") as fh:
            for line in fh:
                dev, mnt, typ = line.split()[:3]
                mnt = mnt.replace("\\040", " ")  # /proc/mounts escapes spaces
                inside = path == mnt or path.startswith(mnt.rstrip("/") + "/")
                if inside and len(mnt) >= len(best[1]):
                    best = (dev, mnt, typ)
    except OSError:
        pass
    return best


def filesystem_of(path):
    """'ext4 on /dev/vda at /' for the mount that holds path."""
    dev, mnt, typ = mount_of(path)
    return f"{typ} on {dev} at {mnt}" if mnt else "unknown"


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


def timed(fn):
    """Wall-clock seconds of one call of fn(); what fn returns is freed after
    the clock stops (freeing a large result is not part of making it)."""
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    del out
    return seconds


def run_rounds(contenders, rounds, once=timed):
    """Interleaved rounds (A B C ..., A B C ...), so that drift on a shared,
    noisy machine hits every contender alike. contenders: {name: fn} or
    [(name, fn)]; once(fn) -> seconds. Returns {name: [seconds per round]}."""
    contenders = dict(contenders)
    times = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            times[name].append(once(fn))
    return times


median = statistics.median


def print_table(rows, columns, first="contender", indent=""):
    """One line per row of rows ({name: value}, e.g. {name: [seconds...]}):
    the name, then one cell per column (heading, figure, format), the cell
    being format(figure(value), format). A format ending in 'x' is a ratio:
    the x is printed after the number. Columns are as wide as their widest
    cell; every line starts with indent."""
    lines = [[first] + [heading for heading, _, _ in columns]]
    for name, value in rows.items():
        line = [name]
        for _, figure, fmt in columns:
            ratio = fmt.endswith("x")
            line.append(format(figure(value), fmt[:-1] if ratio else fmt) + ("x" if ratio else ""))
        lines.append(line)
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for line in lines:
        print(f"{indent}{line[0]:<{widths[0]}}" +
              "".join(f"  {cell:>{w}}" for cell, w in zip(line[1:], widths[1:])))
