"""Read many whole files: fastio.read_files against Python loops, a thread
pool and fio, on the same files, warm and cold, in the same run.

    python benchmarks/bench_read_files.py [--small 10000x16K] [--large 1000x1M]
        [--rounds 3] [--depth 64] [--cases warm,cold] [--json PATH]

Two sets of files (made once under --dir, named as fio names its own,
bench.0.<i>, so that fio reads the very same files), each read warm (every
file in the page cache: read once before) and cold (every file evicted with
fsync + POSIX_FADV_DONTNEED before each timed call, checked with mincore on a
sample of the files). Contenders, in rounds whose order rotates after one
untimed warm-up round:

- read_files, io_uring (linked openat/read/close on direct descriptors) and
  threads (C worker threads), both at --depth, each allocating its output;
- a Python loop of ``open(p, 'rb').read()`` (the baseline);
- a loop of ``os.open`` / ``os.read`` / ``os.close``;
- ``ThreadPoolExecutor(8).map`` of ``open(p, 'rb').read()``;
- cold only: fio, ioengine=io_uring at the same depth, --nrfiles with
  --openfiles=depth, one read of the whole file per file (bs = file size),
  --invalidate=0 (this script evicts first, as for the others). fio's figure
  is its own IOPS (its start-up is not counted), one read per file: files/s.

Before every timed call the memory the call will allocate is touched and
freed (the lab's "recycled" policy): every contender, loop or read_files,
starts on recently freed pages, whatever ran before it.

Figures are files per second (median and min-max over the rounds); ratios
are per-round (> 1: read_files faster).
"""
import argparse
import concurrent.futures
import json
import os
import shutil
import subprocess
import tempfile
import time

from _common import (Report, add_json_argument, machine_info, parse_size, residency,
                     run_rounds)
import fastio


def make_set(directory, count, size):
    """count files of size bytes (distinct contents), fio's names."""
    os.makedirs(directory, exist_ok=True)
    paths = [os.path.join(directory, f"bench.0.{i}") for i in range(count)]
    block = os.urandom(size + 4096)
    for i, p in enumerate(paths):
        if os.path.exists(p) and os.path.getsize(p) == size:
            continue
        with open(p, "wb") as f:
            k = i % 4096
            f.write(block[k:k + size])
    os.sync()
    return paths


def evict_all(paths):
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def warm_all(paths):
    for p in paths:
        with open(p, "rb") as f:
            f.read()


def prime(nbytes):
    """Touch then free nbytes of memory (the lab's recycled policy): the
    next allocation, whoever makes it, gets these recently freed pages."""
    from fastio.lab.runner import _prime
    _prime(nbytes + (4 << 20))


def sample_residency(paths, k=50):
    step = max(1, len(paths) // k)
    got = [residency(p) for p in paths[::step]]
    return sum(got) / len(got)


def py_loop(paths):
    out = []
    for p in paths:
        with open(p, "rb") as f:
            out.append(f.read())
    return out


def os_loop(paths, size):
    out = []
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            out.append(os.read(fd, size + 1))
        finally:
            os.close(fd)
    return out


def _read1(p):
    with open(p, "rb") as f:
        return f.read()


def run_fio(directory, count, size, depth):
    fio = shutil.which("fio")
    cmd = [fio, "--name=bench", f"--directory={directory}", f"--nrfiles={count}",
           f"--filesize={size}", f"--bs={size}", "--rw=read", "--ioengine=io_uring",
           f"--iodepth={depth}", f"--openfiles={depth}", "--file_service_type=sequential",
           "--invalidate=0", "--thread", "--output-format=json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"fio failed: {proc.stderr.strip()[-300:]}")
    text = proc.stdout[proc.stdout.index("{"):]
    job = json.loads(text)["jobs"][0]["read"]
    if job["total_ios"] < count:
        raise RuntimeError(f"fio read {job['total_ios']} files, not {count}")
    return job["iops"]  # one read per file: files/s


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", default="10000x16K", help="COUNTxSIZE (default 10000x16K)")
    ap.add_argument("--large", default="1000x1M", help="COUNTxSIZE (default 1000x1M)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--depth", type=int, default=64)
    ap.add_argument("--cases", default="warm,cold")
    ap.add_argument("--dir", default=tempfile.gettempdir())
    ap.add_argument("--keep", action="store_true", help="keep the files afterwards")
    add_json_argument(ap, "read_files")
    args = ap.parse_args()
    cases = [c for c in args.cases.split(",") if c]
    root = os.path.join(args.dir, "fastio_bench_read_files")
    machine_info(root if os.path.exists(root) else args.dir)
    rep = Report(__file__, args, args.dir)
    have_fio = shutil.which("fio")
    fio_version = "not installed"
    if have_fio:
        fio_version = subprocess.run([have_fio, "--version"], capture_output=True,
                                     text=True).stdout.strip()
    print(f"fio     : {fio_version}")
    rep.set(params={"rounds": args.rounds, "depth": args.depth, "fio": fio_version,
                    "small": args.small, "large": args.large, "cases": cases})
    caches = []
    pool = concurrent.futures.ThreadPoolExecutor(8)
    try:
        for spec in (args.small, args.large):
            count, size = spec.lower().split("x")
            count, size = int(count), parse_size(size)
            label = f"{count}x{size >> 10}K"
            d = os.path.join(root, label)
            paths = make_set(d, count, size)
            files = fastio.read_files(paths)
            assert all(bytes(files[i]) == open(p, "rb").read()
                       for i, p in list(enumerate(paths))[::max(1, count // 100)])
            for case in cases:
                contenders = [
                    ("read_files io_uring",
                     lambda: fastio.read_files(paths, backend="io_uring", depth=args.depth)),
                    ("read_files threads",
                     lambda: fastio.read_files(paths, backend="threads", depth=args.depth)),
                    ("open().read() loop", lambda: py_loop(paths)),
                    ("os.open/read/close loop", lambda: os_loop(paths, size)),
                    ("ThreadPoolExecutor(8)", lambda: list(pool.map(_read1, paths))),
                ]
                if case == "cold" and have_fio:
                    contenders.append(("fio io_uring", None))
                res_seen = []

                def once(fn, case=case, paths=paths, count=count, size=size, d=d):
                    if case == "cold":
                        evict_all(paths)
                        res_seen.append(sample_residency(paths))
                    else:
                        warm_all(paths[:: max(1, count // 1000)])
                    # every contender starts on recently freed memory, as
                    # the lab's runner does: without it, a read_files call
                    # right after another got its huge pages back warm and
                    # one after a loop did not, an order effect as large as
                    # the difference between the backends
                    prime(count * size)
                    if fn is None:
                        return run_fio(d, count, size, args.depth)
                    t0 = time.perf_counter()
                    out = fn()
                    dt = time.perf_counter() - t0
                    del out
                    return count / dt

                print(f"\n== {label} files, {case}: {args.rounds} rounds", flush=True)
                times = run_rounds(contenders, args.rounds, once=once)
                prefix = f"{label} {case}"
                for name, vals in times.items():
                    rep.figure(f"{prefix}: {name}", f"{prefix}: {name}", "files/s", vals)
                if case == "cold":
                    caches.append(f"{label} cold: {max(res_seen) * 100:.1f}% resident at most "
                                  "after eviction (mincore, sample)")
                else:
                    caches.append(f"{label} warm: {sample_residency(paths) * 100:.0f}% resident")
                for fast in ("read_files io_uring", "read_files threads"):
                    short = fast.split()[-1]
                    for base, bshort in (("open().read() loop", "loop"),
                                         ("os.open/read/close loop", "os_loop"),
                                         ("ThreadPoolExecutor(8)", "tpe8"),
                                         ("fio io_uring", "fio")):
                        if base in times:
                            rep.ratio(f"{prefix}: {short} / {bshort}",
                                      f"{prefix}: read_files {short} / {base}",
                                      f"{prefix}: {fast}", f"{prefix}: {base}")
            if not args.keep:
                shutil.rmtree(d)
    finally:
        pool.shutdown()
    rep.set(cache="; ".join(caches))
    rep.note("read_files allocates its output per call (fastio.empty: huge pages from "
             "2 MiB), the loops make one bytes object per file")
    rep.finish()


if __name__ == "__main__":
    main()
