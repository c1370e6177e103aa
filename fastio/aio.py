"""Asynchronous I/O: one batched API over io_uring, Linux AIO, POSIX aio and
a thread pool, plus asyncio coroutines.

Blocking API (re-exported by fastio): ``Queue`` (a submission/completion
queue over one backend), ``backends()`` (what works here and why not),
``open`` (a file, O_DIRECT on request, with its alignment). The blocking
``read_blocks`` / ``write_blocks`` live in fastio.blocks and are
``fastio.read_blocks`` / ``fastio.write_blocks``.

Coroutines (only here, as fastio.aio.*: they share names with blocking
functions): ``read``, ``write``, ``fsync``, ``sendfile``, ``read_blocks``,
``write_blocks``; and ``Queue.wait_async()``. Completions reach the running
loop through an eventfd watched with loop.add_reader: no thread per
request, and the loop never blocks.

``await fastio.aio.sendfile(sock, file)`` sends with sendfile(2) from the
running loop: each C call moves what the socket buffer takes, with the GIL
released, and returns instead of waiting; the coroutine then waits for the
socket to become writable through the loop (add_writer) and goes on.
"""
# Private names for the modules used here: `from fastio.aio import *` and
# dir(fastio.aio) give the public API only (tests/test_aio_asyncio.py).
import collections as _collections
import errno as _errno
import operator as _operator
import os as _os
import socket as _socket
import weakref as _weakref
from typing import NamedTuple as _NamedTuple

import numpy as _np

from . import _core
from .transfer import Transferred as _Transferred
from .transfer import _check_count, _Input
# await fastio.aio.read_files(...): the coroutine form of fastio.read_files
from .files import read_files_async as read_files

# Public names only.
__all__ = ["Queue", "backends", "BackendInfo", "BackendUnavailable", "open", "File",
           "BACKENDS", "resolve_backend", "percentiles_from_hist", "ASYNC_DEPTH",
           "read", "write", "fsync", "sendfile", "read_blocks", "write_blocks",
           "read_files"]

BackendUnavailable = _core.BackendUnavailable

# No splice in non-blocking mode: bytes pulled into its internal pipe cannot
# be given back when the socket is full, so the C loop would have to block.
_AIO_METHODS = ("sendfile", "readwrite")


async def sendfile(sock, file, offset=0, count=None, *, method="auto"):
    """Send ``count`` bytes (None: to the end) of ``file`` from ``offset`` on ``sock``.

    ``sock`` is a non-blocking socket (``sock.setblocking(False)``, as the
    loop's own sock_* methods require) used from the running loop; ``file``
    a file object, a descriptor or a path (opened and closed here). A given
    ``offset`` leaves the file's position alone; ``offset=None`` starts at
    the file's position and moves it past what was sent. ``method`` is
    'auto' (sendfile(2), then a read/write loop where sendfile does not
    apply), 'sendfile' or 'readwrite'. Returns a :class:`fastio.Transferred`.

    Cancellation stops between chunks; the bytes already sent stay sent (the
    CancelledError has no count: use offset/count to resume with care).
    """
    import asyncio  # here, not at import: `import fastio` loads this module

    loop = asyncio.get_running_loop()
    if not isinstance(sock, _socket.socket):
        raise TypeError(f"sock must be a _socket.socket, not {type(sock).__name__}")
    if sock.gettimeout() != 0:
        raise ValueError("the socket must be non-blocking "
                         "(sock.setblocking(False))")
    if method == "auto":
        methods = _AIO_METHODS
    elif method in _AIO_METHODS:
        methods = (method,)
    else:
        raise ValueError(f"method must be 'auto', 'sendfile' or 'readwrite', "
                         f"not {method!r}")
    count = _check_count(count, "count")
    offset = _check_count(offset, "offset")
    out_fd = sock.fileno()
    if out_fd < 0:
        raise OSError(9, _os.strerror(9))
    inp = _Input(file, offset, "file")
    keep_position = offset == -1 and inp.fileobj is not None and inp.offset >= 0
    start = inp.offset
    total = 0
    used = methods[0]
    try:
        while True:
            left = -1 if count == -1 else count - total
            in_off = -1 if start == -1 else start + total
            try:
                n, used, blocked = _core._transfer(out_fd, inp.fd, left, in_off, -1,
                                                   methods, -1.0, True,
                                                   inp.filename, None)
            except BaseException as exc:
                total += getattr(exc, "bytes_sent", 0)
                raise
            total += n
            if not blocked:
                break
            # Once a method has sent bytes it is the one that works: keep it.
            if n:
                methods = (used,)
            await _writable(loop, sock)
    finally:
        if keep_position:
            inp.fileobj.seek(start + total)
        inp.close()
    return _Transferred(total, used)


async def _writable(loop, sock):
    fut = loop.create_future()
    fd = sock.fileno()

    def ready():
        if not fut.done():
            fut.set_result(None)

    loop.add_writer(fd, ready)
    try:
        await fut
    finally:
        loop.remove_writer(fd)


# ====================================================================
# Backends: what works here, and the choice behind backend='auto'

BACKENDS = ("io_uring", "linux_aio", "posix_aio", "threads")
# 'auto' tries these in order. linux_aio only when the I/O is O_DIRECT: on
# buffered files io_submit runs the read synchronously inside the call.
# posix_aio (glibc's own thread pool) is a comparison backend, never 'auto'.
_AUTO_ORDER = ("io_uring", "linux_aio", "threads")


class BackendInfo(_NamedTuple):
    """One backend as probed here. reason says why it does not work ('' when
    it does); features: 'register_files', 'register_buffers', 'async_buffered'
    (reads are asynchronous without O_DIRECT), 'sqpoll', 'single_issuer',
    'defer_taskrun', 'fsync', 'eventfd'."""
    name: str
    available: bool
    reason: str
    errno: int
    features: frozenset


def backends():
    """backends()

    Probe every backend now: a dict name -> BackendInfo, in the order
    'io_uring', 'linux_aio', 'posix_aio', 'threads'.
    """
    out = {}
    for name, err, why, feats in _core._backends():
        out[name] = BackendInfo(name, err == 0, why, err, frozenset(feats))
    _probe_cache.clear()
    _probe_cache[_os.getpid()] = out
    return out


_probe_cache = {}


def _probed():
    # Probes cost a system call or two (io_uring_setup): once per process.
    got = _probe_cache.get(_os.getpid())
    if got is None:
        got = backends()
    return got


def resolve_backend(backend="auto", direct=False):
    """resolve_backend(backend='auto', direct=False)

    The backend a Queue asked for `backend` gets, and why 'auto' skipped the
    ones before it: (name, reason or None). FASTIO_BACKEND in the
    environment replaces 'auto'. A backend named explicitly is returned as
    it is (the Queue then raises BackendUnavailable if it does not work).
    """
    if backend == "auto":
        env = _os.environ.get("FASTIO_BACKEND", "").strip()
        if env and env != "auto":
            if env not in BACKENDS:
                raise ValueError(f"FASTIO_BACKEND must be one of {BACKENDS} or 'auto', "
                                 f"got FASTIO_BACKEND={env!r}")
            return env, "FASTIO_BACKEND"
    if backend != "auto":
        if backend not in BACKENDS:
            raise ValueError(f"backend must be 'auto' or one of {BACKENDS}, "
                             f"got backend={backend!r}")
        return backend, None
    skipped = []
    info = _probed()
    for name in _AUTO_ORDER:
        if name == "linux_aio" and not direct:
            continue
        if info[name].available:
            return name, "; ".join(skipped) or None
        skipped.append(f"{name}: {info[name].reason}")
    raise BackendUnavailable(_errno.ENOSYS, "no backend works here: " + "; ".join(skipped))


# ====================================================================
# Queue

class Queue(_core.Queue):
    """Queue(depth=64, backend='auto', *, sqpoll=False, sqpoll_idle_ms=0, threads=0, latency=False, submit_batch=8, direct=False)

    A submission/completion queue: q.read/q.write/q.fsync queue requests
    (each pins its buffer until its completion is reaped), submit() hands
    them to the backend, wait()/drain() return (tag, result) completions
    where result is the byte count or the request's OSError. A context
    manager: leaving drains (or cancels, on an exception) and closes.

    backend: 'auto' (io_uring, then linux_aio when direct=True, then
    threads; FASTIO_BACKEND overrides), or a name from BACKENDS.
    q.backend is the backend that runs; q.fallback why 'auto' skipped others.
    sqpoll (io_uring): a kernel thread polls the ring. threads (threads
    backend): pool size. latency: record submit-to-reap latencies
    (latency_histogram(), percentiles()). submit_batch: requests handed to
    the backend per system call at most (fio's iodepth_batch_submit; 8 by
    default, see docs/aio.md).
    """

    __slots__ = ("fallback",)

    def __new__(cls, depth=64, backend="auto", *, direct=False, **options):
        name, why = resolve_backend(backend, direct)
        self = super().__new__(cls, depth, name, **options)
        self.fallback = why
        return self

    @property
    def features(self):
        """The backend's features here (names as in BackendInfo.features)."""
        bits = self._features
        return frozenset(n for i, n in enumerate(_FEATURE_NAMES) if bits >> i & 1)

    def percentiles(self, ps=(50, 99, 99.9), reset=False):
        """Latency percentiles in ns from the histogram (Queue(latency=True))."""
        return percentiles_from_hist(self.latency_histogram(reset=reset), ps)

    def read_batch(self, file, offsets, lengths, dest):
        """Read at offsets (lengths: an int for all, or an array) into dest
        (one buffer holding the requests back to back, or a list of buffers).
        Return the int64 array of byte counts (-errno for a failed request)."""
        return self._run_batch(False, file, offsets, lengths, dest)

    def write_batch(self, file, offsets, lengths, src):
        """write_batch(file, offsets, lengths, src): as read_batch, writing."""
        return self._run_batch(True, file, offsets, lengths, src)

    def _run_batch(self, writing, file, offsets, lengths, dest):
        offsets = _int64_array(offsets, "offsets")
        results = _np.empty(len(offsets), dtype=_np.int64)
        if isinstance(lengths, (int, _np.integer)):
            self._batch(writing, file, offsets, None, _index(lengths, "lengths"), dest,
                        results)
        else:
            lengths = _int64_array(lengths, "lengths")
            self._batch(writing, file, offsets, lengths, 0, dest, results)
        return results

    async def wait_async(self, min_complete=1):
        """Await at least min_complete completions (fewer if fewer are in
        flight) from the running loop, through the queue's eventfd."""
        import asyncio
        loop = asyncio.get_running_loop()
        efd = self._eventfd()
        if efd < 0:
            # A backend without completion notification (posix_aio): one
            # executor thread waits, not one per request.
            return await loop.run_in_executor(None, self.wait, min_complete)
        self.submit()
        done = []
        while True:
            _clear_eventfd(efd)
            done += self.wait(0, 0)
            if len(done) >= min_complete or self.in_flight == 0:
                return done
            await _readable(loop, efd)


_FEATURE_NAMES = ("register_files", "register_buffers", "async_buffered", "sqpoll",
                  "single_issuer", "defer_taskrun", "fsync", "eventfd")


def percentiles_from_hist(hist, ps):
    """percentiles_from_hist(hist, ps)

    Percentiles from a histogram [(upper bound, count), ...] sorted by
    bound: the upper bound of the bucket holding the rank (as fio reports
    from its own buckets). NaN for an empty histogram.
    """
    total = sum(c for _, c in hist)
    out = {}
    for p in ps:
        if total == 0:
            out[p] = float("nan")
            continue
        rank = p / 100 * total
        acc = 0
        for top, c in hist:
            acc += c
            if acc >= rank:
                out[p] = float(top)
                break
    return out


def _clear_eventfd(efd):
    try:
        _os.read(efd, 8)
    except BlockingIOError:
        pass


async def _readable(loop, fd):
    fut = loop.create_future()

    def ready():
        if not fut.done():
            fut.set_result(None)

    loop.add_reader(fd, ready)
    try:
        await fut
    finally:
        loop.remove_reader(fd)


# ====================================================================
# Files: fastio.open, O_DIRECT alignment

_MODES = {
    "r": _os.O_RDONLY, "r+": _os.O_RDWR,
    "w": _os.O_WRONLY | _os.O_CREAT | _os.O_TRUNC, "w+": _os.O_RDWR | _os.O_CREAT | _os.O_TRUNC,
    "x": _os.O_WRONLY | _os.O_CREAT | _os.O_EXCL, "x+": _os.O_RDWR | _os.O_CREAT | _os.O_EXCL,
}


class File:
    """A file descriptor owned by fastio.open(): fileno(), close(), a context
    manager; closed when collected. direct: opened with O_DIRECT.
    alignment / mem_alignment: what O_DIRECT requests on it need (offset and
    length / buffer address, in bytes: statx's dio alignment, the device's
    logical block size, or 4096 when the kernel does not say)."""

    __slots__ = ("_fd", "name", "mode", "direct", "_align", "__weakref__")

    def __init__(self, fd, name, mode, direct):
        self._fd = fd
        self.name = name
        self.mode = mode
        self.direct = direct
        self._align = None

    def fileno(self):
        if self._fd < 0:
            raise ValueError("I/O operation on a closed file")
        return self._fd

    @property
    def closed(self):
        return self._fd < 0

    def close(self):
        fd, self._fd = self._fd, -1
        if fd >= 0:
            _os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()

    def _alignments(self):
        if self._align is None:
            self._align = _core._dio_alignment(self.fileno())
        return self._align

    @property
    def alignment(self):
        return self._alignments()[1]

    @property
    def mem_alignment(self):
        return self._alignments()[0]

    @property
    def size(self):
        return _os.fstat(self.fileno()).st_size

    def __repr__(self):
        state = "closed" if self._fd < 0 else f"fd={self._fd}"
        return (f"<fastio.File {self.name!r} mode={self.mode!r} direct={self.direct} "
                f"{state}>")


def open(path, mode="r", direct=False, *, perm=0o644):
    """open(path, mode='r', direct=False, *, perm=0o644)

    Open path for the Queue and read_blocks: mode 'r', 'r+', 'w', 'w+', 'x'
    or 'x+' (always binary; 'b' is accepted and ignored), O_CLOEXEC, and
    O_DIRECT when direct (the page cache bypassed: offsets, lengths and
    buffer addresses must then be aligned, see File.alignment). perm: the
    mode bits of a created file (0..0o7777, less the umask). Returns a
    File. A filesystem without O_DIRECT (tmpfs, some FUSE) raises OSError
    saying so.
    """
    m = mode.replace("b", "")
    if m not in _MODES:
        raise ValueError(f"mode must be one of {tuple(_MODES)}, got mode={mode!r}")
    perm = _check_perm(perm)
    flags = _MODES[m] | _os.O_CLOEXEC
    if direct:
        flags |= _os.O_DIRECT
    try:
        fd = _os.open(path, flags, perm)
    except OSError as exc:
        if direct and exc.errno == _errno.EINVAL:
            raise OSError(_errno.EINVAL, "O_DIRECT is not supported by the filesystem "
                          "holding this file (tmpfs and some FUSE filesystems lack it)",
                          _os.fsdecode(path)) from None
        raise
    return File(fd, _os.fsdecode(path), m, bool(direct))


def _check_perm(perm):
    # os.open would take -1 (all bits set: 0o7777 & ~umask) or 1 << 40
    # (truncated) without a word: a file mode is 12 bits.
    if isinstance(perm, bool):
        raise TypeError(f"perm must be an int (file mode bits, e.g. 0o644), got perm={perm!r}")
    try:
        perm = _operator.index(perm)
    except TypeError:
        raise TypeError(f"perm must be an int (file mode bits, e.g. 0o644), "
                        f"got perm of type {type(perm).__name__}") from None
    if not 0 <= perm <= 0o7777:
        raise ValueError(f"perm must be within 0..0o7777, got perm={perm} ({perm:#o})")
    return perm


def _index(value, name):
    # int(4096.5) would truncate: an integer is meant, so a float is refused.
    try:
        return _operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {name}={value!r}") from None


_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def _int64_array(values, name):
    """values (a sequence or array of integers) as a flat C-contiguous int64
    array. np.asarray(..., dtype=np.int64) would turn 0.5 into 0 and wrap
    2**64 - 1 into -1: a float is a TypeError, a value past int64 an
    OverflowError, each naming the argument."""
    arr = _np.asarray(values)
    if arr.dtype == _np.int64:
        return _np.ascontiguousarray(arr).reshape(-1)
    if arr.size == 0:
        return _np.zeros(0, _np.int64)  # [] is float64 to numpy
    kind = arr.dtype.kind
    if kind == "u":
        if arr.max() > _INT64_MAX:
            i = int(_np.argmax(arr > _INT64_MAX))
            raise OverflowError(f"{name} must fit in int64, got {name}[{i}]="
                                f"{int(arr.reshape(-1)[i])}")
        return _np.ascontiguousarray(arr, dtype=_np.int64).reshape(-1)
    if kind == "i":
        return _np.ascontiguousarray(arr, dtype=_np.int64).reshape(-1)
    if kind in "fO" and not isinstance(values, _np.ndarray):
        # A list mixing ints and ints past int64 is float64 to numpy:
        # look at the items themselves.
        arr = _np.asarray(values, dtype=object)
        kind = "O"
    if kind == "O":
        flat = arr.reshape(-1)
        out = _np.empty(len(flat), _np.int64)
        for i, v in enumerate(flat):
            try:
                v = _operator.index(v)
            except TypeError:
                raise TypeError(f"{name} must hold integers, got {name}[{i}]={v!r}") from None
            if not _INT64_MIN <= v <= _INT64_MAX:
                raise OverflowError(f"{name} must fit in int64, got {name}[{i}]={v}")
            out[i] = v
        return out
    first = arr.reshape(-1)[0].item()
    raise TypeError(f"{name} must hold integers, got an array of {arr.dtype} "
                    f"({name}[0]={first!r})")


def _register(q, fd, buf):
    # Registered file and buffer save io_uring a lookup and a page pinning
    # per request; a backend without them, or a memlock limit, just skips.
    feats = q._features
    if feats & 1:
        try:
            q.register_files([fd])
        except (OSError, NotImplementedError):
            pass
    if feats & 2:
        try:
            q.register_buffers([buf])
        except (OSError, NotImplementedError, BufferError, TypeError, ValueError):
            pass


# ====================================================================
# asyncio: one queue per event loop, completions through its eventfd

ASYNC_DEPTH = 128
_loop_queues = _weakref.WeakKeyDictionary()


class _LoopQueue:
    """The queue behind fastio.aio.read/write/fsync for one event loop.

    A reader on the queue's eventfd reaps completions and resolves their
    futures. A cancelled coroutine leaves its request in flight (the kernel
    may be writing into the buffer): the buffer stays pinned until the
    completion comes and is then dropped.
    """

    def __init__(self, loop):
        q = Queue(ASYNC_DEPTH)
        efd = q._eventfd()
        if efd < 0:
            q.close()
            q = Queue(ASYNC_DEPTH, "threads")
            efd = q._eventfd()
        self.q = q
        self.efd = efd
        self.futures = {}
        self.after = {}  # tag -> what to do once its completion is reaped
        self.next = 0
        # Requests in flight at most (an asyncio.Semaphore would keep a
        # reference to the loop, and this object, the loop's weak-dict
        # value, would then keep its own key alive).
        self.free = ASYNC_DEPTH
        self.waiters = _collections.deque()
        loop.add_reader(efd, self._ready)

    def _ready(self):
        _clear_eventfd(self.efd)
        for tag, res in self.q.wait(0, 0):
            fut = self.futures.pop(tag)
            self._release()
            after = self.after.pop(tag, None)
            if after is not None:
                # A descriptor opened for a path is closed only now: closed
                # while the request was in flight (a cancelled coroutine),
                # its number could be reused and the I/O hit another file.
                after()
            if fut.done():
                continue
            if isinstance(res, BaseException):
                fut.set_exception(res)
            else:
                fut.set_result(res)

    def _release_wake(self):
        for w in self.waiters:
            if not w.done():
                w.set_result(None)
                break

    def _release(self):
        self.free += 1
        while self.waiters:
            w = self.waiters.popleft()
            if not w.done():
                w.set_result(None)
                break

    async def run(self, loop, op, file, *args, after=None):
        while self.free == 0:
            w = loop.create_future()
            self.waiters.append(w)
            try:
                await w
            except BaseException:
                # Cancelled after being woken: pass the wake-up on.
                if w.done() and not w.cancelled() and self.free > 0:
                    self._release_wake()
                raise
        self.free -= 1
        tag = self.next
        self.next += 1
        try:
            op(file, *args, tag=tag)
        except BaseException:
            self._release()
            if after is not None:
                after()
            raise
        fut = loop.create_future()
        self.futures[tag] = fut
        if after is not None:
            self.after[tag] = after
        self.q.submit()
        return await fut


def _loop_queue():
    import asyncio
    loop = asyncio.get_running_loop()
    lq = _loop_queues.get(loop)
    if lq is None:
        lq = _loop_queues[loop] = _LoopQueue(loop)
    return loop, lq


def _file_arg(file, writing):
    """(fd, after): file as a descriptor, and what to call once its request
    completed (closing the descriptor opened here for a path), or None."""
    if isinstance(file, (str, bytes, _os.PathLike)):
        fd = _os.open(file, (_os.O_WRONLY if writing else _os.O_RDONLY) | _os.O_CLOEXEC)
        return fd, lambda: _os.close(fd)
    if isinstance(file, bool):
        raise TypeError(f"file must be a path, a file descriptor or an object with "
                        f"fileno(), got file={file!r}")
    if isinstance(file, int):
        if file < 0:
            raise ValueError(f"file must be a path or a file descriptor >= 0, "
                             f"got file={file}")
        return file, None
    if hasattr(file, "fileno"):
        return file.fileno(), None
    raise TypeError(f"file must be a path, a file descriptor or an object with "
                    f"fileno(), got file of type {type(file).__name__}")


def _buf_arg(buf, writable):
    try:
        with memoryview(buf) as mv:
            readonly = mv.readonly
    except TypeError:
        raise TypeError(f"buf must be a {'writable ' if writable else ''}bytes-like "
                        f"object, got buf of type {type(buf).__name__}") from None
    if writable and readonly:
        raise TypeError(f"buf must be a writable bytes-like object, got a read-only "
                        f"{type(buf).__name__}")


def _offset_arg(offset):
    offset = _index(offset, "offset")
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got offset={offset}")
    return offset


async def _one(writing, file, buf, offset):
    _buf_arg(buf, not writing)
    offset = _offset_arg(offset)
    loop, lq = _loop_queue()
    fd, after = _file_arg(file, writing)
    op = lq.q.write if writing else lq.q.read
    return await lq.run(loop, op, fd, buf, offset, after=after)


async def read(file, buf, offset):
    """await read(file, buf, offset): read into buf at offset of file (a
    path, opened and closed here, an fd or a file object); the byte count."""
    return await _one(False, file, buf, offset)


async def write(file, buf, offset):
    """await write(file, buf, offset): write buf at offset of file (a path
    of an existing file, an fd or a file object); the byte count."""
    return await _one(True, file, buf, offset)


async def fsync(file):
    """await fsync(file): flush file's data and metadata to disk; None, as os.fsync."""
    loop, lq = _loop_queue()
    # Read-only is enough: Linux fsyncs through any descriptor of the file.
    fd, after = _file_arg(file, False)
    await lq.run(loop, lq.q.fsync, fd, after=after)  # the completion's result is 0
    return None


# ====================================================================
# asyncio read_blocks / write_blocks: a Queue of their own, its eventfd

def _async_queue(depth, backend, direct):
    q = Queue(depth, backend, direct=direct)
    efd = q._eventfd()
    if efd < 0:
        # posix_aio signals no eventfd: the threads backend does.
        q.close()
        q = Queue(depth, "threads", direct=direct)
        efd = q._eventfd()
    return q, efd


async def _run_blocks(writing, fd, offsets, size, rows, depth, backend, direct):
    """Run the requests (row i at offsets[i], size bytes) on a Queue of their
    own; return the int64 results (bytes moved, or -errno) and the
    exceptions by index. The loop gets control back after every round of
    completions (cached reads on io_uring complete within submit: without
    that yield a large read would hold the loop to its end)."""
    import asyncio
    loop = asyncio.get_running_loop()
    n = len(offsets)
    results = _np.zeros(n, _np.int64)
    errors = {}
    q, efd = _async_queue(depth, backend, direct)
    op = q.write if writing else q.read
    try:
        nxt = 0
        while True:
            while nxt < n and q.in_flight < q.depth and not errors:
                i = nxt
                nxt += 1
                if size:
                    op(fd, rows[i], int(offsets[i]), tag=i)
            if q.in_flight == 0:
                break
            q.submit()
            _clear_eventfd(efd)
            done = q.wait(0, 0)
            if not done:
                await _readable(loop, efd)
                continue
            for i, res in done:
                if isinstance(res, BaseException):
                    errors[i] = res
                    results[i] = -(res.errno or _errno.EIO)
                    continue
                got = int(results[i]) + res
                results[i] = got
                if res and got < size:
                    # A short count: continue the rest of the block.
                    op(fd, rows[i][got:], int(offsets[i]) + got, tag=i)
            await asyncio.sleep(0)
    finally:
        # Cancelled (or failed): requests still in flight are cancelled and
        # reaped by close() before the caller's buffers can be released.
        q.close()
    return results, errors, q.backend


async def read_blocks(file, offsets, size, *, out=None, backend="auto", depth=64,
                      direct=False):
    """await read_blocks(file, offsets, size, *, out=None, backend='auto', depth=64, direct=False)

    fastio.read_blocks as a coroutine: the same result (a (len(offsets),
    size) uint8 array, or out), with depth requests in flight on a Queue
    whose completions reach the running loop through its eventfd; the loop
    runs other tasks meanwhile. Cancelled, the requests in flight are
    cancelled and reaped before it returns: nothing is left writing into out.
    """
    from . import blocks
    offsets = _int64_array(offsets, "offsets")
    size = _index(size, "size")
    if size < 0:
        raise ValueError(f"size must be >= 0, got size={size}")
    depth = blocks._check_depth(depth)
    n = len(offsets)
    tgt = blocks._Target(file, False, direct)
    try:
        out, address = blocks._out_for(out, tgt, n, size)
        if tgt.direct and n:
            blocks._check_direct(tgt.fd, offsets, size, address)
        rows = []
        with memoryview(out) as mv, mv.cast("B") as flat:
            try:
                rows = [flat[i * size:(i + 1) * size] for i in range(n)] if size else []
                results, errors, ran = await _run_blocks(False, tgt.fd, offsets, size,
                                                         rows, depth, backend, tgt.direct)
            finally:
                # The Queue has let go of every row (closed, drained): let go
                # of out too, even while a CancelledError's traceback keeps
                # this frame alive.
                _release_rows(rows)
        _raise_blocks(results, errors, size, offsets, ran, "fastio.aio.read_blocks")
        return out
    finally:
        tgt.close()


async def write_blocks(file, offsets, data, *, backend="auto", depth=64, direct=False):
    """await write_blocks(file, offsets, data, *, backend='auto', depth=64, direct=False)

    fastio.write_blocks as a coroutine: row i of data (a 2-D C-contiguous
    array or a list of equal-length buffers) written at offsets[i] of file,
    through a Queue whose completions reach the running loop by its
    eventfd. Cancelled, the writes in flight are cancelled or finished
    before it returns.
    """
    from . import blocks
    offsets = _int64_array(offsets, "offsets")
    depth = blocks._check_depth(depth)
    n = len(offsets)
    data, size, address = blocks._write_source(data, n)
    tgt = blocks._Target(file, True, direct)
    try:
        if address is None:
            rows = [memoryview(b).cast("B") for b in data]
        else:
            with memoryview(data) as mv, mv.cast("B") as flat:
                rows = [flat[i * size:(i + 1) * size] for i in range(n)]
        try:
            if tgt.direct and n:
                for r in (rows if address is None else rows[:1]):
                    blocks._check_direct(tgt.fd, offsets, size,
                                         _np.frombuffer(r, _np.uint8).ctypes.data)
            results, errors, ran = await _run_blocks(True, tgt.fd, offsets, size, rows,
                                                     depth, backend, tgt.direct)
        finally:
            _release_rows(rows)
        _raise_blocks(results, errors, size, offsets, ran, "fastio.aio.write_blocks")
    finally:
        tgt.close()


def _release_rows(rows):
    for r in rows:
        try:
            r.release()
        except BufferError:
            # Still pinned: a broken backend's Queue keeps the buffers of
            # requests it could not get back for good (Queue.close), and
            # the memory must then stay; the exception in flight goes on.
            pass


def _raise_blocks(results, errors, size, offsets, backend, what):
    from .blocks import _add_note
    bad = _np.flatnonzero(results != size)
    if not len(bad):
        return
    i = int(bad[0])
    off = int(offsets[i])
    if i in errors:
        exc = errors[i]
        _add_note(exc, f"{what}: request {i} (offset {off}, {size} bytes) on {backend}; "
                  f"{len(bad)} request(s) failed or came short")
        raise exc
    raise EOFError(f"{what}: request {i} at offset {off} moved {int(results[i])} of "
                   f"{size} bytes (end of file); {len(bad)} request(s) came short")
