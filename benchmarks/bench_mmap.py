"""fastio.mmap against the stdlib mmap.mmap, measured in the same run.

    python benchmarks/bench_mmap.py [--size-mib 256] [--slices 50000] [--rounds 21]

1. Random 4 KiB slices ``m[o:o+4096]`` (slices per second, and the ratio
   fastio / stdlib; goal >= 1.0x).
2. A sequential pass ``np.frombuffer(m, dtype=np.uint64).sum()`` over the
   whole map (GB/s, and the ratio).

Both use the same file (made once and kept in the temp directory) and the
same offsets, and run as pairs of back-to-back measurements (the order
alternating), so that the noise of a shared machine hits both alike. Rates
are medians over the rounds; each ratio is the median of the per-round
ratios, printed with its spread (min..max). The file is read once first, so the page cache is warm; the
residency (mincore) before each phase is printed. Prints the machine, the
kernel, the filesystem and the cache state with the figures. No figure is
hard-coded anywhere: every number printed is measured here.
"""
import argparse
import mmap as stdlib_mmap
import os
import platform
import random
import statistics
import sys
import tempfile
import time

import numpy as np

import fastio

SLICE = 4096


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def filesystem_of(path):
    """The mount (device, type) holding path, from /proc/self/mounts."""
    best = ("?", "?", "")
    path = os.path.realpath(path)
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                dev, mnt, fstype = line.split()[:3]
                if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) > len(best[2]):
                    best = (dev, fstype, mnt)
    except OSError:
        pass
    return f"{best[1]} ({best[0]} on {best[2]})"


def make_file(size):
    """A file of size random bytes in the temp dir, reused across runs."""
    path = os.path.join(tempfile.gettempdir(), f"fastio-bench-mmap-{size}.bin")
    if not os.path.exists(path) or os.path.getsize(path) != size:
        tmp = path + f".{os.getpid()}.part"
        chunk = np.random.default_rng(1).integers(0, 256, 1 << 24, dtype=np.uint8).tobytes()
        with open(tmp, "wb") as f:
            left = size
            while left:
                n = min(left, len(chunk))
                f.write(chunk[:n])
                left -= n
        os.replace(tmp, path)
        made = "made now"
    else:
        made = "reused"
    return path, made


def warm(path):
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass


def residency(path):
    with fastio.mmap(path, mode="r") as m:
        frac, _ = m.residency()
    return frac


# The clock: CPU time of this process by default, so that time spent
# descheduled while other processes use a shared machine's cores does not
# count against whichever map happened to be running (both loops are
# single-threaded and never sleep). --clock wall uses perf_counter.
clock = time.process_time


def time_slices(m, offsets):
    t0 = clock()
    for o in offsets:
        m[o:o + SLICE]
    return clock() - t0


def time_sum(m):
    t0 = clock()
    total = int(np.frombuffer(m, dtype=np.uint64).sum())
    return clock() - t0, total


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--slices", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                    help="cpu: process CPU time (default, robust on a shared "
                         "machine); wall: perf_counter")
    args = ap.parse_args()
    global clock
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    size = args.size_mib << 20

    path, made = make_file(size)
    warm(path)
    u = os.uname()
    print(f"machine : {u.sysname} {u.release} {u.machine}, {os.cpu_count()} CPUs, {cpu_model()}")
    print(f"python  : {platform.python_version()}, numpy {np.__version__}, fastio {fastio.__version__}")
    print(f"file    : {path} ({args.size_mib} MiB, {made}), filesystem {filesystem_of(path)}")
    print(f"cache   : warm (file read once); resident {residency(path):.1%} of pages (mincore)")
    print(f"clock   : {'process CPU time' if args.clock == 'cpu' else 'wall (perf_counter)'}")

    rng = random.Random(42)
    offsets = [rng.randrange(0, size - SLICE) for _ in range(args.slices)]

    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        ours = fastio.mmap(fd, 0, access=fastio.ACCESS_READ)
        theirs = stdlib_mmap.mmap(fd, 0, access=stdlib_mmap.ACCESS_READ)
        # Fault every page in once, for both, so neither pays the page
        # faults the other already paid.
        time_sum(ours)
        time_sum(theirs)

        slices_f, slices_s, sum_f, sum_s = [], [], [], []
        for r in range(args.rounds):
            # Alternate which goes first, so drift in a noisy machine hits both.
            pair = [(ours, slices_f), (theirs, slices_s)]
            for m, out in (pair if r % 2 == 0 else pair[::-1]):
                out.append(args.slices / time_slices(m, offsets))
            pair = [(ours, sum_f), (theirs, sum_s)]
            totals = set()
            for m, out in (pair if r % 2 == 0 else pair[::-1]):
                dt, total = time_sum(m)
                out.append(size / dt / 1e9)
                totals.add(total)
            assert len(totals) == 1, "the two maps summed differently"

        print(f"cache   : resident {residency(path):.1%} of pages after the runs")
        print()

        def report(title, unit, fmt, ours_rates, theirs_rates):
            ratios = [a / b for a, b in zip(ours_rates, theirs_rates)]
            print(title)
            print(f"  fastio.mmap : {statistics.median(ours_rates):{fmt}} {unit}")
            print(f"  stdlib mmap : {statistics.median(theirs_rates):{fmt}} {unit}")
            print(f"  ratio       : {statistics.median(ratios):.2f}x fastio/stdlib "
                  f"(per-round {min(ratios):.2f}..{max(ratios):.2f}, {len(ratios)} rounds)")

        report(f"random 4 KiB slices m[o:o+4096], {args.slices} per round:",
               "slices/s", "12,.0f", slices_f, slices_s)
        report(f"sequential np.frombuffer(m, uint64).sum() over {args.size_mib} MiB:",
               "GB/s", "12.2f", sum_f, sum_s)
        ours.close()
        theirs.close()
    finally:
        os.close(fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
