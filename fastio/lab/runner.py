"""The runner: set the cache state, run each method, record what figures depend on.

A run is one unrecorded warm-up round (fio's ramp_time) then ``repeat``
measured rounds; each round runs every method once, in an order shuffled
afresh each round from ``seed`` (recorded in ``env['order']``): the I/O
families in a shuffled order, each family's methods shuffled among
themselves, so no method always follows the same neighbour, the noise of a
shared machine falls on every method alike, and a method and its baseline
run seconds apart (the two figures of a ratio see the same load).

Before each method's call:
- the cache mode is applied and checked with mincore: 'warm' reads the file
  and expects 100% resident, 'cold' evicts it (posix_fadvise DONTNEED) and
  expects 0%, 'direct' evicts it and opens with O_DIRECT. A failed check does
  not stop the run: the record says so (``cache.ok`` False).
- the memory is put in one state for every method (the *recycled* policy):
  the runner touches and frees as much memory as the method can allocate
  (the file's size + 4 MiB for whole-file, malloc/brk and sendfile-family
  methods, a few blocks for the others), so whatever the method allocates
  comes from recently freed pages; and the C heap's free memory is given
  back first (malloc_trim), so that no method's malloc finds memory the
  methods before it left in the heap. On a VM whose host takes back free memory (virtio
  balloon free page reporting: memory free for ~2 s is returned to the
  host) the first touch of *fresh* memory costs 10-20x more than of
  recycled memory; which of the two a method got used to depend on what
  ran before it. The fresh-memory cost is measured once per process
  (memory_cost()) and reported in the header, not left to chance.

After each call the runner checks that the method left nothing running or
open: the child processes, threads and file descriptors of this process
before and after; a survivor makes that repetition an error naming it.

CPU time: getrusage(RUSAGE_SELF) (every thread of this process) plus
getrusage(RUSAGE_CHILDREN) (the children reaped during the call: the IPC
methods' receivers); page faults likewise, both recorded separately.
"""
import os
import platform
import random
import resource
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

import numpy as np
# numpy.random is imported here, not lazily by make_file's first call: an
# interrupt that lands inside that import was swallowed by it (see KeptSignals)
import numpy.random  # noqa: F401

import fastio

from .methods import Job, Method, Outcome, drop_file_sets, selected
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
        # read only when something is missing: reading a resident file again
        # costs ~a memory copy of it per call and changes nothing mincore sees
        st = cache_state(path)
        if st["resident_fraction"] is None or st["resident_fraction"] < 0.999:
            warm_cache(path)
            st = cache_state(path)
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


def make_file(size: int, directory: Optional[str] = None,
              _names: Optional[List[str]] = None) -> str:
    """make_file(size, directory=None)

    A new temporary file of size random bytes (random: no filesystem can
    store it sparse or compressed), fsynced so that writeback does not run
    during the measurements. The caller removes it.
    """
    import secrets
    d = tempfile.gettempdir() if directory is None else os.fspath(directory)
    for _ in range(100):
        path = os.path.join(d, f"fastio-lab-{secrets.token_hex(6)}.bin")
        # the name is known to the caller before the file exists: an
        # interrupt at any moment after this leaves nothing it cannot remove
        if _names is not None:
            _names.append(path)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            break
        except FileExistsError:
            if _names is not None:
                _names.pop()
    else:
        raise FileExistsError(f"no free temporary name in {d!r}")
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


def _remove(names: List[str]) -> None:
    for p in names:
        drop_file_sets(p)   # the many-files methods' files made from it
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


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
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (r.ru_utime, r.ru_stime, r.ru_minflt, r.ru_majflt,
            c.ru_utime, c.ru_stime, c.ru_minflt, c.ru_majflt)


CPU_COUNTED = ("this process, every thread (RUSAGE_SELF), plus the child processes "
               "reaped during the call (RUSAGE_CHILDREN)")


def _children() -> set:
    """The pids of this process's children (zombies included)."""
    kids = set()
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return kids
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/children") as f:
                kids.update(int(x) for x in f.read().split())
        except (OSError, ValueError):
            pass
    return kids


def _threads() -> set:
    """The thread ids of this process, as the kernel lists them (native
    threads too: an aio backend's pool, a feeder thread). io_uring's own
    kernel workers (iou-wrk-*, iou-sqp-*) are left out: the kernel starts
    one when a request must block (an openat whose path is not cached) and
    ends it after some idle seconds on its own, whatever the method did."""
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        import threading
        return {t.native_id for t in threading.enumerate()}
    out = set()
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                if f.read().startswith("iou-"):
                    continue
        except OSError:
            continue  # it ended meanwhile
        out.add(tid)
    return out


def _thread_names(tids) -> list:
    """"TID (name)" for each thread id, the name as the kernel has it (a
    pool's threads name themselves), so a report says whose thread it is."""
    names = []
    for tid in sorted(tids, key=int):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                names.append(f"{tid} ({f.read().strip()})")
        except OSError:
            names.append(f"{tid} (ended)")
    return names


def _fds() -> set:
    """The open file descriptors of this process (pipes, sockets, rings,
    segments' descriptors)."""
    try:
        return set(os.listdir("/proc/self/fd"))
    except OSError:
        return set()


# How long a method's threads may take to end after its call. glibc's POSIX
# aio pool (aio.posix_aio) ends its idle threads 1 s after their last request,
# the shortest idle time aio_init allows, and nothing ends them sooner: on a
# quiet machine they are gone 1.00 s after Queue.close, on a loaded one
# (CI's suite) later. With a grace of 1.0 s the lab reported them as "left
# running" about one run in ten under load; the runner now waits for them,
# untimed, as it waits for any method's leftovers to go.
SURVIVOR_GRACE_S = 3.0


def _survivors(kids0: set, threads0: set, fds0: set,
               grace: Optional[float] = None) -> Optional[str]:
    """What a method left running or open (children, threads or file
    descriptors that were not there before its call), or None. A thread that
    was joined may still be leaving the kernel for a moment, and a pool's idle
    threads may end on their own timer: looked at again for ``grace`` s."""
    deadline = time.monotonic() + (SURVIVOR_GRACE_S if grace is None else grace)
    while True:
        kids = _children() - kids0
        extra = _threads() - threads0
        fds = _fds() - fds0
        if not kids and not extra and not fds:
            return None
        if time.monotonic() >= deadline:
            parts = []
            if kids:
                parts.append(f"{len(kids)} child process(es) (pids {sorted(kids)})")
            if extra:
                parts.append(f"{len(extra)} thread(s) ({', '.join(_thread_names(extra))})")
            if fds:
                names = []
                for fd in sorted(fds, key=int):
                    try:
                        names.append(f"{fd} -> {os.readlink(f'/proc/self/fd/{fd}')}")
                    except OSError:
                        names.append(fd)
                parts.append(f"{len(fds)} open file descriptor(s) ({', '.join(names)})")
            return "left running after its call: " + " and ".join(parts)
        time.sleep(0.01)


def _touch(a) -> None:
    a[::4096] = 1


def _prime(nbytes: int) -> None:
    """Touch then free nbytes of anonymous memory (huge pages where the
    kernel grants them): the next allocations get these recently freed pages,
    whatever ran before (the recycled policy)."""
    _malloc_trim()
    a = fastio.empty(nbytes, hugepages=True)
    _touch(a)
    del a


def _working_set(method: Method, job: Job) -> int:
    """How much memory a call can take, which the runner recycles first: the
    file's size for whole-file and allocation methods and for the copies
    (sendfile family: the destination's page cache is new memory too), a
    few blocks for the others (their buffers are blocks; priming the file's
    size for them would only cost time)."""
    if method.whole_file or method.group in ("malloc/brk", "sendfile") or job.verify:
        return job.size + (4 << 20)
    return 4 * job.block_size * max(1, job.depth) + (4 << 20)


_LIBC: Any = None


def _malloc_trim() -> None:
    """Give the C heap's free memory back to the kernel (glibc malloc_trim):
    every method's malloc starts from an empty heap, not from whatever free
    chunks the methods before it left (which would make an allocation
    free of page faults or not, depending on the order)."""
    global _LIBC
    if _LIBC is None:
        import ctypes
        try:
            _LIBC = ctypes.CDLL(None)
            _LIBC.malloc_trim  # noqa: B018 (glibc only)
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


_MEMORY_COST: Optional[Dict[str, Any]] = None


#: how long freed memory stays free before the "fresh" probe touches it
#: again: longer than the 2 s after which a VM's balloon driver reports free
#: memory to the host (virtio-balloon free page reporting)
FRESH_AGE = 3.0
#: files at least this large get the aged probe (below it the wait would
#: cost more than the memory effects it explains)
FRESH_PROBE_MIN = 64 << 20


def memory_cost(nbytes: int = 64 << 20, again: bool = False,
                age: float = FRESH_AGE) -> Dict[str, Any]:
    """memory_cost(nbytes=67108864, again=False, age=3.0)

    The cost of the first touch of memory on this machine, with 4 KiB pages
    (MADV_NOHUGEPAGE) and 2 MiB pages (transparent huge pages), in three
    states: ``first`` (memory this process had not used), ``recycled`` (the
    same amount again, just freed) and, when ``age`` > 0, ``aged`` (the
    same again after it stayed free ``age`` seconds: on a VM with free page
    reporting, the host has taken it back by then). ``fresh`` is ``aged``
    when measured, else ``first``. Each entry: ms for nbytes, us per page,
    GB/s, and the minor faults taken (nbytes / 4096 for 4 KiB pages,
    nbytes / 2 MiB when huge pages were granted). Measured once per process
    and cached (the aged state added when first asked for), unless ``again``.
    """
    global _MEMORY_COST
    if _MEMORY_COST is not None and not again and (age <= 0 or "aged" in _MEMORY_COST):
        return _MEMORY_COST

    def alloc4k():
        m = fastio.mmap(-1, nbytes, flags=fastio.MAP_PRIVATE)
        try:
            m.advise(fastio.MADV_NOHUGEPAGE)
        except OSError:
            pass
        return m, np.frombuffer(m, np.uint8)

    def alloc2m():
        return None, fastio.empty(nbytes, hugepages=True)

    def timed(a):
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0 = time.perf_counter_ns()
        _touch(a)
        ns = time.perf_counter_ns() - t0
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
        return ns, faults

    def probe():
        # both held at once: the 2 MiB figure does not reuse the 4 KiB pages
        m4, a4 = alloc4k()
        _, a2 = alloc2m()
        res = {}
        for label, a, page in (("4k", a4, 4096), ("2m", a2, 2 << 20)):
            ns, faults = timed(a)
            res[label] = {"ms": ns / 1e6, "us_per_page": ns / 1e3 / (nbytes / page),
                          "GBps": nbytes / max(ns, 1), "minor_faults": faults,
                          "huge_pages": faults < nbytes // 4096 // 4 if page > 4096 else False}
        del a4, a2
        m4.close()
        return res

    if _MEMORY_COST is None or again:
        out: Dict[str, Any] = {"bytes": nbytes}
        out["first"] = probe()
        out["recycled"] = probe()
        out["fresh"] = out["first"]
        out["fresh_is"] = "first: memory new to this process (not aged)"
    else:
        out = _MEMORY_COST
    if age > 0 and "aged" not in out:
        _malloc_trim()
        time.sleep(age)
        out["aged"] = probe()
        out["fresh"] = out["aged"]
        out["fresh_is"] = (f"aged: memory that stayed free {age:g} s before its first touch "
                           "(what a method gets after other work)")
    _MEMORY_COST = out
    return out


def describe_memory(mem: Dict[str, Any]) -> str:
    """describe_memory(mem)

    One line from memory_cost()'s dict: the first-touch cost of fresh and
    recycled memory, 4 KiB and 2 MiB pages."""
    def one(state):
        d = mem[state]
        two = d["2m"]
        hp = "" if two.get("huge_pages") else " (no huge page granted: 4 KiB pages)"
        return (f"{d['4k']['us_per_page']:.2f} us per 4 KiB page, "
                f"{two['us_per_page']:.0f} us per 2 MiB page{hp}")
    ratio = mem["fresh"]["2m"]["ms"] / max(mem["recycled"]["2m"]["ms"], 1e-9)
    what = ("fresh memory (free for " + mem["fresh_is"].split("free ")[1].split(" before")[0]
            + ")" if mem.get("fresh_is", "").startswith("aged") else
            "memory new to this process")
    return (f"first touch of {what} {one('fresh')}; of recently freed memory "
            f"{one('recycled')} (fresh costs {ratio:.1f}x recycled on 2 MiB pages); every "
            f"method runs on recently freed memory")


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


def measure(method: Method, job: Job, cache: str, threads: int = 1,
            prime: bool = True) -> Dict[str, Any]:
    """measure(method, job, cache, threads=1, prime=True)

    Set and verify the cache mode, put the memory in the recycled state
    (``prime``), run the method once, check it left nothing running, and
    return its record (without the run's parameters: run() adds them).
    """
    rec: Dict[str, Any] = {"method": method.name, "group": method.group,
                           "baseline": method.baseline, "status": OK, "reason": None,
                           "depth_applies": method.honours_depth}
    why = method.unavailable(cache)
    if why:
        rec.update(status=UNAVAILABLE, reason=why)
        return rec
    rec["cache"] = set_cache(job.path, cache) if method.direct != "n/a" else {
        "mode": cache, "ok": None, "reason": "does not read the file"}
    if prime:
        _prime(_working_set(method, job))
    kids0, threads0, fds0 = _children(), _threads(), _fds()
    u0 = _usage()
    t0 = time.perf_counter_ns()
    try:
        out = _call(method, job, threads)
    except Exception as e:  # recorded; the run goes on
        rec.update(status=ERROR, reason=f"{type(e).__name__}: {e}")
        left = _survivors(kids0, threads0, fds0)
        if left:
            rec["reason"] += f"; {left}"
        return rec
    elapsed = time.perf_counter_ns() - t0
    u1 = _usage()
    left = _survivors(kids0, threads0, fds0)
    if left:
        rec.update(status=ERROR, reason=left)
        return rec
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
        "cpu": {"user_s": u1[0] - u0[0], "sys_s": u1[1] - u0[1],
                "children_user_s": u1[4] - u0[4], "children_sys_s": u1[5] - u0[5],
                "counted": CPU_COUNTED},
        "faults": {"minor": u1[2] - u0[2] + u1[6] - u0[6],
                   "major": u1[3] - u0[3] + u1[7] - u0[7],
                   "children_minor": u1[6] - u0[6], "children_major": u1[7] - u0[7]},
        "memory": "recycled" if prime else "as left by the previous method",
        "direct": job.direct,
        "whole_file": method.whole_file,
        "extra": out.extra,
    })
    if job.verify:
        rec["check"] = (out.check, out.check_offset)
    return rec


class KeptSignals:
    """KeptSignals()

    A context manager: SIGINT and SIGTERM during a run reach the runner even
    when the code they land in swallows the exception its handler raised.

    Python runs a signal's handler at the next bytecode of the main thread,
    wherever that is. A KeyboardInterrupt raised in a third-party module's
    import or under a bare ``except:`` can end there: numpy.random's first
    import (from make_file, right after the first progress line) swallowed
    one, and the lab ran to the end and exited 0 after a Ctrl-C. Inside the
    block each Python-level handler of the two signals is wrapped: the
    wrapper calls it and, if it raised, remembers the signal; check() (the
    runner calls it after every step) calls the handler again for a signal
    whose exception never came out. A handler that does not raise (a user's
    logging handler) is called once, as before. Outside the main thread
    signal handlers cannot be set and this does nothing.
    """

    def __init__(self) -> None:
        self._wrapped: Dict[int, Any] = {}
        self._pending: Optional[int] = None

    def __enter__(self) -> "KeptSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                handler = signal.getsignal(sig)
                if callable(handler):
                    self._wrapped[sig] = handler
                    signal.signal(sig, self._on_signal)
        return self

    def _on_signal(self, signum: int, frame: Any) -> None:
        try:
            self._wrapped[signum](signum, frame)
        except BaseException:
            self._pending = signum
            raise

    def check(self) -> None:
        """Raise again the exception of a signal that was swallowed."""
        signum, self._pending = self._pending, None
        if signum is not None:
            self._wrapped[signum](signum, None)

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._wrapped.items():
            signal.signal(sig, handler)
        self._wrapped = {}


def _fmt_time(secs: float) -> str:
    secs = max(0, int(round(secs)))
    return f"{secs // 60}:{secs % 60:02d}"


def _in_notebook() -> bool:
    ip = sys.modules.get("IPython")
    try:
        shell = ip.get_ipython() if ip is not None else None
    except Exception:
        return False
    return shell is not None and "ZMQ" in type(shell).__name__


class Progress:
    """Progress(total, label='fastio.lab', enabled=True, stream=None, every=5.0)

    What a run is doing: the method, the repetition, the elapsed time and an
    estimate of the time left (each remaining call priced at that method's
    last duration). In a notebook a tqdm.auto widget (when tqdm is
    installed: the ``lab`` extra), on a terminal one live line, elsewhere (a
    log, a pipe) a line every ``every`` seconds.
    """

    def __init__(self, total: int, label: str = "fastio.lab", enabled: bool = True,
                 stream=None, every: float = 5.0):
        self.total = total
        self.label = label
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.every = every
        self.done = 0
        self.t0 = time.monotonic()
        self.last_line = 0.0
        self.cost: Dict[str, float] = {}
        self.todo: List[str] = []
        self.bar = None
        self.mode = "off"
        if not enabled:
            return
        if _in_notebook():
            try:
                from tqdm.auto import tqdm
                self.bar = tqdm(total=total, desc=label, leave=True)
                self.mode = "tqdm"
            except Exception:   # not installed, or no ipywidgets for its widget
                self.mode = "lines"
        else:
            try:
                self.mode = "tty" if self.stream.isatty() else "lines"
            except (AttributeError, ValueError):
                self.mode = "lines"
        if self.mode == "lines":
            self._write(f"{label}: {total} calls to make")

    def plan(self, names: Sequence[str]) -> None:
        """The methods still to run, in order (for the estimate)."""
        self.todo = list(names)

    def _eta(self) -> Optional[float]:
        if not self.cost:
            return None
        mean = sum(self.cost.values()) / len(self.cost)
        return sum(self.cost.get(n, mean) for n in self.todo)

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass

    def start(self, name: str, rep: str) -> None:
        """A call begins: ``rep`` is e.g. 'warm-up' or '2/3'."""
        self._name, self._rep, self._t = name, rep, time.monotonic()
        if name in self.todo:
            self.todo.remove(name)
        self._show(final=False)

    def finish(self) -> None:
        """The call begun last has ended."""
        self.cost[self._name] = time.monotonic() - self._t
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
        self._show(final=self.done == self.total)

    def _show(self, final: bool) -> None:
        if self.mode == "off":
            return
        elapsed = time.monotonic() - self.t0
        eta = self._eta()
        left = "?" if eta is None else _fmt_time(eta)
        what = f"{self._name} (repetition {self._rep})"
        if self.mode == "tqdm":
            self.bar.set_postfix_str(f"{what}, ~{left} left", refresh=False)
            return
        text = (f"{self.label}: {self.done}/{self.total} {what}, {_fmt_time(elapsed)} "
                f"elapsed, ~{left} left")
        if self.mode == "tty":
            try:
                self.stream.write("\r\x1b[K" + text + ("\n" if final else ""))
                self.stream.flush()
            except (OSError, ValueError):
                pass
        elif final or elapsed - self.last_line >= self.every:
            self.last_line = elapsed
            self._write(text)

    def close(self) -> None:
        """End the display (also after an interrupt)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.mode == "tty" and self.done != self.total:
            try:
                self.stream.write("\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass
        self.mode = "off"


def _rounds(chosen: List[Method], repeat: int, seed: int, warmup: bool) -> List[List[Method]]:
    """The order of every round: the warm-up first (unrecorded), then the
    measured rounds, each a fresh shuffle (reproducible: from the random seed): the
    families in a shuffled order, the methods of each family shuffled among
    themselves. A method and its baseline (same family) thus run within
    seconds of each other, so the load of a shared machine changes little
    between the two figures of a ratio, while no method always follows the
    same neighbour."""
    rng = random.Random(seed)
    families: Dict[str, List[Method]] = {}
    for m in chosen:
        families.setdefault(m.group, []).append(m)
    out = []
    for _ in range(repeat + (1 if warmup else 0)):
        names = list(families)
        rng.shuffle(names)
        order: List[Method] = []
        for g in names:
            members = list(families[g])
            rng.shuffle(members)
            order += members
        out.append(order)
    return out


def run(methods: Optional[Iterable[str]] = None, *, pattern: str = "seq",
        block_size: Union[int, str] = "1M", depth: int = 1,
        size: Optional[Union[int, str]] = None,
        file: Optional[str] = None, cache: str = "warm", repeat: int = 5, threads: int = 1,
        groups: Optional[Iterable[str]] = None, directory: Optional[str] = None,
        progress: bool = True, verify: bool = False, seed: int = 0, warmup: bool = True,
        _progress: Optional[Progress] = None, _exact: bool = False) -> Results:
    """run(methods=None, *, pattern='seq', block_size='1M', depth=1, size=None, file=None, cache='warm', repeat=5, threads=1, groups=None, directory=None, progress=True, verify=False, seed=0, warmup=True)

    Measure the methods named (every registered one when None; ``groups``
    adds whole I/O families; baselines are added) on ``file`` (read, never
    changed; its first ``size`` bytes when size is given, else all of it) or
    on a temporary file of ``size`` random bytes (default 256M) made in
    ``directory`` and removed afterwards (also on KeyboardInterrupt). Every
    method does ``size // block_size`` requests in the ``pattern`` order;
    ``depth`` is the aio queue depth (the synchronous methods do one request
    at a time whatever it is), ``threads`` splits the requests among that
    many threads. One warm-up round (unrecorded; ``warmup=False`` skips it),
    then ``repeat`` rounds, each running every method once in an order
    shuffled with ``seed``. ``progress`` shows what runs and the time left.
    Returns Results: one record per (method, repetition).
    """
    bs = parse_size(block_size, "block_size")
    if pattern not in PATTERNS:
        raise ValueError(f"pattern must be 'seq' or 'rand', got pattern={pattern!r}")
    if cache not in CACHE_MODES:
        raise ValueError(f"cache must be one of {CACHE_MODES}, got cache={cache!r}")
    for name, v in (("repeat", repeat), ("depth", depth), ("threads", threads)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {name}={v!r}")
    chosen = ([m for m in selected(methods) if m.name in set(methods)] if _exact
              else selected(methods, groups=groups))
    # before this run frees anything; the aged probe for files where memory
    # effects can matter (it waits FRESH_AGE s, once per process)
    if file is None:
        want = parse_size(size if size is not None else "256M", "size")
    else:
        want = os.path.getsize(os.fspath(file))
    mem = memory_cost(age=FRESH_AGE if want >= FRESH_PROBE_MIN else 0)
    temporary = file is None
    made: List[str] = []
    rounds = _rounds(chosen, int(repeat), seed, warmup)
    if any(m.name == "shm.posix" for m in chosen):
        # fastio.SharedMemory's first create in a process starts its watchdog
        # (a child and a pipe that outlive the call by design): started here,
        # not inside the first timed call, where the isolation check would
        # take it for a leak and the timing would include its start.
        import fastio.shm
        fastio.shm._watchdog_fd()
    bar = _progress or Progress(sum(map(len, rounds)), "fastio.lab", progress)
    # signals that library code swallows still end the run: KeptSignals
    with KeptSignals() as kept:
        try:   # from here on, an interrupt removes the file (made inside the try)
            if temporary:
                nbytes = parse_size(size if size is not None else "256M", "size")
                path = make_file(nbytes, directory, made)
                kept.check()
            else:
                path = os.fspath(file)
                nbytes = os.path.getsize(path)
                if nbytes == 0:
                    raise ValueError(f"file={path!r} is empty")
                if size is not None:   # the first size bytes of the file
                    nbytes = min(nbytes, parse_size(size, "size"))
            if bs > nbytes:
                raise ValueError(f"block_size={bs} is larger than the file ({nbytes} bytes)")
            offsets = offsets_for(nbytes, bs, pattern, seed)
            job = Job(path, nbytes, bs, offsets, int(depth), cache == "direct", pattern, verify)
            params = {"pattern": pattern, "block_size": bs, "depth": int(depth), "size": nbytes,
                      "cache": cache, "threads": int(threads)}
            records = []
            if _progress is None:
                bar.plan([m.name for order in rounds for m in order])
            for i, order in enumerate(rounds):
                rep = i - 1 if warmup else i
                for m in order:
                    bar.start(m.name, "warm-up" if rep < 0 else f"{rep + 1}/{repeat}")
                    rec = measure(m, job, cache, threads)
                    bar.finish()
                    kept.check()
                    if rep < 0:
                        continue   # the warm-up: caches, lazy imports, allocator arenas
                    rec["params"] = dict(params)
                    rec["repetition"] = rep
                    records.append(rec)
            env = {
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "file": {"path": os.path.abspath(path), "size": nbytes, "temporary": temporary,
                         "filesystem": filesystem_of(path)},
                "machine": machine_info(),
                "repeat": repeat,
                "warmup_rounds": 1 if warmup else 0,
                "order": [[m.name for m in order] for order in rounds],
                "memory": dict(mem, policy=("recycled: before each call the runner touches and "
                                            "frees as much memory as the method can allocate "
                                            f"({(nbytes >> 20) + 4} MiB for whole-file, "
                                            "malloc/brk and sendfile methods, a few blocks for the "
                                            "others) after malloc_trim, so every method allocates "
                                            "recently freed memory from an empty C heap")),
                "isolation": ("children, threads and file descriptors listed before and after "
                              "every call; a survivor fails that repetition"),
                "cpu_counted": CPU_COUNTED,
            }
            kept.check()
            return Results(records, env)
        finally:
            if _progress is None:
                bar.close()
            _remove(made)


def sweep(method: Union[str, Sequence[str]], *, block_size: Sequence[Union[int, str]] = ("4k",),
          depth: Sequence[int] = (1,), pattern: Union[str, Sequence[str]] = "seq",
          size: Union[int, str] = "64M", file: Optional[str] = None, cache: str = "warm",
          repeat: int = 3, threads: int = 1, directory: Optional[str] = None,
          progress: bool = True, seed: int = 0, warmup: bool = True) -> Results:
    """sweep(method, *, block_size=('4k',), depth=(1,), pattern='seq', size='64M', file=None, cache='warm', repeat=3, threads=1, directory=None, progress=True, seed=0, warmup=True)

    run() over every combination of block_size x depth x pattern for one
    method (or a list), on one file (made once when ``file`` is None). A
    synchronous method (one request at a time: depth does not apply to it,
    as fio notes for its sync engines) runs once per block size and pattern,
    at the first depth. Progress as run()'s. Returns all the records in one
    Results.
    """
    names = [method] if isinstance(method, str) else list(method)
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    depths = list(depth)
    if not depths or not list(block_size) or not patterns:
        raise ValueError("block_size, depth and pattern need at least one value each")
    chosen = selected(names)
    combos = []
    for p in patterns:
        for b in block_size:
            for i, d in enumerate(depths):
                ms = [m.name for m in chosen if m.honours_depth or i == 0]
                if ms:
                    combos.append((b, d, p, ms))
    memory_cost(age=FRESH_AGE if (parse_size(size, "size") if file is None else
                                  os.path.getsize(file)) >= FRESH_PROBE_MIN else 0)
    rounds = int(repeat) + (1 if warmup else 0)
    bar = Progress(rounds * sum(len(ms) for *_, ms in combos), "fastio.lab.sweep", progress)
    bar.plan([n for *_, ms in combos for _ in range(rounds) for n in ms])
    temporary = file is None
    path = file
    made: List[str] = []
    with KeptSignals() as kept:
        try:
            if temporary:
                path = make_file(parse_size(size, "size"), directory, made)
                kept.check()
            parts = []
            for b, d, p, ms in combos:
                parts.append(run(ms, pattern=p, block_size=b, depth=d, file=path,
                                 cache=cache, repeat=repeat, threads=threads, seed=seed,
                                 warmup=warmup, _progress=bar, _exact=True))
                kept.check()
        finally:
            bar.close()
            _remove(made)
    env = dict(parts[0].env)
    env["file"] = dict(env["file"], temporary=temporary)
    env["order"] = [o for part in parts for o in part.env["order"]]
    env["sweep"] = {"block_size": [parse_size(b, "block_size") for b in block_size],
                    "depth": depths, "pattern": patterns,
                    "depth_does_not_apply_to": [m.name for m in chosen if not m.honours_depth]}
    return Results([r for p in parts for r in p.records], env)
