"""Random 4 KiB reads: fastio.read_blocks on every backend and depth against
fio and a plain Python os.pread loop, on the same file, in the same run.

Two cache states: 'cached' (the file in the page cache, buffered reads) and
'direct' (O_DIRECT: every read goes to the device). Every contender runs
once per round, in an order that rotates each round, after one untimed
warm-up round; the table gives the median IOPS with its min-max over the
rounds, and each ratio is the median of the per-round ratios (min-max).

The baseline is the fastest way a Python user writes it: a plain loop of
os.pread (cached) or os.preadv into one aligned buffer (O_DIRECT), with no
timing inside the loop. Latency percentiles of that loop come from a
separate run, labelled as such, whose per-call clock reads cost time of
their own; fastio's percentiles are taken in C per request (submit to reap),
fio's are its completion latency. CPU time per I/O is process CPU (the
thread pool's workers count). fio (Debian package `fio`) runs the same
pattern with its own engines; a missing fio is reported, not fatal.

    python benchmarks/bench_aio.py [--file F] [--size 1G] [--requests 100000]
        [--depths 1,32,128] [--modes cached,direct] [--submit-batch 8]
        [--rounds 5] [--fio-seconds 2] [--json PATH]

--submit-batch 1,8,64 runs read_blocks with each Queue(submit_batch=N):
requests handed to the backend per system call (fio's iodepth_batch_submit).
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import time

import numpy as np

from _common import (Report, add_json_argument, cache_state, evict, machine_info, make_file,
                     parse_size, run_rounds, stats, warm)
import fastio
from fastio import aio

BS = 4096


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def pct(values_ns, ps=(50, 99, 99.9)):
    if len(values_ns) == 0:
        return {p: float("nan") for p in ps}
    return {p: float(np.percentile(values_ns, p)) for p in ps}


def record(n, seconds, cpu, lat=None):
    lat = lat or {50: float("nan"), 99: float("nan"), 99.9: float("nan")}
    return {"ios": n, "iops": n / seconds, "cpu_us_per_io": cpu / n * 1e6,
            "p50_us": lat[50] / 1e3, "p99_us": lat[99] / 1e3, "p999_us": lat[99.9] / 1e3}


# ---------------------------------------------------------------- contenders

def run_pread_loop(path, offsets, direct):
    """The Python baseline at its best: a plain loop of os.pread (cached) or
    os.preadv into one aligned buffer (O_DIRECT), nothing else in the loop."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECT if direct else 0))
    buf = fastio.empty(BS, align=4096)
    offs = offsets.tolist()
    try:
        c0, t0 = cpu_seconds(), time.perf_counter()
        if direct:
            preadv, bufs = os.preadv, [buf]
            for off in offs:
                preadv(fd, bufs, off)
        else:
            pread = os.pread
            for off in offs:
                pread(fd, BS, off)
        t, c = time.perf_counter() - t0, cpu_seconds() - c0
    finally:
        os.close(fd)
    return record(len(offs), t, c)


def pread_loop_latency(path, offsets, direct):
    """A separate run of the same loop with a clock read around every call,
    for its latency percentiles only (the clock reads slow the loop)."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECT if direct else 0))
    lat = np.empty(len(offsets), np.int64)
    buf = fastio.empty(BS, align=4096)
    clock = time.perf_counter_ns
    try:
        for i, off in enumerate(offsets.tolist()):
            s = clock()
            if direct:
                os.preadv(fd, [buf], off)
            else:
                os.pread(fd, BS, off)
            lat[i] = clock() - s
    finally:
        os.close(fd)
    p = pct(lat)
    return {"p50_us": p[50] / 1e3, "p99_us": p[99] / 1e3, "p999_us": p[99.9] / 1e3}


def run_read_blocks(path, offsets, direct, backend, depth, submit_batch=8):
    """read_blocks on one backend: one C call for every request."""
    q = fastio.Queue(depth, backend, direct=direct, latency=True, submit_batch=submit_batch)
    f = fastio.open(path, direct=direct)
    out = fastio.empty((len(offsets), BS), align=4096)
    out.fill(0)  # fault the pages in before the clock starts
    try:
        aio._register(q, f.fileno(), out)
        c0, t0 = cpu_seconds(), time.perf_counter()
        fastio.read_blocks(f, offsets, BS, out=out, queue=q)
        t, c = time.perf_counter() - t0, cpu_seconds() - c0
        lat = q.percentiles((50, 99, 99.9))
    finally:
        f.close()
        q.close()
    return record(len(offsets), t, c, lat)


def run_fio(path, engine, depth, direct, seconds, size):
    fio = shutil.which("fio")
    if fio is None:
        return None
    cmd = [fio, "--name=bench", f"--filename={path}", "--rw=randread", f"--bs={BS}",
           f"--ioengine={engine}", f"--iodepth={depth}", f"--direct={int(direct)}",
           f"--size={size}", "--time_based", f"--runtime={seconds}", "--norandommap",
           "--randrepeat=0", "--invalidate=0", "--output-format=json",
           "--percentile_list=50:99:99.9"]
    if engine == "io_uring":
        cmd.append("--hipri=0")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"fio {engine} timed out")
    if proc.returncode != 0:
        err = (proc.stderr or proc.stdout).strip().splitlines()
        raise RuntimeError(f"fio {engine}: {err[-1] if err else 'failed'}")
    job = json.loads(proc.stdout[proc.stdout.index("{"):])["jobs"][0]
    rd = job["read"]
    n = rd["total_ios"]
    runtime = rd["runtime"] / 1e3
    clat = rd.get("clat_ns", {}).get("percentile", {})
    lat = {50: float(clat.get("50.000000", "nan")), 99: float(clat.get("99.000000", "nan")),
           99.9: float(clat.get("99.900000", "nan"))}
    cpu = (job["usr_cpu"] + job["sys_cpu"]) / 100 * runtime
    return record(n, runtime, cpu, lat)


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", default=os.path.join(os.environ.get("TMPDIR", "/var/tmp"),
                                                   "fastio_bench_aio.bin"))
    ap.add_argument("--size", default="1G")
    ap.add_argument("--requests", type=int, default=100000,
                    help="requests per cached run (direct runs do a fifth)")
    ap.add_argument("--depths", default="1,32,128")
    ap.add_argument("--modes", default="cached,direct")
    ap.add_argument("--backends", default=",".join(aio.BACKENDS))
    ap.add_argument("--submit-batch", default="8",
                    help="Queue(submit_batch=N) values, comma-separated (default 8)")
    ap.add_argument("--rounds", type=int, default=5, help="rotating rounds (default 5)")
    ap.add_argument("--fio-seconds", type=float, default=2)
    ap.add_argument("--keep", action="store_true", help="keep the test file")
    add_json_argument(ap, "aio")
    args = ap.parse_args()

    size = parse_size(args.size)
    depths = [int(d) for d in args.depths.split(",")]
    sbs = [int(v) for v in args.submit_batch.split(",")]
    if not os.path.exists(args.file) or os.path.getsize(args.file) != size:
        print(f"writing {size >> 20} MiB to {args.file} ...", flush=True)
        make_file(args.file, size)
    machine_info(args.file)
    rep = Report(__file__, args, args.file)
    info = fastio.backends()
    for b in info.values():
        state = "works" if b.available else f"unavailable: {b.reason}"
        print(f"backend : {b.name:9} {state}; features: {', '.join(sorted(b.features)) or '-'}")
    auto_cached = aio.resolve_backend("auto")[0]
    auto_direct = aio.resolve_backend("auto", direct=True)[0]
    print(f"auto    : {auto_cached} buffered, {auto_direct} O_DIRECT")
    have_fio = shutil.which("fio")
    if have_fio:
        v = subprocess.run([have_fio, "--version"], capture_output=True, text=True)
        print(f"fio     : {v.stdout.strip()}")
        rep.set(params={"fio": v.stdout.strip()})
    else:
        print("fio     : not installed (apt-get install fio): its rows are skipped")
    backends = [b for b in args.backends.split(",") if info[b].available]
    rng = np.random.default_rng(12345)
    nblocks = size // BS
    rep.set(params={"size": size, "block": BS, "depths": depths, "submit_batch": sbs,
                    "rounds": args.rounds, "fio_seconds": args.fio_seconds,
                    "backends": backends, "auto": [auto_cached, auto_direct]})
    caches = {}

    for mode in args.modes.split(","):
        direct = mode == "direct"
        n = args.requests // 5 if direct else args.requests
        offsets = rng.integers(0, nblocks, n) * BS
        if direct:
            evict(args.file)
        else:
            warm(args.file)
        caches[mode] = cache_state(args.file)
        print(f"\n== {mode}: {n} random {BS}-byte reads over {size >> 20} MiB; "
              f"{caches[mode]}; {args.rounds} rounds")
        contenders = [("os.pread loop", lambda: run_pread_loop(args.file, offsets, direct))]
        meta = {"os.pread loop": ("python", 1)}
        for depth in depths:
            for b in backends:
                for sb in sbs:
                    name = f"read_blocks {b} d{depth}" + (f" sb={sb}" if len(sbs) > 1 else "")
                    meta[name] = (b, depth)
                    contenders.append((name, lambda b=b, d=depth, sb=sb: run_read_blocks(
                        args.file, offsets, direct, b, d, sb)))
            if have_fio:
                for engine in ("io_uring", "libaio", "psync"):
                    if engine == "psync" and depth != 1:
                        continue
                    name = f"fio {engine} d{depth}"
                    try:
                        run_fio(args.file, engine, depth, direct, 0.2, size)
                    except RuntimeError as e:
                        print(f"  {name}: {e}")
                        continue
                    meta[name] = (engine, depth)
                    contenders.append((name, lambda e=engine, d=depth: run_fio(
                        args.file, e, d, direct, args.fio_seconds, size)))
        recs = run_rounds(contenders, args.rounds, lambda fn: fn())
        if direct:
            cache_after = cache_state(args.file)
        lat = pread_loop_latency(args.file, offsets, direct)
        rows = []
        for name, rs in recs.items():
            fid = f"{mode}: {name}"
            med = {k: stats([r[k] for r in rs])["median"]
                   for k in ("cpu_us_per_io", "p50_us", "p99_us", "p999_us")}
            if name == "os.pread loop":
                med.update(lat)
                med["latency_note"] = "percentiles from a separate run timed per call"
            rep.figure(fid, f"{mode}: {name}", "IOPS", [r["iops"] for r in rs],
                       backend=meta[name][0], depth=meta[name][1], **med)
            rows.append((name, rs, med))
        base = [r["iops"] for r in recs["os.pread loop"]]
        print(f"  {'contender':<28} {'IOPS median (min-max)':>30} {'p50 us':>7} {'p99 us':>7} "
              f"{'p99.9':>7} {'CPU us/IO':>9} {'vs os.pread (min-max)':>22}")
        for name, rs, med in rows:
            io = stats([r["iops"] for r in rs])
            ra = stats([r["iops"] / b for r, b in zip(rs, base)])
            print(f"  {name:<28} {io['median']:>12,.0f} ({io['min']:,.0f}-{io['max']:,.0f})"
                  f" {med['p50_us']:7.1f} {med['p99_us']:7.1f} {med['p999_us']:7.1f}"
                  f" {med['cpu_us_per_io']:9.2f} {ra['median']:>8.2f}x ({ra['min']:.2f}-"
                  f"{ra['max']:.2f})")
        print("  (os.pread loop percentiles: a separate run timed per call)")
        if direct:
            caches[mode] += f" before; {cache_after} after"

        # The ratios that README and docs cite, per round.
        for depth in depths:
            for b in backends:
                name = f"read_blocks {b} d{depth}" + (f" sb={sbs[0]}" if len(sbs) > 1 else "")
                if name in recs:
                    rep.ratio(f"{mode}: {b} d{depth} / pread", f"{mode}: read_blocks {b} "
                              f"depth {depth} / os.pread loop", f"{mode}: {name}",
                              f"{mode}: os.pread loop")
            for b, engine in (("io_uring", "io_uring"), ("linux_aio", "libaio")):
                name = f"read_blocks {b} d{depth}" + (f" sb={sbs[0]}" if len(sbs) > 1 else "")
                if name in recs and f"fio {engine} d{depth}" in recs:
                    rep.ratio(f"{mode}: {b} d{depth} / fio", f"{mode}: read_blocks {b} "
                              f"depth {depth} / fio {engine}", f"{mode}: {name}",
                              f"{mode}: fio {engine} d{depth}")
    rep.set(cache="; ".join(f"{m}: {c}" for m, c in caches.items()))
    rep.finish()
    if not args.keep:
        os.unlink(args.file)


if __name__ == "__main__":
    main()
