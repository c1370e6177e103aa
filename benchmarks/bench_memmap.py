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

# _common first: it puts this checkout's fastio first on sys.path.
from _common import cache_state, machine_info, make_file, parse_size, print_table, warm
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
    ap.add_argument("--repeat", type=int, default=9, help="rounds, best kept (default 9)")
    ap.add_argument("--dtype", default="<f8", help="element type summed (default <f8)")
    ap.add_argument("--dir", default=None, help="where to make the file (default: tmp)")
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
    best = {k: (float("inf"), float("inf")) for k in contenders}
    faults = {}
    expect = None
    for _ in range(args.repeat):
        for name, make in contenders.items():  # alternate: noise hits all alike
            total, summing, s, faults[name] = timed(make)
            if expect is None:
                expect = s
            assert s == expect or (np.isnan(s) and np.isnan(expect)), (name, s, expect)
            best[name] = (min(best[name][0], total), min(best[name][1], summing))

    gbs = lambda t: size / t / 1e9  # noqa: E731
    base_total, base_sum = best["numpy.memmap"]
    print()
    # Each row: (best open+sum seconds, best sum seconds, faults in the last sum).
    rows = {name: (total, summing, faults[name]) for name, (total, summing) in best.items()}
    print_table(rows, [("open+sum ms", lambda r: r[0] * 1e3, ".1f"),
                       ("GB/s", lambda r: gbs(r[0]), ".2f"),
                       ("sum ms", lambda r: r[1] * 1e3, ".1f"),
                       ("GB/s", lambda r: gbs(r[1]), ".2f"),
                       ("x numpy.memmap", lambda r: base_total / r[0], ".3f"),
                       ("faults in sum", lambda r: r[2], "d")],
                first=f"best of {args.repeat}")
    ratio = base_total / best["fastio.memmap"][0]
    print()
    print(f"fastio.memmap / numpy.memmap (open+sum throughput): {ratio:.3f}x (goal >= 0.95x)")
    print(f"fastio.memmap populate=True / numpy.memmap: "
          f"{base_total / best['fastio.memmap populate=True'][0]:.3f}x")
    print(f"numpy.memmap at {gbs(base_total) / gbs(best['ceiling (in-memory ndarray)'][0]) * 100:.0f}% "
          f"of the in-memory ceiling, fastio.memmap at "
          f"{gbs(best['fastio.memmap'][0]) / gbs(best['ceiling (in-memory ndarray)'][0]) * 100:.0f}%")


if __name__ == "__main__":
    main()
