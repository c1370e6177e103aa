"""Does the lab's own overhead distort what it measures? fastio.lab against fio.

The workloads in CASES below (psync sequential and random, io_uring and
libaio at depth 1 and 32, cached and O_DIRECT), each on the same file in the
same run, lab and fio alternating; the IOPS (random) or bandwidth
(sequential) ratio lab / fio, target within 10%. A workload whose aio
backend fastio cannot use here says so and is skipped.

Both sides read into a page-aligned buffer: the lab's psync uses
fastio.empty (4096-aligned), so fio gets --iomem_align=4096. (fio's default
buffer is malloc'ed and not page-aligned; on the machine this was written on
that alone halves fio's cached sequential figure, as it does the lab's
read.bytearray.)

For the cached workloads, where the CPU and not the device is the limit, a
third contender runs in the same rounds: a plain C loop of the same
syscalls on the same offsets with no per-request clock or accounting
(benchmarks/c/read_loop.c, built here with gcc; io_uring through
liburing). It is the bound both tools approach: lab / C loop says what the
lab's own per-request work costs, fio / C loop what fio's costs, so a lab
figure above fio's is read against it (a lab that measured something else
would not stay at the bound).

fio itself takes two clock readings per request for its latency
statistics, as the lab does; on the cached rows, where a request costs well
under a microsecond, that accounting is a visible part of fio's figure. So
those rows also run fio a fourth time in the same rounds with
--gtod_reduce=1 (fio's own option for peak IOPS: no latency clock): lab /
fio lean says how far the lab is from fio with its accounting off, fio /
fio lean how much fio's accounting costs fio (--no-lean leaves it out).

Both sides make the same requests: fio replays the lab's own offsets
(lab.offsets_for, the lab's seed 0) from a version 2 I/O log (--read_iolog),
in the same order, and the script checks that fio made that many; with
--fio-offsets own, fio draws its own (its random map, a new permutation
each run). On the O_DIRECT workloads, where the device and not the CPU is
the limit, fio runs a second time in the same rounds (--control): fio /
fio again is the spread two identical contenders get from the device and
the machine, the noise floor a lab / fio ratio is read against (on the
2-CPU VM the depth-1 rows' per-round ratios of identical contenders span
0.64-1.41 when loaded, so a median of 3 rounds cannot resolve 10%).

Each side runs --rounds times (default 7) alternating, the one that goes
first changing every round, after a warm-up of each (_common.run_rounds);
medians with min-max are printed, and the ratio is the median of the
per-round ratios lab / fio (1.00: same figure) with its min-max. Needs fio on PATH
(apt-get install fio); without it the script says so and exits 0.

    python benchmarks/bench_lab_vs_fio.py [--size 1G] [--dir DIR] [--rounds 7] [--fio-offsets lab|own] [--control direct|all|none] [--no-lean] [--json PATH]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

from _common import Report, add_json_argument, compile_c, machine_info, run_rounds, with_spread
import fastio
from fastio import lab

REP = None  # the run's Report, made in main


def fio_missing():
    """True (having said so) when fio is not on PATH: nothing to compare."""
    if shutil.which("fio") is None:
        print("fio is not installed (apt-get install fio): nothing to compare against")
        return True
    return False


def write_iolog(dest, path, offsets, bs):
    """A fio version 2 I/O log at dest: one read of bs bytes of path at each
    offset, in order. fio replays it (--read_iolog) instead of drawing its
    own offsets, so that fio and the other contender make the very same
    requests in the same order."""
    with open(dest, "w") as fh:
        fh.write(f"fio version 2 iolog\n{path} add\n{path} open\n")
        tail = f" {bs}\n"
        fh.writelines(f"{path} read {o}{tail}" for o in offsets.tolist())
        fh.write(f"{path} close\n")
    return dest


def fio(path, size, *, rw, bs, engine, depth, direct, iolog=None, extra=(), want=None):
    """One fio job; iolog: replay that log's requests (write_iolog) rather
    than fio's own offsets (--replay_no_stall: as fast as it can, a version 2
    log has no timestamps anyway)."""
    # --invalidate: O_DIRECT jobs drop the file's pages first, as the lab's
    # cache='direct' does before each repetition; cached ones keep them.
    cmd = ["fio", "--name=lab", f"--filename={path}", f"--rw={rw}", f"--bs={bs}",
           f"--ioengine={engine}", f"--iodepth={depth}", f"--direct={int(direct)}",
           f"--size={size}", f"--invalidate={int(direct)}", "--output-format=json", "--thread",
           "--randrepeat=0", "--iomem_align=4096", *extra]
    if iolog is not None:
        cmd += [f"--read_iolog={iolog}", "--replay_no_stall=1"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise RuntimeError(f"fio failed ({' '.join(cmd)}): {p.stderr.strip() or p.stdout[-500:]}")
    out = p.stdout[p.stdout.index("{"):]
    job = json.loads(out)["jobs"][0]["read"]
    if want is not None and job["total_ios"] != want:
        raise RuntimeError(f"fio made {job['total_ios']} requests, not {want}: {' '.join(cmd)}")
    return {"iops": job["iops"], "bw": job["bw_bytes"], "ios": job["total_ios"],
            "p50": job["clat_ns"].get("percentile", {}).get("50.000000"),
            "p99": job["clat_ns"].get("percentile", {}).get("99.000000")}


def build_read_loop(tmp):
    """Compile benchmarks/c/read_loop.c into tmp, with liburing when it
    links: (path, has io_uring), or (None, why) when no compiler works."""
    exe, flags = compile_c("read_loop.c", tmp, attempts=(["-DWITH_URING", "-luring"], []))
    return (exe, bool(flags)) if exe else (None, flags)


def c_loop(exe, path, offsets_file, *, engine, bs, depth):
    cmd = [exe, "psync" if engine == "psync" else "uring", path, offsets_file, str(bs)]
    if engine != "psync":
        cmd.append(str(depth))
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {p.stderr.strip()}")
    nbytes, n, ns = map(int, p.stdout.split())
    secs = max(ns, 1) / 1e9
    return {"iops": n / secs, "bw": nbytes / secs}


def lab_once(method, path, size, *, pattern, bs, depth, cache):
    # One pass, as fio makes one: run_rounds already gives both sides an
    # untimed warm-up round, and the lab's own warm-up repetition would make
    # the lab read the file twice per figure where fio reads it once.
    res = lab.run([method], file=path, size=size, pattern=pattern, block_size=bs,
                  depth=depth, cache=cache, repeat=1, warmup=False, progress=False)
    rec = next(r for r in res.records if r["method"] == method)
    if rec["status"] != "ok":
        raise RuntimeError(f"lab {method}: {rec['status']}: {rec['reason']}")
    if rec["cache"].get("ok") is False:
        print(f"  warning: cache check failed for {method}: {rec['cache']}")
    return {"iops": rec["iops"], "bw": rec["throughput_Bps"],
            "p50": rec["latency_ns"]["p50"], "p99": rec["latency_ns"]["p99"]}


def compare(title, rounds, lab_fn, fio_fn, key, fid, bound_fn=None, control=False,
            lean_fn=None):
    contenders = {"lab": lab_fn, "fio": fio_fn}
    if bound_fn is not None:
        contenders["C loop"] = bound_fn
    if lean_fn is not None:
        contenders["fio lean"] = lean_fn
    if control:
        # fio a second time in the same rounds: fio / fio again is what the
        # machine and the device give two identical contenders, the noise
        # floor a lab / fio ratio is read against.
        contenders["fio again"] = fio_fn
    got = run_rounds(contenders, rounds, lambda fn: fn())
    labs, fios = got["lab"], got["fio"]
    unit, scale = ("IOPS", 1) if key == "iops" else ("MB/s", 1e-6)
    lv = [x[key] * scale for x in labs]
    fv = [x[key] * scale for x in fios]
    lp50 = statistics.median(x["p50"] for x in labs)
    fp50 = statistics.median(float(x["p50"]) for x in fios if x["p50"] is not None)
    REP.figure(f"{fid}: lab", f"{title}: lab", unit, lv, p50_us=lp50 / 1e3)
    REP.figure(f"{fid}: fio", f"{title}: fio", unit, fv, p50_us=fp50 / 1e3)
    r = REP.ratio(fid, f"{title}: lab / fio", f"{fid}: lab", f"{fid}: fio")
    print(f"{title}")
    print(f"  lab {with_spread(lv, ',.0f', unit):>36}  p50 {lp50 / 1e3:8.1f} us")
    print(f"  fio {with_spread(fv, ',.0f', unit):>36}  p50 {fp50 / 1e3:8.1f} us")

    def extra(name, label, note):
        """The figure of the contender `name`, printed with its note."""
        v = [x[key] * scale for x in got[name]]
        REP.figure(f"{fid}: {name}", f"{title}: {label}", unit, v)
        print(f"  {name} {with_spread(v, ',.0f', unit)}  ({note})")

    def ratio(a, b, label):
        """Contender a / contender b, per round, as printed."""
        rr = REP.ratio(f"{fid}: {a} / {b}", f"{title}: {label}", f"{fid}: {a}", f"{fid}: {b}")
        return with_spread(rr["per_round"])

    if bound_fn is not None:
        extra("C loop", "plain C loop, untimed", "plain loop, no per-request clock")
        print(f"  lab / C loop: {ratio('lab', 'C loop', 'lab / plain C loop')}   "
              f"fio / C loop: {ratio('fio', 'C loop', 'fio / plain C loop')}")
    if lean_fn is not None:
        extra("fio lean", "fio --gtod_reduce=1", "--gtod_reduce=1: no latency clock")
        print(f"  lab / fio lean: {ratio('lab', 'fio lean', 'lab / fio --gtod_reduce=1')}")
    if control:
        extra("fio again", "fio again (control)", "again: the control")
        print(f"  noise floor fio/fio again: "
              f"{ratio('fio', 'fio again', 'fio / fio again (noise floor)')}")
    print(f"  ratio lab/fio: {with_spread(r['per_round'])}  (per-round ratios of {rounds} "
          f"rotating rounds; target 0.90..1.10)")
    return r["median"]


# The workloads fio and the lab can both run (issue 11: psync sequential and
# random, io_uring and libaio at depth 1 and 32, cached and O_DIRECT): the
# lab's method, fio's engine, pattern, block size, depth, cache, and the id
# the figure has in the JSON.
CASES = [
    ("psync", "psync", "seq", "1M", 1, "warm", "psync_seq_cached"),
    ("psync", "psync", "rand", "4k", 1, "warm", "psync_rand_cached"),
    ("psync", "psync", "rand", "4k", 1, "direct", "psync_direct_d1"),
    ("aio.io_uring", "io_uring", "rand", "4k", 1, "direct", "uring_direct_d1"),
    ("aio.io_uring", "io_uring", "rand", "4k", 32, "direct", "uring_direct_d32"),
    ("aio.io_uring", "io_uring", "rand", "4k", 32, "warm", "uring_cached_d32"),
    ("aio.linux_aio", "libaio", "rand", "4k", 1, "direct", "libaio_direct_d1"),
    ("aio.linux_aio", "libaio", "rand", "4k", 32, "direct", "libaio_direct_d32"),
]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1G",
                    help="test file size (default 1G: fio reports runtime in whole ms)")
    ap.add_argument("--direct-size", default="128M",
                    help="bytes (from the start of the file) read by the O_DIRECT random "
                         "check (default 128M)")
    ap.add_argument("--dir", default=None, help="directory of the test file (default $TMPDIR)")
    ap.add_argument("--rounds", type=int, default=7, help="alternating rounds (default 7)")
    ap.add_argument("--fio-offsets", choices=("lab", "own"), default="lab",
                    help="'lab' (default): fio replays the lab's offsets (--read_iolog), "
                         "the same requests in the same order; 'own': fio draws its own "
                         "(its random map, a new permutation each run)")
    ap.add_argument("--control", choices=("direct", "all", "none"), default="direct",
                    help="run fio twice per round on the O_DIRECT workloads (default), on "
                         "all, or on none: fio / fio again, the noise floor")
    ap.add_argument("--no-lean", dest="lean", action="store_false",
                    help="on the cached workloads, do not run fio a second time with "
                         "--gtod_reduce=1 (default: run it)")
    add_json_argument(ap, "lab_vs_fio")
    args = ap.parse_args(argv)
    if fio_missing():
        return 0
    size = lab.parse_size(args.size)
    dsize = min(size, lab.parse_size(args.direct_size))
    path = lab.make_file(size, args.dir)
    try:
        machine_info(path)
        ver = subprocess.run(["fio", "--version"], capture_output=True, text=True).stdout.strip()
        print(ver)
        global REP
        REP = Report(__file__, args, path)
        REP.set(params={"size": size, "direct_size": dsize, "rounds": args.rounds, "fio": ver,
                        "fio_offsets": args.fio_offsets, "control": args.control,
                        "lean": args.lean},
                cache="O_DIRECT or warm as each workload says (lab.warm_cache before each warm one; the lab checks both)")
        print()
        backends = fastio.backends()
        tmp = tempfile.mkdtemp(prefix="fastio-fio-")
        exe, why = build_read_loop(tmp)
        if exe is None:
            print(f"the plain C loop is not measured: {why}")
        for lab_method, engine, pattern, bs, depth, cache, fid in CASES:
            backend = lab_method.split(".", 1)[1] if lab_method.startswith("aio.") else None
            if backend is not None and not (backends.get(backend) and backends[backend].available):
                why = backends[backend].reason if backends.get(backend) else "unknown"
                print(f"{fid}: not measured: fastio's {backend} backend is unavailable ({why})")
                continue
            direct = cache == "direct"
            n = dsize if direct else size
            if not direct:
                lab.warm_cache(path)
            rw = "read" if pattern == "seq" else "randread"
            title = (f"{'sequential' if pattern == 'seq' else 'random'} {bs} "
                     f"{'O_DIRECT' if direct else 'cached'} reads, depth {depth}: "
                     f"lab {lab_method} vs fio {engine}")
            # The lab's own offsets (lab.run's seed 0): replayed by fio
            # (--fio-offsets lab) and read by the C loop, so that every
            # contender makes the same requests in the same order.
            offsets = lab.offsets_for(n, lab.parse_size(bs), pattern)
            offs = os.path.join(tmp, f"{fid}.offsets")
            offsets.tofile(offs)
            iolog = (write_iolog(os.path.join(tmp, f"{fid}.iolog"), path, offsets,
                                 lab.parse_size(bs)) if args.fio_offsets == "lab" else None)
            bound = lean = None
            if exe is not None and not direct and (engine == "psync" or why is True):
                bound = (lambda offs=offs: c_loop(exe, path, offs, engine=engine,
                                                  bs=lab.parse_size(bs), depth=depth))
            if not direct and args.lean:
                lean = (lambda iolog=iolog: fio(path, n, rw=rw, bs=bs, engine=engine,
                                                depth=depth, direct=False, iolog=iolog,
                                                want=len(offsets), extra=["--gtod_reduce=1"]))
            try:
                compare(title, args.rounds,
                        lambda: lab_once(lab_method, path, n, pattern=pattern, bs=bs,
                                         depth=depth, cache=cache),
                        lambda: fio(path, n, rw=rw, bs=bs, engine=engine, depth=depth,
                                    direct=direct, iolog=iolog, want=len(offsets)),
                        "bw" if pattern == "seq" else "iops", fid, bound,
                        control=args.control == "all" or (args.control == "direct" and direct),
                        lean_fn=lean)
            except (OSError, RuntimeError) as e:
                print(f"{fid}: not measured: {e}")
            print()
        REP.finish()
        shutil.rmtree(tmp, ignore_errors=True)
    finally:
        os.unlink(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
