"""Cost per call of a 4 KiB positional read: fastio.pread against os.pread and
os.preadv.

    python benchmarks/bench_pread.py [--calls 200000] [--rounds 7] [--json PATH]

A cached file of 64 MiB; every contender reads the same 4 KiB blocks (random
offsets, page-aligned) in interleaved rounds. fastio.pread and os.preadv read
into a preallocated buffer; os.pread returns a new bytes object each call,
which is what a user of it pays. Prints ns per call (median and best round)
and the ratio against os.pread, the baseline.
"""
import argparse
import os
import random
import tempfile
import time

from _common import (Report, add_json_argument, cache_state, machine_info, make_file, median,
                     print_table, run_rounds, warm)
import fastio


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--block", type=int, default=4096)
    add_json_argument(ap, "pread")
    args = ap.parse_args()

    size = 64 << 20
    block = args.block
    fd_, path = tempfile.mkstemp(prefix="fastio_bench_pread_")
    os.close(fd_)
    try:
        machine_info(path)
        make_file(path, size)
        warm(path)
        fd = os.open(path, os.O_RDONLY)
        rng = random.Random(1)
        offsets = [rng.randrange(size // block) * block for _ in range(args.calls)]
        print(f"size    : {size >> 20} MiB; cache: {cache_state(path)}; "
              f"{args.calls} calls of {block} bytes per round, {args.rounds} rounds")

        ba = bytearray(block)
        buf = fastio.Buffer(block)
        iov = [ba]
        pread, os_pread, os_preadv = fastio.pread, os.pread, os.preadv

        def loop(read, arg):
            # read and arg are closure cells, as fd and offsets are: the
            # timed loop does the same work as one written out by hand.
            def run():
                for off in offsets:
                    read(fd, arg, off)
            return run

        def run_empty_loop():
            for off in offsets:
                pass

        contenders = [("os.pread (baseline)", loop(os_pread, block)),
                      ("os.preadv into bytearray", loop(os_preadv, iov)),
                      ("fastio.pread into bytearray", loop(pread, ba)),
                      ("fastio.pread into fastio.Buffer", loop(pread, buf)),
                      ("(empty loop)", run_empty_loop)]

        def per_call_ns(fn):
            t0 = time.perf_counter()
            fn()
            return (time.perf_counter() - t0) / args.calls * 1e9

        times = run_rounds(contenders, args.rounds, per_call_ns)
        os.close(fd)
        rep = Report(__file__, args, path)
        rep.set(cache=cache_state(path), params={"file_size": size, "block": block,
                                                 "calls": args.calls, "rounds": args.rounds})
    finally:
        os.unlink(path)

    base = median(times["os.pread (baseline)"])
    base_best = min(times["os.pread (baseline)"])
    print()
    print_table(times, [("median ns", median, ".0f"), ("best ns", min, ".0f"),
                        ("median ratio", lambda ts: median(ts) / base, ".2fx"),
                        ("best ratio", lambda ts: min(ts) / base_best, ".2fx")])
    print("(ratio = time per call / os.pread's; < 1 is faster; the target is <= 1.1. "
          "On a noisy machine the best round is the steadier figure.)")
    ids = {"os.pread (baseline)": "os_pread", "os.preadv into bytearray": "os_preadv",
           "fastio.pread into bytearray": "fastio_pread_bytearray",
           "fastio.pread into fastio.Buffer": "fastio_pread_buffer",
           "(empty loop)": "empty_loop"}
    rep.figures_from_times(times, "ns/call", higher_is_better=False, ids=ids)
    for fid in ("fastio_pread_bytearray", "fastio_pread_buffer"):
        rep.ratio(fid, f"{rep.data['figures'][fid]['label']} vs os.pread (time per call)",
                  fid, "os_pread")
    rep.ratio("fastio_pread_bytearray_vs_preadv", "fastio.pread into bytearray vs "
              "os.preadv into bytearray (time per call)", "fastio_pread_bytearray", "os_preadv")
    rep.finish()


if __name__ == "__main__":
    main()
