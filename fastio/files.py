"""read_files: many whole files into one contiguous array in one C call.

The C side (csrc/readfiles.c) stats every path, lays the files out one after
another, then reads them: through io_uring (per file a linked chain
openat -> read -> close on a direct descriptor, up to `depth` files in
flight) or through C worker threads (open, fstat, pread, close). No Python
code runs per file. This module holds the policy: paths, the backend, the
output's allocation, what a failure does, and the Files result.
"""
import fnmatch
import functools
import glob
import operator
import os

import numpy as np

from . import _core
from .memory import empty

__all__ = ["read_files", "read_files_async", "Files", "READ_FILES_BACKENDS"]

READ_FILES_BACKENDS = ("auto", "io_uring", "threads", "linux_aio", "posix_aio")
DEPTH_MAX = 4096  # csrc/readfiles.c's RF_DEPTH_MAX

# Linux AIO and POSIX aio can only read and write descriptors that are open
# already: read_files opens, stats and reads in C threads for them.
_NO_OPEN = "{} cannot open files: read_files used C worker threads (open, fstat, pread, close)"


class Files:
    """The files read by :func:`read_files`.

    ``data``: one contiguous uint8 ndarray holding every file;
    ``offsets``: int64, n+1 entries, file i at ``data[offsets[i]:offsets[i+1]]``
    (Arrow-style; with ``direct=True`` each file starts on a 4096-byte
    boundary and ``offsets`` are starts, the file is ``sizes[i]`` long);
    ``sizes``: int64, n entries; ``paths``: the paths as given (or found by
    ``pattern``); ``errors``: index -> OSError for the files that failed
    (``missing='skip'``; such a file has size 0 and zero bytes);
    ``backend``: 'io_uring' or 'threads', what read them; ``backend_reason``:
    why 'auto' or the backend asked for did not read them, or None.

    ``files[i]`` is a zero-copy view of file i (an ndarray over ``data``),
    ``len(files)`` the number of files, and iteration yields the views.
    """

    __slots__ = ("data", "offsets", "sizes", "paths", "errors", "backend",
                 "backend_reason")

    def __init__(self, data, offsets, sizes, paths, errors, backend, backend_reason=None):
        self.data = data
        self.offsets = offsets
        self.sizes = sizes
        self.paths = paths
        self.errors = errors
        self.backend = backend
        self.backend_reason = backend_reason

    def __len__(self):
        return len(self.sizes)

    def __getitem__(self, i):
        n = len(self.sizes)
        try:
            i = operator.index(i)
        except TypeError:
            raise TypeError(f"Files indices must be integers, got {type(i).__name__}") from None
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"file index out of range: {i} (there are {n} files)")
        start = int(self.offsets[i])
        return self.data[start:start + int(self.sizes[i])]

    def __iter__(self):
        for i in range(len(self.sizes)):
            yield self[i]

    def __repr__(self):
        return (f"<fastio.Files {len(self)} files, {int(self.sizes.sum())} bytes, "
                f"{len(self.errors)} errors, backend={self.backend!r}>")


def _expand(paths, pattern):
    """The list of paths: a sequence as given, or a directory's entries
    matching pattern (sorted, directories left out)."""
    if pattern is not None:
        if not isinstance(pattern, str):
            raise TypeError(f"pattern must be a str, got pattern={pattern!r}")
        if not isinstance(paths, (str, bytes, os.PathLike)):
            raise TypeError("pattern= needs one directory as paths, got "
                            f"{type(paths).__name__}")
        top = os.fsdecode(os.fspath(paths))
        if not os.path.isdir(top):
            raise NotADirectoryError(20, "pattern= needs a directory", top)
        if "/" in pattern or "**" in pattern:
            found = glob.glob(os.path.join(top, pattern), recursive=True)
            return sorted(p for p in found if not os.path.isdir(p))
        with os.scandir(top) as it:
            # d_type says what a directory is without a stat per entry
            return sorted(e.path for e in it
                          if fnmatch.fnmatchcase(e.name, pattern) and not e.is_dir())
    if isinstance(paths, (str, bytes, os.PathLike)):
        what = os.fsdecode(os.fspath(paths))
        hint = (" (a directory: pass pattern='*' to read its files)"
                if os.path.isdir(what) else " (a single path: pass [path])")
        raise TypeError(f"paths must be a sequence of paths, got {what!r}{hint}")
    try:
        return list(paths)
    except TypeError:
        raise TypeError("paths must be a sequence of str, bytes or os.PathLike, got "
                        f"{type(paths).__name__}") from None


def _encode(paths):
    out = []
    for i, p in enumerate(paths):
        try:
            out.append(os.fsencode(os.fspath(p)))
        except TypeError:
            raise TypeError(f"paths[{i}] must be str, bytes or os.PathLike, got "
                            f"{type(p).__name__}") from None
    return tuple(out)


def _backend_order(backend):
    """[(C path, reason why it is used)] to try in order."""
    if backend == "auto":
        env = os.environ.get("FASTIO_BACKEND", "").strip()
        if env and env != "auto":
            if env not in READ_FILES_BACKENDS:
                raise ValueError(f"FASTIO_BACKEND must be one of {READ_FILES_BACKENDS}, "
                                 f"got FASTIO_BACKEND={env!r}")
            backend = env
        else:
            return [("io_uring", None), ("threads", None)]
    if backend in ("linux_aio", "posix_aio"):
        return [("threads", _NO_OPEN.format(backend))]
    if backend in ("io_uring", "threads"):
        return [(backend, None)]
    raise ValueError(f"backend must be one of {READ_FILES_BACKENDS}, got backend={backend!r}")


def read_files(paths, *, max_size=None, out=None, backend="auto", depth=64, direct=False,
               missing="raise", pattern=None):
    """read_files(paths, *, max_size=None, out=None, backend='auto', depth=64, direct=False, missing='raise', pattern=None)

    Read every file of ``paths`` whole into one contiguous uint8 array, in
    one C call with the GIL released (no Python code per file). Returns a
    :class:`Files`.

    paths: a sequence of str, bytes or os.PathLike (duplicates are read
    twice), or one directory with ``pattern`` (a glob such as '*.jpg'; with
    '/' or '**' a recursive glob): its matching entries, sorted, directories
    left out.
    max_size: a file larger than this many bytes is an error (OSError EFBIG
    naming the path and its size).
    out: a writable C-contiguous buffer to read into (at least the files'
    total size; 4096-aligned with direct); ``Files.data`` is then a view of
    it. None: a new array (fastio.empty).
    backend: 'auto' (io_uring where it works, else threads; FASTIO_BACKEND
    overrides), 'io_uring', 'threads'; 'linux_aio' and 'posix_aio' cannot
    open files and use the threads path (``Files.backend_reason`` says so).
    depth: files in flight in all (io_uring: split among one ring per CPU,
    at most 8) or worker threads (threads, at most 64), 1 to 4096.
    direct: open with O_DIRECT (each file then starts on a 4096-byte
    boundary of ``data``).
    missing: 'raise' raises the first failure (FileNotFoundError,
    PermissionError, IsADirectoryError, ... naming the path and its index
    in paths; no new file starts after it); 'skip' records every failure in
    ``Files.errors`` and reads the rest.

    Every path is stat'ed first: a directory (IsADirectoryError) or a FIFO,
    socket or device (OSError EINVAL: reading it could block) is refused
    before anything is read. A file whose size changed between that stat and
    its read is reported (OSError EIO, "changed size"), never half-copied.
    A Ctrl-C stops the call within about 50 ms (KeyboardInterrupt; nothing
    is left open or running).
    """
    found = _expand(paths, pattern)
    if isinstance(max_size, bool) or not (max_size is None or isinstance(max_size, int)):
        raise TypeError(f"max_size must be an int or None, got max_size={max_size!r}")
    if max_size is not None and max_size < 0:
        raise ValueError(f"max_size must be >= 0 or None, got max_size={max_size}")
    if isinstance(depth, bool) or not isinstance(depth, int):
        raise TypeError(f"depth must be an int, got depth={depth!r}")
    if not 1 <= depth <= DEPTH_MAX:
        raise ValueError(f"depth out of range [1, {DEPTH_MAX}]: depth={depth}")
    if missing not in ("raise", "skip"):
        raise ValueError(f"missing must be 'raise' or 'skip', got missing={missing!r}")
    if not isinstance(direct, bool):
        raise TypeError(f"direct must be True or False, got direct={direct!r}")
    encoded = _encode(found)
    order = _backend_order(backend)
    if out is not None:
        try:
            mv = memoryview(out)
        except TypeError:
            raise TypeError("out must be a writable C-contiguous buffer, got "
                            f"{type(out).__name__}") from None
        if mv.readonly or not mv.c_contiguous:
            raise TypeError("out must be a writable C-contiguous buffer, got a "
                            f"{'read-only' if mv.readonly else 'non-contiguous'} "
                            f"{type(out).__name__}")

        def alloc(nbytes):
            return out
    else:
        def alloc(nbytes):
            return empty(nbytes)

    reason = None
    if not encoded:
        base = alloc(0)
        result = (base, np.zeros(1, np.int64).tobytes(), b"", {}, None)  # nothing ran
    else:
        max_c = -1 if max_size is None else min(max_size, 2**63 - 1)
        for k, (name, why) in enumerate(order):
            try:
                result = _core._read_files(encoded, alloc, name, depth, max_c, direct,
                                           missing == "raise")
                reason = why
                break
            except _core.BackendUnavailable as e:
                if k + 1 == len(order):
                    raise
                reason = f"{name}: {e}"
    base, offs, sizes, errors, used = result
    offsets = np.frombuffer(offs, dtype=np.int64).copy()
    sizes = np.frombuffer(sizes, dtype=np.int64).copy()
    if isinstance(base, np.ndarray) and base.dtype == np.uint8 and base.ndim == 1:
        data = base[:int(offsets[-1])]
    else:
        data = np.frombuffer(memoryview(base).cast("B"), dtype=np.uint8)[:int(offsets[-1])]
    if errors and missing == "raise":
        raise errors[min(errors)]
    return Files(data, offsets, sizes, tuple(found), errors, used, reason)


async def read_files_async(paths, **kwargs):
    """read_files_async(paths, **kwargs)

    :func:`read_files` as a coroutine: the C call runs in the running
    loop's default executor (one thread; the C call releases the GIL), so
    the event loop never blocks. Cancelling the task stops waiting; the
    read already started finishes in that thread and its result is dropped.
    """
    import asyncio  # here, not at import: `import fastio` loads this module

    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, functools.partial(read_files, paths, **kwargs))
