"""Draw the figures of docs/lab.md's notebook session: docs/img/lab-*.png.

    python docs/lab_figures.py [--size 256M] [--repeat 5] [--out docs/img]

Runs the session's calls (lab.run of the read/write and mmap families,
lab.sweep of psync and mmap) on a temporary file of ``--size`` and saves
the three plots as small PNGs. Run it from outside the source tree's root,
or after building in place, so that ``import fastio`` finds the extension.
"""
import argparse
import os
import sys

import matplotlib

matplotlib.use("Agg")


def main(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="256M")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", default=os.path.join(here, "img"))
    ap.add_argument("--dpi", type=int, default=72)
    args = ap.parse_args(argv)
    from fastio import lab
    os.makedirs(args.out, exist_ok=True)
    res = lab.run(groups=["read/write", "mmap"], size=args.size, block_size="1M",
                  repeat=args.repeat)
    print(res.table())
    sw = lab.sweep(["psync", "mmap"], block_size=["4k", "64k", "1M"], size=args.size,
                   repeat=args.repeat)
    for name, results, kind in (("lab-bar", res, "bar"), ("lab-latency", res, "latency"),
                                ("lab-sweep", sw, "sweep")):
        path = os.path.join(args.out, name + ".png")
        results.plot(kind).savefig(path, dpi=args.dpi, bbox_inches="tight")
        print(path, os.path.getsize(path), "bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
