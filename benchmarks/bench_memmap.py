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
import platform
import resource
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import fastio  # noqa: E402


def parse_size(text):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().rstrip("IB")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def filesystem_of(path):
    best, fstype = "", "unknown"
    try:
        with open("/proc/mounts") as fh:
            for line in fh:
                dev, mnt, typ = line.split()[:3]
                if path.startswith(mnt) and len(mnt) > len(best):
                    best, fstype = mnt, f"{typ} on {dev} at {mnt}"
    except OSError:
        pass
    return fstype


def make_file(path, size):
    """Deterministic non-constant data, written in 64 MiB chunks."""
    chunk = np.arange((64 << 20) // 8, dtype="<u8").view("u1")
    with open(path, "wb") as fh:
        left = size
        while left:
            n = min(left, chunk.nbytes)
            fh.write(chunk[:n].tobytes())
            left -= n
        fh.flush()
        os.fsync(fh.fileno())


def cache_state(path, size):
    """Fraction of the file in the page cache, by fastio's own residency
    when it is there, else said to be unknown."""
    if hasattr(fastio.mmap, "residency"):
        with open(path, "rb") as fh:
            mm = fastio.mmap(fh.fileno(), size, access=fastio.ACCESS_READ)
        try:
            frac, _ = mm.residency()
        finally:
            mm.close()
        return f"{frac * 100:.1f}% of the file in the page cache (mincore)"
    return "warmed by a full read just before (mincore not available yet)"


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

    print(f"machine    : {' '.join(platform.uname())}")
    print(f"cpu        : {cpu_model()} x {os.cpu_count()}")
    print(f"python     : {platform.python_version()}, numpy {np.__version__}, "
          f"fastio {fastio.__version__}")
    print(f"file       : {path}, {size / 2**30:.3f} GiB, {filesystem_of(os.path.realpath(d))}")
    print(f"dtype      : {dtype}, page size {fastio.PAGESIZE}")

    if not os.path.exists(path) or os.path.getsize(path) != size:
        make_file(path, size)
    # Warm the page cache: every contender then reads from memory.
    with open(path, "rb") as fh:
        while fh.read(64 << 20):
            pass
    print(f"cache      : {cache_state(path, size)}")

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
    print(f"best of {args.repeat}      {'open+sum':>10} {'GB/s':>7} {'sum':>10} {'GB/s':>7}"
          f" {'x numpy.memmap':>14} {'faults in sum':>13}")
    for name, (total, summing) in best.items():
        print(f"{name:28s} {total * 1e3:8.1f}ms {gbs(total):7.2f} {summing * 1e3:8.1f}ms "
              f"{gbs(summing):7.2f} {base_total / total:14.3f} {faults[name]:13d}")
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
