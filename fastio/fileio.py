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


def _read_pread(fd, buf, size):
    return _core.readinto_full(fd, buf, 0)


def _read_threads(fd, buf, size):
    nthreads = max(1, min(_ncpus(), THREADS_MAX))
    # Smaller chunks for files of a few chunks, so every thread gets some.
    chunk = min(THREAD_CHUNK, max(64 * 1024, -(-size // (nthreads * 4))))
    chunk = -(-chunk // 65536) * 65536
    return _core.pread_parallel(fd, buf, 0, nthreads, chunk)


def _read_mmap(fd, buf, size):
    m = _core.mmap(fd, size, access=_core.ACCESS_READ)
    try:
        # One memmove with the GIL released, under fastio's SIGBUS guard: a
        # file that shrinks during the read raises MappingError (a numpy
        # copy here would kill the process instead).
        return m._readinto(buf)
    finally:
        m.close()


def _read_readinto(fd, buf, size):
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


def _choose(size):
    if size >= THREADS_MIN_SIZE and _ncpus() > 1:
        return "threads"
    return "pread"


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


def read_file(path, dtype="u1", *, method="auto"):
    """read_file(path, dtype='u1', *, method='auto')

    The whole file at path as a new 1-d ndarray of dtype, on fresh page-aligned
    memory (fastio.Buffer, huge pages when 2 MiB or more).

    method: 'auto' (the fastest for the size and machine: 'threads' for files
    of 16 MiB and more on several CPUs, else 'pread'), 'pread' (one thread,
    pread loop), 'threads' (several threads pread chunks in parallel; the
    page faults of the fresh memory are spread over them too), 'mmap' (map
    the file and copy), 'readinto' (Python's buffered file, the baseline).

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
    if method not in _READERS and method != "auto":
        raise ValueError(f"method must be one of {READ_FILE_METHODS}, got method={method!r}")

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
        else:
            if size % dtype.itemsize:
                raise ValueError(
                    f"file size {size} of {path!r} is not a multiple of "
                    f"dtype={dtype} itemsize {dtype.itemsize}")
            chosen = _choose(size) if method == "auto" else method
            buf = Buffer(size, hugepages=size >= HUGEPAGE_SIZE)
            try:
                got = _READERS[chosen](fd, buf, size)
            except BaseException:
                buf.close()
                raise
    finally:
        os.close(fd)

    if got % dtype.itemsize:
        raise ValueError(
            f"{got} bytes read from {path!r} (size {size} at open: it changed) "
            f"are not a multiple of dtype={dtype} itemsize {dtype.itemsize}")
    return as_ndarray(buf, dtype, (got // dtype.itemsize,))
