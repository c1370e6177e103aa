"""Run every benchmark script and the lab's default run, write their JSON
under benchmarks/results/, then regenerate the tables (make_tables.py).

    python benchmarks/run_all.py [--quick] [--note TEXT] [--only NAME,...]

--quick uses the short sizes and fewer rounds listed below (a few minutes
in all; the sizes are recorded in each JSON and printed in the tables);
without it every script runs with its own defaults (1 GiB files, more
rounds: a quiet machine and tens of minutes). --note is recorded with every
figure (e.g. "machine loaded by other sessions"). Runs against the fastio
that `import fastio` finds from benchmarks/ (the installed one, or a
checkout named by PYTHONPATH: say so in --note). Needs fio for the rows
that compare with it (apt-get install fio).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")

# name: (script, quick options). The JSON goes to results/<name>.json.
SCRIPTS = {
    "read_file": ("bench_read_file.py", ["--size", "256M", "--rounds", "5"]),
    "read_files": ("bench_read_files.py", ["--small", "2000x16K", "--large", "200x1M",
                                           "--rounds", "3"]),
    "aio": ("bench_aio.py", ["--size", "256M", "--requests", "20000", "--depths", "1,32",
                             "--rounds", "3", "--fio-seconds", "1"]),
    "autoread": ("bench_autoread.py", ["--size", "256M", "--requests", "100000",
                                       "--cold-requests", "10000", "--rounds", "3"]),
    "pread": ("bench_pread.py", ["--calls", "50000", "--rounds", "5"]),
    "mmap": ("bench_mmap.py", ["--size-mib", "128", "--slices", "20000", "--rounds", "7"]),
    "memmap": ("bench_memmap.py", ["--size", "256M", "--repeat", "5"]),
    "alloc": ("bench_alloc.py", ["--size-mib", "128", "--rounds", "5"]),
    "shm": ("bench_shm.py", ["--size-mib", "64", "--array-mb", "50", "--rounds", "5"]),
    "transfer": ("bench_transfer.py", ["--size-mib", "64", "--rounds", "3"]),
    "channel": ("bench_channel.py", ["--arrays", "200", "--trips", "5000", "--rounds", "3"]),
    "engines": ("bench_engines.py", ["--size", "256M", "--seconds", "1", "--rounds", "3"]),
    "lab_vs_fio": ("bench_lab_vs_fio.py", ["--size", "256M", "--direct-size", "64M",
                                           "--rounds", "3"]),
    "direct_vs_fio": ("bench_direct_vs_fio.py", ["--size", "256M", "--requests", "32768",
                                                 "--rounds", "5"]),
    # Best run under a free-threaded Python with --compare naming a default
    # build (docs/freethreading.md); under one interpreter it measures that one.
    "threads_scaling": ("bench_threads_scaling.py", ["--calls", "50000", "--rounds", "3"]),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short sizes, fewer rounds")
    ap.add_argument("--note", default="", help="recorded with every figure")
    ap.add_argument("--only", default="", help="comma-separated names (lab, read_file, ...)")
    args = ap.parse_args()
    only = set(filter(None, args.only.split(",")))
    env = dict(os.environ, FASTIO_BENCH_NOTE=args.note)
    os.makedirs(RESULTS, exist_ok=True)
    failed = []
    for name, (script, quick) in SCRIPTS.items():
        if only and name not in only:
            continue
        cmd = [sys.executable, os.path.join(HERE, script)] + (quick if args.quick else [])
        cmd += ["--json", os.path.join(RESULTS, f"{name}.json")]
        print(f"\n######## {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.time()
        if subprocess.run(cmd, env=env).returncode != 0:
            failed.append(name)
        print(f"######## {name}: {time.time() - t0:.0f} s", flush=True)
    if not only or "lab" in only:
        # The lab's default run, as a user types it; from a directory outside
        # the source tree, so that `-m fastio` finds the same fastio as above.
        out = os.path.join(RESULTS, "lab.json")
        cmd = [sys.executable, "-m", "fastio", "--json", out]
        print(f"\n######## lab: fastio --json {out}", flush=True)
        if subprocess.run(cmd, env=env, cwd=tempfile.gettempdir()).returncode != 0:
            failed.append("lab")
        else:  # committed: keep it small (no indentation; the same JSON)
            with open(out) as fh:
                data = json.load(fh)
            if args.note:
                data.setdefault("fastio_env", {})["note"] = args.note
            with open(out, "w") as fh:
                json.dump(data, fh, separators=(",", ":"))
                fh.write("\n")
    status = subprocess.run([sys.executable, os.path.join(HERE, "make_tables.py")]).returncode
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed or status else 0


if __name__ == "__main__":
    sys.exit(main())
