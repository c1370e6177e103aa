"""Does a method's figure depend on what ran before it? The full run against each group alone.

Runs, on the same file size, the default comparison (`fastio`, every
method) and then `fastio run --group G` for every I/O family G (each
method's group alone), plus `fastio run --method fastio.read_file` (the pair
issue 11 started from). For every method with a baseline it prints the
method/baseline ratio of the full run and of the group run, and their
quotient: a measurement that does not depend on its neighbours gives a
quotient near 1. The done-when of issue 11: within 1.6x for every method.
Each ratio is printed with its min-max (the paired repetitions), so a
disagreement can be told from noise.

The lab is run as a user runs it (`python -m fastio`, the fastio that
Python imports here); every figure within one run is a ratio, so a loaded
machine moves both sides. Say when it was loaded.

    python benchmarks/bench_lab_isolation.py [--size 256M] [--repeat 3] [--dir DIR] [--json PATH]

The JSON (default benchmarks/results/lab_isolation.json) holds, per method,
the per-repetition ratios of both runs and the quotient of their medians;
make_tables.py renders it into docs/benchmarks.md.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from _common import Report, add_json_argument

LIMIT = 1.6


def lab(args, out, extra):
    cmd = [sys.executable, "-m", "fastio", *args, "--json", out, *extra]
    t0 = time.monotonic()
    # From the output's folder, not the caller's: `python -m fastio` run from
    # the repository's root would import the source tree, not the package.
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=os.path.dirname(out))
    # 1: a method failed, its rows say which; anything else, or no JSON
    # (the lab did not start), is this script's failure.
    if p.returncode not in (0, 1) or not os.path.exists(out):
        sys.exit(f"{' '.join(cmd)} exited {p.returncode}:\n{p.stderr[-2000:]}")
    with open(out) as f:
        data = json.load(f)
    rows = {r["method"]: r for r in data["fastio_summary"]}
    # The per-repetition ratios, each method paired with its baseline of the
    # same round: the lab's summary has them (Results.summary's "ratios").
    for row in rows.values():
        row["per_rep_ratios"] = row.get("ratios") or []
    return rows, data["fastio_env"], time.monotonic() - t0


def fmt_ratio(r):
    if r is None or r.get("ratio") is None:
        return "-"
    spread = (f" ({r['ratio_min']:.2f}-{r['ratio_max']:.2f})"
              if r.get("ratio_min") is not None else "")
    return f"{r['ratio']:.2f}{spread}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="256M")
    ap.add_argument("--repeat", default="3")
    ap.add_argument("--dir", default=None)
    add_json_argument(ap, "lab_isolation")
    a = ap.parse_args()
    rep = Report(__file__, a)
    rep.set(params={"size": a.size, "repeat": a.repeat, "limit": LIMIT},
            cache="warm (the lab's default), checked by the lab")
    extra = ["--size", a.size, "--repeat", a.repeat] + (["--dir", a.dir] if a.dir else [])
    from fastio.lab import GROUPS, METHODS   # what the CLI knows
    with tempfile.TemporaryDirectory() as tmp:
        full, env, secs = lab([], os.path.join(tmp, "full.json"), extra)
        print(f"full run: {len(full)} methods, {secs:.0f} s; machine: {env['machine']['kernel']}"
              f", {env['machine']['cpu']} ({env['machine']['cpus']} CPUs); "
              f"load average {os.getloadavg()[0]:.1f}; file {a.size} on "
              f"{env['file']['filesystem']['type']}; cache warm; repeat {a.repeat}")
        mem = env.get("memory")
        if mem:
            print(f"first touch, 2 MiB pages: fresh {mem['fresh']['2m']['us_per_page']:.0f} us, "
                  f"recycled {mem['recycled']['2m']['us_per_page']:.0f} us per page; "
                  f"4 KiB pages: fresh {mem['fresh']['4k']['us_per_page']:.2f} us, recycled "
                  f"{mem['recycled']['4k']['us_per_page']:.2f} us")
        alone = {}
        for g in GROUPS:
            rows, _, secs = lab(["run", "--group", g], os.path.join(tmp, "g.json"), extra)
            alone.update({m: (r, f"group {g}") for m, r in rows.items()
                          if r.get("group") == g})
        rows, _, _ = lab(["run", "--method", "fastio.read_file"],
                         os.path.join(tmp, "m.json"), extra)
        pair = rows.get("fastio.read_file")
    print()
    print(f"{'method':18} {'vs':16} {'full run':>20} {'alone':>20} {'full/alone':>10} "
          f"{'overlap':>7}")
    bad, missing = [], []
    lines = [("fastio.read_file", full.get("fastio.read_file"), pair, "method alone")]
    order = list(METHODS)
    lines += [(m, full.get(m), alone.get(m, (None, ""))[0], alone.get(m, (None, ""))[1])
              for m in sorted(full, key=lambda n: order.index(n) if n in order else 999)
              if full[m].get("baseline")]
    for m, f, g, how in lines:
        if f is None or g is None or f.get("ratio") is None or g.get("ratio") is None:
            print(f"{m:18} {'':16} {fmt_ratio(f):>20} {fmt_ratio(g):>20} {'-':>10}  {how}")
            missing.append(m)   # not compared: neither within nor outside
            continue
        q = f["ratio"] / g["ratio"]
        off = max(q, 1 / q) > LIMIT
        # do the two ranges of paired ratios overlap? then the difference is
        # within what the repetitions themselves spread over
        overlap = (f.get("ratio_min") is not None and g.get("ratio_min") is not None
                   and f["ratio_min"] <= g["ratio_max"] and g["ratio_min"] <= f["ratio_max"])
        if off:
            bad.append(m + (" (ranges overlap)" if overlap else ""))
        fid = m if how == "method alone" or m != "fastio.read_file" else f"{m} ({how})"
        if f.get("per_rep_ratios") and g.get("per_rep_ratios"):
            rep.figure(f"{fid}: full", f"{m} / {f['ratio_to']}, full run", "ratio",
                       f["per_rep_ratios"])
            rep.figure(f"{fid}: alone", f"{m} / {f['ratio_to']}, {how}", "ratio",
                       g["per_rep_ratios"])
            # Not paired by round (two runs): only the medians compare.
            rep.ratio(f"{fid}: full / alone", f"{m} / {f['ratio_to']}: full run / {how} "
                      f"(medians; within {LIMIT}x wanted)", f"{fid}: full", f"{fid}: alone",
                      per_round=[q])
        print(f"{m:18} {f['ratio_to']:16} {fmt_ratio(f):>20} {fmt_ratio(g):>20} "
              f"{q:>9.2f}{' !' if off else '  '} {'yes' if overlap else 'no ':>7}  {how}")
    print()
    print("ratio (min-max over the paired repetitions); overlap: the two min-max ranges "
          "overlap (a difference the repetitions' own spread covers)")
    compared = len(lines) - len(missing)
    verdict = (f"full/alone within {LIMIT}x for {compared - len(bad)} of {compared}" +
               (f"; outside: {', '.join(bad)}" if bad else "") +
               (f"; not compared (no ratio in one of the runs): {', '.join(missing)}"
                if missing else ""))
    print(verdict)
    rep.note(verdict)
    if a.json != "-":
        rep.write(a.json)


if __name__ == "__main__":
    main()
