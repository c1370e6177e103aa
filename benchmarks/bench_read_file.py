"""Read a whole cached file into memory: fastio.read_file against np.fromfile
(both into fresh memory), and the reads alone into memory touched beforehand.

    python benchmarks/bench_read_file.py [--size 1G] [--rounds 7] [--json PATH]

Makes the file (deterministic, non-constant bytes), reads it once so that it
is in the page cache, then times every contender in rounds whose order
rotates, after one untimed warm-up round. Two parts, both printed with the
median and the min-max over the rounds, and ratios as the median of the
per-round ratios (with their min-max):

1. "fresh memory": what a user calls. np.fromfile (the baseline) and
   fastio.read_file each allocate a new array per call, so each figure is
   the first touch of fresh memory (page faults, the kernel zeroing pages)
   plus the copy out of the page cache. read_file is reported with one
   thread (method='pread') and with its threads (method='threads', the
   thread count in the label; 'auto' picks it from 16 MiB on several
   CPUs), each against np.fromfile. Page sizes: numpy asks for transparent
   huge pages on large arrays (madvise), fastio.read_file's Buffer too; the
   THP faults per call (from /proc/vmstat) are recorded, so a row that got
   4 KiB pages is visible. On this VM the first touch is a large share of
   the figure: the floor row "np.empty + fill" measures it alone.
2. "reused memory": the I/O alone. One numpy array, allocated and touched
   before timing, is the destination of every contender: f.readinto on an
   unbuffered file (the baseline; one read(2) per call), fastio.readinto_full
   (one thread), and fastio._core.pread_parallel (what read_file's 'threads'
   method runs; internal API, named as such). Same memory, same page size,
   no zero fill.
"""
import argparse
import os
import tempfile
import time

import numpy as np

from _common import (Report, add_json_argument, cache_state, machine_info, make_file,
                     parse_size, run_rounds, warm)
import fastio
from fastio import fileio


def vmstat(name):
    with open("/proc/vmstat") as f:
        for line in f:
            key, value = line.split()
            if key == name:
                return int(value)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="1G", help="file size (default 1G)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--dir", default=tempfile.gettempdir())
    ap.add_argument("--keep", action="store_true", help="keep the file afterwards")
    add_json_argument(ap, "read_file")
    args = ap.parse_args()
    size = parse_size(args.size)
    path = os.path.join(args.dir, f"fastio_bench_read_{size}.bin")

    if not os.path.exists(path) or os.path.getsize(path) != size:
        make_file(path, size)
    machine_info(path)
    rep = Report(__file__, args, path)
    warm(path)
    nthreads = max(1, min(fileio._ncpus(), fileio.THREADS_MAX))
    auto = fileio._choose(size)
    chunk = min(fileio.THREAD_CHUNK, max(64 * 1024, -(-size // (nthreads * 4))))
    chunk = -(-chunk // 65536) * 65536
    print(f"size    : {size / 2**20:.0f} MiB; cache: {cache_state(path)}; {args.rounds} rounds")
    print(f"read_file: 'auto' chooses {auto!r} here; 'threads' uses {nthreads} threads, "
          f"chunk {chunk >> 10} KiB")
    rep.set(params={"size": size, "rounds": args.rounds, "threads": nthreads,
                    "auto_chooses": auto, "chunk": chunk},
            cache=cache_state(path))

    thp = {}

    def counted(name, fn):
        def once():
            before = vmstat("thp_fault_alloc")
            t0 = time.perf_counter()
            out = fn()
            seconds = time.perf_counter() - t0
            del out
            thp.setdefault(name, []).append(vmstat("thp_fault_alloc") - before)
            return seconds
        return name, once

    def call(fn):
        return fn()

    # ---- 1. fresh memory: allocation + first touch + copy, per call
    def fresh_floor():
        a = np.empty(size, np.uint8)
        a.fill(0)
        return a

    fresh = [
        counted("np.fromfile", lambda: np.fromfile(path, np.uint8)),
        counted("read_file, 1 thread (method='pread')",
                lambda: fastio.read_file(path, method="pread")),
        counted(f"read_file, {nthreads} threads (method='threads')",
                lambda: fastio.read_file(path, method="threads")),
        counted("np.empty + fill(0): first touch alone", fresh_floor),
    ]
    t_fresh = run_rounds(fresh, args.rounds, call)

    # ---- 2. reused memory: the reads alone, into one touched array
    dest = np.empty(size, np.uint8)
    dest.fill(1)

    def f_readinto():
        with open(path, "rb", buffering=0) as f:
            n = f.readinto(dest)
            while n < size:  # read(2) may return less; loop as a careful user would
                m = f.readinto(memoryview(dest)[n:])
                if not m:
                    break
                n += m
        return n

    def readinto_full():
        fd = os.open(path, os.O_RDONLY)
        try:
            return fastio.readinto_full(fd, dest)
        finally:
            os.close(fd)

    def parallel():
        fd = os.open(path, os.O_RDONLY)
        try:
            return fastio._core.pread_parallel(fd, dest, 0, nthreads, chunk)
        finally:
            os.close(fd)

    reused = [
        counted("f.readinto (unbuffered) into a reused array", f_readinto),
        counted("readinto_full, 1 thread, reused array", readinto_full),
        counted(f"pread_parallel, {nthreads} threads, reused array", parallel),
    ]
    t_reused = run_rounds(reused, args.rounds, call)
    # Check the answers once (outside the timing).
    ref = np.fromfile(path, np.uint8)
    assert np.array_equal(fastio.read_file(path, method="threads"), ref)
    assert np.array_equal(dest, ref)
    del ref
    rep.set(cache=cache_state(path))

    ids = {"np.fromfile": "fromfile",
           "read_file, 1 thread (method='pread')": "read_file_1t",
           f"read_file, {nthreads} threads (method='threads')": "read_file_threads",
           "np.empty + fill(0): first touch alone": "first_touch",
           "f.readinto (unbuffered) into a reused array": "readinto_reused",
           "readinto_full, 1 thread, reused array": "readinto_full_reused",
           f"pread_parallel, {nthreads} threads, reused array": "parallel_reused"}
    for times in (t_fresh, t_reused):
        for name, ts in times.items():
            rep.figure(ids[name], name, "GB/s", [size / t / 1e9 for t in ts],
                       thp_faults_per_call=thp[name][-len(ts):])
    rep.ratio("read_file_1t", "read_file 1 thread / np.fromfile (fresh memory)",
              "read_file_1t", "fromfile")
    rep.ratio("read_file_threads", f"read_file {nthreads} threads / np.fromfile (fresh memory)",
              "read_file_threads", "fromfile")
    rep.ratio("readinto_full_reused", "readinto_full 1 thread / f.readinto (reused memory)",
              "readinto_full_reused", "readinto_reused")
    rep.ratio("parallel_reused", f"pread_parallel {nthreads} threads / f.readinto "
              "(reused memory)", "parallel_reused", "readinto_reused")
    ft = rep.data["figures"]["first_touch"]["median"]
    rep.note(f"fresh-memory rows include the first touch of {size >> 20} MiB of new memory "
             f"(np.empty + fill alone: {ft:.2f} GB/s here); reused rows measure the copy "
             "out of the page cache alone")
    print()
    for name in list(t_fresh) + list(t_reused):
        print(f"  THP faults per call, {name}: {thp[name][-args.rounds:]}")
    rep.finish()
    if not args.keep:
        os.unlink(path)


if __name__ == "__main__":
    main()
