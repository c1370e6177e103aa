"""Read a whole cached file into memory: fastio.read_file (each method) against
np.fromfile, f.readinto(bytearray) and f.readinto(aligned fastio.empty).

    PYTHONPATH=. python benchmarks/bench_read_file.py [--size-mib 1024] [--rounds 7]

Makes the file (deterministic, non-constant bytes), reads it once so that it
is in the page cache, then times every contender in interleaved rounds (so
that a noisy neighbour hurts all of them alike). Prints the median and best GB/s of each and the
ratio of medians against np.fromfile, the baseline. "fresh" means new memory
each round (the first touch of its pages is part of the cost); "reused" means
one buffer allocated and touched before timing (only the copy is measured).
"""
import argparse
import os
import tempfile

import numpy as np

# _common first: it puts this checkout's fastio first on sys.path.
from _common import (cache_state, machine_info, make_file, median, print_table,
                     run_rounds, warm)
import fastio
from fastio import fileio


def readinto_all(path, buf):
    with open(path, "rb", buffering=0) as f, memoryview(buf) as view:
        view = view.cast("B")
        done = 0
        while done < len(view):
            n = f.readinto(view[done:])
            if not n:
                break
            done += n
    return done


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--dir", default=tempfile.gettempdir())
    ap.add_argument("--keep", action="store_true", help="keep the file afterwards")
    args = ap.parse_args()
    size = args.size_mib << 20
    path = os.path.join(args.dir, f"fastio_bench_read_{args.size_mib}m.bin")

    machine_info(path)
    if not os.path.exists(path) or os.path.getsize(path) != size:
        make_file(path, size)
    warm(path)
    print(f"size    : {size / 2**20:.0f} MiB; cache: {cache_state(path)}")
    print(f"read_file: threads from {fileio.THREADS_MIN_SIZE >> 20} MiB, "
          f"chunk {fileio.THREAD_CHUNK >> 20} MiB, {fileio._ncpus()} threads")

    reused_ba = bytearray(size)
    reused_al = fastio.empty(size)
    reused_al[:] = 1  # touch every page
    print(f"bytearray address % 4096 = {np.frombuffer(reused_ba, np.uint8).ctypes.data % 4096}; "
          f"fastio.empty address % 4096 = {reused_al.ctypes.data % 4096}")

    contenders = [("np.fromfile (baseline)", lambda: np.fromfile(path, np.uint8))]
    for method in fileio.READ_FILE_METHODS:
        contenders.append((f"fastio.read_file {method}",
                           lambda m=method: fastio.read_file(path, method=m)))
    contenders += [
        ("readinto fresh bytearray", lambda: readinto_all(path, bytearray(size))),
        ("readinto fresh fastio.empty", lambda: readinto_all(path, fastio.empty(size))),
        ("readinto reused bytearray", lambda: readinto_all(path, reused_ba)),
        ("readinto reused fastio.empty", lambda: readinto_all(path, reused_al)),
    ]
    times = run_rounds(contenders, args.rounds)
    # Check the answer once (outside the timing).
    assert np.array_equal(fastio.read_file(path, method="auto"), np.fromfile(path, np.uint8))

    base = median(times["np.fromfile (baseline)"])
    print()
    print_table(times, [("median GB/s", lambda ts: size / median(ts) / 1e9, ".2f"),
                        ("best GB/s", lambda ts: size / min(ts) / 1e9, ".2f"),
                        ("vs fromfile", lambda ts: base / median(ts), ".2fx")])
    ba = median(times["readinto reused bytearray"])
    al = median(times["readinto reused fastio.empty"])
    print(f"\naligned vs bytearray (reused, copy only): {ba / al:.2f}x")
    if not args.keep:
        os.unlink(path)


if __name__ == "__main__":
    main()
