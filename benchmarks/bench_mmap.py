"""fastio.mmap against the stdlib mmap.mmap, measured in the same run.

    python benchmarks/bench_mmap.py [--size-mib 256] [--slices 50000] [--rounds 21]
        [--json PATH]

1. Random 4 KiB slices ``m[o:o+4096]`` (slices per second, and the ratio
   fastio / stdlib; goal >= 1.0x).
2. A sequential pass ``np.frombuffer(m, dtype=np.uint64).sum()`` over the
   whole map (GB/s, and the ratio).

Both use the same file (made once and kept in the temp directory) and the
same offsets, and run in rounds whose order rotates (_common.run_rounds,
after a warm-up round), so that the noise of a shared machine hits both alike. Rates
are medians over the rounds; each ratio is the median of the per-round
ratios, printed with its spread (min..max). The file is read once first, so the page cache is warm; the
residency (mincore) before each phase is printed. Prints the machine, the
kernel, the filesystem and the cache state with the figures. No figure is
hard-coded anywhere: every number printed is measured here.
"""
import argparse
import mmap as stdlib_mmap
import os
import random
import statistics
import sys
import tempfile
import time

import numpy as np

from _common import (Report, add_json_argument, cache_state, machine_info, make_file, residency,
                     run_rounds, warm)
import fastio

SLICE = 4096


def reuse_or_make(size):
    """A file of size bytes in the temp dir, reused across runs; made under
    another name and renamed, so that an interrupted run leaves no short file."""
    path = os.path.join(tempfile.gettempdir(), f"fastio-bench-mmap-{size}.bin")
    if os.path.exists(path) and os.path.getsize(path) == size:
        return path, "reused"
    tmp = path + f".{os.getpid()}.part"
    make_file(tmp, size)
    os.replace(tmp, path)
    return path, "made now"


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
    add_json_argument(ap, "mmap")
    args = ap.parse_args()
    global clock
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    size = args.size_mib << 20

    path, made = reuse_or_make(size)
    warm(path)
    machine_info(path)
    print(f"size    : {args.size_mib} MiB ({made})")
    print(f"cache   : warm (file read once); {cache_state(path)}")
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

        totals = set()

        def summed(m):
            dt, total = time_sum(m)
            totals.add(total)
            return size / dt / 1e9

        sl = run_rounds({"fastio": lambda: args.slices / time_slices(ours, offsets),
                         "stdlib": lambda: args.slices / time_slices(theirs, offsets)},
                        args.rounds, lambda fn: fn())
        sm = run_rounds({"fastio": lambda: summed(ours), "stdlib": lambda: summed(theirs)},
                        args.rounds, lambda fn: fn())
        assert len(totals) == 1, "the two maps summed differently"
        slices_f, slices_s, sum_f, sum_s = sl["fastio"], sl["stdlib"], sm["fastio"], sm["stdlib"]

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
    rep = Report(__file__, args, path)
    rep.set(cache=cache_state(path), params={"size": size, "slices": args.slices,
                                             "rounds": args.rounds, "clock": args.clock})
    rep.figure("slices_fastio", "fastio.mmap: random 4 KiB slices", "slices/s", slices_f)
    rep.figure("slices_stdlib", "mmap.mmap: random 4 KiB slices", "slices/s", slices_s)
    rep.figure("sum_fastio", "fastio.mmap: np.frombuffer(m).sum()", "GB/s", sum_f)
    rep.figure("sum_stdlib", "mmap.mmap: np.frombuffer(m).sum()", "GB/s", sum_s)
    rep.ratio("slices", "fastio.mmap / mmap.mmap, random 4 KiB slices", "slices_fastio",
              "slices_stdlib")
    rep.ratio("sum", "fastio.mmap / mmap.mmap, sum of the map", "sum_fastio", "sum_stdlib")
    rep.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
