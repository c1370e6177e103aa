"""numpy.memmap(...).sum() against fastio.memmap(...).sum(), same run.

Makes a file (default 1 GiB), reads it once so that it is in the page cache,
then times, alternating the contenders and keeping the best of --repeat:

  ceiling          ndarray.sum() over the same bytes in anonymous memory
                   (the memory-read ceiling on this machine)
  numpy.memmap     open + sum, first touch of each page is a minor fault
  fastio.memmap    open + sum, same
  fastio populate  open with populate=True (prefault) + sum

Each line gives GB/s of the whole open+sum (and of the sum alone), the
ratio of open+sum throughput against numpy.memmap, and the minor page faults
the sum took (last round). Nothing here is a test: no figure is asserted.

    python benchmarks/bench_memmap.py [--size 1G] [--repeat 9] [--dtype f8] [--dir DIR]
"""
import argparse
import gc
import os
import resource
import tempfile
import time

import numpy as np

from _common import (Report, add_json_argument, cache_state, machine_info, make_file, median,
                     parse_size, print_table, run_rounds, warm)
import fastio


def timed(make):
    """(seconds for make()+sum, seconds for the sum alone, result,
    minor page faults taken by the sum)."""
    gc.collect()
    t0 = time.perf_counter()
    a = make()
    t1 = time.perf_counter()
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    s = a.sum()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
    t2 = time.perf_counter()
    close = getattr(a, "close", None)
    del a
    if close is not None:
        close()
    gc.collect()
    return t2 - t0, t2 - t1, s, faults


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="1G", help="file size (default 1G)")
    ap.add_argument("--repeat", "--rounds", type=int, default=9, dest="repeat",
                    help="rotating rounds (default 9)")
    ap.add_argument("--dtype", default="<f8", help="element type summed (default <f8)")
    ap.add_argument("--dir", default=None, help="where to make the file (default: tmp)")
    add_json_argument(ap, "memmap")
    args = ap.parse_args()

    dtype = np.dtype(args.dtype)
    size = parse_size(args.size) // dtype.itemsize * dtype.itemsize
    d = args.dir or tempfile.gettempdir()
    path = os.path.join(d, f"fastio-bench-memmap-{size}.bin")

    machine_info(path)
    print(f"size    : {size / 2**30:.3f} GiB; dtype {dtype}, page size {fastio.PAGESIZE}")

    if not os.path.exists(path) or os.path.getsize(path) != size:
        make_file(path, size)
    # Warm the page cache: every contender then reads from memory.
    warm(path)
    print(f"cache   : {cache_state(path)}")

    ceiling_arr = np.fromfile(path, dtype=dtype)
    contenders = {
        "ceiling (in-memory ndarray)": lambda: ceiling_arr,
        "numpy.memmap": lambda: np.memmap(path, dtype, "r"),
        "fastio.memmap": lambda: fastio.memmap(path, dtype, "r"),
        "fastio.memmap populate=True": lambda: fastio.memmap(path, dtype, "r", populate=True),
        "fastio.open_array": lambda: fastio.open_array(path, dtype),
    }
    sums = {k: [] for k in contenders}
    faults = {}
    expect = []

    def once(make):
        name = names[make]
        total, summing, s, faults[name] = timed(make)
        if not expect:
            expect.append(s)
        assert s == expect[0] or (np.isnan(s) and np.isnan(expect[0])), (name, s, expect)
        sums[name].append(summing)
        return total

    names = {make: name for name, make in contenders.items()}
    totals = run_rounds(contenders, args.repeat, once)
    for k in sums:  # drop the warm-up round
        sums[k] = sums[k][-args.repeat:]

    gbs = lambda t: size / t / 1e9  # noqa: E731
    print()
    rows = {name: (totals[name], sums[name], faults[name]) for name in contenders}
    print_table(rows, [("open+sum ms", lambda r: median(r[0]) * 1e3, ".1f"),
                       ("GB/s", lambda r: gbs(median(r[0])), ".2f"),
                       ("min-max GB/s", lambda r: f"{gbs(max(r[0])):.2f}-{gbs(min(r[0])):.2f}",
                        ""),
                       ("sum ms", lambda r: median(r[1]) * 1e3, ".1f"),
                       ("faults in sum", lambda r: r[2], "d")],
                first=f"median of {args.repeat}")
    rep = Report(__file__, args, path)
    rep.set(cache=cache_state(path), params={"size": size, "dtype": str(dtype),
                                             "rounds": args.repeat})
    ids = {"ceiling (in-memory ndarray)": "ceiling", "numpy.memmap": "numpy_memmap",
           "fastio.memmap": "fastio_memmap", "fastio.memmap populate=True": "populate",
           "fastio.open_array": "open_array"}
    rep.figures_from_times(totals, "GB/s", gbs, ids=ids)
    for fid, label in (("fastio_memmap", "fastio.memmap"), ("populate", "fastio.memmap("
                       "populate=True)"), ("open_array", "fastio.open_array")):
        rep.ratio(fid, f"{label} / numpy.memmap (open + sum)", fid, "numpy_memmap")
    rep.finish()


if __name__ == "__main__":
    main()
