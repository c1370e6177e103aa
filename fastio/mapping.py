"""fastio.mmap: the stdlib mmap.mmap's superset, plus numpy-facing methods.

The C type fastio._core.mmap owns the syscalls and the memory's lifetime;
this subclass adds the policy: opening a path with numpy's mode words and
the numpy views.
"""
import errno
import os
import stat

import numpy as np

from . import _core
from ._core import MappingError  # sigbus.c: SIGBUS in fastio's copies
from .arrays import as_ndarray

__all__ = ["mmap", "MappingError"]

# numpy.memmap's mode words (short and long), as the access each means.
_MODES = {
    "r": _core.ACCESS_READ, "readonly": _core.ACCESS_READ,
    "r+": _core.ACCESS_WRITE, "readwrite": _core.ACCESS_WRITE,
    "w+": _core.ACCESS_WRITE, "write": _core.ACCESS_WRITE,
    "c": _core.ACCESS_COPY, "copyonwrite": _core.ACCESS_COPY,
}
_CREATE_MODES = ("w+", "write")

_DEFAULT_FLAGS = _core.MAP_SHARED
_DEFAULT_PROT = _core.PROT_READ | _core.PROT_WRITE


def _needs_write_fd(flags, prot, access):
    """Whether the file must be opened read-write for this map.

    A shared writable map needs O_RDWR; read-only and copy-on-write maps
    work on an O_RDONLY descriptor (MAP_PRIVATE never writes the file).
    """
    if access == _core.ACCESS_WRITE:
        return True
    if access in (_core.ACCESS_READ, _core.ACCESS_COPY):
        return False
    return bool(prot & _core.PROT_WRITE) and bool(flags & _core.MAP_SHARED)


class mmap(_core.mmap):
    """mmap(fileno, length, flags=MAP_SHARED, prot=PROT_WRITE|PROT_READ, access=ACCESS_DEFAULT, offset=0, *, populate=False, hugepages=False, trackfd=True, mode=None)

    A memory map, a drop-in superset of the stdlib ``mmap.mmap``.

    fileno is a file descriptor (-1 for anonymous memory), as in the stdlib,
    or a path (str, bytes or os.PathLike). With a path, ``mode`` takes
    numpy's words: 'r' read-only, 'r+' read-write shared, 'w+' create or
    truncate the file to offset+length, 'c' copy-on-write (no mode: the
    stdlib's ACCESS_DEFAULT, read-write shared like 'r+');
    length 0 (the default with a path) maps to the end of the file. offset
    may be any byte offset. See docs/mmap.md.
    """

    __slots__ = ()

    def __new__(cls, fileno, length=None, flags=_DEFAULT_FLAGS, prot=_DEFAULT_PROT,
                access=_core.ACCESS_DEFAULT, offset=0, *, populate=False,
                hugepages=False, trackfd=True, mode=None):
        kwargs = dict(flags=flags, prot=prot, access=access, offset=offset,
                      populate=populate, hugepages=hugepages, trackfd=trackfd)
        if not isinstance(fileno, (str, bytes, os.PathLike)):
            if mode is not None:
                raise ValueError(
                    f"mode= is for a path; with a file descriptor pass access= "
                    f"(got fileno={fileno!r}, mode={mode!r})")
            if length is None:
                # The stdlib requires length with a descriptor: let the C
                # constructor say so in its own words.
                return super().__new__(cls, fileno, **kwargs)
            return super().__new__(cls, fileno, length, **kwargs)
        return cls._from_path(os.fspath(fileno), length, mode, kwargs)

    @classmethod
    def _from_path(cls, path, length, mode, kwargs):
        length = 0 if length is None else length
        if mode is not None:
            if mode not in _MODES:
                raise ValueError(
                    f"mode must be one of {sorted(_MODES)}, got mode={mode!r}")
            if kwargs["access"] != _core.ACCESS_DEFAULT:
                raise ValueError(
                    f"pass either mode= or access=, not both "
                    f"(got mode={mode!r}, access={kwargs['access']!r})")
            kwargs["access"] = _MODES[mode]
        create = mode in _CREATE_MODES
        if create:
            if not isinstance(length, int) or length <= 0:
                raise ValueError(
                    f"mode={mode!r} creates the file: it needs length > 0, "
                    f"got length={length!r}")
            if not isinstance(kwargs["offset"], int) or kwargs["offset"] < 0:
                raise ValueError(f"offset must be >= 0, got offset={kwargs['offset']!r}")
            oflags = os.O_RDWR | os.O_CREAT | os.O_TRUNC
        elif _needs_write_fd(kwargs["flags"], kwargs["prot"], kwargs["access"]):
            oflags = os.O_RDWR
        else:
            oflags = os.O_RDONLY
        fd = os.open(path, oflags | os.O_CLOEXEC, 0o666)
        try:
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
            if create:
                os.ftruncate(fd, kwargs["offset"] + length)
            # The C constructor dup()s fd; ours is closed below either way.
            return super().__new__(cls, fd, length, **kwargs)
        finally:
            os.close(fd)

    def asarray(self, dtype="u1", shape=None, offset=0, order="C"):
        """asarray(self, dtype='u1', shape=None, offset=0, order='C')

        A numpy array over the map, without a copy. The array holds a buffer
        export, so close() is safe while it lives: the memory is unmapped
        when the array goes. A read-only map gives a read-only array.
        """
        return as_ndarray(self, dtype, shape, offset, order)

    def residency(self):
        """residency(self)

        Which pages of the map are in RAM (mincore): (fraction resident,
        numpy bool array with one entry per page).
        """
        pages = np.frombuffer(super().residency(), dtype=np.uint8).astype(bool)
        fraction = float(pages.mean()) if pages.size else 1.0
        return fraction, pages


# The class users hold is fastio.mmap: say so in repr() and help().
mmap.__module__ = "fastio"
