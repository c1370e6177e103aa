"""The lab's methods, by I/O family (read/write, mmap, aio, sendfile, shared memory, malloc/brk).

A method is a function ``fn(job) -> Outcome``. ``job`` (a Job) says which
file, which requests (``job.offsets``: one int64 offset per request of
``job.block_size`` bytes, in the order of the pattern), the queue depth and
whether the file is to be opened with O_DIRECT. The method performs every
request, measures each one's latency (in C where it can: ``timer`` says
how) and returns an Outcome: bytes moved, per-request latencies (raw ns or
a histogram), the backend that really ran, and ``check``: the bytes of the
last request (or the whole file for whole-file methods), which the tests
compare with the file (every method moves the right bytes).

Each method names its *group* (its I/O family), its default *baseline* (the
method it is naturally compared with) and what it *requires*; when a
requirement is missing (a fastio name, an aio backend, O_DIRECT support)
``unavailable(job)`` gives the reason and the run records it instead of
failing.
"""
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np

import fastio
from fastio import _core

READ = "read/write"
MMAP = "mmap"
AIO = "aio"
SENDFILE = "sendfile"
MEMORY = "malloc/brk"

#: the I/O families, in table order
GROUPS = (READ, MMAP, AIO, SENDFILE, MEMORY)


@dataclass
class Job:
    """Job(path, size, block_size, offsets, depth=1, direct=False, pattern='seq', verify=False)

    What one method call does: ``len(offsets)`` requests of ``block_size``
    bytes of the file at ``path`` (``size`` bytes long).
    """

    path: str
    size: int
    block_size: int
    offsets: np.ndarray
    depth: int = 1
    direct: bool = False
    pattern: str = "seq"
    verify: bool = False


@dataclass
class Outcome:
    """Outcome(nbytes, requests, lat_ns=None, lat_hist=None, timer='C', backend=None, check=None, check_offset=0, extra={}, io_ns=None)

    ``lat_ns``: one latency per request in ns (int64 array), or
    ``lat_hist``: [(upper bound ns, count), ...] when the latencies were
    histogrammed where they were measured (fastio.Queue).
    """

    nbytes: int
    requests: int
    lat_ns: Optional[np.ndarray] = None
    lat_hist: Optional[List[Tuple[int, int]]] = None
    timer: str = "C clock_gettime per request"
    backend: Optional[str] = None
    check: Any = None
    check_offset: int = 0
    extra: Dict[str, Any] = field(default_factory=dict)
    #: the time of the requests alone, when the method has a setup a user
    #: would do once and reuse (an aio queue): throughput and IOPS are then
    #: taken over it, as fio's are, and the rest is recorded as setup_ns
    io_ns: Optional[int] = None


@dataclass(frozen=True)
class Method:
    """Method(name, fn, group, baseline=None, requires=(), direct='no', whole_file=False, backend=None, description='', honours_depth=False)

    ``direct``: 'yes' (opens with O_DIRECT when the cache mode is 'direct'),
    'no' (cannot bypass the page cache: unavailable under cache='direct'),
    'n/a' (does not read the file: memory methods). ``honours_depth``: the
    method keeps ``job.depth`` requests in flight (the aio methods); the
    others are synchronous (one request at a time, as fio's sync engines)
    and a sweep runs them once per block size and pattern.
    """

    name: str
    fn: Callable[[Job], Outcome] = field(repr=False)
    group: str
    baseline: Optional[str] = None
    requires: Tuple[str, ...] = ()
    direct: str = "no"
    whole_file: bool = False
    backend: Optional[str] = None
    description: str = ""
    honours_depth: bool = False

    def unavailable(self, cache: str = "warm") -> Optional[str]:
        """unavailable(cache='warm')

        None when the method can run here with that cache mode, else the
        reason (a missing fastio name, an aio backend not available, no
        O_DIRECT path).
        """
        for req in self.requires:
            obj = fastio
            for part in req.split("."):
                if not hasattr(obj, part):
                    return f"fastio.{req} is not available in this build of fastio"
                obj = getattr(obj, part)
        if self.backend is not None:
            info = fastio.backends().get(self.backend)
            if info is None or not info.available:
                why = info.reason if info is not None else "unknown backend"
                return f"aio backend {self.backend} is not available: {why}"
        if cache == "direct" and self.direct == "no":
            return "cannot bypass the page cache (no O_DIRECT path): not run with cache='direct'"
        return None

    # old name, kept for callers of the foundation's API
    def unavailable_reason(self) -> Optional[str]:
        return self.unavailable("warm")


#: Every registered method by name, in table order.
METHODS: Dict[str, Method] = {}


def register(name: str, *, group: str, baseline: Optional[str] = None,
             requires: Iterable[str] = (), direct: str = "no", whole_file: bool = False,
             backend: Optional[str] = None, description: str = "",
             honours_depth: bool = False):
    """register(name, *, group, baseline=None, requires=(), direct='no', whole_file=False, backend=None, description='', honours_depth=False)

    Decorator adding ``fn(job) -> Outcome`` to METHODS under ``name``. The
    baseline, if given, must already be registered.
    """
    if name in METHODS:
        raise ValueError(f"method name={name!r} is already registered")
    if baseline is not None and baseline not in METHODS:
        raise ValueError(f"baseline={baseline!r} of method {name!r} is not registered")
    if direct not in ("yes", "no", "n/a"):
        raise ValueError(f"direct must be 'yes', 'no' or 'n/a', got direct={direct!r}")

    def deco(fn):
        METHODS[name] = Method(name, fn, group, baseline, tuple(requires), direct,
                               whole_file, backend,
                               description or (fn.__doc__ or "").strip(), honours_depth)
        return fn

    return deco


def selected(names: Optional[Iterable[str]] = None, *, groups: Optional[Iterable[str]] = None
             ) -> List[Method]:
    """selected(names=None, *, groups=None)

    The methods named (all when None; also every method of the named
    groups), each with its baseline added, in registry order. Raises
    KeyError naming an unknown method or group.
    """
    if names is None and groups is None:
        return list(METHODS.values())
    want = set()
    for g in groups or ():
        if g not in GROUPS:
            raise KeyError(f"unknown group {g!r}; known: {', '.join(GROUPS)}")
        want.update(n for n, m in METHODS.items() if m.group == g)
    for n in names or ():
        if n not in METHODS:
            raise KeyError(f"unknown method {n!r}; known: {', '.join(METHODS)}")
        want.add(n)
    todo = list(want)
    while todo:   # baselines of baselines too: every ratio has its reference
        b = METHODS[todo.pop()].baseline
        if b and b not in want:
            want.add(b)
            todo.append(b)
    return [m for m in METHODS.values() if m.name in want]


# ------------------------------------------------------------------ helpers

def _open(job: Job) -> int:
    flags = os.O_RDONLY | os.O_CLOEXEC
    if job.direct:
        flags |= os.O_DIRECT
    return os.open(job.path, flags)


def _lat(n: int) -> np.ndarray:
    return np.zeros(n, dtype=np.int64)


def _python_timed(job: Job, request: Callable[[int], Any]) -> np.ndarray:
    # For methods with no C loop of their own: perf_counter_ns around each
    # call, which adds ~100 ns of interpreter time per request (the record's
    # timer says so).
    lat = _lat(len(job.offsets))
    clock = time.perf_counter_ns
    for i, off in enumerate(job.offsets.tolist()):
        t0 = clock()
        request(off)
        lat[i] = clock() - t0
    return lat


def _last(job: Job, buf) -> Tuple[Any, int]:
    if not len(job.offsets):
        return None, 0
    return bytes(memoryview(buf).cast("B")[:job.block_size]), int(job.offsets[-1])


PY_TIMER = "Python perf_counter_ns per request"

# ------------------------------------------------------------------ read/write

@register("read.bytearray", group=READ,
          description="buffered file object: f.seek(off); f.readinto(bytearray(bs)) per request")
def read_bytearray(job):
    buf = bytearray(job.block_size)
    with open(job.path, "rb") as f:
        def req(off):
            f.seek(off)
            if f.readinto(buf) != job.block_size:
                raise EOFError(f"short read at offset {off}")
        lat = _python_timed(job, req)
    chk, off = _last(job, buf)
    return Outcome(job.block_size * len(lat), len(lat), lat, timer=PY_TIMER,
                   check=chk, check_offset=off)


@register("psync", group=READ, baseline="read.bytearray", requires=("empty",), direct="yes",
          description="fio's psync engine: one pread(2) per request into a page-aligned "
                      "fastio.empty buffer (touched before timing), timed in C")
def psync(job):
    buf = fastio.empty(job.block_size, align=4096, hugepages=False)
    buf[:] = 0   # its first-touch faults are not the first requests' latency
    fd = _open(job)
    try:
        lat = _lat(len(job.offsets))
        n = _core._lab_pread(fd, buf, job.offsets, lat)
    finally:
        os.close(fd)
    chk, off = _last(job, buf)
    return Outcome(n, len(lat), lat, check=chk, check_offset=off)


@register("fastio.pread", group=READ, baseline="psync", requires=("pread",), direct="yes",
          description="fastio.pread(fd, buf, off) per request, called and timed from Python")
def fastio_pread(job):
    fd = _open(job)
    buf = fastio.empty(job.block_size, align=4096, hugepages=False)
    buf[:] = 0
    try:
        def req(off):
            if fastio.pread(fd, buf, off) != job.block_size:
                raise EOFError(f"short read at offset {off}")
        lat = _python_timed(job, req)
    finally:
        os.close(fd)
    chk, off = _last(job, buf)
    return Outcome(job.block_size * len(lat), len(lat), lat, timer=PY_TIMER,
                   check=chk, check_offset=off)


@register("numpy.fromfile", group=READ, whole_file=True,
          description="numpy.fromfile(path, 'u1'): the whole file in one request")
def numpy_fromfile(job):
    t0 = time.perf_counter_ns()
    a = np.fromfile(job.path, dtype="u1")
    lat = np.array([time.perf_counter_ns() - t0], np.int64)
    return Outcome(a.nbytes, 1, lat, timer=PY_TIMER, check=a if job.verify else None)


@register("fastio.read_file", group=READ, baseline="numpy.fromfile", whole_file=True,
          requires=("read_file",),
          description="fastio.read_file(path, 'u1'): the whole file in one request")
def fastio_read_file(job):
    t0 = time.perf_counter_ns()
    a = fastio.read_file(job.path, dtype="u1")
    lat = np.array([time.perf_counter_ns() - t0], np.int64)
    return Outcome(a.nbytes, 1, lat, timer=PY_TIMER, check=a if job.verify else None)


# ------------------------------------------------------------------ many files

# The many-files workload: the job's file cut into files of block_size
# bytes, one per block (made once per file and block size, next to it, and
# removed at exit); request i reads the whole file holding block offsets[i].
# Before the timed part each method puts those files in the cache state the
# runner just gave the job's file (evicted when mincore finds it evicted or
# the job is O_DIRECT, read once otherwise): making and caching them is
# setup, outside io_ns.
_FILE_SETS: Dict[Tuple[str, int, int], str] = {}


def _remove_file_sets() -> None:
    import shutil
    for d in _FILE_SETS.values():
        shutil.rmtree(d, ignore_errors=True)
    _FILE_SETS.clear()


def drop_file_sets(path: str) -> None:
    """drop_file_sets(path)

    Remove the many-files methods' files made from the file at path (the
    runner calls it when it removes its temporary file).
    """
    import shutil
    for key in [k for k in _FILE_SETS if k[0] == path]:
        shutil.rmtree(_FILE_SETS.pop(key), ignore_errors=True)


def _file_set(job: Job) -> List[str]:
    import atexit
    import tempfile
    st = os.stat(job.path)
    key = (job.path, job.block_size, st.st_mtime_ns)
    d = _FILE_SETS.get(key)
    bs = job.block_size
    nblocks = job.size // bs
    if d is None or not os.path.isdir(d):
        if not _FILE_SETS:
            atexit.register(_remove_file_sets)
        for old in [k for k in _FILE_SETS if k[0] == job.path or not os.path.exists(k[0])]:
            import shutil
            shutil.rmtree(_FILE_SETS.pop(old), ignore_errors=True)
        d = tempfile.mkdtemp(prefix=os.path.basename(job.path) + f".files{bs}-",
                             dir=os.path.dirname(os.path.abspath(job.path)))
        _FILE_SETS[key] = d
        with open(job.path, "rb") as src:
            for k in range(nblocks):
                with open(os.path.join(d, f"{k:07d}"), "wb") as f:
                    f.write(src.read(bs))
        os.sync()
    names = [os.path.join(d, f"{k:07d}") for k in range(nblocks)]
    return [names[int(off) // bs] for off in job.offsets]


def _files_cached_like_job(job: Job, paths: List[str]) -> None:
    from .runner import cache_state
    frac = cache_state(job.path)["resident_fraction"]
    evict = job.direct or (frac is not None and frac <= 0.001)
    for p in dict.fromkeys(paths):
        fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
        try:
            if evict:
                fastio.fadvise(fd, 0, 0, fastio.POSIX_FADV_DONTNEED)
            else:
                os.read(fd, job.block_size + 1)
        finally:
            os.close(fd)


FILES_TIMER = "Python perf_counter_ns per file (open, read, close)"


def _read_whole(p):
    with open(p, "rb") as f:
        return f.read()


@register("files.loop", group=READ,
          description="many files: one file of block_size bytes per request, read whole "
                      "by a Python loop of open(p, 'rb').read()")
def files_loop(job):
    paths = _file_set(job)
    _files_cached_like_job(job, paths)
    lat = _lat(len(paths))
    clock = time.perf_counter_ns
    t0 = clock()
    data = b""
    for i, p in enumerate(paths):
        t = clock()
        data = _read_whole(p)
        lat[i] = clock() - t
    io_ns = clock() - t0
    if len(data) != job.block_size and paths:
        raise EOFError(f"{paths[-1]}: read {len(data)} of {job.block_size} bytes")
    return Outcome(job.block_size * len(paths), len(paths), lat, timer=FILES_TIMER,
                   check=data or None, io_ns=io_ns,
                   check_offset=int(job.offsets[-1]) if len(job.offsets) else 0)


@register("files.threadpool", group=READ, baseline="files.loop",
          description="many files: concurrent.futures.ThreadPoolExecutor(8).map of "
                      "open(p, 'rb').read(), one file per request")
def files_threadpool(job):
    from concurrent.futures import ThreadPoolExecutor
    paths = _file_set(job)
    _files_cached_like_job(job, paths)
    with ThreadPoolExecutor(8) as ex:
        t0 = time.perf_counter_ns()
        got = list(ex.map(_read_whole, paths))
        io_ns = time.perf_counter_ns() - t0
    short = [i for i, b in enumerate(got) if len(b) != job.block_size]
    if short:
        raise EOFError(f"{paths[short[0]]}: read {len(got[short[0]])} bytes")
    lat = np.full(len(paths), max(1, io_ns // max(1, len(paths))), np.int64)
    return Outcome(job.block_size * len(paths), len(paths), lat,
                   timer="the pool's wall time / files (no clock per file)",
                   check=got[-1] if got else None, io_ns=io_ns,
                   check_offset=int(job.offsets[-1]) if len(job.offsets) else 0)


@register("files.read_files", group=READ, baseline="files.loop", requires=("read_files",),
          direct="yes",
          description="many files: fastio.read_files(paths, depth=max(depth, 64)), one C "
                      "call (io_uring openat/read/close chains where it works, else C "
                      "threads), one file per request")
def files_read_files(job):
    paths = _file_set(job)
    _files_cached_like_job(job, paths)
    t0 = time.perf_counter_ns()
    files = fastio.read_files(paths, depth=max(job.depth, 64), direct=job.direct)
    io_ns = time.perf_counter_ns() - t0
    if len(paths) and (files.sizes != job.block_size).any():
        i = int(np.flatnonzero(files.sizes != job.block_size)[0])
        raise EOFError(f"{paths[i]}: read {int(files.sizes[i])} of {job.block_size} bytes")
    lat = np.full(len(paths), max(1, io_ns // max(1, len(paths))), np.int64)
    return Outcome(job.block_size * len(paths), len(paths), lat,
                   timer="one C call for every file: its time / files (no clock per file)",
                   backend=files.backend, check=bytes(files[-1]) if len(paths) else None,
                   io_ns=io_ns, check_offset=int(job.offsets[-1]) if len(job.offsets) else 0)


# ------------------------------------------------------------------ mmap

def _mapped_copy(job, src, **extra):
    dst = fastio.empty(job.block_size, align=4096, hugepages=False)
    dst[:] = 0
    lat = _lat(len(job.offsets))
    n = _core._lab_copy(src, dst, job.offsets, lat)
    chk, off = _last(job, dst)
    return Outcome(n, len(lat), lat, check=chk, check_offset=off, extra=extra)


@register("numpy.memmap", group=MMAP,
          description="numpy.memmap(path, 'r'); one memcpy per request out of the mapping "
                      "(fio's mmap engine), timed in C")
def numpy_memmap(job):
    m = np.memmap(job.path, dtype="u1", mode="r")
    return _mapped_copy(job, m)  # unmapped with the last reference, at return


def _fastio_map(job, **kw):
    fd = os.open(job.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return fastio.mmap(fd, job.size, access=fastio.ACCESS_READ, **kw)
    finally:
        os.close(fd)


@register("mmap", group=MMAP, baseline="numpy.memmap", requires=("mmap",),
          description="fastio.mmap, read-only; one memcpy per request, timed in C")
def mmap_plain(job):
    with _fastio_map(job) as m:
        return _mapped_copy(job, m)


@register("mmap.populate", group=MMAP, baseline="numpy.memmap", requires=("mmap",),
          description="fastio.mmap(populate=True): every page mapped up front (counted in "
                      "the elapsed time, not in the per-request latency)")
def mmap_populate(job):
    with _fastio_map(job, populate=True) as m:
        return _mapped_copy(job, m)


@register("mmap.advise", group=MMAP, baseline="numpy.memmap", requires=("mmap.advise",),
          description="fastio.mmap + madvise(MADV_SEQUENTIAL or MADV_RANDOM, by pattern)")
def mmap_advise(job):
    with _fastio_map(job) as m:
        adv = fastio.MADV_SEQUENTIAL if job.pattern == "seq" else fastio.MADV_RANDOM
        m.advise(adv)
        return _mapped_copy(job, m, advice="MADV_SEQUENTIAL" if job.pattern == "seq"
                            else "MADV_RANDOM")


# ------------------------------------------------------------------ aio

def _aio(backend):
    def fn(job):
        q = fastio.Queue(job.depth, backend, direct=job.direct, latency=True)
        fd = _open(job)
        try:
            n = len(job.offsets)
            t0 = time.perf_counter_ns()
            if job.verify:   # one buffer per request: every block can be checked
                dest = fastio.empty(max(job.block_size * n, 1), align=4096, hugepages=False)
                res = q.read_batch(fd, job.offsets, job.block_size, dest)
            else:
                # depth buffers, request i into slot i % depth, in one batch that
                # keeps depth requests in flight throughout: the memory of a
                # depth-d fio job. (Completions come out of order, so two
                # requests in flight may share a slot: only what lands there
                # is unordered, which a throughput run does not read.)
                d = max(1, min(job.depth, n))
                dest = fastio.empty(job.block_size * d, align=4096, hugepages=False)
                slots = [dest[k * job.block_size:(k + 1) * job.block_size] for k in range(d)]
                res = q.read_batch(fd, job.offsets, job.block_size,
                                   [slots[i % d] for i in range(n)])
            io_ns = time.perf_counter_ns() - t0
            bad = np.flatnonzero(res != job.block_size)
            if len(bad):
                r = int(res[bad[0]])
                raise OSError(-r, os.strerror(-r)) if r < 0 else EOFError(
                    f"request {bad[0]} read {r} of {job.block_size} bytes")
            hist = q.latency_histogram()
            ran = q.backend
        finally:
            os.close(fd)
            q.close()
        if job.verify:
            chk = bytes(dest[-job.block_size:]) if len(job.offsets) else None
        else:
            chk = None
        return Outcome(job.block_size * len(res), len(res), lat_hist=hist,
                       timer="C histogram (fastio.Queue latency=True), submit to reap",
                       backend=ran, check=chk, io_ns=io_ns,
                       check_offset=int(job.offsets[-1]) if len(job.offsets) else 0)
    return fn


for _b, _d in (("io_uring", "io_uring: one ring, depth requests in flight"),
               ("linux_aio", "Linux native AIO (io_submit)"),
               ("posix_aio", "POSIX aio_read via lio_listio"),
               ("threads", "a pool of threads doing pread")):
    register(f"aio.{_b}", group=AIO, baseline="psync", requires=("Queue",), direct="yes",
             backend=_b, honours_depth=True, description=f"fastio.Queue(depth, '{_b}'): {_d}; "
                                     "read_batch of the requests")(_aio(_b))


# read_blocks' paths (issue 14): the lab's warm and cold cache modes show
# when each wins ('copy' for cached data, 'queue' for data on the device)
# and whether 'auto' picked the winner (extra['mode'] says what it ran).

def _read_blocks(mode):
    def fn(job):
        n = len(job.offsets)
        out = fastio.empty(max(job.block_size * n, 1), align=4096)
        out[:] = 0   # first-touch faults are not part of the reads
        stats = {}
        t0 = time.perf_counter_ns()
        fastio.read_blocks(job.path, job.offsets, job.block_size, out=out,
                           mode="direct" if job.direct and mode != "copy" else mode,
                           direct=job.direct, depth=job.depth, stats=stats)
        io_ns = time.perf_counter_ns() - t0
        chk, off = (bytes(out[(n - 1) * job.block_size:n * job.block_size]),
                    int(job.offsets[-1])) if n else (None, 0)
        # One C call runs every request: each one's latency is at most the
        # call's, the one bucket recorded (no per-request clock).
        return Outcome(job.block_size * n, n, lat_hist=[(max(io_ns, 1), n)] if n else [],
                       timer="one C call for every request: latency bounded by the call",
                       backend=stats.get("backend"), check=chk, check_offset=off,
                       io_ns=io_ns, extra={"mode": stats.get("mode"),
                                           "resident": stats.get("resident"),
                                           "threads": stats.get("threads"),
                                           "mapped": stats.get("mapped")})
    return fn


for _m, _d, _direct in (
        ("auto", "samples the page cache (mincore), then 'copy' for cached data, "
                 "'queue' for the rest", "yes"),
        ("copy", "C threads, one per CPU, copy the blocks out of a map of the file made "
                 "for the call where that pays, else pread them (the path for cached data)",
         "no"),
        ("queue", "depth requests in flight on a Queue, io_uring where it runs (the path "
                  "for data on the device)", "yes")):
    register(f"read_blocks.{_m}", group=AIO, baseline="psync", requires=("read_blocks",),
             direct=_direct, honours_depth=_m != "copy",
             description=f"fastio.read_blocks(path, offsets, bs, mode='{_m}'): {_d}")(
        _read_blocks(_m))


# ------------------------------------------------------------------ sendfile

def _copy_method(copy_chunk, needs_out):
    def fn(job):
        import tempfile
        src = os.open(job.path, os.O_RDONLY | os.O_CLOEXEC)
        d, dpath = tempfile.mkstemp(prefix="fastio-lab-copy-", dir=os.path.dirname(job.path))
        try:
            def req(off):
                n = copy_chunk(src, d, off, job.block_size)
                if n != job.block_size:
                    raise EOFError(f"copied {n} of {job.block_size} bytes at offset {off}")
            lat = _python_timed(job, req)
            chk = None
            if job.verify and len(job.offsets):
                off = int(job.offsets[-1])
                chk = os.pread(d, job.block_size, off)
        finally:
            os.close(src)
            os.close(d)
            os.unlink(dpath)
        return Outcome(job.block_size * len(lat), len(lat), lat, timer=PY_TIMER, check=chk,
                       check_offset=int(job.offsets[-1]) if len(job.offsets) else 0)
    return fn


def _rw_copy(src, dst, off, bs):
    data = os.pread(src, bs, off)
    return os.pwrite(dst, data, off)


def _sendfile(src, dst, off, bs):
    os.lseek(dst, off, os.SEEK_SET)
    return int(fastio.sendfile(dst, src, off, bs))


def _cfr(src, dst, off, bs):
    return int(fastio.copy_file_range(src, dst, bs, off, off))


register("copy.read_write", group=SENDFILE,
         description="os.pread + os.pwrite per block into a second file "
                     "(the bytes pass through user space)")(_copy_method(_rw_copy, True))
register("sendfile", group=SENDFILE, baseline="copy.read_write", requires=("sendfile",),
         description="fastio.sendfile(dst, src, off, bs) per block, file to file")(
    _copy_method(_sendfile, True))
register("copy_file_range", group=SENDFILE, baseline="copy.read_write",
         requires=("copy_file_range",),
         description="fastio.copy_file_range per block (reflink or in-kernel copy)")(
    _copy_method(_cfr, True))


def _splice(src, dst, off, bs):
    return int(fastio.splice(src, dst, bs, in_offset=off, out_offset=off))


register("splice", group=SENDFILE, baseline="copy.read_write", requires=("splice",),
         description="fastio.splice per block, file to file (through an internal pipe)")(
    _copy_method(_splice, True))


# The classic use case for sendfile is a file going out on a socket. These
# methods send every block to a TCP connection on 127.0.0.1 whose other
# end a thread drains (recv_into, GIL released), as a network peer would:
# the figure is what the sending side gets, loopback included.

class _Drain:
    """A TCP loopback connection whose far end a thread reads to the end.
    Keeps the last `keep` bytes received (the check of the lab's tests)."""

    def __init__(self, keep):
        import socket
        import threading
        with socket.create_server(("127.0.0.1", 0)) as srv:
            self.out = socket.create_connection(srv.getsockname())
            self._in, _ = srv.accept()
        self.keep = keep
        self.tail = bytearray()
        self.received = 0
        self.error = None
        self._thread = threading.Thread(target=self._run, name="fastio-lab-drain",
                                        daemon=True)
        self._thread.start()

    def _run(self):
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        try:
            while True:
                n = self._in.recv_into(buf)
                if n == 0:
                    return
                self.received += n
                if self.keep:
                    self.tail += view[:n]
                    del self.tail[:-self.keep]
        except OSError as e:  # reported by close(); the sender sees EPIPE
            self.error = e

    def close(self):
        """Shut the sending side, wait for the reader to see the end, close
        both ends. Returns the bytes received."""
        import socket
        try:
            self.out.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self._thread.join()
        self.out.close()
        self._in.close()
        if self.error is not None:
            raise self.error
        return self.received


def _socket_method(send_block):
    def fn(job):
        src = os.open(job.path, os.O_RDONLY | os.O_CLOEXEC)
        drain = _Drain(job.block_size if job.verify else 0)
        try:
            def req(off):
                n = send_block(src, drain.out, off, job.block_size)
                if n != job.block_size:
                    raise EOFError(f"sent {n} of {job.block_size} bytes at offset {off}")
            lat = _python_timed(job, req)
        finally:
            os.close(src)
            received = drain.close()
        if received != job.block_size * len(lat):
            raise EOFError(f"the peer received {received} of {job.block_size * len(lat)} bytes")
        return Outcome(received, len(lat), lat, timer=PY_TIMER,
                       check=bytes(drain.tail) if job.verify and len(lat) else None,
                       check_offset=int(job.offsets[-1]) if len(job.offsets) else 0)
    return fn


def _pread_send(src, sock, off, bs):
    sock.sendall(os.pread(src, bs, off))
    return bs


register("socket.send", group=SENDFILE,
         description="os.pread + socket.sendall per block to a TCP loopback peer "
                     "(the bytes pass through user space)")(_socket_method(_pread_send))
register("sendfile.socket", group=SENDFILE, baseline="socket.send", requires=("sendfile",),
         description="fastio.sendfile(sock, src, off, bs) per block to a TCP loopback peer: "
                     "sendfile's own use case")(
    _socket_method(lambda src, sock, off, bs: int(fastio.sendfile(sock, src, off, bs))))
register("splice.socket", group=SENDFILE, baseline="socket.send", requires=("splice",),
         description="fastio.splice(src, sock, bs, in_offset=off) per block to a TCP "
                     "loopback peer (file to pipe to socket)")(
    _socket_method(lambda src, sock, off, bs: int(fastio.splice(src, sock, bs,
                                                                in_offset=off))))


# ------------------------------------------------------------------ malloc/brk

def _alloc_method(alloc):
    def fn(job):
        before = fastio.heap_info() if hasattr(fastio, "heap_info") else None
        keep = []
        page = 4096
        bs = job.block_size

        def req(_):
            a = alloc(bs)
            a[::page] = 1          # touch every page: the cost is in the faults
            keep.append(a)
        lat = _python_timed(job, req)
        after = fastio.heap_info() if hasattr(fastio, "heap_info") else None
        extra = {}
        if before is not None:
            extra = {"brk_moved": int(after.brk - before.brk),
                     "mmapped_blocks": int(after.hblks - before.hblks),
                     "mmapped_bytes": int(after.hblkhd - before.hblkhd),
                     "mmap_threshold": int(after.mmap_threshold)}
        chk = bytes(keep[-1][:bs]) if (job.verify and keep) else None
        del keep
        return Outcome(bs * len(lat), len(lat), lat, timer=PY_TIMER, check=chk,
                       extra=extra)
    return fn


register("malloc.numpy", group=MEMORY, direct="n/a",
         description="numpy.empty(bs) (malloc: brk below the mmap threshold, mmap above) "
                     "and touch each page")(_alloc_method(lambda n: np.empty(n, np.uint8)))
register("fastio.empty", group=MEMORY, baseline="malloc.numpy", requires=("empty",),
         direct="n/a",
         description="fastio.empty(bs) page-aligned (posix_memalign), touch each page")(
    _alloc_method(lambda n: fastio.empty(n, hugepages=False)))
def _anonymous(flags):
    def alloc(n):
        return np.frombuffer(fastio.mmap(-1, n, flags=flags), np.uint8)
    return alloc


register("mmap.anonymous", group=MEMORY, baseline="malloc.numpy", requires=("mmap",),
         direct="n/a",
         description="fastio.mmap(-1, bs, flags=MAP_PRIVATE): private anonymous memory "
                     "(MAP_PRIVATE|MAP_ANONYMOUS), touch each page")(
    _alloc_method(_anonymous(getattr(fastio, "MAP_PRIVATE", 2))))
register("mmap.shared", group=MEMORY, baseline="malloc.numpy", requires=("mmap",),
         direct="n/a",
         description="fastio.mmap(-1, bs): shared anonymous memory (MAP_SHARED, shmem "
                     "pages, what fork() children can see), touch each page")(
    _alloc_method(_anonymous(getattr(fastio, "MAP_SHARED", 1))))

HUGE = 2 << 20


def _huge_units():
    # Memory is asked for in 2 MiB units (a smaller request never gets a
    # huge page): requests smaller than 2 MiB are carved out of the current
    # unit, as a huge-page arena does; larger ones take whole units.
    state = {"unit": None, "used": HUGE}

    def alloc(n):
        if n >= HUGE:
            units = -(-n // HUGE)
            return fastio.empty(units * HUGE, hugepages=True)[:n]
        if state["used"] + n > HUGE:
            state["unit"] = fastio.empty(HUGE, hugepages=True)
            state["used"] = 0
        a = state["unit"][state["used"]:state["used"] + n]
        state["used"] += n
        return a
    return alloc


def _hugepages(job):
    return _alloc_method(_huge_units())(job)


register("hugepages", group=MEMORY, baseline="malloc.numpy", requires=("empty",),
         direct="n/a",
         description="fastio.empty(hugepages=True) asked for in 2 MiB units (transparent "
                     "huge pages: one fault per 2 MiB); requests below 2 MiB are carved "
                     "out of a unit, larger ones take whole units; touch each page")(
    _hugepages)


# ------------------------------------------------------------------ shared memory (IPC)

_LIBC = None


def _die_with_parent(parent: int, mask: Any) -> None:
    """In a forked child: be killed (SIGKILL) when the parent dies, whatever
    the child is blocked in (prctl PR_SET_PDEATHSIG); exit at once if the
    parent is already gone. SIGINT/SIGTERM back to their defaults, then
    unblocked (_fork blocked them): the child has no cleanup of its own to
    run, and a Ctrl-C to the process group ends it there."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGKILL, 0, 0, 0)   # PR_SET_PDEATHSIG
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    if os.getppid() != parent:
        os._exit(1)


def _fork() -> Tuple[int, Any]:
    """os.fork() with SIGINT and SIGTERM blocked across it: returns (pid, the
    mask to restore). The parent gets its mask back here. The child keeps
    them blocked until _die_with_parent has set their default actions:
    otherwise a signal landing between the fork and the child's try would
    raise KeyboardInterrupt in the child, which would then run the parent's
    cleanup (and the rest of the lab) as a second copy of the parent."""
    import signal
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    pid = -1
    try:
        pid = os.fork()
    finally:
        if pid != 0:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    return pid, mask


def _reap(pid: int, kill: bool, timeout: float = 5.0) -> int:
    """Wait for a child at most ``timeout`` s (it has everything it needs to
    end: its pipes are closed), then SIGKILL it; with ``kill``, at once.
    Returns its wait status."""
    import signal
    if kill:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
            return os.waitpid(pid, 0)[1]   # SIGKILL cannot be ignored: prompt
        time.sleep(0.002)


def _ipc_method(make):
    """A method moving every block of the file to a forked child process.

    make() -> (send(block), recv() -> buffer, close(abort)) built before the
    fork, so both processes share it. Each request is timed in the parent
    from the start of send to the child's one-byte acknowledgement (a round
    trip). The child CRCs everything it received and sends the CRC and the
    last block back at the end; a mismatch fails the run. The child dies
    with the parent (PR_SET_PDEATHSIG); on any exception (KeyboardInterrupt
    included) the parent closes its ends, kills the child and reaps it, so
    nothing of this method outlives its call.
    """
    import ctypes
    import struct
    import zlib

    def fn(job):
        global _LIBC
        if _LIBC is None:
            try:
                _LIBC = ctypes.CDLL(None, use_errno=True)
            except OSError:
                pass
        src = _fastio_map(job)
        view = memoryview(src)
        offs = job.offsets.tolist()
        parent = os.getpid()
        # Everything taken from here on is given back by the finally clause,
        # whichever step fails (make, os.pipe, os.fork: EMFILE, EAGAIN).
        close = None
        r_ack = w_ack = -1
        pid = 0
        finished = False
        status = 0
        try:
            send, recv, close = make(job.block_size)
            r_ack, w_ack = os.pipe()
            pid, mask = _fork()
            if pid == 0:  # the child: receive, acknowledge, report; never returns
                code = 1
                try:
                    _die_with_parent(parent, mask)
                    os.close(r_ack)
                    crc = 0
                    last = b""
                    for _ in offs:
                        data = recv()
                        crc = zlib.crc32(data, crc)
                        last = data
                        os.write(w_ack, b"a")
                    tail = struct.pack("<I", crc) + bytes(last)
                    while tail:
                        tail = tail[os.write(w_ack, tail):]
                    code = 0
                finally:
                    os._exit(code)
            os.close(w_ack)
            w_ack = -1
            lat = _lat(len(offs))
            clock = time.perf_counter_ns
            want = 0
            for i, off in enumerate(offs):
                block = view[off:off + job.block_size]
                want = zlib.crc32(block, want)
                t0 = clock()
                send(block)
                if os.read(r_ack, 1) != b"a":
                    raise RuntimeError("the receiving process ended early")
                lat[i] = clock() - t0
            tail = b""
            need = 4 + (job.block_size if offs else 0)
            while len(tail) < need:
                more = os.read(r_ack, need - len(tail))
                if not more:
                    raise RuntimeError("the receiving process ended before its report")
                tail += more
            finished = True
        finally:
            # Ends closed before waiting: a child blocked on them wakes up;
            # killed at once when we did not finish (interrupted, failed).
            for fd in (r_ack, w_ack):
                if fd >= 0:
                    os.close(fd)
            try:
                if close is not None:
                    close(not finished)
            finally:
                if pid > 0:
                    status = _reap(pid, kill=not finished)
                view.release()
                src.close()
        got = struct.unpack("<I", tail[:4])[0]
        if got != want or os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"the receiver's CRC {got:#x} is not the sender's {want:#x}")
        return Outcome(job.block_size * len(offs), len(offs), lat,
                       timer=PY_TIMER + ", send to the receiver's acknowledgement",
                       check=tail[4:] if job.verify else None,
                       check_offset=offs[-1] if offs else 0)
    return fn


def _readn(fd, n):
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = os.readv(fd, [view[got:]])
        if not k:
            raise EOFError("pipe closed")
        got += k
    return buf


def _pipe(bs):
    r, w = os.pipe()

    def send(block):
        while block:
            block = block[os.write(w, block):]

    def close(abort=False):
        os.close(r)
        os.close(w)
    return send, lambda: _readn(r, bs), close


def _mp_queue(bs):
    import multiprocessing
    q = multiprocessing.get_context("fork").Queue()

    def close(abort=False):
        if abort:   # the feeder thread must not wait for a reader that is gone
            q.cancel_join_thread()
        q.close()
        q.join_thread()
    return (lambda block: q.put(bytes(block))), q.get, close


def _channel(bs):
    ch = fastio.Channel(capacity=max(4 << 20, 2 * bs + 4096))
    return ch.send, ch.recv, lambda abort=False: ch.close()


def _drop_segment(seg) -> None:
    """Close a segment and remove its name (SharedMemory.unlink,
    SysVSharedMemory.remove; a memfd has neither)."""
    seg.close()
    for name in ("unlink", "remove"):
        if hasattr(seg, name):
            try:
                getattr(seg, name)()
            except (OSError, ValueError):
                pass
            break


def _segment(make_seg, bs):
    seg = make_seg(bs)
    try:
        mem = memoryview(seg).cast("B")
        r, w = os.pipe()   # "your block is there": one byte per request
    except BaseException:   # EMFILE: the segment must not outlive the failure
        if "mem" in locals():
            mem.release()
        _drop_segment(seg)
        raise

    def send(block):
        mem[:len(block)] = block
        os.write(w, b"s")

    def recv():
        os.read(r, 1)
        return mem

    def close(abort=False):
        mem.release()
        os.close(r)
        os.close(w)
        _drop_segment(seg)
    return send, recv, close


SHM = "shared memory"
GROUPS = GROUPS[:4] + (SHM,) + GROUPS[4:]

register("ipc.pipe", group=SHM, requires=("mmap",),
         description="os.write of each block into a pipe to a forked process, which reads "
                     "it and acknowledges")(_ipc_method(_pipe))
register("ipc.mp_queue", group=SHM, baseline="ipc.pipe", requires=("mmap",),
         description="multiprocessing.Queue.put(bytes(block)) to a forked process "
                     "(pickled, through a pipe by a feeder thread)")(_ipc_method(_mp_queue))
register("ipc.channel", group=SHM, baseline="ipc.pipe", requires=("Channel",),
         description="fastio.Channel.send(block): one copy into a shared ring, one out")(
    _ipc_method(_channel))
register("shm.posix", group=SHM, baseline="ipc.pipe", requires=("SharedMemory",),
         description="block copied into a POSIX shm segment both processes map; a pipe "
                     "byte says it is there")(
    _ipc_method(lambda bs: _segment(lambda n: fastio.SharedMemory(create=True, size=n), bs)))
register("shm.sysv", group=SHM, baseline="ipc.pipe", requires=("SysVSharedMemory",),
         description="the same with a System V segment (shmget/shmat)")(
    _ipc_method(lambda bs: _segment(lambda n: fastio.SysVSharedMemory(create=True, size=n),
                                    bs)))
register("shm.memfd", group=SHM, baseline="ipc.pipe", requires=("memfd",),
         description="the same with a memfd (anonymous file) mapping")(
    _ipc_method(lambda bs: _segment(lambda n: fastio.memfd(n), bs)))
