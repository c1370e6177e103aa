"""Reads that choose their path: read_blocks / read_file with mode='auto'
against their baselines, each in the same rounds (issue 14).

    python benchmarks/bench_autoread.py [--size 1G] [--requests 200000]
        [--cold-requests 20000] [--rounds 5] [--json PATH]

Four parts, every contender of a part timed in rounds whose order rotates,
after one untimed warm-up round; figures as median (min-max) over the
rounds, ratios as the median of the per-round ratios:

1. cached random 4 KiB reads into an array touched before the clock:
   read_blocks(mode='auto') (which samples the page cache and takes the
   copy path: C threads, one per usable CPU) against a plain os.pread loop
   (nothing else in the loop, no clock per call); mode='copy' on one thread
   and mode='queue' (io_uring where it runs, depth 32) beside it, and
   mode='auto' with its worker threads kept on the caller's descriptor
   (fastio.blocks.OWN_FDS_MIN_BLOCKS raised for that contender), to show
   what their own descriptors give (docs/readwrite.md), and mode='auto'
   with every block pread (fastio.blocks.MAPCOPY_MIN_BLOCKS raised: no map
   of the file made for the call, csrc/mapcopy.c), the path before the map.
2. a warm file read whole: read_file(mode='auto') against
   benchmarks/c/limit_read.c (a C program compiled here: two threads pread
   4 MiB chunks into fresh anonymous memory with MADV_HUGEPAGE, the clock
   from the map to the join), the ceiling with no Python at all.
3. the same file cold (evicted before every read, checked by mincore):
   read_file(uncached=True) against read_file() (buffered), as 'auto' picks
   (the copy path for uncached=True, the queue for a cold buffered read),
   then both on the copy path
   (its threads pread 4 MiB chunks, kernel readahead) and the queue path
   ('auto' takes it for a cold file); the page cache's residency after each
   is recorded: 0 after the uncached reads is the promise.
4. cold random 4 KiB reads (evicted before every run): mode='auto' against
   'copy' and 'queue', to show why 'auto' leaves cold data to the queue.

The machine may be shared: compare the ratios (same rounds), not the
absolute figures, and say so with --note.
"""
import argparse
import os
import shutil
import subprocess
import tempfile
import time

import numpy as np

from _common import (Report, add_json_argument, cache_state, compile_c, evict, machine_info, make_file,
                     parse_size, residency, run_rounds, warm)
import fastio

BS = 4096


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="1G", help="file size (default 1G)")
    ap.add_argument("--requests", type=int, default=200000,
                    help="cached random reads per run (default 200000)")
    ap.add_argument("--cold-requests", type=int, default=20000,
                    help="cold random reads per run (default 20000)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dir", default=tempfile.gettempdir())
    ap.add_argument("--parts", default="1,2,3,4")
    add_json_argument(ap, "autoread")
    args = ap.parse_args()
    size = parse_size(args.size)
    parts = set(args.parts.split(","))
    path = os.path.join(args.dir, "fastio_bench_autoread.bin")
    machine_info(path if os.path.exists(path) else args.dir)
    rep = Report(__file__, args, args.dir)
    ncpu = len(os.sched_getaffinity(0))
    rep.set(params={"size": size, "requests": args.requests,
                    "cold_requests": args.cold_requests, "rounds": args.rounds,
                    "block": BS, "cpus_usable": ncpu})
    make_file(path, size)
    tmp = tempfile.mkdtemp(prefix="fastio-bench-")
    rng = np.random.default_rng(0)
    try:
        warm(path)
        rep.set(cache=f"parts 1-2 warm ({cache_state(path)}); parts 3-4 evicted "
                      f"before every run (POSIX_FADV_DONTNEED, checked by mincore)")
        if "1" in parts:
            part_cached_random(rep, path, size, args, rng, ncpu)
        if "2" in parts:
            part_whole_file(rep, path, size, args, tmp, ncpu)
        if "3" in parts:
            part_uncached(rep, path, size, args)
        if "4" in parts:
            part_cold_random(rep, path, size, args, rng, ncpu)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        os.unlink(path)
    rep.finish()


# ---------------------------------------------------------------- part 1

def part_cached_random(rep, path, size, args, rng, ncpu):
    n = args.requests
    offsets = rng.integers(0, size // BS, n) * BS
    offs_list = offsets.tolist()
    out = fastio.empty((n, BS), align=4096)
    out.fill(1)  # touched before any clock
    fd = os.open(path, os.O_RDONLY)
    chosen = {}
    mapped = {}

    def pread_loop():
        pread = os.pread
        t0 = time.perf_counter()
        for off in offs_list:
            pread(fd, BS, off)
        return time.perf_counter() - t0

    def blocks(shared_fd=False, pread_only=False, **kw):
        def run():
            st = {}
            saved = {k: getattr(fastio.blocks, k, None)
                     for k in ("OWN_FDS_MIN_BLOCKS", "MAPCOPY_MIN_BLOCKS")}
            if shared_fd:
                fastio.blocks.OWN_FDS_MIN_BLOCKS = 1 << 62
            if pread_only:
                fastio.blocks.MAPCOPY_MIN_BLOCKS = 1 << 62
            try:
                t0 = time.perf_counter()
                fastio.read_blocks(fd, offsets, BS, out=out, stats=st, **kw)
                t = time.perf_counter() - t0
            finally:
                for k, v in saved.items():
                    if v is not None:
                        setattr(fastio.blocks, k, v)
            chosen[kw.get("mode", "auto") + str(kw.get("threads", ""))] = st["mode"]
            if not (shared_fd or pread_only):
                mapped[kw.get("mode", "auto") + str(kw.get("threads", ""))] = st.get("mapped")
            return t
        return run

    print(f"\n1. cached random {BS // 1024} KiB reads, {n} per run, {ncpu} usable CPUs")
    contenders = {"os.pread loop": pread_loop,
                  "read_blocks(mode='auto')": blocks(mode="auto"),
                  "read_blocks(mode='copy', threads=1)": blocks(mode="copy", threads=1),
                  "read_blocks(mode='queue'), depth 32": blocks(mode="queue", depth=32)}
    own_fds = hasattr(fastio.blocks, "OWN_FDS_MIN_BLOCKS")
    if own_fds:
        contenders["read_blocks(mode='auto'), one shared fd"] = blocks(mode="auto",
                                                                       shared_fd=True,
                                                                       pread_only=True)
    map_copy = hasattr(fastio.blocks, "MAPCOPY_MIN_BLOCKS")
    if map_copy:
        contenders["read_blocks(mode='auto'), pread only"] = blocks(mode="auto",
                                                                    pread_only=True)
    try:
        times = run_rounds(contenders, args.rounds, once=lambda fn: fn())
    finally:
        os.close(fd)
    ids = {"os.pread loop": "cached_pread_loop", "read_blocks(mode='auto')": "cached_auto",
           "read_blocks(mode='copy', threads=1)": "cached_copy_1t",
           "read_blocks(mode='queue'), depth 32": "cached_queue_d32",
           "read_blocks(mode='auto'), one shared fd": "cached_auto_shared_fd",
           "read_blocks(mode='auto'), pread only": "cached_auto_pread"}
    rep.figures_from_times(times, "k reads/s", lambda t: n / t / 1e3, ids=ids)
    rep.ratio("cached_auto_vs_pread", "cached random 4 KiB: read_blocks(mode='auto') / "
              "os.pread loop", "cached_auto", "cached_pread_loop")
    rep.ratio("cached_queue_vs_pread", "cached random 4 KiB: read_blocks(mode='queue') d32 / "
              "os.pread loop", "cached_queue_d32", "cached_pread_loop")
    rep.ratio("cached_copy1_vs_pread", "cached random 4 KiB: read_blocks(mode='copy', "
              "threads=1) / os.pread loop", "cached_copy_1t", "cached_pread_loop")
    if own_fds:
        rep.ratio("cached_own_vs_shared_fd", "cached random 4 KiB: read_blocks(mode='auto') "
                  "preads, a descriptor per worker / one shared descriptor",
                  "cached_auto_pread" if map_copy else "cached_auto", "cached_auto_shared_fd")
    if map_copy:
        rep.ratio("cached_auto_pread_vs_pread", "cached random 4 KiB: read_blocks(mode='auto') "
                  "with its threads' preads only / os.pread loop", "cached_auto_pread",
                  "cached_pread_loop")
        rep.ratio("cached_map_vs_pread_threads", "cached random 4 KiB: read_blocks(mode='auto') "
                  "/ the same with preads only (no map made for the call)", "cached_auto",
                  "cached_auto_pread")
    rep.note(f"part 1: mode='auto' chose {chosen.get('auto')!r} on the warm file "
             f"({ncpu} threads), {mapped.get('auto')} of {n} blocks copied out of a map "
             f"made for the call")


# ---------------------------------------------------------------- part 2

def part_whole_file(rep, path, size, args, tmp, ncpu):
    exe, why = compile_c("limit_read.c", tmp)
    if exe is None:
        rep.note(f"part 2 skipped: {why}")
        return
    chosen = {}

    def limit():
        out = subprocess.run([exe, path, "2"], check=True, capture_output=True, text=True)
        return float(out.stdout)

    def read_file():
        st = {}
        t0 = time.perf_counter()
        a = fastio.read_file(path, stats=st)
        t = time.perf_counter() - t0
        del a
        chosen.update(st)
        return t

    print(f"\n2. a warm {size >> 20} MiB file read whole into fresh memory")
    times = run_rounds({"limit_read.c, 2 threads, huge pages": limit,
                        "read_file(mode='auto')": read_file},
                       args.rounds, once=lambda fn: fn())
    rep.figures_from_times(times, "GB/s", lambda t: size / t / 1e9,
                           ids={"limit_read.c, 2 threads, huge pages": "whole_limit_c",
                                "read_file(mode='auto')": "whole_auto"})
    rep.ratio("whole_auto_vs_limit", "warm whole file: read_file(mode='auto') / "
              "C two-thread read into huge pages", "whole_auto", "whole_limit_c")
    rep.note(f"part 2: read_file(mode='auto') ran {chosen}")


# ---------------------------------------------------------------- part 3

def part_uncached(rep, path, size, args):
    after = {}

    def cold(label, **kw):
        def run():
            evict(path)
            assert residency(path) == 0.0, "the file could not be evicted"
            t0 = time.perf_counter()
            a = fastio.read_file(path, **kw)
            t = time.perf_counter() - t0
            del a
            after.setdefault(label, []).append(residency(path))
            return t
        return run

    contenders = {
        "auto, buffered": cold("auto, buffered"),
        "auto, uncached": cold("auto, uncached", uncached=True),
        "copy, buffered": cold("copy, buffered", mode="copy"),
        "copy, uncached": cold("copy, uncached", mode="copy", uncached=True),
        "queue, buffered": cold("queue, buffered", mode="queue"),
        "queue, uncached": cold("queue, uncached", mode="queue", uncached=True),
    }
    print(f"\n3. a cold {size >> 20} MiB file read whole, uncached=True against buffered")
    times = run_rounds(contenders, args.rounds, once=lambda fn: fn())
    ids = {k: "cold_seq_" + k.replace(", ", "_") for k in contenders}
    rep.figures_from_times(times, "GB/s", lambda t: size / t / 1e9, ids=ids)
    rep.ratio("uncached_auto_vs_buffered", "cold sequential read_file: uncached=True / "
              "buffered (mode='auto' both)", ids["auto, uncached"], ids["auto, buffered"])
    rep.ratio("uncached_copy_vs_buffered", "cold sequential read_file: uncached=True / "
              "buffered (copy path)", ids["copy, uncached"], ids["copy, buffered"])
    rep.ratio("uncached_queue_vs_buffered", "cold sequential read_file: uncached=True / "
              "buffered (queue path)", ids["queue, uncached"], ids["queue, buffered"])
    for label, fr in after.items():
        rep.note(f"part 3: page cache after '{label}' (mincore, of the file): "
                 f"max {max(fr) * 100:.1f}%, min {min(fr) * 100:.1f}% over {len(fr)} runs")
    evict(path)
    warm(path)


# ---------------------------------------------------------------- part 4

def part_cold_random(rep, path, size, args, rng, ncpu):
    n = args.cold_requests
    offsets = rng.integers(0, size // BS, n) * BS
    out = fastio.empty((n, BS), align=4096)
    out.fill(1)
    chosen = {}

    def blocks(**kw):
        def run():
            evict(path)
            st = {}
            t0 = time.perf_counter()
            fastio.read_blocks(path, offsets, BS, out=out, stats=st, **kw)
            t = time.perf_counter() - t0
            chosen[kw.get("mode")] = st["mode"]
            return t
        return run

    print(f"\n4. cold random {BS // 1024} KiB reads, {n} per run")
    times = run_rounds({"auto": blocks(mode="auto"), "copy": blocks(mode="copy"),
                        "queue": blocks(mode="queue", depth=32)},
                       args.rounds, once=lambda fn: fn())
    rep.figures_from_times(times, "k reads/s", lambda t: n / t / 1e3,
                           ids={"auto": "cold_auto", "copy": "cold_copy",
                                "queue": "cold_queue_d32"})
    rep.ratio("cold_auto_vs_copy", "cold random 4 KiB: read_blocks(mode='auto') / "
              "mode='copy'", "cold_auto", "cold_copy")
    rep.ratio("cold_queue_vs_copy", "cold random 4 KiB: read_blocks(mode='queue') d32 / "
              "mode='copy'", "cold_queue_d32", "cold_copy")
    rep.note(f"part 4: mode='auto' chose {chosen.get('auto')!r} on the cold file")
    warm(path)


if __name__ == "__main__":
    main()
