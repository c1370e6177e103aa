"""Cost per call of a 4 KiB positional read: fastio.pread against os.pread and
os.preadv.

    PYTHONPATH=. python benchmarks/bench_pread.py [--calls 200000] [--rounds 7]

A cached file of 64 MiB; every contender reads the same 4 KiB blocks (random
offsets, page-aligned) in interleaved rounds. fastio.pread and os.preadv read
into a preallocated buffer; os.pread returns a new bytes object each call,
which is what a user of it pays. Prints ns per call (median and best round)
and the ratio against os.pread, the baseline.
"""
import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import fastio  # noqa: E402


def machine_info():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"machine : {platform.node()} {platform.machine()}, {cpu}, "
          f"{os.cpu_count()} cpus")
    print(f"kernel  : {platform.release()}; Python {platform.python_version()}, "
          f"numpy {np.__version__}, fastio {fastio.__version__}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--block", type=int, default=4096)
    args = ap.parse_args()
    machine_info()

    size = 64 << 20
    block = args.block
    fd_, path = tempfile.mkstemp(prefix="fastio_bench_pread_")
    os.close(fd_)
    try:
        with open(path, "wb") as f:
            f.write(os.urandom(size))
        fd = os.open(path, os.O_RDONLY)
        os.pread(fd, size, 0)  # into the page cache
        rng = random.Random(1)
        offsets = [rng.randrange(size // block) * block for _ in range(args.calls)]
        print(f"file    : {size >> 20} MiB, cached (read once before timing); "
              f"{args.calls} calls of {block} bytes per round, {args.rounds} rounds")

        ba = bytearray(block)
        buf = fastio.Buffer(block)
        iov = [ba]
        pread, os_pread, os_preadv = fastio.pread, os.pread, os.preadv

        def run_fastio_bytearray():
            for off in offsets:
                pread(fd, ba, off)

        def run_fastio_buffer():
            for off in offsets:
                pread(fd, buf, off)

        def run_os_pread():
            for off in offsets:
                os_pread(fd, block, off)

        def run_os_preadv():
            for off in offsets:
                os_preadv(fd, iov, off)

        def run_empty_loop():
            for off in offsets:
                pass

        contenders = [("os.pread (baseline)", run_os_pread),
                      ("os.preadv into bytearray", run_os_preadv),
                      ("fastio.pread into bytearray", run_fastio_bytearray),
                      ("fastio.pread into fastio.Buffer", run_fastio_buffer),
                      ("(empty loop)", run_empty_loop)]
        times = {name: [] for name, _ in contenders}
        for _ in range(args.rounds):
            for name, fn in contenders:
                t0 = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - t0) / args.calls * 1e9)
        os.close(fd)
    finally:
        os.unlink(path)

    base = statistics.median(times["os.pread (baseline)"])
    base_best = min(times["os.pread (baseline)"])
    print(f"\n{'contender':34} {'median ns':>10} {'best ns':>9} {'median ratio':>13} "
          f"{'best ratio':>11}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:34} {med:10.0f} {min(ts):9.0f} {med / base:12.2f}x "
              f"{min(ts) / base_best:10.2f}x")
    print("(ratio = time per call / os.pread's; < 1 is faster; the target is <= 1.1. "
          "On a noisy machine the best round is the steadier figure.)")


if __name__ == "__main__":
    main()
