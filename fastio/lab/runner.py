"""The runner: set the cache state, run each method, record what figures depend on.

For each repetition, every method runs once (interleaved, so the noise of a
shared machine falls on every method alike). Before each method's run the
cache mode is applied and checked with mincore: 'warm' reads the file and
expects 100% resident, 'cold' evicts it (posix_fadvise DONTNEED) and expects
0%, 'direct' evicts it and opens with O_DIRECT. A failed check does not stop
the run: the record says so (``cache.ok`` False, with the fraction found).

CPU time (user, system) and page faults (minor, major) come from
getrusage(RUSAGE_SELF) around the call, so worker threads (the aio
'threads' backend) are counted.
"""
import os
import platform
import resource
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, Iterable, Optional, Sequence, Union

import numpy as np

import fastio

from .methods import Job, Method, Outcome, selected
from .results import ERROR, OK, UNAVAILABLE, Results, latency_summary

CACHE_MODES = ("warm", "cold", "direct")
PATTERNS = ("seq", "rand")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(value: Union[int, str], name: str = "size") -> int:
    """parse_size(value, name='size')

    An int, or '256M', '4k', '8MiB', '1g' (binary units) -> bytes.
    ValueError naming ``name`` and the value for anything else or < 1.
    """
    import re
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        n = int(value)
    else:
        m = re.fullmatch(r"\s*([+-]?\d+)\s*([kmgtKMGT]?)(?:i?[bB])?\s*", str(value))
        if not m:
            raise ValueError(f"{name} must be a number of bytes with an optional "
                             f"K/M/G/T suffix, got {name}={value!r}")
        n = int(m.group(1)) * _UNITS[m.group(2).lower()]
    if n < 1:
        raise ValueError(f"{name} must be at least 1 byte, got {name}={value!r}")
    return n


def warm_cache(path: str, chunk: int = 1 << 20) -> int:
    """warm_cache(path, chunk=1048576)

    Read the whole file once, so that its pages are in the page cache;
    returns the bytes read.
    """
    done = 0
    buf = bytearray(chunk)
    with open(path, "rb", buffering=0) as f, memoryview(buf) as view:
        while True:
            n = f.readinto(view)
            if not n:
                return done
            done += n


def evict_cache(path: str) -> None:
    """evict_cache(path)

    Drop the file's clean pages from the page cache: fdatasync (dirty
    pages cannot be dropped), then posix_fadvise(POSIX_FADV_DONTNEED).
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fdatasync(fd)
        fastio.fadvise(fd, 0, 0, fastio.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def cache_state(path: str) -> Dict[str, Any]:
    """cache_state(path)

    How much of the file is in the page cache, asked of the kernel (mincore)
    through fastio.mmap(...).residency(): ``resident_fraction`` (None when
    it cannot be checked), ``verified_by`` and, when unverified, ``reason``.
    """
    size = os.path.getsize(path)
    if size == 0:
        return {"resident_fraction": 1.0, "verified_by": "empty file"}
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with fastio.mmap(fd, size, access=fastio.ACCESS_READ) as mm:
            frac, _ = mm.residency()
    except OSError as e:
        return {"resident_fraction": None, "verified_by": None,
                "reason": f"fastio.mmap.residency failed: {e}"}
    finally:
        os.close(fd)
    return {"resident_fraction": float(frac), "verified_by": "mincore (fastio.mmap.residency)"}


def set_cache(path: str, mode: str) -> Dict[str, Any]:
    """set_cache(path, mode)

    Apply a cache mode ('warm', 'cold', 'direct') and verify it: returns
    {mode, resident_fraction, expected, ok, verified_by}; ``ok`` is False
    when mincore disagrees (e.g. the kernel kept pages another process
    maps), None when it could not be checked.
    """
    if mode not in CACHE_MODES:
        raise ValueError(f"cache must be one of {CACHE_MODES}, got cache={mode!r}")
    if mode == "warm":
        warm_cache(path)
    else:
        evict_cache(path)
    st = cache_state(path)
    frac = st["resident_fraction"]
    expected = 1.0 if mode == "warm" else 0.0
    ok = None if frac is None else (frac >= 0.999 if mode == "warm" else frac <= 0.001)
    out = {"mode": mode, "resident_fraction": frac, "expected": expected, "ok": ok,
           "verified_by": st["verified_by"]}
    if "reason" in st:
        out["reason"] = st["reason"]
    return out


def _unescape_mount(s: str) -> str:
    for esc, ch in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        s = s.replace(esc, ch)
    return s


def filesystem_of(path: str, mounts: str = "/proc/mounts") -> Dict[str, Optional[str]]:
    """filesystem_of(path, mounts='/proc/mounts')

    The mount holding path: its ``type``, ``device`` and ``mountpoint``; the
    longest mount point containing the file's real path wins (the last one
    listed among equals: it is mounted on top).
    """
    real = os.path.realpath(path)
    best = {"type": None, "device": None, "mountpoint": None}
    best_len = -1
    try:
        with open(mounts) as f:
            lines = f.read().splitlines()
    except OSError:
        return best
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        dev, mp, fstype = _unescape_mount(parts[0]), _unescape_mount(parts[1]), parts[2]
        inside = real == mp or real.startswith(mp.rstrip("/") + "/")
        if inside and len(mp) >= best_len:
            best = {"type": fstype, "device": dev, "mountpoint": mp}
            best_len = len(mp)
    return best


def _cpu_model() -> Optional[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "cpu model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or None


def _mem_total() -> Optional[int]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def machine_info() -> Dict[str, Any]:
    """machine_info()

    What a figure depends on besides the file: kernel, CPU, memory, versions.
    """
    u = os.uname()
    return {
        "system": u.sysname, "kernel": u.release, "arch": u.machine,
        "cpu": _cpu_model(), "cpus": os.cpu_count(), "memory": _mem_total(),
        "python": platform.python_version(), "numpy": np.__version__,
        "fastio": getattr(fastio, "__version__", None),
        "aio_backends": {n: b.available for n, b in fastio.backends().items()},
    }


def make_file(size: int, directory: Optional[str] = None) -> str:
    """make_file(size, directory=None)

    A new temporary file of size random bytes (random: no filesystem can
    store it sparse or compressed), fsynced so that writeback does not run
    during the measurements. The caller removes it.
    """
    fd, path = tempfile.mkstemp(prefix="fastio-lab-", suffix=".bin", dir=directory)
    try:
        rng = np.random.default_rng(0x5EED)
        left = size
        while left:
            data = rng.bytes(min(8 << 20, left))
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            left -= len(data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)
    return path


def offsets_for(size: int, block_size: int, pattern: str, seed: int = 0) -> np.ndarray:
    """offsets_for(size, block_size, pattern, seed=0)

    One offset per whole block of the file: in order ('seq') or a random
    permutation ('rand', every block once, as fio's random map does).
    """
    if pattern not in PATTERNS:
        raise ValueError(f"pattern must be 'seq' or 'rand', got pattern={pattern!r}")
    offs = np.arange(size // block_size, dtype=np.int64) * block_size
    if pattern == "rand":
        np.random.default_rng(seed).shuffle(offs)
    return offs


def _usage():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime, r.ru_minflt, r.ru_majflt


def _call(method: Method, job: Job, threads: int) -> Outcome:
    if threads <= 1 or method.whole_file:
        return method.fn(job)
    parts = [o for o in np.array_split(job.offsets, threads) if len(o)]
    jobs = [Job(job.path, job.size, job.block_size, p, job.depth, job.direct, job.pattern,
                job.verify) for p in parts]
    with ThreadPoolExecutor(len(jobs)) as ex:
        outs = list(ex.map(method.fn, jobs))
    lat = (np.concatenate([o.lat_ns for o in outs]) if all(o.lat_ns is not None for o in outs)
           else None)
    hist = None
    if lat is None:
        merged: Dict[int, int] = {}
        for o in outs:
            for top, c in o.lat_hist or ():
                merged[top] = merged.get(top, 0) + c
        hist = sorted(merged.items())
    last = outs[-1]
    # the threads' I/O phases overlap: the longest is the I/O time
    io_ns = max(o.io_ns for o in outs) if all(o.io_ns is not None for o in outs) else None
    return Outcome(sum(o.nbytes for o in outs), sum(o.requests for o in outs), lat, hist,
                   last.timer, last.backend, last.check, last.check_offset, last.extra, io_ns)


def measure(method: Method, job: Job, cache: str, threads: int = 1) -> Dict[str, Any]:
    """measure(method, job, cache, threads=1)

    Set and verify the cache mode, run the method once, and return its
    record (without the run's parameters: run() adds them).
    """
    rec: Dict[str, Any] = {"method": method.name, "group": method.group,
                           "baseline": method.baseline, "status": OK, "reason": None}
    why = method.unavailable(cache)
    if why:
        rec.update(status=UNAVAILABLE, reason=why)
        return rec
    rec["cache"] = set_cache(job.path, cache) if method.direct != "n/a" else {
        "mode": cache, "ok": None, "reason": "does not read the file"}
    u0 = _usage()
    t0 = time.perf_counter_ns()
    try:
        out = _call(method, job, threads)
    except Exception as e:  # recorded; the run goes on
        rec.update(status=ERROR, reason=f"{type(e).__name__}: {e}")
        return rec
    elapsed = time.perf_counter_ns() - t0
    u1 = _usage()
    expected = (os.path.getsize(job.path) if method.whole_file
                else job.block_size * len(job.offsets))
    if out.nbytes != expected:
        rec.update(status=ERROR, reason=f"moved {out.nbytes} bytes, expected {expected}")
        return rec
    timed = out.io_ns if out.io_ns is not None else elapsed
    secs = max(timed, 1) / 1e9
    rec.update({
        "backend": out.backend or method.backend or ("kernel" if method.group != "malloc/brk"
                                                      else "libc"),
        "bytes": out.nbytes, "requests": out.requests, "elapsed_ns": elapsed,
        "io_ns": timed, "setup_ns": elapsed - timed,
        "throughput_Bps": out.nbytes / secs, "iops": out.requests / secs,
        "latency_ns": latency_summary(out.lat_ns, out.lat_hist),
        "latency_timer": out.timer,
        "cpu": {"user_s": u1[0] - u0[0], "sys_s": u1[1] - u0[1]},
        "faults": {"minor": u1[2] - u0[2], "major": u1[3] - u0[3]},
        "direct": job.direct,
        "whole_file": method.whole_file,
        "extra": out.extra,
    })
    if job.verify:
        rec["check"] = (out.check, out.check_offset)
    return rec


def _progress_counter(total: int, label: str, enabled: bool):
    if not enabled:
        return lambda: None
    import sys
    state = {"n": 0}

    def tick():
        state["n"] += 1
        end = "\n" if state["n"] == total else ""
        sys.stderr.write(f"\r{label}: {state['n']}/{total}{end}")
        sys.stderr.flush()
    return tick


def run(methods: Optional[Iterable[str]] = None, *, pattern: str = "seq",
        block_size: Union[int, str] = "1M", depth: int = 1,
        size: Optional[Union[int, str]] = None,
        file: Optional[str] = None, cache: str = "warm", repeat: int = 5, threads: int = 1,
        groups: Optional[Iterable[str]] = None, directory: Optional[str] = None,
        progress: bool = False, verify: bool = False, seed: int = 0,
        _tick: Optional[Callable[[], None]] = None) -> Results:
    """run(methods=None, *, pattern='seq', block_size='1M', depth=1, size=None, file=None, cache='warm', repeat=5, threads=1, groups=None, directory=None, progress=False, verify=False, seed=0)

    Measure the methods named (every registered one when None; ``groups``
    adds whole seed rows; baselines are added) on ``file`` (read, never
    changed; its first ``size`` bytes when size is given, else all of it) or
    on a temporary file of ``size`` random bytes (default 256M) made in
    ``directory`` and removed afterwards. Every method
    does ``size // block_size`` requests in the ``pattern`` order, ``repeat``
    times, interleaved; ``depth`` is the aio queue depth, ``threads`` splits
    the requests among that many threads. Returns Results: one record per
    (method, repetition).
    """
    bs = parse_size(block_size, "block_size")
    if pattern not in PATTERNS:
        raise ValueError(f"pattern must be 'seq' or 'rand', got pattern={pattern!r}")
    if cache not in CACHE_MODES:
        raise ValueError(f"cache must be one of {CACHE_MODES}, got cache={cache!r}")
    for name, v in (("repeat", repeat), ("depth", depth), ("threads", threads)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {name}={v!r}")
    chosen = selected(methods, groups=groups)
    temporary = file is None
    if temporary:
        nbytes = parse_size(size if size is not None else "256M", "size")
        path = make_file(nbytes, directory)
    else:
        path = os.fspath(file)
        nbytes = os.path.getsize(path)
        if nbytes == 0:
            raise ValueError(f"file={path!r} is empty")
        if size is not None:   # the first size bytes of the file
            nbytes = min(nbytes, parse_size(size, "size"))
    try:
        if bs > nbytes:
            raise ValueError(f"block_size={bs} is larger than the file ({nbytes} bytes)")
        offsets = offsets_for(nbytes, bs, pattern, seed)
        job = Job(path, nbytes, bs, offsets, int(depth), cache == "direct", pattern, verify)
        params = {"pattern": pattern, "block_size": bs, "depth": int(depth), "size": nbytes,
                  "cache": cache, "threads": int(threads)}
        records = []
        tick = _tick or _progress_counter(repeat * len(chosen), "fastio.lab", progress)
        for rep in range(repeat):
            for m in chosen:
                rec = measure(m, job, cache, threads)
                rec["params"] = dict(params)
                rec["repetition"] = rep
                records.append(rec)
                tick()
        env = {
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "file": {"path": os.path.abspath(path), "size": nbytes, "temporary": temporary,
                     "filesystem": filesystem_of(path)},
            "machine": machine_info(),
            "repeat": repeat,
        }
        return Results(records, env)
    finally:
        if temporary:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


def sweep(method: Union[str, Sequence[str]], *, block_size: Sequence[Union[int, str]] = ("4k",),
          depth: Sequence[int] = (1,), pattern: Union[str, Sequence[str]] = "seq",
          size: Union[int, str] = "64M", file: Optional[str] = None, cache: str = "warm",
          repeat: int = 3, threads: int = 1, directory: Optional[str] = None,
          progress: bool = True) -> Results:
    """sweep(method, *, block_size=('4k',), depth=(1,), pattern='seq', size='64M', file=None, cache='warm', repeat=3, threads=1, directory=None, progress=True)

    run() over every combination of block_size x depth x pattern for one
    method (or a list), on one file (made once when ``file`` is None).
    Shows a progress bar (tqdm where installed, else a one-line counter on
    stderr). Returns all the records in one Results.
    """
    names = [method] if isinstance(method, str) else list(method)
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    combos = [(b, d, p) for p in patterns for b in block_size for d in depth]
    per = repeat * len(selected(names))
    total = per * len(combos)
    bar = None
    if progress:
        try:
            from tqdm.auto import tqdm
            bar = tqdm(total=total, desc="fastio.lab.sweep")
            tick = lambda: bar.update(1)  # noqa: E731
        except ImportError:
            tick = _progress_counter(total, "fastio.lab.sweep", True)
    else:
        tick = lambda: None  # noqa: E731
    temporary = file is None
    path = make_file(parse_size(size, "size"), directory) if temporary else file
    try:
        parts = [run(names, pattern=p, block_size=b, depth=d, file=path, cache=cache,
                     repeat=repeat, threads=threads, _tick=tick) for b, d, p in combos]
    finally:
        if bar is not None:
            bar.close()
        if temporary:
            os.unlink(path)
    env = dict(parts[0].env)
    env["file"] = dict(env["file"], temporary=temporary)
    env["sweep"] = {"block_size": [parse_size(b, "block_size") for b in block_size],
                    "depth": list(depth), "pattern": patterns}
    return Results([r for p in parts for r in p.records], env)
