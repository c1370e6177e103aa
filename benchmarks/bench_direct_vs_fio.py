"""O_DIRECT random 4 KiB reads at depth 32: fastio.read_blocks against fio's io_uring engine.

Issue 14's figure: read_blocks(path, offsets, 4096, direct=True, depth=32)
(mode 'auto', which takes the 'direct' path: a Queue on an O_DIRECT
descriptor, io_uring where it runs) >= 1.0x fio --ioengine=io_uring
--direct=1 --iodepth=32 on the same file.

Same requests on both sides: the offsets are a random permutation of the
file's 4 KiB blocks (lab.offsets_for, seed 0), the first --requests of
them; fio replays exactly those, in the same order, from a version 2 I/O log
(--read_iolog, --replay_no_stall), so neither side is helped by a different
spread over the device or the host's cache. fio reports IOPS over its own
I/O time; read_blocks is timed around the whole call, as a user pays it.
Contenders:

- read_blocks: the call as a user writes it (out=None: it opens the file,
  makes a Queue, allocates the output and reads into it);
- read_blocks (out, queue reused): the same reads into a pre-touched
  output with a Queue made once, the I/O part alone (what fio's figure is);
- Queue.read_batch into 32 reused buffers: the same Queue and requests
  into fio's memory (depth x 4 KiB, request i into buffer i % 32): what the
  loop reaches when the destination is as small as fio's, where read_blocks
  gives every block its own page;
- Queue.read_batch into every block's own page: the same loop into the
  output array of read_blocks (request i into row i): the loop held
  constant, only the destination's footprint changed. Its ratio to the
  32-buffer batch is what landing each block in a page of its own costs
  (on the Firecracker VM this was written on, ~10%: the host's device
  emulation writes into 32768 guest pages rather than 32), which fio,
  whose buffers are depth x 4 KiB, never pays;
- fio io_uring: the same requests, iodepth 32, fio's defaults otherwise
  (no registered files or buffers, no SQPOLL: those are options of fio's,
  off by default, as read_blocks does not use them either).

Rounds rotate the order (_common.run_rounds, a warm-up round first); the
ratio is the median of the per-round ratios read_blocks / fio with its
min-max. Needs fio on PATH (apt-get install fio); without it, or without
O_DIRECT on the file's filesystem, the script says so and exits 0.

    python benchmarks/bench_direct_vs_fio.py [--size 256M] [--requests 32768] [--rounds 7] [--dir DIR] [--json PATH]
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

from _common import Report, add_json_argument, machine_info, run_rounds, with_spread
from bench_lab_vs_fio import fio, fio_missing, write_iolog
import fastio
from fastio import lab

BS = 4096
DEPTH = 32


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="256M", help="test file size (default 256M)")
    ap.add_argument("--requests", type=int, default=32768,
                    help="random 4 KiB reads per contender per round (default 32768; at "
                         "most size / 4 KiB)")
    ap.add_argument("--dir", default=None, help="directory of the test file (default $TMPDIR)")
    ap.add_argument("--rounds", type=int, default=7, help="rotating rounds (default 7)")
    ap.add_argument("--fio-offsets", choices=("same", "own"), default="same",
                    help="'same' (default): fio replays read_blocks' offsets (--read_iolog); "
                         "'own': fio draws its own over the same bytes of the file")
    add_json_argument(ap, "direct_vs_fio")
    args = ap.parse_args(argv)
    if fio_missing():
        return 0
    size = lab.parse_size(args.size)
    n = min(args.requests, size // BS)
    path = lab.make_file(size, args.dir)
    tmp = tempfile.mkdtemp(prefix="fastio-dvf-")
    try:
        machine_info(path)
        try:
            os.close(os.open(path, os.O_RDONLY | os.O_DIRECT))
        except OSError as e:
            print(f"O_DIRECT is refused on this filesystem ({e}): nothing to compare")
            return 0
        ver = subprocess.run(["fio", "--version"], capture_output=True, text=True).stdout.strip()
        print(ver)
        rep = Report(__file__, args, path)
        offsets = lab.offsets_for(size, BS, "rand")[:n].copy()
        region = int(offsets.max()) + BS if n else BS  # fio's --size: every offset inside
        iolog = (write_iolog(os.path.join(tmp, "reads.iolog"), path, offsets, BS)
                 if args.fio_offsets == "same" else None)
        stats = {}
        q = fastio.Queue(DEPTH, direct=True)
        out = fastio.empty((n, BS), "u1", align=4096)
        out[:] = 0  # touched: no first-touch fault inside the reads
        small = fastio.empty(DEPTH * BS, align=4096, hugepages=False)
        small[:] = 0
        slots = [small[k * BS:(k + 1) * BS] for k in range(DEPTH)]
        dests = [slots[i % DEPTH] for i in range(n)]
        dfd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        print(f"{n} random {BS}-byte O_DIRECT reads at depth {DEPTH} over {size >> 20} MiB; "
              f"read_blocks on {q.backend}; fio offsets: {args.fio_offsets}\n")
        rep.set(params={"size": size, "requests": n, "block_size": BS, "depth": DEPTH,
                        "rounds": args.rounds, "fio": ver, "fio_offsets": args.fio_offsets,
                        "backend": q.backend},
                cache="O_DIRECT (page cache bypassed); the host's cache of the virtual disk "
                      "is not controlled: every contender reads the same blocks each round")

        def timed_iops(fn):
            t0 = time.perf_counter()
            fn()
            return {"iops": n / (time.perf_counter() - t0)}

        def user_call():
            st = {}
            fastio.read_blocks(path, offsets, BS, direct=True, depth=DEPTH, stats=st)
            stats.update(st)

        contenders = {
            "read_blocks": lambda: timed_iops(user_call),
            "read_blocks (out, queue reused)": lambda: timed_iops(
                lambda: fastio.read_blocks(path, offsets, BS, out=out, direct=True,
                                           queue=q)),
            "Queue.read_batch (32 buffers)": lambda: timed_iops(
                lambda: q.read_batch(dfd, offsets, BS, dests)),
            "Queue.read_batch (a page per block)": lambda: timed_iops(
                lambda: q.read_batch(dfd, offsets, BS, out)),
            "fio io_uring": lambda: fio(path, region, rw="randread", bs=BS, engine="io_uring",
                                        depth=DEPTH, direct=True, iolog=iolog,
                                        extra=() if iolog else (f"--number_ios={n}",),
                                        want=n),
        }
        try:
            got = run_rounds(contenders, args.rounds, lambda fn: fn())
        finally:
            q.close()
            os.close(dfd)
        print(f"read_blocks ran mode={stats.get('mode')!r} on {stats.get('backend')!r}")
        rep.note(f"read_blocks ran mode={stats.get('mode')!r} on backend "
                 f"{stats.get('backend')!r}")
        ids = {"read_blocks": "read_blocks", "read_blocks (out, queue reused)": "reused",
               "Queue.read_batch (32 buffers)": "batch32",
               "Queue.read_batch (a page per block)": "batch_pages", "fio io_uring": "fio"}
        for name, vals in got.items():
            v = [x["iops"] for x in vals]
            rep.figure(ids[name], name, "IOPS", v)
            print(f"  {name:<32} {with_spread(v, ',.0f', 'IOPS'):>36}")
        for fid, name in (("read_blocks", "read_blocks"),
                          ("reused", "read_blocks (out, queue reused)"),
                          ("batch32", "Queue.read_batch (32 buffers)"),
                          ("batch_pages", "Queue.read_batch (a page per block)")):
            r = rep.ratio(f"{fid} / fio", f"{name} / fio io_uring, depth {DEPTH}, O_DIRECT",
                          fid, "fio")
            print(f"  {name + ' / fio':<42} {with_spread(r['per_round'])}x  "
                  f"(per-round ratios of {args.rounds} rotating rounds)")
        r = rep.ratio("batch_pages / batch32", "Queue.read_batch: a page per block / 32 "
                      "buffers (the destination's footprint alone)", "batch_pages", "batch32")
        print(f"  {'a page per block / 32 buffers':<42} {with_spread(r['per_round'])}x  "
              f"(the same loop: the footprint's cost)")
        print()
        rep.finish()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        os.unlink(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
