"""asyncio integration: zero-copy transfers that never block the event loop
on the network.

``await fastio.aio.sendfile(sock, file)`` sends with sendfile(2) from the
running loop: each C call moves what the socket buffer takes, with the GIL
released, and returns instead of waiting; the coroutine then waits for the
socket to become writable through the loop (add_writer) and goes on.
"""
import os
import socket

from . import _core
from .transfer import Transferred, _check_count, _Input

__all__ = ["sendfile"]

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
