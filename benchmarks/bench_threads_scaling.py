"""Throughput of 2 threads against 1 on a cached file: fastio.pread, mmap
slicing and read_blocks (one Queue per thread), on a free-threaded CPython
with the GIL off and, from the same script, on a default build.

    python benchmarks/bench_threads_scaling.py [--threads 2] [--calls 100000]
        [--rounds 5] [--compare PYTHON] [--json PATH]

Each thread does the same work (--calls 4 KiB reads at random page-aligned
offsets of a 64 MiB file in the page cache), so with N threads the process
does N times the work: the figure is calls per second of the whole process
(N * calls / wall time from a barrier to the last join), and the ratio is N
threads' figure over 1 thread's, in the same round (per-round ratios, median
and min-max over the rounds; the order of the contenders rotates each
round). On a machine with N free cores a ratio near N means the calls run in
parallel; on a default build (with the GIL) Python-level loops cannot
exceed about 1, since only the I/O itself runs with the GIL released.

Workloads, per thread (each thread's loop reads only its own locals, see
below):
  pure-Python loop         the same loop over the offsets without any I/O: the
    (control)              control, which scales only where the interpreter
                           lets threads run in parallel and the machine has
                           the cores free
  os.pread, one fd         os.pread(fd, 4096, off), one fd shared by the
    (reference)            threads: the stdlib's call
  os.pread, fd per thread  the same, each thread on its own open() of the file
  fastio.pread, one fd     fastio.pread(fd, buf, off) into its own bytearray
  fastio.pread, fd per     the same, each thread on its own open() of the file
    thread
  fastio.pread, fd from    fastio.pread on one fd that each thread's loop reads
    a shared closure cell  from a closure variable of the function that made
                           the threads (what this script did before): on
                           3.13t every read of a closure variable locks its
                           cell (LOAD_DEREF -> PyCell_GetRef takes the cell's
                           critical section), so a cell shared by the threads
                           serializes them a little on every call
  mmap slicing, one map    m[off:off + 4096] on ONE fastio.mmap shared by the
                           threads (each slice takes the map's critical section)
  mmap slicing, own map    the same on a fastio.mmap per thread
  read_blocks              fastio.read_blocks(fd, offsets, 4096, out=..., queue=q)
                           with a Queue per thread (depth 64, backend auto): one
                           C call per thread, the GIL released inside

The machine's ceiling, measured in the same rounds: benchmarks/c/pread_threads.c
(compiled here with cc) does the same random 4 KiB preads from C threads
(5x the calls, the clock inside the program, from a barrier to the last
join): with one fd shared, an fd per thread (own open()), a dup()ed fd per
thread (own fd, shared open file description) and forked processes (one
description, single-threaded fd tables). The ratios "fraction of C" divide
fastio.pread's figure by C's with the same fd arrangement and thread count,
round by round. Without a C compiler those rows are left out, with a note.

--compare PYTHON runs this script again under another interpreter (e.g. the
default build when this one is free-threaded) with the same arguments, and
records its figures beside these ones (ids prefixed "compare_") in the same
JSON. The interpreter, whether it is free-threaded and whether the GIL was
on are recorded for both, and beside each N-thread figure the CPUs the
process actually kept busy meanwhile (its CPU seconds per wall second): on a
machine whose cores other work occupies, that is below N, and so is the
ratio, whatever the code.
"""
import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time

import numpy as np

from _common import (Report, add_json_argument, cache_state, compile_c, machine_info,
                     make_file, run_rounds, warm)
import fastio

BS = 4096


def interpreter():
    ft = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    kind = "free-threaded, GIL off" if ft and not gil else (
        "free-threaded, GIL on" if ft else "default build (GIL)")
    return {"version": sys.version.split()[0] + ("t" if ft else ""), "free_threaded": ft,
            "gil_enabled": gil, "kind": kind}


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def in_threads(nthreads, make_work, cpus=None):
    """Calls per second of nthreads threads each running make_work(i)()
    (which returns its call count), timed from a barrier to the last join.
    cpus (a list): gets the process's CPU seconds per wall second meanwhile,
    how many CPUs the run actually had (a loaded machine gives fewer)."""
    works = [make_work(i) for i in range(nthreads)]
    counts = [0] * nthreads
    start = threading.Barrier(nthreads + 1)

    def run(i):
        start.wait()
        counts[i] = works[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(nthreads)]
    for t in threads:
        t.start()
    start.wait()
    c0, t0 = cpu_seconds(), time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if cpus is not None:
        cpus.append((cpu_seconds() - c0) / wall)
    return sum(counts) / wall


C_MODES = [("shared", "one fd shared"), ("own", "fd per thread (own open)"),
           ("dup", "dup()ed fd per thread (shared description)"),
           ("fork", "processes sharing one description (fork)")]
# C's workers do 5x the calls of a Python thread: each C run then lasts about
# 0.1 s (at ~2 M preads/s), well above its timer's and its threads' start-up noise.
C_CALLS_FACTOR = 5


def c_rate(exe, path, nworkers, mode, calls, cpus):
    """Calls per second of benchmarks/c/pread_threads.c (its own clock, from
    a barrier to the last join); appends the CPUs it kept busy to cpus."""
    p = subprocess.run([exe, path, str(nworkers), mode, str(calls), str(BS)],
                       capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise RuntimeError(f"pread_threads {mode} failed: {p.stderr.strip()}")
    rate, busy = p.stdout.split()
    cpus.append(float(busy))
    return float(rate)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calls", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--compare", metavar="PYTHON", default=None,
                    help="run the same script under this interpreter too and record "
                         "its figures beside these")
    add_json_argument(ap, "threads_scaling")
    args = ap.parse_args()
    nt = args.threads

    size = 64 << 20
    fd_, path = tempfile.mkstemp(prefix="fastio_bench_threads_")
    os.close(fd_)
    tmp = tempfile.mkdtemp(prefix="fastio_bench_threads_c_")
    try:
        machine_info(path)
        me = interpreter()
        print(f"python  : {me['version']} ({me['kind']})")
        exe, why = compile_c("pread_threads.c", tmp)
        if exe is None:
            print(f"C rows left out: {why}")
        make_file(path, size)
        warm(path)
        fd = os.open(path, os.O_RDONLY)
        own_fds = [os.open(path, os.O_RDONLY) for _ in range(nt)]
        rng = random.Random(1)
        offsets = [[rng.randrange(size // BS) * BS for _ in range(args.calls)]
                   for _ in range(nt)]
        shared_map = fastio.mmap(fd, 0, access=fastio.ACCESS_READ)
        own_maps = [fastio.mmap(fd, 0, access=fastio.ACCESS_READ) for _ in range(nt)]
        queues = [fastio.Queue(64) for _ in range(nt)]
        outs = [np.empty((args.calls, BS), np.uint8) for _ in range(nt)]
        for o in outs:
            o.fill(0)  # fault the pages in before any clock starts
        offs_arr = [np.array(o, dtype=np.int64) for o in offsets]
        print(f"size    : {size >> 20} MiB; cache: {cache_state(path)}; {args.calls} calls "
              f"of {BS} bytes per thread, 1 and {nt} threads, {args.rounds} rounds; "
              f"read_blocks backend: {queues[0].backend}")

        # Every loop below takes what it uses as default arguments, i.e.
        # locals of run(): a closure variable is a cell, and on 3.13t each
        # read of a cell locks it (PyCell_GetRef), so a cell that all the
        # threads read (fd of this function) would serialize them on every
        # call. fastio_pread_cell keeps that form, to show its cost.
        def preads(fds, pread, second):
            """pread(fd, second(), off) for each offset: os.pread with the
            size (BS), fastio.pread with a bytearray of its own per thread."""
            def make(i):
                def run(offs=offsets[i], pread=pread, arg=second(), fd=fds[i]):
                    for off in offs:
                        pread(fd, arg, off)
                    return len(offs)
                return run
            return make

        def fastio_pread_cell(i):
            offs, pread, buf = offsets[i], fastio.pread, bytearray(BS)

            def run():
                for off in offs:
                    pread(fd, buf, off)  # fd: a cell shared by the threads
                return len(offs)
            return run

        def slicing(maps):
            def make(i):
                def run(offs=offsets[i], m=maps[i]):
                    for off in offs:
                        m[off:off + BS]
                    return len(offs)
                return run
            return make

        def read_blocks(i):
            def run(q=queues[i], out=outs[i], offs=offs_arr[i], fd=fd):
                fastio.read_blocks(fd, offs, BS, out=out, queue=q)
                return len(offs)
            return run

        def python_loop(i):
            def run(offs=offsets[i]):
                x = 0
                for off in offs:
                    x ^= off >> 12
                return len(offs)
            return run

        shared_fds = [fd] * nt
        workloads = [("python_loop", "pure-Python loop (control)", python_loop),
                     ("os_pread", "os.pread, one fd (reference)",
                      preads(shared_fds, os.pread, lambda: BS)),
                     ("os_pread_own", "os.pread, fd per thread",
                      preads(own_fds, os.pread, lambda: BS)),
                     ("fastio_pread", "fastio.pread, one fd",
                      preads(shared_fds, fastio.pread, lambda: bytearray(BS))),
                     ("fastio_pread_own", "fastio.pread, fd per thread",
                      preads(own_fds, fastio.pread, lambda: bytearray(BS))),
                     ("fastio_pread_cell", "fastio.pread, one fd read from a shared "
                      "closure cell", fastio_pread_cell),
                     ("mmap_slice_shared", "mmap slicing, one map",
                      slicing([shared_map] * nt)),
                     ("mmap_slice_own", "mmap slicing, own map", slicing(own_maps)),
                     ("read_blocks", "read_blocks, Queue per thread", read_blocks)]
        contenders = []
        cpus = {}
        for wid, label, make in workloads:
            for n in (1, nt):
                cpus[(wid, n)] = []
                contenders.append((f"{label} x{n}", lambda n=n, make=make, c=cpus[(wid, n)]:
                                   in_threads(n, make, c)))
        c_rows = []
        if exe is not None:
            for mode, what in C_MODES:
                wid, label = f"c_{mode}", f"C pread, {what}"
                c_rows.append((wid, label))
                for n in (1, nt):
                    cpus[(wid, n)] = []
                    contenders.append((f"{label} x{n}", lambda n=n, mode=mode,
                                       c=cpus[(wid, n)]: c_rate(
                                           exe, path, n, mode, args.calls * C_CALLS_FACTOR, c)))
        rates = run_rounds(contenders, args.rounds, once=lambda fn: fn())
        os.close(fd)
        for f in own_fds:
            os.close(f)
        shared_map.close()
        for m in own_maps:
            m.close()
        for q in queues:
            q.close()
        rep = Report(__file__, args, path)
        rep.set(cache=cache_state(path),
                params={"file_size": size, "block": BS, "calls_per_thread": args.calls,
                        "threads": nt, "rounds": args.rounds,
                        "read_blocks_backend": queues[0].backend,
                        "interpreter": f"{me['version']} ({me['kind']})",
                        "c_ceiling": ("benchmarks/c/pread_threads.c, "
                                      f"{args.calls * C_CALLS_FACTOR} calls per worker")
                        if exe is not None else f"left out: {why}"})
    finally:
        os.unlink(path)
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\n{me['version']} ({me['kind']}): calls per second of the process, "
          f"median (min-max) over {args.rounds} rounds")
    for wid, label in [(w, lab) for w, lab, _ in workloads] + c_rows:
        one, many = rates[f"{label} x1"], rates[f"{label} x{nt}"]
        rep.figure(f"{wid}_1", f"{label}, 1 thread [{me['version']}]", "calls/s", one)
        rep.figure(f"{wid}_{nt}", f"{label}, {nt} threads [{me['version']}]", "calls/s", many)
        rep.ratio(f"{wid}_scaling", f"{label}: {nt} threads vs 1 [{me['version']}, "
                  f"{me['kind']}]", f"{wid}_{nt}", f"{wid}_1")
        # Not a fastio figure: what the machine gave the run (warmup excluded).
        rep.figure(f"{wid}_cpus_{nt}", f"{label}, {nt} threads: CPUs busy (process CPU "
                   f"s per wall s) [{me['version']}]", "CPUs", cpus[(wid, nt)][-args.rounds:])
    if c_rows:
        # What fraction of the machine's ceiling fastio.pread gets, same fd
        # arrangement and thread count, round by round.
        for wid, c_wid, what in (("fastio_pread", "c_shared", "one fd"),
                                 ("fastio_pread_own", "c_own", "fd per thread")):
            for n in (1, nt):
                rep.ratio(f"{wid}_{n}_of_c", f"fastio.pread, {what}, {n} thread"
                          f"{'s' if n > 1 else ''}: fraction of C's [{me['version']}]",
                          f"{wid}_{n}", f"{c_wid}_{n}")
    if args.compare:
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tf:
            other_json = tf.name
        try:
            cmd = [args.compare, os.path.abspath(__file__), "--threads", str(nt),
                   "--calls", str(args.calls), "--rounds", str(args.rounds),
                   "--json", other_json]
            print(f"\n--- the same under {args.compare} ---", flush=True)
            subprocess.run(cmd, check=True)
            with open(other_json) as fh:
                other = json.load(fh)
        finally:
            os.unlink(other_json)
        rep.set(params={"compare": f"{other['params']['interpreter']}, read_blocks "
                                   f"backend {other['params']['read_blocks_backend']}, "
                                   f"numpy {other['machine']['numpy']}, {other['date']}"})
        for fid, f in other["figures"].items():
            rep.data["figures"]["compare_" + fid] = f
        for rid, r in other["ratios"].items():
            r = dict(r, fastio="compare_" + r["fastio"], baseline="compare_" + r["baseline"])
            rep.data["ratios"]["compare_" + rid] = r
        print()
    rep.note(f"{nt}/1-thread throughput ratios; the machine has "
             f"{len(os.sched_getaffinity(0))} usable CPUs, load average "
             f"{os.getloadavg()[0]:.1f} at the end")
    rep.finish()


if __name__ == "__main__":
    main()
