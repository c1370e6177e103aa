"""Shared memory: fastio against multiprocessing, measured in the same run.

    python benchmarks/bench_shm.py [--size-mib 256] [--array-mb 100] [--rounds 7]
        [--json PATH]

1. Create and fill a segment (default 256 MiB) with one byte value, then
   close and unlink it: ``multiprocessing.shared_memory.SharedMemory`` with
   numpy's fill (a memset through the mapping) against
   ``fastio.SharedMemory`` + ``fill()`` (pwrite through the descriptor), and
   ``fastio.SharedMemory(populate=True)`` + ``fill()`` (memset after
   MADV_POPULATE_WRITE). Goals: fastio no slower (ratio >= 1.0), populate
   at least 1.15x faster.
2. A second process attaches a segment of the same size and reads every
   page (numpy sum): the stdlib, fastio POSIX and fastio System V
   (reported in ms, the ratio against the stdlib).
3. A float64 array of --array-mb MB handed to a ProcessPoolExecutor worker
   that returns its sum: a plain ndarray (pickled, copied through a pipe)
   against a fastio.SharedArray (pickled by reference). Goal >= 10x.

Every phase runs as rounds (benchmarks/_common.run_rounds: a warm-up round,
then an order that rotates each round), so the noise of a shared machine hits all alike; times are
medians over the rounds and each ratio is the median of the per-round
ratios (min..max shown). No figure is hard-coded: every number printed is
measured here. Prints the machine, the kernel and /dev/shm's mount.
"""
import argparse
import concurrent.futures
import multiprocessing
import statistics
import sys
import time
from multiprocessing import shared_memory as stdlib_shm

import numpy as np

from _common import Report, _read, add_json_argument, machine_info, run_rounds  # noqa: I100

import fastio  # noqa: E402

MiB = 1 << 20


def print_machine():
    machine_info("/dev/shm")
    print(f"shmem   : THP for shmem {_read('/sys/kernel/mm/transparent_hugepage/shmem_enabled')}")


def rounds_of(fns, rounds):
    """{name: [seconds per round]} of each fn, in rotating rounds."""
    return run_rounds(fns, rounds)


REP = None  # the run's Report, made in main


def report(times, baseline, goals, phase):
    for name, ts in times.items():
        REP.figure(f"{phase}: {name}", f"{phase}: {name}", "ms", [t * 1e3 for t in ts],
                   higher_is_better=False)
    for name in times:
        if name != baseline:
            REP.ratio(f"{phase}: {name}", f"{phase}: {name} vs {baseline} (time)",
                      f"{phase}: {name}", f"{phase}: {baseline}")
    base = times[baseline]
    print(f"  {baseline:<34} {statistics.median(base) * 1e3:9.1f} ms")
    for name, ts in times.items():
        if name == baseline:
            continue
        ratios = [b / t for b, t in zip(base, ts)]
        goal = goals.get(name)
        verdict = "" if goal is None else (
            f"  goal >= {goal:.2f}x: {'met' if statistics.median(ratios) >= goal else 'NOT met'}")
        print(f"  {name:<34} {statistics.median(ts) * 1e3:9.1f} ms   "
              f"ratio {statistics.median(ratios):5.2f}x "
              f"({min(ratios):.2f}..{max(ratios):.2f}){verdict}")


# ---------------------------------------------------------------- 1. create and fill

def bench_create_fill(size, rounds):
    def stdlib():
        s = stdlib_shm.SharedMemory(create=True, size=size)
        np.frombuffer(s.buf, dtype=np.uint8).fill(1)
        s.close()
        s.unlink()

    def fastio_fill():
        s = fastio.SharedMemory(create=True, size=size)
        s.fill(1)
        s.close()

    def fastio_populate():
        s = fastio.SharedMemory(create=True, size=size, populate=True)
        s.fill(1)
        s.close()

    fns = {"multiprocessing.shared_memory": stdlib,
           "fastio.SharedMemory + fill": fastio_fill,
           "fastio populate=True + fill": fastio_populate}
    print(f"\n1. create, fill and unlink {size // MiB} MiB "
          f"(median of {rounds} rounds; ratio = stdlib / fastio)")
    report(rounds_of(fns, rounds), "multiprocessing.shared_memory",
           {"fastio.SharedMemory + fill": 1.0, "fastio populate=True + fill": 1.15},
           "create+fill")


# ---------------------------------------------------------------- 2. attach in another process

def _attach_and_read(kind, ref):
    t = time.perf_counter()
    if kind == "stdlib":
        s = stdlib_shm.SharedMemory(ref)
        total = int(np.frombuffer(s.buf, dtype=np.uint64).sum())
        s.close()
    elif kind == "posix":
        s = fastio.SharedMemory(ref)
        total = int(s.asarray(np.uint64).sum())
        s.close()
    else:
        s = fastio.SysVSharedMemory._attach_id(ref)
        total = int(s.asarray(np.uint64).sum())
        s.close()
    return time.perf_counter() - t, total


def bench_attach(size, rounds):
    # All three filled through their mapping, as the stdlib's is, so that
    # their pages are in the same state (mapped by this process) and the
    # figures compare the attach and read, not how the pages were filled.
    a = fastio.SharedMemory(create=True, size=size)
    a.asarray().fill(1)
    v = fastio.SysVSharedMemory(None, size)
    v.asarray().fill(1)
    ctx = multiprocessing.get_context("fork")
    # The stdlib attacher registers the segment with its resource tracker,
    # which would unlink it when the worker exits: attach to a copy of ours
    # made for it.
    s = stdlib_shm.SharedMemory(create=True, size=size)
    np.frombuffer(s.buf, dtype=np.uint8).fill(1)
    refs = {"stdlib": s.name, "posix": a.name, "sysv": v.id}
    times = {"multiprocessing.shared_memory attach": [],
             "fastio.SharedMemory attach": [], "fastio.SysVSharedMemory attach": []}
    keys = dict(zip(times, ("stdlib", "posix", "sysv")))
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as ex:
        fns = {name: (lambda k=keys[name]: ex.submit(_attach_and_read, k, refs[k]).result()[0])
               for name in times}
        # Timed in the worker: each fn returns the worker's seconds.
        times = run_rounds(fns, rounds, lambda fn: fn())
    s.close()
    s.unlink()
    a.close()
    v.close()
    print(f"\n2. a second process attaches {size // MiB} MiB and reads every page "
          f"(timed in the worker; ratio = stdlib / fastio)")
    report(times, "multiprocessing.shared_memory attach", {}, "attach+read")


# ---------------------------------------------------------------- 3. arrays to a pool

def _sum(arr):
    return float(arr.sum())


def bench_pool(nbytes, rounds):
    n = nbytes // 8
    plain = np.random.default_rng(1).random(n)
    shared = fastio.shared_array(n, np.float64)
    shared[:] = plain
    ctx = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as ex:
        # Warm up the worker (imports, first attach).
        assert ex.submit(_sum, shared).result() == ex.submit(_sum, plain).result()
        fns = {"plain ndarray (pickled)": lambda: ex.submit(_sum, plain).result(),
               "fastio.SharedArray": lambda: ex.submit(_sum, shared).result()}
        times = rounds_of(fns, rounds)
    print(f"\n3. a {nbytes / 1e6:.0f} MB float64 array to a ProcessPoolExecutor worker "
          f"that returns its sum (ratio = plain / shared)")
    report(times, "plain ndarray (pickled)", {"fastio.SharedArray": 10.0}, "array to worker")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mib", type=int, default=256)
    p.add_argument("--array-mb", type=int, default=100)
    p.add_argument("--rounds", type=int, default=7)
    add_json_argument(p, "shm")
    args = p.parse_args()
    print_machine()
    global REP
    REP = Report(__file__, args, "/dev/shm")
    REP.set(params={"segment": args.size_mib * MiB, "array_bytes": args.array_mb * 1000 * 1000,
                    "rounds": args.rounds,
                    "shmem_thp": _read("/sys/kernel/mm/transparent_hugepage/shmem_enabled")},
            cache="not applicable (memory only)")
    bench_create_fill(args.size_mib * MiB, args.rounds)
    bench_attach(args.size_mib * MiB, args.rounds)
    bench_pool(args.array_mb * 1000 * 1000, args.rounds)
    REP.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
