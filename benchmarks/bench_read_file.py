"""Read a whole cached file into memory: fastio.read_file (each method) against
np.fromfile, f.readinto(bytearray) and f.readinto(aligned fastio.empty).

    PYTHONPATH=. python benchmarks/bench_read_file.py [--size-mib 1024] [--rounds 7]

Makes the file (random bytes), reads it once so that it is in the page cache,
then times every contender in interleaved rounds (so that a noisy neighbour
hurts all of them alike). Prints the median and best GB/s of each and the
ratio of medians against np.fromfile, the baseline. "fresh" means new memory
each round (the first touch of its pages is part of the cost); "reused" means
one buffer allocated and touched before timing (only the copy is measured).
"""
import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import fastio  # noqa: E402
from fastio import fileio  # noqa: E402


def machine_info(path):
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    thp = "?"
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            thp = f.read().strip()
    except OSError:
        pass
    fs = "?"
    try:
        fs = subprocess.run(["stat", "-f", "-c", "%T", path], capture_output=True,
                            text=True).stdout.strip()
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    print(f"machine : {platform.node()} {platform.machine()}, {cpu}")
    print(f"cpus    : {os.cpu_count()} (usable {len(os.sched_getaffinity(0))}), "
          f"RAM {mem:.1f} GiB, THP {thp}")
    print(f"kernel  : {platform.release()}; Python {platform.python_version()}, "
          f"numpy {np.__version__}, fastio {fastio.__version__}")
    print(f"file    : {path} on {fs}")


def cache_state(path):
    if shutil.which("fincore"):
        out = subprocess.run(["fincore", "-b", "-n", "-o", "RES,SIZE", str(path)],
                             capture_output=True, text=True).stdout.split()
        if len(out) == 2:
            res, size = int(out[0]), int(out[1])
            return f"{res / max(size, 1) * 100:.1f}% resident in the page cache (fincore)"
    return "read once before timing (residency not measured: no fincore)"


def make_file(path, size):
    block = os.urandom(16 << 20)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, len(block))
            f.write(block[:n])
            left -= n


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

    machine_info(args.dir)
    if not os.path.exists(path) or os.path.getsize(path) != size:
        make_file(path, size)
    np.fromfile(path, np.uint8)  # into the page cache
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
    times = {name: [] for name, _ in contenders}
    for _ in range(args.rounds):
        for name, fn in contenders:
            t0 = time.perf_counter()
            out = fn()
            times[name].append(time.perf_counter() - t0)
            del out
    # Check the answer once (outside the timing).
    assert np.array_equal(fastio.read_file(path, method="auto"), np.fromfile(path, np.uint8))

    base = statistics.median(times["np.fromfile (baseline)"])
    print(f"\n{'contender':34} {'median GB/s':>11} {'best GB/s':>10} {'vs fromfile':>12}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:34} {size / med / 1e9:11.2f} {size / min(ts) / 1e9:10.2f} "
              f"{base / med:11.2f}x")
    ba = statistics.median(times["readinto reused bytearray"])
    al = statistics.median(times["readinto reused fastio.empty"])
    print(f"\naligned vs bytearray (reused, copy only): {ba / al:.2f}x")
    if not args.keep:
        os.unlink(path)


if __name__ == "__main__":
    main()
