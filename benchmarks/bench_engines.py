"""Random 4 KiB reads through fastio's C engines against fio, same file, same run.

    python benchmarks/bench_engines.py [--size 1G] [--seconds 2] [--rounds 3] [--dir DIR]
        [--json PATH]

The engines (csrc/aio_uring.c, csrc/aio_linux.c) are driven through their ops
table by the C harness tests/c/engines.c ("bench" mode), compiled here with
gcc -O2: this measures the engines themselves, without Python or the Queue.
Each configuration is paired with the fio job that does the same thing
(fio's psync, io_uring and libaio engines), and the ratio engine / fio is
printed (1.00: as fast as fio). Two phases over one file of --size bytes:

  cached    the file in the page cache: a pread loop, io_uring depth 1 and 32,
            io_uring depth 32 with a registered file and registered buffers,
            linux_aio depth 32 (synchronous on buffered files: io_submit reads
            before it returns)
  O_DIRECT  pread depth 1, io_uring depth 32 and 128, linux_aio depth 32

fio runs with --gtod_reduce=1 and batches of the queue depth for submission
and completion (what the harness does: it submits every free slot and reaps
every ready completion). Each figure is the median of --rounds runs of --seconds each
(min-max beside it); the two tools alternate, the one that goes first
changing every round, after an untimed warm-up of each; the ratio is the
median of the per-round ratios. fio missing: the engines' figures alone (install
it with apt-get install fio).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile

from _common import (Report, add_json_argument, cache_state, machine_info, make_file,
                     parse_size, run_rounds, warm, with_spread)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name, engine method, depth, O_DIRECT, registered, fio engine, fio extra options
CACHED = [
    ("pread loop", "pread", 1, False, False, "psync", []),
    ("io_uring depth 1", "io_uring", 1, False, False, "io_uring", []),
    ("io_uring depth 32", "io_uring", 32, False, False, "io_uring", []),
    ("io_uring depth 32 registered", "io_uring", 32, False, True, "io_uring",
     ["--fixedbufs", "--registerfiles"]),
    ("linux_aio depth 32", "linux_aio", 32, False, False, "libaio", []),
]
DIRECT = [
    ("pread depth 1", "pread", 1, True, False, "psync", []),
    ("io_uring depth 32", "io_uring", 32, True, False, "io_uring", []),
    ("io_uring depth 128", "io_uring", 128, True, False, "io_uring", []),
    ("linux_aio depth 32", "linux_aio", 32, True, False, "libaio", []),
]


def build(tmp):
    gcc = shutil.which("gcc")
    if gcc is None:
        sys.exit("gcc is needed to build the C harness")
    exe = os.path.join(tmp, "engines")
    srcs = [os.path.join(ROOT, p) for p in
            ("tests/c/engines.c", "csrc/aio_uring.c", "csrc/aio_linux.c")]
    subprocess.run([gcc, "-std=c11", "-O2", "-D_GNU_SOURCE",
                    "-I" + sysconfig.get_paths()["include"], "-I" + os.path.join(ROOT, "csrc"),
                    *srcs, "-o", exe, "-pthread"], check=True)
    return exe


def run_engine(exe, method, path, depth, seconds, direct, fixed):
    cmd = [exe, "bench", method, path, str(depth), str(seconds)]
    if direct:
        cmd.append("direct")
    if fixed:
        cmd.append("fixed")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return None, (proc.stderr or proc.stdout).strip()
    return float(proc.stdout.split()[1]), None


def run_fio(fio, engine, extra, path, size, depth, seconds, direct):
    cmd = [fio, "--name=rand", f"--filename={path}", "--rw=randread", "--bs=4k",
           f"--size={size}", f"--ioengine={engine}", f"--iodepth={depth}",
           f"--direct={int(direct)}", "--time_based", f"--runtime={seconds}",
           "--norandommap", "--randrepeat=0", "--invalidate=0", "--output-format=json",
           # fio at its fastest, doing what the harness does: no per-I/O
           # clock reads, every free slot submitted at once, every ready
           # completion reaped at once.
           "--gtod_reduce=1", f"--iodepth_batch_submit={depth}",
           f"--iodepth_batch_complete_max={depth}", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return None, proc.stderr.strip().splitlines()[-1] if proc.stderr else "fio failed"
    out = proc.stdout
    data = json.loads(out[out.index("{"):])
    return float(data["jobs"][0]["read"]["iops"]), None


def check_probe(exe, backend):
    proc = subprocess.run([exe, "probe", backend], capture_output=True, text=True)
    return None if proc.returncode == 0 else proc.stdout.strip()


def phase(title, rows, exe, fio, path, size, args, unavailable, rep, mode):
    print(f"\n{title}")
    print(f"  {'configuration':32} {'engine IOPS (min-max)':>28} {'fio IOPS (min-max)':>28} "
          f"{'engine/fio (min-max)':>20}")
    for name, method, depth, direct, fixed, fio_engine, fio_extra in rows:
        if method in unavailable:
            print(f"  {name:32} skipped: {unavailable[method]}")
            continue
        errors = {}

        def measure(which):
            if which == "engine":
                v, err = run_engine(exe, method, path, depth, args.seconds, direct, fixed)
            else:
                v, err = run_fio(fio, fio_engine, fio_extra, path, size, depth,
                                 args.seconds, direct)
            if v is None:
                errors[which] = err
                return float("nan")
            return v

        tools = {"engine": lambda: measure("engine")}
        if fio:
            tools["fio"] = lambda: measure("fio")
        vals = run_rounds(tools, args.rounds, lambda fn: fn())
        fio_name = f"fio {fio_engine} d{depth}" + (" fixed" if fio_extra else "")
        e = [v for v in vals["engine"] if v == v]
        f = [v for v in vals.get("fio", []) if v == v]
        e_id, f_id = f"{mode}: engine {name}", f"{mode}: {fio_name}"
        if e:
            rep.figure(e_id, f"{mode}: C engine, {name}", "IOPS", e)
        if f:
            rep.figure(f_id, f"{mode}: {fio_name}", "IOPS", f)
        ratio = "n/a"
        if e and f and len(e) == len(f):
            r = rep.ratio(f"{mode}: {name}", f"{mode}: C engine / fio, {name}", e_id, f_id)
            ratio = with_spread(r["per_round"])
        print(f"  {name:32} {with_spread(e, ',.0f') if e else 'error':>28} "
              f"{with_spread(f, ',.0f') if f else 'n/a':>28} {ratio:>20}   (fio: {fio_name})")
        for which, err in errors.items():
            print(f"      {which}: {err}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="1G")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default=None,
                    help="directory of the test file (default: the system's temp dir; "
                         "it must not be tmpfs for O_DIRECT)")
    add_json_argument(ap, "engines")
    args = ap.parse_args()
    size = parse_size(args.size)
    fio = shutil.which("fio")

    with tempfile.TemporaryDirectory(prefix="fastio_bench_engines_", dir=args.dir) as tmp:
        path = os.path.join(tmp, "data")
        make_file(path, size)
        machine_info(path)
        exe = build(tmp)
        if fio:
            ver = subprocess.run([fio, "--version"], capture_output=True, text=True)
            print(f"fio     : {ver.stdout.strip()}")
        else:
            print("fio     : not installed (apt-get install fio): engine figures only")
        unavailable = {}
        for backend in ("io_uring", "linux_aio"):
            why = check_probe(exe, backend)
            if why:
                unavailable[backend] = why
        print(f"reads   : random 4 KiB, page-aligned, over {size >> 20} MiB; "
              f"median of {args.rounds} x {args.seconds:g} s")
        rep = Report(__file__, args, path)
        rep.set(params={"size": size, "seconds": args.seconds, "rounds": args.rounds,
                        "fio": ver.stdout.strip() if fio else None})

        warm(path)
        print(f"cache   : {cache_state(path)}")
        cache = cache_state(path)
        phase("cached (page cache)", CACHED, exe, fio, path, size, args, unavailable, rep,
              "cached")
        phase("O_DIRECT (device; the VM host may cache it)", DIRECT, exe, fio, path, size,
              args, unavailable, rep, "direct")
        rep.set(cache=f"cached phase: {cache}; direct phase: O_DIRECT")
        rep.finish()


if __name__ == "__main__":
    main()
