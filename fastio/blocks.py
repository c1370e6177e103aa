"""read_blocks / write_blocks: thousands of positional I/Os in one C call,
on the path that suits the data (re-exported by fastio as fastio.read_blocks
and fastio.write_blocks; fastio.aio.read_blocks is the asyncio coroutine).

The paths (docs/readwrite.md, "Reads that choose their path"):

- 'copy': the data is in the page cache, so a read is a memory copy and one
  core is the limit: C threads (one per CPU by default) each pread the
  blocks they claim (_core._pread_blocks; the offsets are copied into C
  memory before the GIL is released). From OWN_FDS_MIN_BLOCKS blocks a
  thread, each thread but the caller's reads through its own open of the
  file (threads sharing one descriptor contend on its struct file). When
  the call copies many blocks per 64 KiB window of the file it touches
  (MAPCOPY_BLOCKS_PER_WINDOW), the threads copy them out of a read-only map
  of the file made for the call instead (csrc/mapcopy.c; pread for the
  blocks past the end and after a SIGBUS).
- 'queue': the data is on the device, whose depth is the limit: a Queue
  (io_uring where it runs) keeps `depth` requests in flight.
- 'direct': the queue on an O_DIRECT descriptor (the page cache bypassed).
- 'auto': mincore on a short-lived map of the file, for the pages of up to
  RESIDENCY_SAMPLES blocks, picks 'copy' when at least WARM_FRACTION of
  them are resident, else 'queue'; 'direct' when direct=True; and 'queue'
  when a backend or queue is named (the caller chose an engine).
"""
import errno
import os

import numpy as np

from . import _core
from .aio import Queue, _index, _int64_array, _register
from .aio import open as _open
from .fileio import _ncpus  # the CPUs this process may run on

__all__ = ["read_blocks", "write_blocks", "READ_MODES"]

READ_MODES = ("auto", "copy", "queue", "direct")
# 'auto': how many blocks' pages mincore looks at, and the resident share
# from which the copy path wins (a cold block costs a copy thread a whole
# device round trip, while the queue keeps `depth` of them in flight).
RESIDENCY_SAMPLES = 64
WARM_FRACTION = 0.9
THREADS_MAX = 64  # the C side's limit (PAR_MAX_THREADS in csrc/rw.c)
# 'copy': the blocks per thread from which the worker threads each reopen
# the file (_pread_blocks' own_fds): a reopen costs ~9 us a thread (the
# probe, the private table, the open, the checks: C, 2-CPU VM), a private
# description saves ~0.1 us a cached 4 KiB read. Measured in one process,
# 2 threads, cached random 4 KiB reads into a touched array: 256 blocks a
# thread 11% slower with own fds, 384-1024 4-11% faster, 2048 8% faster.
OWN_FDS_MIN_BLOCKS = 512
# 'copy': when the threads copy the blocks out of a read-only map of the
# file made for the call (csrc/mapcopy.c) instead of one pread each. A
# copy from the map costs ~0.3 us a cached 4 KiB block against ~0.7 us
# for a pread (2 threads), but each 64 KiB window of the file the blocks
# touch costs a page fault and its share of the munmap, ~2-5 us (the
# kernel maps a window's cached pages per fault): the map wins from ~8
# blocks per window touched. Measured (benchmarks/c/map_copy_threads.c, C,
# 2 threads, random 4 KiB blocks, a loaded 2-CPU VM; blocks per window
# in brackets, map / pread): 256 MiB file, 16k blocks (3.9) 0.79-0.89x,
# 32k (7.8) 1.12-1.15x, 64k (15.6) 1.12-1.55x, 200k (49) 1.77-1.91x;
# 1 GiB, 50k (3.1) 0.68-0.71x, 100k (6.1) 1.1-1.5x, 200k (12) 1.2-1.4x;
# 4 MiB, 1000 blocks (16) 1.35-1.42x. The windows counted are the most the
# blocks can touch, min(blocks, span / 64 KiB) (random offsets touch
# nearly that many). Only measured with 4 KiB blocks: larger ones pread.
MAPCOPY_BLOCKS_PER_WINDOW = 8
MAPCOPY_MIN_BLOCKS = 1024
MAPCOPY_MAX_SIZE = 4096
_WINDOW = 65536  # the kernel's fault_around_bytes (default)

RWF_DONTCACHE = _core._RWF_DONTCACHE


# ====================================================================
# Argument checks shared with read_file and the coroutines

def _check_mode(mode, modes=READ_MODES):
    if not isinstance(mode, str) or mode not in modes:
        raise ValueError(f"mode must be one of {modes}, got mode={mode!r}")
    return mode


def _check_threads(threads):
    """None: one thread per CPU this process may run on."""
    if threads is None:
        return max(1, min(_ncpus(), THREADS_MAX))
    if isinstance(threads, bool):
        raise TypeError(f"threads must be an integer or None, got threads={threads!r}")
    threads = _index(threads, "threads")
    if not 1 <= threads <= THREADS_MAX:
        raise ValueError(f"threads must be within 1..{THREADS_MAX}, got threads={threads}")
    return threads


def _check_uncached(uncached):
    if not isinstance(uncached, (bool, np.bool_)):
        raise TypeError(f"uncached must be True or False, got uncached={uncached!r}")
    return bool(uncached)


def _check_depth(depth):
    # The Queue checks it too, but the copy path runs no Queue: the same
    # words either way.
    if isinstance(depth, bool):
        raise TypeError(f"depth must be an integer, got depth={depth!r}")
    depth = _index(depth, "depth")
    if not 1 <= depth <= 65536:
        kind = OverflowError if depth > 2**63 - 1 else ValueError
        raise kind(f"depth out of range [1, 65536]: depth={depth}")
    return depth


def _check_stats(stats):
    if stats is not None and not isinstance(stats, dict):
        raise TypeError(f"stats must be a dict to fill in or None, got stats of type "
                        f"{type(stats).__name__}")
    return stats


def uncached_error(exc_or_errno, where):
    """The error for uncached=True on a kernel or filesystem that refuses
    RWF_DONTCACHE (EOPNOTSUPP: Linux before 6.14, tmpfs, most FUSE; the
    posix_aio backend cannot pass the flag at all)."""
    err = OSError(errno.EOPNOTSUPP,
                  f"uncached=True is not supported here ({where}): RWF_DONTCACHE needs "
                  f"Linux 6.14+ and a filesystem that implements it (ext4, xfs, btrfs; "
                  f"not tmpfs), and a backend that passes RWF flags (not posix_aio). "
                  f"Read without uncached=True, then fastio.fadvise(fd, offset, length, "
                  f"fastio.POSIX_FADV_DONTNEED) to drop what the read cached.")
    return err


def residency_of(fd, offsets, length):
    """The resident share (0..1) of the pages under up to RESIDENCY_SAMPLES
    of offsets (evenly spread over them), each covering length bytes, or
    None when the file cannot be mapped (a pipe, a /proc file)."""
    offsets = np.asarray(offsets, np.int64)
    if len(offsets) > RESIDENCY_SAMPLES:
        pick = np.linspace(0, len(offsets) - 1, RESIDENCY_SAMPLES).astype(np.intp)
        offsets = offsets[pick]
    resident, pages = _core._residency_sample(fd, np.ascontiguousarray(offsets), length)
    return resident / pages if pages else None


# ====================================================================
# The file: a path opened here, or the caller's fd / file object

class _Target:
    """read_blocks/write_blocks' file: a path opened (and closed) here, or
    the caller's fd / file object."""

    def __init__(self, file, writing, direct):
        self.own = None
        if isinstance(file, (str, bytes, os.PathLike)):
            self.own = _open(file, "r+" if writing else "r", direct)
            self.fd = self.own.fileno()
            self.direct = direct
        else:
            if isinstance(file, bool) or not (isinstance(file, int)
                                              or hasattr(file, "fileno")):
                raise TypeError(f"file must be a path, a file descriptor or an object "
                                f"with fileno(), got file={file!r}")
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


def _raise_first(results, want, offsets, backend, fd, opcode, address_of, what,
                 uncached=False):
    bad = np.flatnonzero(results != want)
    if not len(bad):
        return
    i = int(bad[0])
    res = int(results[i])
    off = int(offsets[i])
    w = int(want[i]) if isinstance(want, np.ndarray) else int(want)
    if res < 0:
        if uncached and res == -errno.EOPNOTSUPP:
            raise uncached_error(res, f"{what} on {backend}")
        exc = _core._request_error(res, opcode, backend, fd, address_of(i), w, off)
        _add_note(exc, f"{what}: request {i} (offset {off}, {w} bytes) on {backend}; "
                  f"{len(bad)} request(s) failed or came short")
        raise exc
    raise EOFError(f"{what}: request {i} at offset {off} moved {res} of {w} bytes "
                   f"(end of file); {len(bad)} request(s) came short")


def _queue_for(queue, backend, depth, direct):
    if queue is not None:
        return queue, False
    q = Queue(depth, backend, direct=direct)
    return q, True


def _out_for(out, tgt, n, size):
    """The destination of n blocks of size bytes, and its address."""
    if out is None:
        if tgt.direct:
            # 4 KiB pages, not transparent huge pages ('auto' asks for them
            # from 2 MiB): O_DIRECT pins each destination page inside the
            # request, so a huge page's first fault (a 2 MiB zero fill, and
            # direct compaction when free memory is fragmented) lands inside
            # the reads. Measured on the 2-CPU VM, 32768 random 4 KiB reads
            # at depth 32 into a fresh 128 MiB output: 19-22k IOPS with huge
            # pages, 76-86k with 4 KiB pages, 86-91k into a reused one
            # (benchmarks/bench_direct_vs_fio.py). The buffer is only DMA'd
            # into: huge pages would save no TLB misses of ours.
            from .memory import empty
            out = empty((n, size), np.uint8, align=max(4096, _core._dio_alignment(tgt.fd)[0]),
                        hugepages=False)
        else:
            out = np.empty((n, size), np.uint8)
    try:
        mv = memoryview(out)
    except TypeError:
        raise TypeError(f"out must be a writable buffer, got out of type "
                        f"{type(out).__name__}") from None
    if not mv.contiguous or mv.readonly:
        mv.release()
        raise ValueError("out must be a writable C-contiguous buffer")
    if mv.nbytes < n * size:
        nbytes = mv.nbytes
        mv.release()
        raise ValueError(f"out holds {nbytes} bytes; {n} blocks of {size} need "
                         f"{n * size}")
    address = np.frombuffer(mv.cast("B"), np.uint8).ctypes.data if mv.nbytes else 0
    mv.release()
    return out, address


def _check_offsets(offsets, size):
    """Every path's words for a bad offset (the Queue's, checked by C too)."""
    if not len(offsets):
        return
    neg = np.flatnonzero(offsets < 0)
    if len(neg):
        i = int(neg[0])
        raise ValueError(f"offsets[{i}] must be >= 0, got {int(offsets[i])}")
    big = np.flatnonzero(offsets > (1 << 63) - 1 - size)
    if len(big):
        i = int(big[0])
        raise OverflowError(f"offsets[{i}] + length must fit in 64 bits, got offset "
                            f"{int(offsets[i])} + length {size}")


def _map_pays(fd, offsets, size):
    """Whether 'copy' should copy out of a map of the file made for the call
    (MAPCOPY_BLOCKS_PER_WINDOW); the C side checks that the file can be."""
    n = len(offsets)
    if n < MAPCOPY_MIN_BLOCKS or not 0 < size <= MAPCOPY_MAX_SIZE:
        return False
    try:
        end = os.fstat(fd).st_size
    except OSError:
        return False
    lo = int(offsets.min())
    span = min(int(offsets.max()) + size, end) - lo
    windows = min(n, -(-span // _WINDOW)) if span > 0 else 0
    return windows > 0 and n >= MAPCOPY_BLOCKS_PER_WINDOW * windows


def _choose(mode, tgt, offsets, size, backend, queue):
    """The path for read_blocks and the resident share behind it (None when
    it was not sampled)."""
    if mode != "auto":
        return ("direct" if mode == "queue" and tgt.direct else mode), None
    if tgt.direct:
        return "direct", None
    if queue is not None or backend != "auto":
        return "queue", None
    if not len(offsets) or not size:
        return "copy", None  # nothing to read: no sample, no queue
    frac = residency_of(tgt.fd, offsets, size)
    return ("copy" if frac is not None and frac >= WARM_FRACTION else "queue"), frac


# ====================================================================
# read_blocks, write_blocks

def read_blocks(file, offsets, size, *, out=None, backend="auto", depth=64, direct=False,
                queue=None, mode="auto", threads=None, uncached=False, stats=None):
    """read_blocks(file, offsets, size, *, out=None, backend='auto', depth=64, direct=False, queue=None, mode='auto', threads=None, uncached=False, stats=None)

    Read size bytes at each of offsets (an int array) from file (a path, an
    fd or a file object) into row i of a 2-D uint8 array of shape
    (len(offsets), size), returned (or into out, any writable contiguous
    buffer of that many bytes, returned).

    mode: 'auto' (mincore on the pages of a sample of the blocks: cached
    data takes 'copy', the rest 'queue'; direct=True takes 'direct'; a named
    backend or queue takes 'queue'), 'copy' (C threads, `threads` of them,
    one per CPU by default, pread the blocks: the fastest for cached data),
    'queue' (one C call keeps depth requests in flight on the backend, or on
    queue, an open Queue to reuse: the fastest for data on the device),
    'direct' (the queue with O_DIRECT, as direct=True: alignment checked up
    front, naming the alignment needed). uncached: RWF_DONTCACHE (Linux
    6.14+), the page cache left as it was; OSError(EOPNOTSUPP) naming
    uncached=True where the kernel or filesystem refuses it. stats: a dict
    filled in with 'mode' (the path that ran), 'resident' (the sampled
    share, or None), 'threads', 'backend' and 'mapped' (the copy path: how
    many blocks were copied out of a read-only map of the file made for the
    call, None when no map was asked for).

    A failed request raises its OSError (with a note naming the request);
    one that reaches the end of the file raises EOFError.
    """
    mode = _check_mode(mode)
    depth = _check_depth(depth)
    nthreads = _check_threads(threads)
    uncached = _check_uncached(uncached)
    _check_stats(stats)
    offsets = _int64_array(offsets, "offsets")
    size = _index(size, "size")
    if size < 0:
        raise ValueError(f"size must be >= 0, got size={size}")
    _check_offsets(offsets, size)
    if mode == "copy" and queue is not None:
        raise ValueError("queue= runs mode='queue' or 'direct', got mode='copy' with a queue")
    n = len(offsets)
    tgt = _Target(file, False, direct or mode == "direct")
    try:
        out, address = _out_for(out, tgt, n, size)
        if tgt.direct and n:
            _check_direct(tgt.fd, offsets, size, address)
        chosen, frac = _choose(mode, tgt, offsets, size, backend, queue)
        mapped = None
        flags = RWF_DONTCACHE if uncached else 0
        if uncached and tgt.own is not None:
            # Readahead around scattered blocks would leave pages nobody
            # reads (RWF_DONTCACHE drops the pages a read copies, not those
            # read ahead). A descriptor of the caller's keeps its advice.
            _core.fadvise(tgt.fd, 0, 0, os.POSIX_FADV_RANDOM)
        if chosen == "copy":
            results = np.empty(n, np.int64)
            own_fds = (nthreads > 1 and not flags
                       and n >= OWN_FDS_MIN_BLOCKS * nthreads)
            mapped = (np.zeros(1, np.int64) if not flags and not tgt.direct
                      and _map_pays(tgt.fd, offsets, size) else None)
            bad = _core._pread_blocks(tgt.fd, offsets, size, out, nthreads, flags, results,
                                      own_fds, mapped)
            ran = "threads"
        else:
            q, own = _queue_for(queue, backend, depth, tgt.direct)
            ran = q.backend
            try:
                if uncached and ran == "posix_aio":
                    raise uncached_error(None, "read_blocks on posix_aio")
                if own:
                    _register(q, tgt.fd, out)
                results = np.empty(n, np.int64)
                q._batch(False, tgt.fd, offsets, None, size, out, results, flags)
            finally:
                if own:
                    q.close()
        if stats is not None:
            stats.update(mode=chosen, resident=frac,
                         threads=nthreads if chosen == "copy" else None, backend=ran,
                         mapped=None if mapped is None else int(mapped[0]))
        if chosen != "copy" or bad:
            _raise_first(results, size, offsets, ran, tgt.fd, 0,
                         lambda i: address + i * size, "read_blocks", uncached)
        return out
    finally:
        tgt.close()


def _write_source(data, n):
    """write_blocks' data: (data, size, address or None for a list)."""
    if isinstance(data, (list, tuple)):
        if len(data) != n:
            raise ValueError(f"data has {len(data)} buffers for {n} offsets")
        sizes = {memoryview(b).nbytes for b in data}
        if len(sizes) > 1:
            raise ValueError("the buffers of data differ in length")
        return data, (sizes.pop() if sizes else 0), None
    arr = np.asarray(data)
    if arr.ndim != 2 or arr.shape[0] != n or not arr.flags.c_contiguous:
        raise ValueError(f"data must be a C-contiguous 2-D array with {n} rows, "
                         f"got shape {arr.shape}")
    return arr, arr.shape[1] * arr.itemsize, arr.ctypes.data


def write_blocks(file, offsets, data, *, backend="auto", depth=64, direct=False,
                 queue=None, uncached=False):
    """write_blocks(file, offsets, data, *, backend='auto', depth=64, direct=False, queue=None, uncached=False)

    Write row i of data (a 2-D C-contiguous array, or a list of equal-length
    buffers) at offsets[i] of file (a path opened 'r+', an fd or a file
    object). As read_blocks: one C call, depth in flight, short counts
    continued, a failed request raising its OSError (EOFError if a write
    stopped short without an error, as on a full pipe-like file).
    uncached: RWF_DONTCACHE (Linux 6.14+): the pages written are dropped
    once written back (started at once), leaving the page cache as it was.
    """
    uncached = _check_uncached(uncached)
    depth = _check_depth(depth)
    offsets = _int64_array(offsets, "offsets")
    n = len(offsets)
    data, size, address = _write_source(data, n)
    tgt = _Target(file, True, direct)
    try:
        if tgt.direct and n:
            addrs = ([np.frombuffer(b, np.uint8).ctypes.data for b in data]
                     if address is None else [address])
            for a in addrs:
                _check_direct(tgt.fd, offsets, size, a)
        q, own = _queue_for(queue, backend, depth, tgt.direct)
        try:
            if uncached and q.backend == "posix_aio":
                raise uncached_error(None, "write_blocks on posix_aio")
            results = np.empty(n, np.int64)
            q._batch(True, tgt.fd, offsets, None, size, data, results,
                     RWF_DONTCACHE if uncached else 0)
        finally:
            if own:
                q.close()
        _raise_first(results, size, offsets, q.backend, tgt.fd, 1,
                     (lambda i: address + i * size) if address is not None
                     else (lambda i: np.frombuffer(data[i], np.uint8).ctypes.data),
                     "write_blocks", uncached)
    finally:
        tgt.close()
