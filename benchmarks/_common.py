"""What every benchmark prints and needs: the machine, the file's filesystem
and page-cache state, a test file, sizes, interleaved rounds, the spread of
every figure and ratio, and the JSON record that benchmarks/make_tables.py
turns into the tables of docs/benchmarks.md and README.md.

Benchmarks are not tests: each measures fastio and its baseline in the same
run and prints the ratio, with the conditions below so a figure can be
compared with another one honestly.

The scripts run against the *installed* fastio, as a user has it after
README's first command: run them as ``python benchmarks/bench_x.py`` (from
the repository root or anywhere). Python puts the script's directory
(benchmarks/) first on sys.path, not the current directory, so the source
tree's fastio/ is not picked up by accident. To measure a checkout instead,
build it in place and say so: ``PYTHONPATH=/path/to/checkout python ...``.
"""
import datetime
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

try:
    import fastio
except ImportError as e:  # pragma: no cover - what a user sees
    sys.exit(f"benchmarks need fastio installed (pip install .), or PYTHONPATH naming "
             f"a checkout built in place: {e}")

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def parse_size(text):
    """'256M', '1G', '4k', '4096' -> bytes."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = str(text).strip().upper()
    for suffix in ("IB", "B"):
        if t.endswith(suffix) and len(t) > len(suffix):
            t = t[: -len(suffix)]
    if t and t[-1] in units:
        return int(float(t[:-1]) * units[t[-1]])
    return int(t)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def mount_of(path):
    """(device, mount point, filesystem type) of the mount that holds path:
    the longest mount point that is path or a parent of it."""
    path = os.path.realpath(path)
    best = ("?", "", "unknown")
    try:
        with open("/proc/self/mounts") as fh:
            for line in fh:
                dev, mnt, typ = line.split()[:3]
                mnt = mnt.replace("\\040", " ")  # /proc/mounts escapes spaces
                inside = path == mnt or path.startswith(mnt.rstrip("/") + "/")
                if inside and len(mnt) >= len(best[1]):
                    best = (dev, mnt, typ)
    except OSError:
        pass
    return best


def filesystem_of(path):
    """'ext4 on /dev/vda at /' for the mount that holds path."""
    dev, mnt, typ = mount_of(path)
    return f"{typ} on {dev} at {mnt}" if mnt else "unknown"


def _read(path, default="?"):
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return default


def machine_info(path=None):
    """Print the machine, kernel, versions and (with path) the filesystem."""
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    print(f"machine : {platform.machine()}, {cpu_model()}")
    print(f"cpus    : {os.cpu_count()} (usable {len(os.sched_getaffinity(0))}), "
          f"RAM {mem:.1f} GiB, load {os.getloadavg()[0]:.2f}, "
          f"THP {_read('/sys/kernel/mm/transparent_hugepage/enabled')}")
    print(f"kernel  : Linux {platform.release()}; Python {platform.python_version()}, "
          f"numpy {np.__version__}, fastio {fastio.__version__}")
    if path is not None:
        print(f"file    : {path} on {filesystem_of(path)}")


def residency(path):
    """Fraction of the file in the page cache (mincore through fastio.mmap)."""
    if os.path.getsize(path) == 0:
        return 1.0
    with fastio.mmap(os.fspath(path), mode="r") as m:
        frac, _ = m.residency()
    return frac


def cache_state(path):
    return f"{residency(path) * 100:.1f}% of the file in the page cache (mincore)"


def make_file(path, size, chunk=64 << 20):
    """Write size bytes of deterministic, non-constant data (fsynced)."""
    block = np.arange(chunk // 8, dtype="<u8").view("u1")
    with open(path, "wb") as fh:
        left = size
        while left:
            n = min(left, block.nbytes)
            fh.write(block[:n])
            left -= n
        fh.flush()
        os.fsync(fh.fileno())


def warm(path):
    """Read the whole file once, so that it is in the page cache."""
    with open(path, "rb", buffering=0) as fh:
        while fh.read(16 << 20):
            pass


def evict(path):
    """Drop the file from the page cache (POSIX_FADV_DONTNEED after fsync)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def timed(fn):
    """Wall-clock seconds of one call of fn(); what fn returns is freed after
    the clock stops (freeing a large result is not part of making it)."""
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    del out
    return seconds


def run_rounds(contenders, rounds, once=timed, warmup=True):
    """Interleaved rounds whose order rotates (A B C, B C A, C A B, ...), so
    that drift on a shared, noisy machine and the state one contender leaves
    for the next (freed memory, cache) hit every contender alike; with warmup
    a first round, not recorded, runs every contender once. contenders:
    {name: fn} or [(name, fn)]; once(fn) -> a figure (seconds by default).
    Returns {name: [figure per round]} in the contenders' order: index i of
    every list is round i, so per-round ratios pair values of one round."""
    contenders = list(dict(contenders).items())
    times = {name: [] for name, _ in contenders}
    if warmup:
        for _, fn in contenders:
            once(fn)
    k = len(contenders)
    for r in range(rounds):
        for i in range(k):
            name, fn = contenders[(r + i) % k]
            times[name].append(once(fn))
    return times


median = statistics.median


def print_table(rows, columns, first="contender", indent=""):
    """One line per row of rows ({name: value}, e.g. {name: [seconds...]}):
    the name, then one cell per column (heading, figure, format), the cell
    being format(figure(value), format). A format ending in 'x' is a ratio:
    the x is printed after the number. Columns are as wide as their widest
    cell; every line starts with indent."""
    lines = [[first] + [heading for heading, _, _ in columns]]
    for name, value in rows.items():
        line = [name]
        for _, figure, fmt in columns:
            ratio = fmt.endswith("x")
            line.append(format(figure(value), fmt[:-1] if ratio else fmt) + ("x" if ratio else ""))
        lines.append(line)
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for line in lines:
        print(f"{indent}{line[0]:<{widths[0]}}" +
              "".join(f"  {cell:>{w}}" for cell, w in zip(line[1:], widths[1:])))


def compile_c(source, out_dir, attempts=((),)):
    """Compile benchmarks/c/SOURCE (a plain C baseline) with $CC, cc or gcc
    and -O2 -pthread into out_dir: (path of the program, the extra flags that
    worked) for the first of attempts (lists of extra flags, e.g. an optional
    library first, then none) that compiles, or (None, why) when there is no
    compiler or every attempt fails: a benchmark then leaves out its C rows
    and says why."""
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        return None, "no C compiler (cc, gcc or $CC)"
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "c", source)
    exe = os.path.join(out_dir, os.path.splitext(source)[0])
    p = None
    for extra in attempts:
        p = subprocess.run([cc, "-O2", "-pthread", "-o", exe, src] + list(extra),
                           capture_output=True, text=True)
        if p.returncode == 0:
            return exe, list(extra)
    return None, f"{os.path.basename(cc)} failed on {source}: {p.stderr.strip()[-300:]}"


# ---------------------------------------------------------------- spread

def stats(values):
    """median, min, max, quartiles and n of a list of figures."""
    v = sorted(float(x) for x in values)
    if not v:
        return {"n": 0, "median": None, "min": None, "max": None, "q1": None, "q3": None}
    q1, q3 = (np.percentile(v, (25, 75)).tolist() if len(v) > 1 else (v[0], v[0]))
    return {"n": len(v), "median": statistics.median(v), "min": v[0], "max": v[-1],
            "q1": q1, "q3": q3}


def per_round_ratios(fastio_values, baseline_values, higher_is_better=True):
    """Ratio of round i's fastio figure to round i's baseline figure, for
    every round, oriented so that > 1 means fastio is better: value ratio
    for rates (GB/s, IOPS), baseline/fastio for times."""
    pairs = zip(fastio_values, baseline_values)
    if higher_is_better:
        return [a / b for a, b in pairs if b]
    return [b / a for a, b in pairs if a]


def with_spread(values, fmt=".2f", unit=""):
    """'4.31 (3.90-4.62)': the median and the min-max of values."""
    s = stats(values)
    if s["n"] == 0:
        return "-"
    u = f" {unit}" if unit else ""
    if s["n"] == 1:
        return f"{s['median']:{fmt}}{u} (1 run)"
    return f"{s['median']:{fmt}}{u} ({s['min']:{fmt}}-{s['max']:{fmt}})"


# ---------------------------------------------------------------- JSON record

def machine_record(path=None):
    """The conditions as a dict (what machine_info prints)."""
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    rec = {"arch": platform.machine(), "cpu": cpu_model(), "cpus": os.cpu_count(),
           "cpus_usable": len(os.sched_getaffinity(0)), "ram_bytes": mem,
           "loadavg": list(os.getloadavg()),
           "thp": _read("/sys/kernel/mm/transparent_hugepage/enabled"),
           "thp_defrag": _read("/sys/kernel/mm/transparent_hugepage/defrag"),
           "kernel": f"Linux {platform.release()}", "python": platform.python_version(),
           "numpy": np.__version__, "fastio": fastio.__version__,
           "fastio_from": os.path.dirname(os.path.abspath(fastio.__file__))}
    if path is not None:
        rec["filesystem"] = filesystem_of(path)
    return rec


def add_json_argument(ap, name):
    """--json PATH, by default benchmarks/results/NAME.json (the file that
    make_tables.py reads), and --note TEXT recorded with the figures."""
    ap.add_argument("--json", metavar="PATH", default=os.path.join(RESULTS_DIR, f"{name}.json"),
                    help="where to write every figure, per round, with the conditions "
                         "(default: benchmarks/results/%(default)s); '-' for none"
                    .replace("%(default)s", f"{name}.json"))
    ap.add_argument("--note", default=os.environ.get("FASTIO_BENCH_NOTE", ""),
                    help="a note recorded with the run (e.g. 'machine loaded by other "
                         "sessions'); default $FASTIO_BENCH_NOTE")


def _repo_relative(arg):
    """A path inside the repository as the repository-relative path a reader
    can type (the JSON's command must not name this machine's checkout)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
    return arg[len(root):] if arg.startswith(root) else arg


class Report:
    """Every figure of one run, per round, with the conditions; printed with
    its spread and written as JSON for make_tables.py.

    figure(id, label, unit, values): a contender's figure per round.
    ratio(id, label, fastio_id, baseline_id): the per-round ratios of two
    figures measured in the same rounds (> 1: fastio better), with spread.
    """

    def __init__(self, script, args=None, path=None):
        self.data = {
            "script": os.path.basename(script),
            "command": "python benchmarks/" + os.path.basename(script) + "".join(
                " " + shlex.quote(_repo_relative(a)) for a in sys.argv[1:]),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine_record(path),
            "cache": None, "params": {}, "note": "", "notes": [],
            "figures": {}, "ratios": {},
        }
        self.args = args
        # The run's note (--note: what the machine was doing), apart from
        # the notes a script adds about its own rows.
        self.data["note"] = (getattr(args, "note", "") if args is not None else "") or ""

    def set(self, **kw):
        """Record conditions: cache='...', filesystem='...', params={...}."""
        for k, v in kw.items():
            if k == "params":
                self.data["params"].update(v)
            elif k == "filesystem":
                self.data["machine"]["filesystem"] = v
            else:
                self.data[k] = v

    def note(self, text):
        self.data["notes"].append(text)

    def figure(self, fid, label, unit, values, higher_is_better=True, **extra):
        rec = {"label": label, "unit": unit, "higher_is_better": higher_is_better,
               "values": [float(v) for v in values]}
        rec.update(stats(values))
        rec.update(extra)
        self.data["figures"][fid] = rec
        return rec

    def ratio(self, rid, label, fastio_id, baseline_id, per_round=None):
        f = self.data["figures"][fastio_id]
        b = self.data["figures"][baseline_id]
        if per_round is None:
            if len(f["values"]) == len(b["values"]):
                per_round = per_round_ratios(f["values"], b["values"], f["higher_is_better"])
            else:  # not measured in the same rounds: only the medians compare
                per_round = per_round_ratios([f["median"]], [b["median"]],
                                             f["higher_is_better"])
        rec = {"label": label, "fastio": fastio_id, "baseline": baseline_id,
               "per_round": [float(x) for x in per_round]}
        rec.update(stats(per_round))
        self.data["ratios"][rid] = rec
        return rec

    def figures_from_times(self, times, unit, convert=None, higher_is_better=None, ids=None):
        """One figure per contender of run_rounds' {name: [seconds]};
        convert(seconds) -> figure (e.g. bytes / s / 1e9 for GB/s)."""
        for name, ts in times.items():
            vals = [convert(t) for t in ts] if convert else list(ts)
            hib = (convert is not None) if higher_is_better is None else higher_is_better
            self.figure((ids or {}).get(name, name), name, unit, vals, hib)

    def print(self):
        figs, rats = self.data["figures"], self.data["ratios"]
        if figs:
            print("\nfigures: median (min-max) over the rounds")
            w = max(len(f["label"]) for f in figs.values())
            for f in figs.values():
                fmt = ".2f" if f["median"] is not None and abs(f["median"]) < 1000 else ",.0f"
                print(f"  {f['label']:<{w}}  {with_spread(f['values'], fmt, f['unit'])}")
        if rats:
            print("ratios (> 1: fastio better): median of the per-round ratios (min-max)")
            w = max(len(r["label"]) for r in rats.values())
            for r in rats.values():
                print(f"  {r['label']:<{w}}  {with_spread(r['per_round'], '.2f')}x"
                      f"  [{r['n']} rounds]")
        for n in filter(None, [self.data["note"]] + self.data["notes"]):
            print(f"note: {n}")

    def write(self, path=None):
        path = path if path is not None else getattr(self.args, "json", None)
        if not path or path == "-":
            return None
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as fh:
            json.dump(self.data, fh, indent=1, sort_keys=False)
            fh.write("\n")
        print(f"figures written to {path}")
        return path

    def finish(self):
        self.print()
        self.write()
