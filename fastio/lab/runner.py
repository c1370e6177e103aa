"""The runner: warm the cache, time each method, record what the figures depend on.

Repeats are interleaved (round r times every method once) so that the noise
of a shared machine falls on baseline and contender alike instead of on
whichever ran during a burst. Each method first runs once untimed (warm-up:
first-touch costs such as lazy imports are not what we compare).
"""
import gc
import os
import platform
import time
from typing import Any, Dict, Iterable, Optional

import numpy as np

import fastio

from .methods import Method, selected
from .results import ERROR, OK, UNAVAILABLE, Measurement, Results


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


def _resident_fraction(value: Any) -> float:
    """The fraction of pages resident, from what mmap.residency() answered:
    (fraction, per-page flags) as fastio.mmap documents it, or the per-page
    flags alone as the C core gives them."""
    if isinstance(value, tuple):
        return float(value[0])
    flags = np.frombuffer(value, dtype=np.uint8) if not isinstance(value, np.ndarray) else value
    return float(np.count_nonzero(flags & 1)) / max(flags.size, 1)


def cache_state(path: str) -> Dict[str, Any]:
    """cache_state(path)

    How much of the file is in the page cache, asked of the kernel (mincore)
    through fastio.mmap(...).residency(). Returns a dict with
    ``resident_fraction`` (None when it cannot be checked), ``verified_by``
    and, when unverified, ``reason``.
    """
    size = os.path.getsize(path)
    if size == 0:
        return {"resident_fraction": 1.0, "verified_by": "empty file"}
    if not hasattr(fastio.mmap, "residency"):
        return {"resident_fraction": None, "verified_by": None,
                "reason": "fastio.mmap.residency is not available in this build of fastio"}
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with fastio.mmap(fd, size, access=fastio.ACCESS_READ) as mm:
            frac = _resident_fraction(mm.residency())
    except OSError as e:
        return {"resident_fraction": None, "verified_by": None,
                "reason": f"fastio.mmap.residency failed: {e}"}
    finally:
        os.close(fd)
    return {"resident_fraction": frac, "verified_by": "fastio.mmap.residency (mincore)"}


def _unescape_mount(s: str) -> str:
    # /proc/mounts writes space, tab, newline and backslash as octal escapes.
    for esc, ch in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        s = s.replace(esc, ch)
    return s


def filesystem_of(path: str, mounts: str = "/proc/mounts") -> Dict[str, Optional[str]]:
    """filesystem_of(path, mounts='/proc/mounts')

    The mount holding path: its ``type`` (ext4, xfs, tmpfs, ...), ``device``
    and ``mountpoint``; the longest mount point that contains the file's
    real path wins (the last one listed among equals: it is mounted on top).
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


def machine_info() -> Dict[str, Any]:
    """machine_info()

    What a figure depends on besides the file: kernel, CPU, versions.
    """
    u = os.uname()
    return {
        "system": u.sysname,
        "kernel": u.release,
        "arch": u.machine,
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "fastio": getattr(fastio, "__version__", None),
    }


def _time_once(method: Method, path: str, size: int) -> int:
    gc.collect()  # outside the timed region: no collection of earlier garbage inside it
    t0 = time.perf_counter_ns()
    n = method.fn(path, size)
    t1 = time.perf_counter_ns()
    if n != size:
        raise RuntimeError(f"method {method.name} processed {n} bytes, expected {size}")
    return t1 - t0


def run(path: str, *, methods: Optional[Iterable[str]] = None, repeat: int = 5,
        warmup: int = 1, warm: bool = True, extra_info: Optional[Dict[str, Any]] = None) -> Results:
    """run(path, *, methods=None, repeat=5, warmup=1, warm=True, extra_info=None)

    Time every method (or those named, with their baselines) on the file at
    path: ``warmup`` untimed calls each, then ``repeat`` interleaved timed
    rounds. With warm=True the file is read once first and its residency in
    the page cache checked before and after the timed rounds. A method that
    raises is recorded as an error (the run goes on); one whose fastio names
    are missing is recorded as unavailable.
    """
    if repeat < 1:
        raise ValueError(f"repeat must be at least 1, got repeat={repeat}")
    if warmup < 0:
        raise ValueError(f"warmup must be at least 0, got warmup={warmup}")
    size = os.path.getsize(path)
    chosen = selected(methods)
    meas = {m.name: Measurement(m.name, m.baseline, m.group, m.description, nbytes=size)
            for m in chosen}
    live = []
    for m in chosen:
        reason = m.unavailable_reason()
        if reason:
            meas[m.name].status, meas[m.name].reason = UNAVAILABLE, reason
        else:
            live.append(m)

    if warm:
        warm_cache(path)
    before = cache_state(path)

    def attempt(m, timed):
        rec = meas[m.name]
        if rec.status != OK:
            return
        try:
            t = _time_once(m, path, size)
        except Exception as e:  # recorded and reported; the others still run
            rec.status, rec.reason = ERROR, f"{type(e).__name__}: {e}"
            rec.times_ns.clear()
            return
        if timed:
            rec.times_ns.append(t)

    for _ in range(warmup):
        for m in live:
            attempt(m, timed=False)
    for _ in range(repeat):
        for m in live:
            attempt(m, timed=True)

    after = cache_state(path)
    fracs = [c["resident_fraction"] for c in (before, after)]
    if None in fracs:
        cache = {"state": "warm (unverified)" if warm else "as found (unverified)",
                 "resident_fraction": None, "verified_by": None,
                 "reason": before.get("reason") or after.get("reason")}
    else:
        low = min(fracs)
        state = "warm" if low >= 0.99 else ("cold" if low <= 0.01 else f"partly cached ({low:.0%})")
        cache = {"state": state, "resident_fraction": low,
                 "resident_before": fracs[0], "resident_after": fracs[1],
                 "verified_by": before["verified_by"]}

    info = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "file": {"path": os.path.abspath(path), "size": size,
                 "filesystem": filesystem_of(path)},
        "cache": cache,
        "machine": machine_info(),
        "repeat": repeat,
        "warmup": warmup,
        "timer": "time.perf_counter_ns",
        "throughput": "GB/s = bytes / median time, 1 GB = 10^9 bytes",
    }
    if extra_info:
        info.update(extra_info)
    return Results([meas[m.name] for m in chosen], info)
