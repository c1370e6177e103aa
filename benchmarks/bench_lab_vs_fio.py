"""Does the lab's own overhead distort what it measures? fastio.lab against fio.

Two checks, each on the same file in the same run, lab and fio alternating:

  1. random 4 KiB O_DIRECT reads at depth 32: lab 'aio.io_uring' vs fio
     --ioengine=io_uring (IOPS ratio; target within 10%). While fastio's
     io_uring backend is not built, this says so, and the same workload is
     compared at depth 1 instead: lab 'psync' vs fio psync (O_DIRECT).
  2. sequential reads of a cached file at 1 MiB: lab 'psync' vs fio
     --ioengine=psync (bandwidth ratio; target within 10%).

Both sides read into a page-aligned buffer: the lab's psync uses
fastio.empty (4096-aligned), so fio gets --iomem_align=4096. (fio's default
buffer is malloc'ed and not page-aligned; on the machine this was written on
that alone halves fio's cached sequential figure, as it does the lab's
read.bytearray.)

Each side runs --rounds times (default 7) alternating; the median of each
is compared. Ratio = lab / fio (1.00: same figure). Needs fio on PATH
(apt-get install fio); without it the script says so and exits 0.

    python benchmarks/bench_lab_vs_fio.py [--size 1G] [--dir DIR] [--rounds 7]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastio  # noqa: E402
from fastio import lab  # noqa: E402

try:
    from _common import machine_info  # benchmarks/_common.py
except ImportError:  # run from elsewhere
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _common import machine_info


def fio(path, size, *, rw, bs, engine, depth, direct):
    cmd = ["fio", "--name=lab", f"--filename={path}", f"--rw={rw}", f"--bs={bs}",
           f"--ioengine={engine}", f"--iodepth={depth}", f"--direct={int(direct)}",
           f"--size={size}", "--invalidate=0", "--output-format=json", "--thread",
           "--randrepeat=0", "--iomem_align=4096"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise RuntimeError(f"fio failed ({' '.join(cmd)}): {p.stderr.strip() or p.stdout[-500:]}")
    out = p.stdout[p.stdout.index("{"):]
    job = json.loads(out)["jobs"][0]["read"]
    return {"iops": job["iops"], "bw": job["bw_bytes"],
            "p50": job["clat_ns"]["percentile"].get("50.000000"),
            "p99": job["clat_ns"]["percentile"].get("99.000000")}


def lab_once(method, path, size, *, pattern, bs, depth, cache):
    res = lab.run([method], file=path, size=size, pattern=pattern, block_size=bs,
                  depth=depth, cache=cache, repeat=1)
    rec = next(r for r in res.records if r["method"] == method)
    if rec["status"] != "ok":
        raise RuntimeError(f"lab {method}: {rec['status']}: {rec['reason']}")
    if rec["cache"].get("ok") is False:
        print(f"  warning: cache check failed for {method}: {rec['cache']}")
    return {"iops": rec["iops"], "bw": rec["throughput_Bps"],
            "p50": rec["latency_ns"]["p50"], "p99": rec["latency_ns"]["p99"]}


def compare(title, rounds, lab_fn, fio_fn, key):
    labs, fios = [], []
    for _ in range(rounds):
        labs.append(lab_fn())
        fios.append(fio_fn())
    lm = statistics.median(x[key] for x in labs)
    fm = statistics.median(x[key] for x in fios)
    lb, fb = max(x[key] for x in labs), max(x[key] for x in fios)
    unit, scale = ("IOPS", 1) if key == "iops" else ("MB/s", 1e-6)
    lp50 = statistics.median(x["p50"] for x in labs)
    fp50 = statistics.median(x["p50"] for x in fios if x["p50"] is not None)
    print(f"{title}")
    print(f"  lab {lm * scale:12.0f} {unit}  p50 {lp50 / 1e3:8.1f} us")
    print(f"  fio {fm * scale:12.0f} {unit}  p50 {fp50 / 1e3:8.1f} us")
    print(f"  ratio lab/fio: {lm / fm:.2f}  (medians of {rounds} alternating rounds; "
          f"target 0.90..1.10)")
    # On a shared machine a short run can lose its core to another process:
    # the best round of each side is the figure least touched by that.
    print(f"  best lab {lb * scale:.0f} / best fio {fb * scale:.0f} {unit}: {lb / fb:.2f}")
    return lm / fm


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1G",
                    help="test file size (default 1G: fio reports runtime in whole ms)")
    ap.add_argument("--direct-size", default="128M",
                    help="bytes (from the start of the file) read by the O_DIRECT random "
                         "check (default 128M)")
    ap.add_argument("--dir", default=None, help="directory of the test file (default $TMPDIR)")
    ap.add_argument("--rounds", type=int, default=7, help="alternating rounds (default 7)")
    args = ap.parse_args(argv)
    if shutil.which("fio") is None:
        print("fio is not installed (apt-get install fio): nothing to compare against")
        return 0
    size = lab.parse_size(args.size)
    dsize = min(size, lab.parse_size(args.direct_size))
    path = lab.make_file(size, args.dir)
    try:
        machine_info(path)
        print(subprocess.run(["fio", "--version"], capture_output=True, text=True).stdout.strip())
        print()
        uring = fastio.backends().get("io_uring")
        try:
            if uring is not None and uring.available:
                compare("1. random 4 KiB O_DIRECT reads, depth 32: lab aio.io_uring vs fio io_uring",
                        args.rounds,
                        lambda: lab_once("aio.io_uring", path, dsize, pattern="rand", bs="4k",
                                         depth=32, cache="direct"),
                        lambda: fio(path, dsize, rw="randread", bs="4k", engine="io_uring",
                                    depth=32, direct=True), "iops")
            else:
                why = uring.reason if uring is not None else "unknown"
                print(f"1. io_uring, depth 32: not measured: fastio's io_uring backend is "
                      f"unavailable ({why})")
                compare("1'. random 4 KiB O_DIRECT reads, depth 1: lab psync vs fio psync",
                        args.rounds,
                        lambda: lab_once("psync", path, dsize, pattern="rand", bs="4k", depth=1,
                                         cache="direct"),
                        lambda: fio(path, dsize, rw="randread", bs="4k", engine="psync",
                                    depth=1, direct=True), "iops")
        except (OSError, RuntimeError) as e:
            print(f"1. not measured: {e}")
        print()
        lab.warm_cache(path)
        compare("2. sequential cached reads, 1 MiB: lab psync vs fio psync", args.rounds,
                lambda: lab_once("psync", path, size, pattern="seq", bs="1M", depth=1, cache="warm"),
                lambda: fio(path, size, rw="read", bs="1M", engine="psync", depth=1,
                            direct=False), "bw")
    finally:
        os.unlink(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
