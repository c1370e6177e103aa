"""The cost of the first touch of fresh memory, per 4 KiB page: np.empty + fill
against fastio.empty with and without transparent huge pages.

    python benchmarks/bench_alloc.py [--size-mib 256] [--rounds 7] [--json PATH]

Each round allocates fresh memory of --size-mib, writes every byte (fill), and
frees it. The same fill of memory that is already faulted in is the floor
(only the stores); the difference is the first-touch cost: a page fault and
the kernel zeroing the page. Sizes above 32 MiB are past glibc's largest
dynamic mmap threshold, so np.empty also gets fresh pages every round. numpy
advises MADV_HUGEPAGE on large arrays itself (since 1.16), so np.empty gets
huge pages too; a row with that advice switched off shows what it saves.
Prints microseconds per 4 KiB page (total and first-touch only), the THP
faults the kernel counted, and the ratio against np.empty + fill.
"""
import argparse
import time

import numpy as np

from _common import Report, add_json_argument, machine_info, median, print_table, run_rounds
import fastio


def vmstat(name):
    try:
        with open("/proc/vmstat") as f:
            for line in f:
                key, value = line.split()
                if key == name:
                    return int(value)
    except OSError:
        pass
    return 0


def thp_defrag():
    try:
        with open("/sys/kernel/mm/transparent_hugepage/defrag") as f:
            return f.read().strip()
    except OSError:
        return "?"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=7)
    add_json_argument(ap, "alloc")
    args = ap.parse_args()
    machine_info()
    print(f"THP     : defrag {thp_defrag()}")
    size = args.size_mib << 20
    pages = size // 4096
    print(f"size    : {args.size_mib} MiB = {pages} pages of 4 KiB; {args.rounds} rounds")

    warm = np.empty(size, np.uint8)
    warm.fill(0)

    def fill_warm():
        warm.fill(1)

    def np_empty_fill():
        a = np.empty(size, np.uint8)
        a.fill(1)

    set_madvise = getattr(getattr(np, "_core", np).multiarray, "_set_madvise_hugepage", None)

    def np_empty_fill_no_thp():
        # numpy itself advises MADV_HUGEPAGE on large arrays; switched off
        # here to show the 4 KiB-page cost numpy users would otherwise pay.
        old = set_madvise(False)
        try:
            a = np.empty(size, np.uint8)
        finally:
            set_madvise(old)
        a.fill(1)

    def fastio_small_pages():
        a = fastio.empty(size, hugepages=False)
        a.fill(1)

    def fastio_huge():
        a = fastio.empty(size, hugepages=True)
        a.fill(1)

    def fastio_huge_populate():
        a = fastio.empty(size, hugepages=True, populate=True)
        a.fill(1)

    contenders = [("np.empty + fill (baseline)", np_empty_fill),
                  *([("np.empty, numpy's THP advice off", np_empty_fill_no_thp)]
                    if set_madvise else []),
                  ("fastio.empty 4 KiB pages + fill", fastio_small_pages),
                  ("fastio.empty huge pages + fill", fastio_huge),
                  ("fastio.empty huge, populate + fill", fastio_huge_populate),
                  ("fill of touched memory (floor)", fill_warm)]
    thp = {name: [] for name, _ in contenders}
    names = {fn: name for name, fn in contenders}

    def once(fn):
        before = vmstat("thp_fault_alloc")
        t0 = time.perf_counter()
        fn()
        seconds = time.perf_counter() - t0
        thp[names[fn]].append(vmstat("thp_fault_alloc") - before)
        return seconds

    times = run_rounds(contenders, args.rounds, once)

    floor = median(times["fill of touched memory (floor)"])
    base = median(times["np.empty + fill (baseline)"])
    print()
    # Each row: (seconds per round, THP faults over all rounds).
    rows = {name: (ts, thp[name]) for name, ts in times.items()}
    print_table(rows, [("us/page", lambda r: median(r[0]) / pages * 1e6, ".3f"),
                       ("touch us/page", lambda r: (median(r[0]) - floor) / pages * 1e6, ".3f"),
                       ("THP faults", lambda r: median(r[1][-args.rounds:]), ".0f"),
                       ("vs np.empty", lambda r: base / median(r[0]), ".2fx")])
    print("(us/page: whole round per 4 KiB page; touch: minus the floor, i.e. the "
          "fault + zeroing; THP faults: per round, from /proc/vmstat)")
    rep = Report(__file__, args)
    rep.set(params={"size": size, "rounds": args.rounds, "thp_defrag": thp_defrag()})
    ids = {"np.empty + fill (baseline)": "np_empty", "np.empty, numpy's THP advice off":
           "np_empty_no_thp", "fastio.empty 4 KiB pages + fill": "fastio_4k",
           "fastio.empty huge pages + fill": "fastio_huge",
           "fastio.empty huge, populate + fill": "fastio_huge_populate",
           "fill of touched memory (floor)": "floor"}
    for name, ts in times.items():
        rep.figure(ids[name], name + " (us per 4 KiB page)", "us/page",
                   [t / pages * 1e6 for t in ts], higher_is_better=False,
                   thp_faults_per_round=thp[name][-args.rounds:])
    for fid in ("fastio_4k", "fastio_huge", "fastio_huge_populate"):
        label = rep.data['figures'][fid]['label'].replace(" (us per 4 KiB page)", "")
        # np.empty gets huge pages (numpy's own MADV_HUGEPAGE): the 4 KiB
        # row compares page sizes, and says so.
        label += " (4 KiB pages against numpy's huge pages)" if fid == "fastio_4k" else ""
        rep.ratio(fid, f"{label} vs np.empty + fill (time)",
                  fid, "np_empty")
    rep.finish()


if __name__ == "__main__":
    main()
