"""Zero-copy transfer: sendfile, copy_file_range, splice, reflink.

The loops run in C (fastio._core._transfer) with the GIL released; this
module owns the policy: which objects are accepted, which methods are tried
in which order, what a path means, and how a Python file object's position
is kept in step with its descriptor.

Every transfer function returns a :class:`Transferred`: an ``int`` (the
bytes moved) whose ``.method`` says which way ran. ``copyfile`` returns
``dst``, as shutil.copyfile does, carrying the same ``.method``.
"""
import io
import os
import shutil
import socket
import stat
import sys

from . import _core

__all__ = ["Transferred", "CopiedPath", "CopiedBytesPath", "sendfile", "copy_file_range", "copyfile", "splice",
           "tee", "SENDFILE_METHODS", "COPYFILE_METHODS"]

#: The ways fastio.sendfile can move bytes, in the order method='auto' tries them.
SENDFILE_METHODS = ("sendfile", "splice", "readwrite")
#: The ways fastio.copyfile can copy a file, in the order method='auto' tries them.
COPYFILE_METHODS = ("reflink", "copy_file_range", "sendfile", "readwrite")
_COPY_FILE_RANGE_METHODS = ("copy_file_range", "readwrite")
_SPLICE_METHODS = ("splice",)


class Transferred(int):
    """The number of bytes a transfer moved, with the way it ran.

    An ``int`` in every respect; ``.method`` is one of ``'sendfile'``,
    ``'copy_file_range'``, ``'splice'``, ``'readwrite'``.
    """

    def __new__(cls, nbytes, method):
        self = super().__new__(cls, nbytes)
        self.method = method
        return self

    def __repr__(self):
        return f"Transferred({int(self)}, method={self.method!r})"

    __str__ = int.__repr__  # str(n) is the number, as for any int

    def __reduce__(self):
        return (Transferred, (int(self), self.method))


# ---------------------------------------------------------------- arguments

def _check_count(value, name, allow_none=True):
    if value is None and allow_none:
        return -1
    if isinstance(value, bool) or not isinstance(value, int):
        if hasattr(value, "__index__") and not isinstance(value, bool):
            value = value.__index__()
        else:
            raise TypeError(f"{name} must be an int{' or None' if allow_none else ''}, "
                            f"not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, not {value}")
    return value


def _is_path(obj):
    return isinstance(obj, (str, bytes, os.PathLike))


def _fd_of(obj, name):
    """The descriptor behind an int, a socket or a file object."""
    if isinstance(obj, bool):
        raise TypeError(f"{name} must be a file descriptor, file object or socket, not bool")
    if isinstance(obj, int):
        return obj
    fileno = getattr(obj, "fileno", None)
    if fileno is None:
        raise TypeError(f"{name} must be a file descriptor, file object or socket, "
                        f"not {type(obj).__name__}")
    return fileno()  # ValueError on a closed file object, as the stdlib says


def _timeout_of(*objs):
    """The socket timeout that governs waiting: the shortest of the sockets'.
    None and 0.0 (non-blocking) both mean: wait as long as it takes, since
    this call's contract is to move the whole count."""
    best = -1.0
    for obj in objs:
        if isinstance(obj, socket.socket):
            t = obj.gettimeout()
            if t:
                best = t if best < 0 else min(best, t)
    return best


def _flush(obj):
    """Push a buffered writer's bytes to its descriptor before writing past it."""
    flush = getattr(obj, "flush", None)
    if flush is not None and not isinstance(obj, (int, socket.socket)):
        flush()


def _resync_writer(obj):
    """After writing through the descriptor, let a file object re-read its
    position (a BufferedWriter caches it)."""
    if isinstance(obj, (int, socket.socket)):
        return
    seekable = getattr(obj, "seekable", None)
    try:
        if seekable is not None and seekable():
            obj.seek(0, os.SEEK_CUR)
    except (OSError, ValueError):
        pass


class _Input:
    """An input given as fd, file object or path, as a descriptor plus the
    start offset (-1: the descriptor's own position); closes what it opened."""

    def __init__(self, obj, offset, name):
        self.obj = obj
        self.fd = -1
        self.opened = False
        self.filename = None
        self.fileobj = None  # a Python file object whose position we keep
        if _is_path(obj):
            self.filename = os.fspath(obj)  # as os.open reports it
            self.fd = os.open(obj, os.O_RDONLY | os.O_CLOEXEC)
            self.opened = True
        else:
            if isinstance(obj, io.TextIOBase):
                # Its tell() is an opaque cookie, not a byte offset.
                raise ValueError(f"{name} must be opened in binary mode")
            self.fd = _fd_of(obj, name)
            if not isinstance(obj, (int, socket.socket)) and hasattr(obj, "tell"):
                self.fileobj = obj
        self.offset = offset
        if offset == -1 and self.fileobj is not None:
            # The file object's logical position, not the descriptor's (a
            # buffered reader has read ahead): start there, seek after.
            try:
                if self.fileobj.seekable():
                    self.offset = self.fileobj.tell()
                else:
                    self.fileobj = None
            except (OSError, ValueError, AttributeError):
                self.fileobj = None

    def close(self):
        if self.opened:
            self.opened = False
            os.close(self.fd)


def _methods(method, allowed):
    if method == "auto":
        return allowed
    if method not in allowed:
        raise ValueError(f"method must be 'auto' or one of {', '.join(map(repr, allowed))}, "
                         f"not {method!r}")
    return (method,)


# ---------------------------------------------------------------- public API

def sendfile(out, in_, offset=0, count=None, *, method="auto"):
    """Send ``count`` bytes (None: to the end) of ``in_`` from ``offset`` to ``out``.

    ``out`` is a socket, a descriptor or a file object; ``in_`` a file object,
    a descriptor or a path (opened and closed here). The whole count moves in
    one call with the GIL released: partial sends, EINTR and EAGAIN on a
    non-blocking socket are handled in C (waiting with poll, within the
    socket's timeout as a total: expiry raises TimeoutError). A given
    ``offset`` leaves ``in_``'s position alone, as sendfile(2) does;
    ``offset=None`` reads from, and advances, ``in_``'s current position.
    A pipe or socket ``in_`` is read from where it stands.

    ``method='auto'`` tries sendfile(2), then splice(2) through an internal
    pipe (a socket or pipe as input), then a read/write loop; or name one of
    ``'sendfile'``, ``'splice'``, ``'readwrite'``. Returns a
    :class:`Transferred`: the bytes sent, with ``.method`` the way that ran.
    Past the end of the file it returns 0. A peer that closes raises
    BrokenPipeError (never SIGPIPE); the exception's ``bytes_sent`` says how
    far it got.
    """
    methods = _methods(method, SENDFILE_METHODS)
    count = _check_count(count, "count")
    offset = _check_count(offset, "offset")
    if _is_path(out):
        raise TypeError(f"out must be a socket, file descriptor or file object, "
                        f"not a path ({out!r})")
    out_fd = _fd_of(out, "out")
    inp = _Input(in_, offset, "in_")
    try:
        _flush(out)
        return _transfer_input(out, out_fd, inp, offset, count, -1, methods,
                               _timeout_of(out, in_))
    finally:
        inp.close()
        _resync_writer(out)


def _transfer_input(out, out_fd, inp, offset, count, out_offset, methods, timeout):
    # offset None on a file object: start at its position, move it after.
    keep_position = offset == -1 and inp.fileobj is not None and inp.offset >= 0
    start = inp.offset
    try:
        n, used, _ = _core._transfer(out_fd, inp.fd, count, inp.offset, out_offset,
                                     methods, timeout, False, inp.filename, None)
    except BaseException as exc:
        if keep_position:
            inp.fileobj.seek(start + getattr(exc, "bytes_sent", 0))
        raise
    if keep_position:
        inp.fileobj.seek(start + n)
    return Transferred(n, used)


def copy_file_range(src, dst, count, src_offset=None, dst_offset=None, *,
                    method="auto"):
    """Copy ``count`` bytes (None: to the end) from ``src`` to ``dst`` in the kernel.

    ``src`` and ``dst`` are descriptors or file objects; ``src`` may be a path.
    An offset of None uses and advances the file's position; a given offset
    leaves it alone. Loops over copy_file_range(2) with the GIL released;
    ``method='auto'`` falls back to a read/write loop where the kernel
    refuses the pair (EXDEV, EOPNOTSUPP, EINVAL) or answers 0 at once on a
    file that may have data (procfs). Returns a :class:`Transferred`.
    """
    methods = _methods(method, _COPY_FILE_RANGE_METHODS)
    count = _check_count(count, "count")
    src_offset = _check_count(src_offset, "src_offset")
    dst_offset = _check_count(dst_offset, "dst_offset")
    if _is_path(dst):
        raise TypeError(f"dst must be a file descriptor or file object, not a path ({dst!r})")
    out_fd = _fd_of(dst, "dst")
    inp = _Input(src, src_offset, "src")
    try:
        _flush(dst)  # then the descriptor's position is the file object's
        return _transfer_input(dst, out_fd, inp, src_offset, count, dst_offset,
                               methods, -1.0)
    finally:
        inp.close()
        _resync_writer(dst)


def splice(fd_in, fd_out, count=None, in_offset=None, out_offset=None, *,
           timeout=None):
    """Move ``count`` bytes (None: to the end) from ``fd_in`` to ``fd_out`` with splice(2).

    splice(2) needs a pipe on one side; when neither is one, the bytes go
    through an internal pipe (socket to file, file to socket), still without
    entering user memory. Offsets apply to the non-pipe sides (None: the
    descriptor's position). Loops until done with the GIL released; EAGAIN
    on non-blocking descriptors is waited on with poll, within ``timeout``
    seconds in total (default: a socket's own timeout, else none).
    Returns a :class:`Transferred` (method ``'splice'``).
    """
    count = _check_count(count, "count")
    in_offset = _check_count(in_offset, "in_offset")
    out_offset = _check_count(out_offset, "out_offset")
    if timeout is None:
        timeout = _timeout_of(fd_in, fd_out)
    else:
        timeout = _core._timeout_arg(timeout, "timeout")
    in_fd = _fd_of(fd_in, "fd_in")
    out_fd = _fd_of(fd_out, "fd_out")
    _flush(fd_out)
    try:
        n, used, _ = _core._transfer(out_fd, in_fd, count, in_offset, out_offset,
                                     _SPLICE_METHODS, float(timeout), False)
    finally:
        _resync_writer(fd_out)
    return Transferred(n, used)


def tee(fd_in, fd_out, count, *, timeout=None):
    """Duplicate up to ``count`` bytes from pipe ``fd_in`` into pipe ``fd_out``.

    tee(2) copies without consuming: the bytes stay readable from ``fd_in``.
    One call (a loop would duplicate the same bytes again); it may return
    less than ``count`` (what the input pipe holds, what the output has room
    for). EINTR is retried; on non-blocking pipes EAGAIN is waited on with
    poll within ``timeout`` seconds (None: no limit). Returns the bytes
    duplicated; 0 when ``fd_in`` is empty and its writers have closed it.
    """
    count = _check_count(count, "count", allow_none=False)
    timeout = _core._timeout_arg(timeout, "timeout")
    return _core._tee(_fd_of(fd_in, "fd_in"), _fd_of(fd_out, "fd_out"), count,
                      float(timeout))


class CopiedPath(str):
    """What ``copyfile`` returns for a ``str`` destination: ``dst`` itself
    (equal to it, hashing like it, printing like it), as shutil.copyfile
    returns, with ``.method`` naming the way the data was copied:
    ``'reflink'``, ``'copy_file_range'``, ``'sendfile'``, ``'readwrite'``, or
    ``'symlink'`` (follow_symlinks=False on a link). Bytes destinations get a
    ``CopiedBytesPath``, pathlib ones a subclass of their own type."""

    method = None

    def __reduce__(self):
        return (_copied, (str(self), self.method))


class CopiedBytesPath(bytes):
    """``copyfile``'s result for a ``bytes`` destination (see CopiedPath)."""

    method = None

    def __reduce__(self):
        return (_copied, (bytes(self), self.method))


_PATH_TYPES = {}


def _path_type(cls):
    """A subclass of a pathlib class that can carry ``.method``: same name
    and repr, pickles as the plain class."""
    sub = _PATH_TYPES.get(cls)
    if sub is None:
        sub = type(cls.__name__, (cls,), {
            "method": None, "__module__": cls.__module__, "__qualname__": cls.__qualname__,
            "__reduce__": lambda self: (cls, (str(self),)),
            "__doc__": cls.__doc__})
        _PATH_TYPES[cls] = sub
    return sub


def _copied(dst, method):
    """``dst`` carrying ``.method``: the same value, of its own kind."""
    import pathlib
    if isinstance(dst, str):
        out = CopiedPath(dst)
    elif isinstance(dst, bytes):
        out = CopiedBytesPath(dst)
    elif isinstance(dst, pathlib.PurePath):
        try:
            out = _path_type(type(dst))(dst)
        except TypeError:  # a pathlib subclass with a constructor of its own
            return dst
    else:
        return dst  # another os.PathLike (os.DirEntry, ...): returned as given
    out.method = method
    return out


def copyfile(src, dst, *, follow_symlinks=True, method="auto"):
    """Copy the contents of file ``src`` to file ``dst``; return ``dst``.

    A superset of shutil.copyfile: the same signature, result and
    exceptions. ``dst`` is created or truncated (mode 0o666 & ~umask when
    created); copying a file onto itself raises shutil.SameFileError, a
    named pipe shutil.SpecialFileError, a directory IsADirectoryError, a
    destination in a missing directory FileNotFoundError. With
    follow_symlinks=False and ``src`` a symbolic link, a link is made
    instead. ``method='auto'`` tries a FICLONE reflink (btrfs, XFS: shares
    extents, instant), then copy_file_range(2), then sendfile(2), then a
    read/write loop, moving on when the kernel refuses (EXDEV, EOPNOTSUPP,
    EINVAL) or answers 0 at once for a file that may hold data (procfs,
    sysfs). Or name one of 'reflink', 'copy_file_range', 'sendfile',
    'readwrite' to use only that. Returns ``dst`` (for a str, bytes or
    pathlib destination, an equal object of the same kind whose
    ``.method`` names the way that copied the data).
    """
    methods = _methods(method, COPYFILE_METHODS)
    if not _is_path(src) or not _is_path(dst):
        raise TypeError("src and dst must be paths (str, bytes or os.PathLike), "
                        f"not {type(src).__name__} and {type(dst).__name__}")
    sys.audit("shutil.copyfile", src, dst)  # the same event: audit hooks see every copy
    given = dst
    src = os.fspath(src)
    dst = os.fspath(dst)
    if shutil._samefile(src, dst):
        raise shutil.SameFileError(f"{src!r} and {dst!r} are the same file")
    for fn in (src, dst):
        try:
            st = os.stat(fn)
        except OSError:
            continue
        if stat.S_ISFIFO(st.st_mode):
            raise shutil.SpecialFileError(f"`{fn}` is a named pipe")
    if not follow_symlinks and os.path.islink(src):
        os.symlink(os.readlink(src), dst)
        return _copied(given, "symlink")
    in_fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    try:
        st_in = os.fstat(in_fd)
        if stat.S_ISDIR(st_in.st_mode):
            raise IsADirectoryError(21, os.strerror(21), src)
        # Open without O_TRUNC, compare, then truncate: a second name for the
        # source (a bind mount, /proc/self/fd/N) must not empty it.
        try:
            out_fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except IsADirectoryError as e:
            # 'dir/missing/': open(2) says EISDIR; shutil (bpo-43219) says
            # what is wrong.
            if not os.path.exists(dst):
                raise FileNotFoundError(f"Directory does not exist: {dst}") from e
            raise
        try:
            st_out = os.fstat(out_fd)
            if (st_out.st_dev, st_out.st_ino) == (st_in.st_dev, st_in.st_ino):
                raise shutil.SameFileError(f"{src!r} and {dst!r} are the same file")
            if st_out.st_size:
                os.ftruncate(out_fd, 0)
            # Output offset -1: the fresh descriptor stands at 0, and
            # sendfile(2) writes only at the descriptor's position.
            _, used, _ = _core._transfer(out_fd, in_fd, -1, 0, -1, methods, -1.0,
                                         False, src, dst)
        finally:
            os.close(out_fd)
    finally:
        os.close(in_fd)
    return _copied(given, used)
