"""Two builds of fastio._core in one process, timed against each other.

    python benchmarks/ab_builds.py BASE.so NEW.so [--pairs 100]

For a change that must not slow the default build (docs/freethreading.md):
build each tree in place, then pass the two extension files. Both modules
are loaded side by side under different names and each hot path (pread 4
KiB into a bytearray, mmap slicing, a buffer export, read_blocks on a cached
file) runs in short blocks that alternate between them, so the drift of a
shared machine hits both alike; the per-pair time ratio NEW/BASE is printed
(median, quartiles, and best against best). Both builds write into the same
destination buffers: a bytearray's alignment alone moves pread by 4%.
"""
import argparse
import importlib.util
import os
import random
import statistics as st
import tempfile
import time

import numpy as np

def load(name, path):
    # The init function is PyInit__core: any dotted name ending in _core.
    spec = importlib.util.spec_from_file_location(name + "._core", path)
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("base")
ap.add_argument("new")
ap.add_argument("--pairs", type=int, default=100)
args = ap.parse_args()
A = load("base", args.base)
B = load("new", args.new)
size = 64 << 20
fd_, path = tempfile.mkstemp(prefix="fastio_ab_"); os.close(fd_)
with open(path, "wb") as f:
    f.write(np.random.default_rng(1).integers(0, 256, size, dtype=np.uint8).tobytes())
fd = os.open(path, os.O_RDWR)
os.pread(fd, size, 0)
rng = random.Random(1)
N = 20000
offs = [rng.randrange(size // 4096) * 4096 for _ in range(N)]
offs_np = np.array(offs[:4096], np.int64)

BUF = bytearray(4096)  # one destination for both builds: its alignment changes copy speed

def pread_loop(core):
    buf = BUF; p = core.pread
    def run():
        for o in offs: p(fd, buf, o)
    return run

def slice_loop(core):
    m = core.mmap(fd, 0)
    def run():
        for o in offs: m[o:o + 4096]
    return run

def export_loop(core):
    m = core.mmap(fd, 0)
    def run():
        for o in offs[:N // 2]:
            with memoryview(m) as v: pass
    return run

OUT = np.empty((len(offs_np), 4096), np.uint8); OUT.fill(0)
RES = np.empty(len(offs_np), np.int64)

def read_blocks_on(backend):
    def make(core):
        q = core.Queue(32, backend)

        def run():
            q._batch(False, fd, offs_np, None, 4096, OUT, RES)
        return run
    return make


def t(fn):
    t0 = time.perf_counter(); fn(); return time.perf_counter() - t0

PAIRS = args.pairs
for name, mk in [("pread 4KiB", pread_loop), ("mmap slice 4KiB", slice_loop),
                 ("memoryview(mmap) export+release", export_loop),
                 ("read_blocks io_uring d32 (cached, 4096 blocks)", read_blocks_on("io_uring")),
                 ("read_blocks threads d32 (cached, 4096 blocks)", read_blocks_on("threads"))]:
    a, b = mk(A), mk(B)
    a(); b()
    ratios, ta, tb = [], [], []
    for i in range(PAIRS):
        if i % 2:
            x = t(a); y = t(b)
        else:
            y = t(b); x = t(a)
        ta.append(x); tb.append(y); ratios.append(y / x)
    q = np.percentile(ratios, [25, 75])
    print(f"{name:48s} new/base time: median {st.median(ratios):.3f} (IQR {q[0]:.3f}-{q[1]:.3f}), "
          f"best new/best base {min(tb)/min(ta):.3f}  [{PAIRS} pairs]", flush=True)
os.close(fd); os.unlink(path)
