"""Random 4 KiB reads: fastio.read_blocks on every backend and depth against
fio and the Python os.pread loop, on the same file, in the same run.

Two cache states: 'cached' (the file in the page cache, buffered reads) and
'direct' (O_DIRECT: every read goes to the device). For each contender the
table gives IOPS, MB/s, latency percentiles (submit to reap, measured in C
per request for fastio; fio's completion latency; per call for os.pread),
CPU time per I/O (process CPU: the thread pool's workers count), and the
ratio to the os.pread loop. fio (Debian package `fio`) runs the same
pattern with its own engines; a missing fio is reported, not fatal.

    python benchmarks/bench_aio.py [--file F] [--size 1G] [--requests 100000]
        [--depths 1,32,128] [--modes cached,direct] [--submit-batch 8]

--submit-batch 1,8,64 runs read_blocks with each Queue(submit_batch=N):
requests handed to the backend per system call (fio's iodepth_batch_submit).
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import cache_state, evict, machine_info, make_file, parse_size, warm  # noqa: E402,E501

import fastio  # noqa: E402
from fastio import aio  # noqa: E402

BS = 4096


def table(rows, headings):
    cells = [headings] + [[str(c) for c in r] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(headings))]
    for line in cells:
        print(f"  {line[0]:<{widths[0]}}" + "".join(f"  {c:>{w}}" for c, w in
                                                  zip(line[1:], widths[1:])))


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def pct(values_ns, ps=(50, 99, 99.9)):
    if len(values_ns) == 0:
        return {p: float("nan") for p in ps}
    return {p: float(np.percentile(values_ns, p)) for p in ps}


def record(name, n, seconds, cpu, lat, backend="", depth=""):
    return {"contender": name, "backend": backend, "depth": depth, "ios": n,
            "iops": n / seconds, "mbps": n * BS / seconds / 1e6,
            "p50_us": lat[50] / 1e3, "p99_us": lat[99] / 1e3, "p999_us": lat[99.9] / 1e3,
            "cpu_us_per_io": cpu / n * 1e6}


# ---------------------------------------------------------------- contenders

def run_pread_loop(path, offsets, direct):
    """The Python baseline: os.pread (cached) or os.preadv into an aligned
    buffer (O_DIRECT), one call per request, timed per call."""
    flags = os.O_RDONLY | (os.O_DIRECT if direct else 0)
    fd = os.open(path, flags)
    lat = np.empty(len(offsets), np.int64)
    buf = fastio.empty(BS, align=4096)
    clock = time.perf_counter_ns
    offs = offsets.tolist()
    try:
        c0, t0 = cpu_seconds(), time.perf_counter()
        if direct:
            preadv = os.preadv
            bufs = [buf]
            for i, off in enumerate(offs):
                s = clock()
                preadv(fd, bufs, off)
                lat[i] = clock() - s
        else:
            pread = os.pread
            for i, off in enumerate(offs):
                s = clock()
                pread(fd, BS, off)
                lat[i] = clock() - s
        t, c = time.perf_counter() - t0, cpu_seconds() - c0
    finally:
        os.close(fd)
    return record("os.pread loop", len(offs), t, c, pct(lat), "python", 1)


def run_read_blocks(path, offsets, direct, backend, depth, submit_batch=8, label=False):
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
        name = q.backend
    finally:
        f.close()
        q.close()
    suffix = f" sb={submit_batch}" if label else ""
    return record(f"read_blocks {name}{suffix}", len(offsets), t, c, lat, name, depth)


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
        return {"contender": f"fio {engine}", "error": "timed out"}
    if proc.returncode != 0:
        err = (proc.stderr or proc.stdout).strip().splitlines()
        return {"contender": f"fio {engine}", "error": err[-1] if err else "failed"}
    job = json.loads(proc.stdout[proc.stdout.index("{"):])["jobs"][0]
    rd = job["read"]
    n = rd["total_ios"]
    runtime = rd["runtime"] / 1e3
    clat = rd.get("clat_ns", {}).get("percentile", {})
    lat = {50: float(clat.get("50.000000", "nan")), 99: float(clat.get("99.000000", "nan")),
           99.9: float(clat.get("99.900000", "nan"))}
    cpu = (job["usr_cpu"] + job["sys_cpu"]) / 100 * runtime
    return record(f"fio {engine}", n, runtime, cpu, lat, engine, depth)


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
    ap.add_argument("--fio-seconds", type=float, default=3)
    ap.add_argument("--keep", action="store_true", help="keep the test file")
    ap.add_argument("--json", help="also write every record (backend included) here")
    args = ap.parse_args()

    size = parse_size(args.size)
    depths = [int(d) for d in args.depths.split(",")]
    sbs = [int(v) for v in args.submit_batch.split(",")]
    if not os.path.exists(args.file) or os.path.getsize(args.file) != size:
        print(f"writing {size >> 20} MiB to {args.file} ...", flush=True)
        make_file(args.file, size)
    machine_info(args.file)
    info = fastio.backends()
    for b in info.values():
        state = "works" if b.available else f"unavailable: {b.reason}"
        print(f"backend : {b.name:9} {state}; features: {', '.join(sorted(b.features)) or '-'}")
    print(f"auto    : {aio.resolve_backend('auto')} buffered, "
          f"{aio.resolve_backend('auto', direct=True)} O_DIRECT")
    have_fio = shutil.which("fio")
    if have_fio:
        v = subprocess.run([have_fio, "--version"], capture_output=True, text=True)
        print(f"fio     : {v.stdout.strip()}")
    else:
        print("fio     : not installed (apt-get install fio): its rows are skipped")
    backends = [b for b in args.backends.split(",") if info[b].available]
    rng = np.random.default_rng(12345)
    nblocks = size // BS
    summary = {}

    for mode in args.modes.split(","):
        direct = mode == "direct"
        n = args.requests // 5 if direct else args.requests
        offsets = rng.integers(0, nblocks, n) * BS
        if direct:
            evict(args.file)
        else:
            warm(args.file)
        print(f"\n== {mode}: {n} random {BS}-byte reads over {size >> 20} MiB; "
              f"{cache_state(args.file)}")
        rows = [run_pread_loop(args.file, offsets, direct)]
        base = rows[0]["iops"]
        for depth in depths:
            for b in backends:
                for sb in sbs:
                    rows.append(run_read_blocks(args.file, offsets, direct, b, depth, sb,
                                                label=len(sbs) > 1))
            if have_fio:
                for engine in ("io_uring", "libaio", "psync"):
                    if engine == "psync" and depth != 1:
                        continue
                    r = run_fio(args.file, engine, depth, direct, args.fio_seconds, size)
                    if r is not None and "error" in r:
                        print(f"  fio {engine} depth {depth}: {r['error']}")
                    elif r is not None:
                        rows.append(r)
        for r in rows:
            r["x_pread"] = r["iops"] / base
        table(
            [[r["contender"], r["depth"], f"{r['iops']:,.0f}", f"{r['mbps']:,.0f}",
              f"{r['p50_us']:.1f}", f"{r['p99_us']:.1f}", f"{r['p999_us']:.1f}",
              f"{r['cpu_us_per_io']:.2f}", f"{r['x_pread']:.2f}x"] for r in rows],
            ["contender", "depth", "IOPS", "MB/s", "p50 us", "p99 us", "p99.9 us",
             "CPU us/IO", "vs os.pread"])
        summary[mode] = rows

    # The goals of the issue, as ratios measured in this run.
    print("\n== ratios")
    def find(mode, contender, depth):
        for r in summary.get(mode, []):
            if r["contender"] == contender and r["depth"] == depth:
                return r
        return None

    def fastest(mode, depth):
        rs = [r for r in summary.get(mode, [])
              if r["contender"].startswith("read_blocks") and r["depth"] == depth]
        return max(rs, key=lambda r: r["iops"]) if rs else None

    d = fastest("direct", 32)
    if d:
        fio_u = find("direct", "fio io_uring", 32)
        pl = find("direct", "os.pread loop", 1)
        if fio_u:
            print(f"O_DIRECT depth 32: read_blocks {d['backend']} / fio io_uring = "
                  f"{d['iops'] / fio_u['iops']:.2f} (goal >= 0.9)")
        print(f"O_DIRECT depth 32: read_blocks {d['backend']} / os.pread loop = "
              f"{d['iops'] / pl['iops']:.2f} (goal >= 3.5)")
    auto, _ = aio.resolve_backend("auto")
    for depth in depths:
        c = find("cached", f"read_blocks {auto}", depth)
        if c:
            pl = find("cached", "os.pread loop", 1)
            print(f"cached depth {depth}: read_blocks auto ({auto}) / os.pread loop = "
                  f"{c['iops'] / pl['iops']:.2f} (goal >= 2)")
    for b, engine in (("io_uring", "io_uring"), ("linux_aio", "libaio"), ("threads", "psync")):
        for depth in depths:
            mine = find("cached", f"read_blocks {b}", depth)
            theirs = find("cached", f"fio {engine}", depth)
            if mine and theirs:
                print(f"cached depth {depth}: CPU per I/O read_blocks {b} - fio {engine} = "
                      f"{mine['cpu_us_per_io'] - theirs['cpu_us_per_io']:+.2f} us "
                      f"(goal <= +0.3)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(summary, fh, indent=1)
    if not args.keep:
        os.unlink(args.file)


if __name__ == "__main__":
    main()
