"""Asynchronous I/O: one batched API over io_uring, Linux AIO, POSIX aio and
a thread pool, plus asyncio coroutines.

Blocking API (re-exported by fastio): ``Queue`` (a submission/completion
queue over one backend), ``backends()`` (what works here and why not),
``read_blocks`` / ``write_blocks`` (thousands of I/Os in one C call),
``open`` (a file, O_DIRECT on request, with its alignment).

Coroutines (only here, as fastio.aio.*: they share names with blocking
functions): ``read``, ``write``, ``fsync``, ``sendfile``; and
``Queue.wait_async()``. Completions reach the running loop through an
eventfd watched with loop.add_reader: no thread per request.

``await fastio.aio.sendfile(sock, file)`` sends with sendfile(2) from the
running loop: each C call moves what the socket buffer takes, with the GIL
released, and returns instead of waiting; the coroutine then waits for the
socket to become writable through the loop (add_writer) and goes on.
"""
import collections
import errno
import operator
import os
import socket
import weakref
from typing import NamedTuple

import numpy as np

from . import _core
from .transfer import Transferred, _check_count, _Input

__all__ = ["Queue", "backends", "BackendInfo", "BackendUnavailable", "read_blocks",
           "write_blocks", "open", "File", "BACKENDS", "resolve_backend",
           "read", "write", "fsync", "sendfile"]

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
    if not isinstance(sock, socket.socket):
        raise TypeError(f"sock must be a socket.socket, not {type(sock).__name__}")
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
        raise OSError(9, os.strerror(9))
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
    return Transferred(total, used)


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


class BackendInfo(NamedTuple):
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
    _probe_cache[os.getpid()] = out
    return out


_probe_cache = {}


def _probed():
    # Probes cost a system call or two (io_uring_setup): once per process.
    got = _probe_cache.get(os.getpid())
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
        env = os.environ.get("FASTIO_BACKEND", "").strip()
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
    raise BackendUnavailable(errno.ENOSYS, "no backend works here: " + "; ".join(skipped))


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
        results = np.empty(len(offsets), dtype=np.int64)
        if isinstance(lengths, (int, np.integer)):
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
        os.read(efd, 8)
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
    "r": os.O_RDONLY, "r+": os.O_RDWR,
    "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC, "w+": os.O_RDWR | os.O_CREAT | os.O_TRUNC,
    "x": os.O_WRONLY | os.O_CREAT | os.O_EXCL, "x+": os.O_RDWR | os.O_CREAT | os.O_EXCL,
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
            os.close(fd)

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
        return os.fstat(self.fileno()).st_size

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
    flags = _MODES[m] | os.O_CLOEXEC
    if direct:
        flags |= os.O_DIRECT
    try:
        fd = os.open(path, flags, perm)
    except OSError as exc:
        if direct and exc.errno == errno.EINVAL:
            raise OSError(errno.EINVAL, "O_DIRECT is not supported by the filesystem "
                          "holding this file (tmpfs and some FUSE filesystems lack it)",
                          os.fsdecode(path)) from None
        raise
    return File(fd, os.fsdecode(path), m, bool(direct))


def _check_perm(perm):
    # os.open would take -1 (all bits set: 0o7777 & ~umask) or 1 << 40
    # (truncated) without a word: a file mode is 12 bits.
    if isinstance(perm, bool):
        raise TypeError(f"perm must be an int (file mode bits, e.g. 0o644), got perm={perm!r}")
    try:
        perm = operator.index(perm)
    except TypeError:
        raise TypeError(f"perm must be an int (file mode bits, e.g. 0o644), "
                        f"got perm of type {type(perm).__name__}") from None
    if not 0 <= perm <= 0o7777:
        raise ValueError(f"perm must be within 0..0o7777, got perm={perm} ({perm:#o})")
    return perm


class _Target:
    """read_blocks/write_blocks' file: a path opened (and closed) here, or
    the caller's fd / file object."""

    def __init__(self, file, writing, direct):
        self.own = None
        if isinstance(file, (str, bytes, os.PathLike)):
            self.own = open(file, "r+" if writing else "r", direct)
            self.fd = self.own.fileno()
            self.direct = direct
        else:
            self.fd = file if isinstance(file, int) else file.fileno()
            flags = _fcntl_flags(self.fd)
            self.direct = bool(flags & os.O_DIRECT)
            if direct and not self.direct:
                raise ValueError("direct=True needs a path, or a file opened with "
                                 "O_DIRECT (fastio.open(path, direct=True))")

    def close(self):
        if self.own is not None:
            self.own.close()


def _fcntl_flags(fd):
    import fcntl
    return fcntl.fcntl(fd, fcntl.F_GETFL)


def _check_direct(fd, offsets, size, address):
    mem, off, _ = _core._dio_alignment(fd)
    if size % off:
        raise ValueError(f"O_DIRECT needs lengths aligned to {off} bytes: size={size} "
                         f"is not a multiple of {off}")
    bad = np.flatnonzero(offsets % off)
    if len(bad):
        i = int(bad[0])
        raise ValueError(f"O_DIRECT needs offsets aligned to {off} bytes: offsets[{i}]="
                         f"{int(offsets[i])} is not a multiple of {off}")
    if address % mem:
        raise ValueError(f"O_DIRECT needs buffers aligned to {mem} bytes: the buffer at "
                         f"0x{address:x} is not (use fastio.empty for aligned memory)")


def _add_note(exc, note):
    """exc.add_note(note) (PEP 678), also on 3.10, which lacks the method:
    there the note goes into __notes__ as the `exceptiongroup` backport
    does (its traceback printer shows them; plain 3.10 keeps them only)."""
    if hasattr(exc, "add_note"):
        exc.add_note(note)
    else:
        exc.__notes__ = list(getattr(exc, "__notes__", ())) + [note]


def _raise_first(results, want, offsets, q, fd, opcode, address_of, what):
    bad = np.flatnonzero(results != want)
    if not len(bad):
        return
    i = int(bad[0])
    res = int(results[i])
    off = int(offsets[i])
    w = int(want[i]) if isinstance(want, np.ndarray) else int(want)
    if res < 0:
        exc = _core._request_error(res, opcode, q.backend, fd, address_of(i), w, off)
        _add_note(exc, f"{what}: request {i} (offset {off}, {w} bytes) on {q.backend}; "
                  f"{len(bad)} request(s) failed or came short")
        raise exc
    raise EOFError(f"{what}: request {i} at offset {off} moved {res} of {w} bytes "
                   f"(end of file); {len(bad)} request(s) came short")


def _index(value, name):
    # int(4096.5) would truncate: an integer is meant, so a float is refused.
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {name}={value!r}") from None


_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def _int64_array(values, name):
    """values (a sequence or array of integers) as a flat C-contiguous int64
    array. np.asarray(..., dtype=np.int64) would turn 0.5 into 0 and wrap
    2**64 - 1 into -1: a float is a TypeError, a value past int64 an
    OverflowError, each naming the argument."""
    arr = np.asarray(values)
    if arr.dtype == np.int64:
        return np.ascontiguousarray(arr).reshape(-1)
    if arr.size == 0:
        return np.zeros(0, np.int64)  # [] is float64 to numpy
    kind = arr.dtype.kind
    if kind == "u":
        if arr.max() > _INT64_MAX:
            i = int(np.argmax(arr > _INT64_MAX))
            raise OverflowError(f"{name} must fit in int64, got {name}[{i}]="
                                f"{int(arr.reshape(-1)[i])}")
        return np.ascontiguousarray(arr, dtype=np.int64).reshape(-1)
    if kind == "i":
        return np.ascontiguousarray(arr, dtype=np.int64).reshape(-1)
    if kind in "fO" and not isinstance(values, np.ndarray):
        # A list mixing ints and ints past int64 is float64 to numpy:
        # look at the items themselves.
        arr = np.asarray(values, dtype=object)
        kind = "O"
    if kind == "O":
        flat = arr.reshape(-1)
        out = np.empty(len(flat), np.int64)
        for i, v in enumerate(flat):
            try:
                v = operator.index(v)
            except TypeError:
                raise TypeError(f"{name} must hold integers, got {name}[{i}]={v!r}") from None
            if not _INT64_MIN <= v <= _INT64_MAX:
                raise OverflowError(f"{name} must fit in int64, got {name}[{i}]={v}")
            out[i] = v
        return out
    first = arr.reshape(-1)[0].item()
    raise TypeError(f"{name} must hold integers, got an array of {arr.dtype} "
                    f"({name}[0]={first!r})")


def _queue_for(queue, backend, depth, direct):
    if queue is not None:
        return queue, False
    q = Queue(depth, backend, direct=direct)
    return q, True


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


def read_blocks(file, offsets, size, *, out=None, backend="auto", depth=64, direct=False,
                queue=None):
    """read_blocks(file, offsets, size, *, out=None, backend='auto', depth=64, direct=False, queue=None)

    Read size bytes at each of offsets (an int array) from file (a path, an
    fd or a file object) into row i of a 2-D uint8 array of shape
    (len(offsets), size), returned (or into out, any writable contiguous
    buffer of that many bytes, returned). One C call keeps depth requests in
    flight on the backend ('auto': see Queue) or on queue, an open Queue to
    reuse (its backend says which ran). direct: open the path with O_DIRECT
    (alignment checked up front, naming the alignment needed).

    A failed request raises its OSError (with a note naming the request);
    one that reaches the end of the file raises EOFError.
    """
    offsets = _int64_array(offsets, "offsets")
    size = _index(size, "size")
    if size < 0:
        raise ValueError(f"size must be >= 0, got size={size}")
    n = len(offsets)
    tgt = _Target(file, False, direct)
    try:
        if out is None:
            if tgt.direct:
                from .memory import empty
                out = empty((n, size), np.uint8, align=max(4096, _core._dio_alignment(tgt.fd)[0]))
            else:
                out = np.empty((n, size), np.uint8)
        mv = memoryview(out)
        if not mv.contiguous or mv.readonly:
            raise ValueError("out must be a writable C-contiguous buffer")
        if mv.nbytes < n * size:
            raise ValueError(f"out holds {mv.nbytes} bytes; {n} blocks of {size} need "
                             f"{n * size}")
        address = np.frombuffer(mv.cast("B"), np.uint8).ctypes.data if mv.nbytes else 0
        mv.release()
        if tgt.direct and n:
            _check_direct(tgt.fd, offsets, size, address)
        q, own = _queue_for(queue, backend, depth, tgt.direct)
        try:
            if own:
                _register(q, tgt.fd, out)
            results = np.empty(n, np.int64)
            q._batch(False, tgt.fd, offsets, None, size, out, results)
        finally:
            if own:
                q.close()
        _raise_first(results, size, offsets, q, tgt.fd, 0,
                     lambda i: address + i * size, "read_blocks")
        return out
    finally:
        tgt.close()


def write_blocks(file, offsets, data, *, backend="auto", depth=64, direct=False,
                 queue=None):
    """write_blocks(file, offsets, data, *, backend='auto', depth=64, direct=False, queue=None)

    Write row i of data (a 2-D C-contiguous array, or a list of equal-length
    buffers) at offsets[i] of file (a path opened 'r+', an fd or a file
    object). As read_blocks: one C call, depth in flight, short counts
    continued, a failed request raising its OSError (EOFError if a write
    stopped short without an error, as on a full pipe-like file).
    """
    offsets = _int64_array(offsets, "offsets")
    n = len(offsets)
    if isinstance(data, (list, tuple)):
        if len(data) != n:
            raise ValueError(f"data has {len(data)} buffers for {n} offsets")
        sizes = {memoryview(b).nbytes for b in data}
        if len(sizes) > 1:
            raise ValueError("the buffers of data differ in length")
        size = sizes.pop() if sizes else 0
        address = None
    else:
        arr = np.asarray(data)
        if arr.ndim != 2 or arr.shape[0] != n or not arr.flags.c_contiguous:
            raise ValueError(f"data must be a C-contiguous 2-D array with {n} rows, "
                             f"got shape {arr.shape}")
        size = arr.shape[1] * arr.itemsize
        address = arr.ctypes.data
        data = arr
    tgt = _Target(file, True, direct)
    try:
        if tgt.direct and n:
            addrs = ([np.frombuffer(b, np.uint8).ctypes.data for b in data]
                     if address is None else [address])
            for a in addrs:
                _check_direct(tgt.fd, offsets, size, a)
        q, own = _queue_for(queue, backend, depth, tgt.direct)
        try:
            results = np.empty(n, np.int64)
            q._batch(True, tgt.fd, offsets, None, size, data, results)
        finally:
            if own:
                q.close()
        _raise_first(results, size, offsets, q, tgt.fd, 1,
                     (lambda i: address + i * size) if address is not None
                     else (lambda i: np.frombuffer(data[i], np.uint8).ctypes.data),
                     "write_blocks")
    finally:
        tgt.close()


# ====================================================================
# asyncio: one queue per event loop, completions through its eventfd

ASYNC_DEPTH = 128
_loop_queues = weakref.WeakKeyDictionary()


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
        self.next = 0
        # Requests in flight at most (an asyncio.Semaphore would keep a
        # reference to the loop, and this object, the loop's weak-dict
        # value, would then keep its own key alive).
        self.free = ASYNC_DEPTH
        self.waiters = collections.deque()
        loop.add_reader(efd, self._ready)

    def _ready(self):
        _clear_eventfd(self.efd)
        for tag, res in self.q.wait(0, 0):
            fut = self.futures.pop(tag)
            self._release()
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

    async def run(self, loop, op, file, *args):
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
            self.q.submit()
        except BaseException:
            self._release()
            raise
        fut = loop.create_future()
        self.futures[tag] = fut
        return await fut


def _loop_queue():
    import asyncio
    loop = asyncio.get_running_loop()
    lq = _loop_queues.get(loop)
    if lq is None:
        lq = _loop_queues[loop] = _LoopQueue(loop)
    return loop, lq


async def read(file, buf, offset):
    """await read(file, buf, offset): read into buf at offset; the byte count."""
    loop, lq = _loop_queue()
    return await lq.run(loop, lq.q.read, file, buf, offset)


async def write(file, buf, offset):
    """await write(file, buf, offset): write buf at offset; the byte count."""
    loop, lq = _loop_queue()
    return await lq.run(loop, lq.q.write, file, buf, offset)


async def fsync(file):
    """await fsync(file): flush file's data and metadata to disk; None, as os.fsync."""
    loop, lq = _loop_queue()
    await lq.run(loop, lq.q.fsync, file)  # the completion's result is 0
    return None
