"""Plain positional reads and writes, and read_file.

The system-call wrappers (pread, pwrite, preadv, pwritev, readinto_full,
fadvise, readahead) are the C functions of fastio._core themselves, with no
Python wrapper in between: a 4 KiB pread costs what os.pread costs. This
module holds the policy of read_file: how to read a whole file fastest.
"""
import errno
import os
import stat

import numpy as np

from . import _core
from .arrays import as_ndarray
from .memory import HUGEPAGE_SIZE, Buffer

__all__ = [
    "pread", "pwrite", "preadv", "pwritev", "readinto_full", "fadvise", "readahead",
    "read_file", "READ_FILE_METHODS",
    "POSIX_FADV_NORMAL", "POSIX_FADV_SEQUENTIAL", "POSIX_FADV_RANDOM",
    "POSIX_FADV_NOREUSE", "POSIX_FADV_WILLNEED", "POSIX_FADV_DONTNEED",
]

# The C functions, exported as they are (the hot path has no Python frame).
pread = _core.pread
pwrite = _core.pwrite
preadv = _core.preadv
pwritev = _core.pwritev
readinto_full = _core.readinto_full
fadvise = _core.fadvise
readahead = _core.readahead

# posix_fadvise advice: the values the os module has for this platform.
POSIX_FADV_NORMAL = os.POSIX_FADV_NORMAL
POSIX_FADV_SEQUENTIAL = os.POSIX_FADV_SEQUENTIAL
POSIX_FADV_RANDOM = os.POSIX_FADV_RANDOM
POSIX_FADV_NOREUSE = os.POSIX_FADV_NOREUSE
POSIX_FADV_WILLNEED = os.POSIX_FADV_WILLNEED
POSIX_FADV_DONTNEED = os.POSIX_FADV_DONTNEED

READ_FILE_METHODS = ("auto", "pread", "threads", "mmap", "readinto")

# read_file's tuning (see docs/readwrite.md and benchmarks/bench_read_file.py).
# Below this size one thread wins: starting threads costs more than it saves.
THREADS_MIN_SIZE = 16 * 1024 * 1024
# Each thread reads this much per pread: large enough that the syscall cost
# vanishes, small enough that the threads share the work evenly.
THREAD_CHUNK = 4 * 1024 * 1024
THREADS_MAX = 8


def _ncpus():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _read_pread(fd, buf, size, nthreads=None, flags=0):
    if flags:
        # preadv2 with the flags: pread_parallel on one thread is that loop.
        return _core.pread_parallel(fd, buf, 0, 1, THREAD_CHUNK, flags)
    return _core.readinto_full(fd, buf, 0)


def _read_threads(fd, buf, size, nthreads=None, flags=0):
    if nthreads is None:
        nthreads = max(1, min(_ncpus(), THREADS_MAX))
    # Smaller chunks for files of a few chunks, so every thread gets some.
    chunk = min(THREAD_CHUNK, max(64 * 1024, -(-size // (nthreads * 4))))
    chunk = -(-chunk // 65536) * 65536
    return _core.pread_parallel(fd, buf, 0, nthreads, chunk, flags)


def _read_mmap(fd, buf, size, nthreads=None, flags=0):
    m = _core.mmap(fd, size, access=_core.ACCESS_READ)
    try:
        # One memmove with the GIL released, under fastio's SIGBUS guard: a
        # file that shrinks during the read raises MappingError (a numpy
        # copy here would kill the process instead).
        return m._readinto(buf)
    finally:
        m.close()


def _read_readinto(fd, buf, size, nthreads=None, flags=0):
    # Python's buffered file: the baseline any Python user has.
    with open(fd, "rb", closefd=False) as f, memoryview(buf) as view:
        done = 0
        while done < size:
            n = f.readinto(view[done:])
            if not n:
                break
            done += n
    return done


_READERS = {
    "pread": _read_pread,
    "threads": _read_threads,
    "mmap": _read_mmap,
    "readinto": _read_readinto,
}


def _choose(size, nthreads=None):
    if size >= THREADS_MIN_SIZE and (nthreads or _ncpus()) > 1:
        return "threads"
    return "pread"


# mode='queue' / 'direct': the file in QUEUE_CHUNK requests, QUEUE_DEPTH of
# them in flight (enough to keep a device busy; fio's sequential default
# block is far smaller, but one request per MiB costs nothing here).
QUEUE_CHUNK = 1024 * 1024
QUEUE_DEPTH = 16
# mode='auto': pages sampled across the file by mincore, for files of
# AUTO_SAMPLE_MIN bytes and more. A smaller file is one or two preads
# either way: the sample (a map, mincore, an unmap: ~13 us here) would cost
# more than a queue could save, so it takes the copy path unsampled.
RESIDENCY_SAMPLES = 256
AUTO_SAMPLE_MIN = 1024 * 1024


def _read_queue(path, fd, buf, size, flags, direct_align=0):
    """The file through a Queue in QUEUE_CHUNK requests; O_DIRECT needs each
    length rounded up to direct_align (buf is that much longer): the last
    request then ends short, at the end of the file."""
    from .aio import Queue, _register
    from .blocks import uncached_error
    offsets = np.arange(0, size, QUEUE_CHUNK, dtype=np.int64)
    lengths = np.minimum(QUEUE_CHUNK, size - offsets).astype(np.int64)
    if direct_align:
        lengths = -(-lengths // direct_align) * direct_align
    results = np.empty(len(offsets), np.int64)
    with Queue(QUEUE_DEPTH, direct=bool(direct_align)) as q:
        if flags and q.backend == "posix_aio":
            raise uncached_error(None, "read_file on posix_aio")
        _register(q, fd, buf)
        q._batch(False, fd, offsets, lengths, 0, buf, results, flags)
        backend = q.backend
    bad = np.flatnonzero(results < 0)
    if len(bad):
        res = int(results[bad[0]])
        if flags and res == -errno.EOPNOTSUPP:
            raise uncached_error(res, f"read_file on {backend}")
        raise OSError(-res, os.strerror(-res), os.fsdecode(path))
    got = 0
    for r, want in zip(results.tolist(), lengths.tolist()):
        got += r
        if r < want:
            break
    return min(got, size), backend


def _check_read_file_args(method, mode, threads, uncached, stats):
    from .blocks import _check_mode, _check_stats, _check_threads, _check_uncached
    if method not in _READERS and method != "auto":
        raise ValueError(f"method must be one of {READ_FILE_METHODS}, got method={method!r}")
    mode = _check_mode(mode)
    nthreads = None if threads is None else _check_threads(threads)
    uncached = _check_uncached(uncached)
    _check_stats(stats)
    if method != "auto" and mode in ("queue", "direct"):
        raise ValueError(f"method chooses how mode='copy' copies: method={method!r} "
                         f"does not apply to mode={mode!r}")
    if uncached and method in ("mmap", "readinto"):
        raise ValueError(f"uncached=True reads with preadv2: method must be 'auto', "
                         f"'pread' or 'threads', got method={method!r}")
    return mode, nthreads, uncached


def _read_stream(fd):
    """Files whose size stat cannot tell (pipes, /proc files): read to EOF."""
    parts = []
    while True:
        data = os.read(fd, 1 << 20)
        if not data:
            break
        parts.append(data)
    data = b"".join(parts)
    buf = Buffer(len(data), hugepages=len(data) >= HUGEPAGE_SIZE)
    with memoryview(buf) as view:
        view[:] = data
    return buf, len(data)


def _read_by_mode(path, fd, size, chosen, method, nthreads, flags, info):
    """(Buffer, bytes read) for read_file on the chosen path."""
    from .blocks import uncached_error
    if chosen == "direct":
        from .aio import open as _open
        with _open(path, "r", True) as f:
            align = max(4096, f.alignment)
            buf = Buffer(-(-size // align) * align, hugepages=size >= HUGEPAGE_SIZE)
            try:
                got, info["backend"] = _read_queue(path, f.fileno(), buf, size, 0, align)
            except BaseException:
                buf.close()
                raise
        return buf, got
    buf = Buffer(size, hugepages=size >= HUGEPAGE_SIZE)
    try:
        if chosen == "queue":
            got, info["backend"] = _read_queue(path, fd, buf, size, flags)
        else:
            how = _choose(size, nthreads) if method == "auto" else method
            if how == "threads" and nthreads is None:
                nthreads = max(1, min(_ncpus(), THREADS_MAX))
            info.update(method=how, threads=nthreads if how == "threads" else 1)
            try:
                got = _READERS[how](fd, buf, size, nthreads, flags)
            except OSError as exc:
                if flags and exc.errno == errno.EOPNOTSUPP:
                    raise uncached_error(exc, "read_file") from None
                raise
    except BaseException:
        buf.close()
        raise
    return buf, got


def read_file(path, dtype="u1", *, method="auto", mode="auto", threads=None,
              uncached=False, stats=None):
    """read_file(path, dtype='u1', *, method='auto', mode='auto', threads=None, uncached=False, stats=None)

    The whole file at path as a new 1-d ndarray of dtype, on fresh page-aligned
    memory (fastio.Buffer, huge pages when 2 MiB or more).

    method: 'auto' (the fastest for the size and machine: 'threads' for files
    of 16 MiB and more on several CPUs, else 'pread'), 'pread' (one thread,
    pread loop), 'threads' (several threads pread chunks in parallel; the
    page faults of the fresh memory are spread over them too), 'mmap' (map
    the file and copy), 'readinto' (Python's buffered file, the baseline).

    mode: 'auto' (mincore on a sample of the file's pages: cached files take
    'copy', the rest 'queue'), 'copy' (the method above: the copy out of
    the page cache is the work, split over `threads` threads, one per CPU
    by default), 'queue' (1 MiB requests, 16 in flight on a Queue: the
    device is the limit), 'direct' (the same with O_DIRECT, the page cache
    bypassed). uncached: RWF_DONTCACHE (Linux 6.14+): the pages read leave
    the page cache again (OSError EOPNOTSUPP naming uncached=True where it
    is refused). stats: a dict filled in with 'mode', 'resident' (the
    sampled share, or None), 'method', 'threads' and 'backend'.

    Raises FileNotFoundError / IsADirectoryError / PermissionError with the
    filename, and ValueError when dtype's itemsize does not divide the size
    (naming both). A file that shrinks while being read gives the bytes that
    were there (ValueError if they no longer fit dtype).
    """
    dtype = np.dtype(dtype)
    if dtype.hasobject:
        raise ValueError(f"dtype={dtype} holds Python objects: cannot read them from a file")
    if dtype.itemsize == 0:
        raise ValueError(f"dtype={dtype} has no size")
    mode, nthreads, uncached = _check_read_file_args(method, mode, threads, uncached,
                                                     stats)
    flags = _core._RWF_DONTCACHE if uncached else 0
    info = {"mode": None, "resident": None, "method": None, "threads": None,
            "backend": None}

    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            # The filename as os.open reports it in its own errors.
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR),
                                    os.fsdecode(path))
        size = st.st_size
        if not stat.S_ISREG(st.st_mode) or size == 0:
            # Size unknown (0 for /proc files, pipes): no method to choose.
            buf, got = _read_stream(fd)
            size = got
            info.update(mode="copy", method="stream")
        else:
            if size % dtype.itemsize:
                raise ValueError(
                    f"file size {size} of {path!r} is not a multiple of "
                    f"dtype={dtype} itemsize {dtype.itemsize}")
            chosen = mode
            if mode == "auto":
                chosen = "copy"
                # uncached=True stays on the copy path, cold or warm: its
                # preadv2 threads kept up with buffered reads, where
                # io_uring's buffered reads with RWF_DONTCACHE ran at less
                # than half (benchmarks/bench_autoread.py, part 3).
                if method == "auto" and not uncached and size >= AUTO_SAMPLE_MIN:
                    from .blocks import WARM_FRACTION, residency_of
                    step = max(4096, size // RESIDENCY_SAMPLES)
                    frac = residency_of(fd, np.arange(0, size, step, dtype=np.int64), 1)
                    info["resident"] = frac
                    if frac is not None and frac < WARM_FRACTION:
                        chosen = "queue"
            info["mode"] = chosen
            buf, got = _read_by_mode(path, fd, size, chosen, method, nthreads, flags,
                                     info)
    finally:
        os.close(fd)

    if stats is not None:
        stats.update(info)
    if got % dtype.itemsize:
        raise ValueError(
            f"{got} bytes read from {path!r} (size {size} at open: it changed) "
            f"are not a multiple of dtype={dtype} itemsize {dtype.itemsize}")
    return as_ndarray(buf, dtype, (got // dtype.itemsize,))
