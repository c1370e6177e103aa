"""Synchronization in shared memory: process-shared locks and semaphores, and Channel.

The C core (csrc/sync.c, csrc/channel.c) owns the shared-memory protocols,
the waiting (GIL released) and the lifetimes; this module owns the policy:
where a Channel's memory comes from and how numpy arrays are framed (C
never imports numpy). See docs/sync.md.
"""
import ast
import copyreg
import operator
import pickle
import struct
import sys

import numpy as np

from . import _core
from .mapping import mmap as _mmap

__all__ = ["Lock", "Semaphore", "OwnerDeadError", "Channel"]

Lock = _core.Lock
Semaphore = _core.Semaphore
OwnerDeadError = _core.OwnerDeadError


def _check_segment_pickles(buf, what):
    """A lock or channel pickles as (its segment, offset): the segment must
    pickle as an attach (fastio.SharedMemory does), not as a copy or not at
    all (anonymous memory is shared through fork only)."""
    if buf is None:
        raise ValueError(f"{what} is closed")
    if isinstance(buf, (bytes, bytearray, memoryview)):
        raise TypeError(
            f"cannot pickle this {what}: its memory, a {type(buf).__name__}, would "
            f"pickle as a copy; build the {what} on the segment object itself "
            f"(e.g. a fastio.SharedMemory, not its .buf), which pickles as an attach")
    try:
        buf.__reduce_ex__(pickle.DEFAULT_PROTOCOL)
    except TypeError:
        raise TypeError(
            f"cannot pickle this {what}: its memory, a {type(buf).__name__}, cannot "
            f"be pickled. Anonymous memory is shared with children through fork "
            f"only; to pass a {what} to a spawned process, create it in a "
            f"fastio.SharedMemory (it pickles as an attach by name), or map a "
            f"/dev/shm file in the child and attach with create=False / "
            f"Channel.attach") from None


def _attach_lock(cls, buf, offset):
    return cls(buf, offset, create=False)


def _reduce_lock(obj):
    _check_segment_pickles(obj.buffer, type(obj).__name__)
    return (_attach_lock, (type(obj), obj.buffer, obj.offset))


copyreg.pickle(Lock, _reduce_lock)
copyreg.pickle(Semaphore, _reduce_lock)

_KIND_BYTES = 1
_KIND_ARRAY = 2
_DEFAULT_CAPACITY = 4 << 20
_ALIGN = 64

# meta of an array frame: dtype text, NUL, then the shape as int64s.
# The dtype text is dtype.str for plain dtypes ('<f8'), or "!" + the repr of
# numpy's descr list for structured ones (read back with ast.literal_eval).
_dtype_cache = {}


def _dtype_text(dtype):
    if dtype.fields is None and dtype.subdtype is None:
        return dtype.str.encode()
    return b"!" + repr(np.lib.format.dtype_to_descr(dtype)).encode()


def _dtype_from_text(text):
    dt = _dtype_cache.get(text)
    if dt is None:
        if text.startswith(b"!"):
            dt = np.lib.format.descr_to_dtype(ast.literal_eval(text[1:].decode()))
        else:
            dt = np.dtype(text.decode())
        if len(_dtype_cache) < 256:
            _dtype_cache[text] = dt
    return dt


def _decode_array_meta(meta):
    sep = meta.index(0)
    dt = _dtype_from_text(meta[:sep])
    ndim = (len(meta) - sep - 1) // 8
    shape = struct.unpack_from(f"<{ndim}q", meta, sep + 1)
    return dt, shape


class Channel(_core.Channel):
    """Channel(capacity=None, *, buffer=None, offset=0, shared=False)

    A single-producer single-consumer message ring in shared memory that
    moves bytes and numpy arrays between two processes: one copy in
    (send), one copy out (recv) or none (recv_view).

    Without buffer, the ring is a new anonymous shared mapping of
    Channel.HEADER + capacity bytes (default capacity 4 MiB), inherited by
    children created with fork (os.fork, multiprocessing's 'fork' context);
    with shared=True, a new fastio.SharedMemory segment instead, which any
    process can attach by name (Channel.attach(ch.name)) and which pickles
    to spawned processes; it is unlinked when this Channel is closed.
    With buffer (any writable shared buffer: fastio.mmap of a file in
    /dev/shm, a SharedMemory's memory), the ring is created in it at
    offset; capacity None uses all of it. Another process attaches with
    Channel.attach(buffer, offset). capacity is rounded up to 64 bytes; a
    message (plus its framing: 16 bytes, plus the array header) must fit
    in it, or send raises ValueError.

    Each side claims its role (sender or receiver) in its process on first
    use. close() ends this process's side(s): the receiver gets EOFError
    once it has received everything sent before, the sender BrokenPipeError.
    A peer process that dies is noticed within 50 ms of waiting, with the
    same exceptions.
    """

    __slots__ = ("_buffer", "_mv", "_owns")

    def __new__(cls, capacity=None, *, buffer=None, offset=0, shared=False):
        if capacity is not None:
            cap = operator.index(capacity)
            if cap <= 0:
                raise ValueError(
                    f"Channel capacity must be a positive number of bytes, got "
                    f"capacity={capacity!r}")
            cap = -(-cap // _ALIGN) * _ALIGN
            if cap > sys.maxsize - _core.Channel.HEADER:
                raise OverflowError(
                    f"Channel capacity={capacity!r} is out of range (at most "
                    f"{sys.maxsize - _core.Channel.HEADER - _ALIGN + 1} bytes)")
        else:
            cap = 0 if buffer is not None else _DEFAULT_CAPACITY
        owns = buffer is None
        if owns and shared:
            from .shm import SharedMemory
            buffer = SharedMemory(create=True, size=_core.Channel.HEADER + cap)
        elif owns:
            buffer = _mmap(-1, _core.Channel.HEADER + cap)
        elif shared:
            raise ValueError("shared=True makes the Channel's own segment: "
                             "pass it without buffer=")
        return cls._made(buffer, owns, offset, cap, True)

    @classmethod
    def attach(cls, buffer, offset=0):
        """attach(buffer, offset=0)

        A handle on the Channel another process created in buffer at offset
        (ValueError if the memory holds none). buffer may be the name of a
        fastio.SharedMemory segment (Channel.name of a Channel created with
        shared=True): the segment is attached, and closed with the handle."""
        owns = isinstance(buffer, str)
        if owns:
            from .shm import SharedMemory
            buffer = SharedMemory(buffer)
        return cls._made(buffer, owns, offset, 0, False)

    @classmethod
    def _made(cls, buffer, owns, offset, capacity, create):
        # The C object over buffer; a buffer made here is closed if that fails.
        try:
            self = _core.Channel.__new__(cls, buffer, offset, capacity, create=create)
        except BaseException:
            if owns:
                buffer.close()
            raise
        self._setup(buffer, owns)
        return self

    @property
    def name(self):
        """The name of the SharedMemory segment the Channel lives in (for
        Channel.attach(name)), or None (anonymous memory, other buffers)."""
        name = getattr(self._buffer, "name", None)
        return name if isinstance(name, str) else None

    @staticmethod
    def segment_size(capacity):
        """segment_size(capacity)

        Bytes a buffer needs to hold a Channel of this capacity."""
        cap = operator.index(capacity)
        if cap <= 0:
            raise ValueError(f"capacity must be positive, got capacity={capacity!r}")
        return _core.Channel.HEADER + -(-cap // _ALIGN) * _ALIGN

    def _setup(self, buffer, owns):
        self._buffer = buffer
        self._owns = owns
        # Read-only: the views recv_view() hands out must not write the ring.
        self._mv = memoryview(buffer).toreadonly()

    # ------------------------------------------------------------ sending

    def send(self, obj, timeout=None):
        """send(obj, timeout=None)

        Copy obj (a numpy array, or any bytes-like object) into the ring,
        waiting while it is full (spin, then futex; GIL released).
        TimeoutError after timeout seconds; BrokenPipeError if the receiver
        closed or died; ValueError if the message cannot fit the capacity.
        Arrays arrive C-contiguous with the same dtype, shape and values."""
        if isinstance(obj, np.generic):  # a numpy scalar: a 0-d array
            obj = np.asarray(obj)
        if isinstance(obj, np.ndarray):
            dt = obj.dtype
            if dt.hasobject:
                raise TypeError(
                    f"Channel.send: an array of dtype={dt} holds Python objects, "
                    f"which cannot cross processes as raw memory")
            if dt.itemsize == 0:
                raise ValueError(f"Channel.send: dtype={dt} has no size")
            if not obj.flags.c_contiguous:
                obj = obj.copy(order="C")
            meta = (_dtype_text(dt) + b"\0" +
                    struct.pack(f"<{obj.ndim}q", *obj.shape))
            # A byte view: datetime and structured arrays do not export
            # PEP 3118 buffers with their own formats.
            self._send_frame(_KIND_ARRAY, meta, obj.reshape(-1).view(np.uint8), timeout)
        else:
            self.send_bytes(obj, timeout)

    # ------------------------------------------------------------ receiving

    def recv(self, timeout=None):
        """recv(timeout=None)

        The next message: bytes, or a new writable ndarray (a copy).
        Waits while the ring is empty; TimeoutError after timeout seconds;
        EOFError once the sender closed or died and every message it sent
        was received."""
        r = self._recv(timeout)
        if r.__class__ is bytes:
            return r
        # (kind, meta, bytearray): C copied the payload out of the ring
        # under the SIGBUS guard and consumed the message in one call, so no
        # other thread can free it while it is being read.
        kind, meta, payload = r
        if kind != _KIND_ARRAY:
            raise RuntimeError(f"Channel: unknown message kind {kind}")
        dt, shape = _decode_array_meta(meta)
        return np.frombuffer(payload, dt).reshape(shape)

    def recv_view(self, timeout=None):
        """recv_view(timeout=None)

        The next message without a copy: a read-only ndarray or memoryview
        over the ring itself. It stays valid until the next recv(),
        recv_view(), recv_bytes() or release() on this Channel; after that
        the sender may overwrite those bytes at any time (the memory stays
        mapped: reading it never crashes, but it may hold a later message).
        Copy what you keep."""
        return self._decode(self._recv_view(timeout))

    def _decode(self, frame):
        kind, meta, off, n = frame
        mv = self._mv
        if mv is None:  # closed by another thread since _recv_view returned
            raise ValueError("Channel is closed")
        mv = mv[off:off + n]
        if kind == _KIND_BYTES:
            return mv
        if kind == _KIND_ARRAY:
            dt, shape = _decode_array_meta(meta)
            return np.frombuffer(mv, dt).reshape(shape)
        raise RuntimeError(f"Channel: unknown message kind {kind}")

    def __iter__(self):
        """Receive messages until end of stream."""
        while True:
            try:
                yield self.recv()
            except EOFError:
                return

    # ------------------------------------------------------------ lifetime

    def close(self):
        """close()

        End this process's side(s) of the Channel (the peer sees EOFError or
        BrokenPipeError) and drop this handle's hold on the memory; views
        from recv_view() stay readable. Idempotent."""
        super().close()
        mv, self._mv = getattr(self, "_mv", None), None
        if mv is not None:
            try:
                mv.release()
            except BufferError:  # an ndarray from recv_view() holds it: GC frees it
                pass
        if getattr(self, "_owns", False):
            self._buffer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __reduce__(self):
        if self.closed:
            raise ValueError("cannot pickle a closed Channel")
        _check_segment_pickles(self._buffer, "Channel")
        return (_attach_channel, (type(self), self._buffer, self.offset))

    def __repr__(self):
        if self.closed:
            return "<fastio.Channel closed>"
        return f"<fastio.Channel capacity={self.capacity} pending={self.pending}>"


def _attach_channel(cls, buf, offset):
    return cls.attach(buf, offset)


Channel.__module__ = "fastio"
