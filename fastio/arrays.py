"""numpy views over fastio memory, and their lifetimes.

The one rule: an ndarray over fastio memory must hold a *buffer export*, not
just a reference to the exporting object. ``np.ndarray(buffer=obj)`` takes the
buffer and releases the export at once, keeping only ``obj`` as ``.base``
(even when obj is a memoryview, numpy keeps the memoryview's .obj); after
``obj.close()`` the memory would be unmapped under the array.
``np.frombuffer`` instead keeps a memoryview of its own, which holds the
export for as long as the array (and every view of it) lives, so fastio's
deferred unmap (region.c) applies. The chain of ``.base`` ends at that
memoryview, whose ``.obj`` is the fastio object.
"""
import math
import operator
import os
import sys
from contextlib import nullcontext

import numpy as np

from ._core import ACCESS_COPY, ACCESS_READ, ACCESS_WRITE

__all__ = ["memmap", "open_array"]


def as_ndarray(obj, dtype="u1", shape=None, offset=0, order="C", subtype=np.ndarray):
    """as_ndarray(obj, dtype='u1', shape=None, offset=0, order='C', subtype=numpy.ndarray)

    An ndarray of ``subtype`` over obj's buffer, without a copy. shape None
    means as many items of dtype as fit after offset. Read-only memory gives
    a read-only array. Raises ValueError when the dtype, shape or offset does
    not fit the buffer, naming the values.
    """
    with memoryview(obj) as probe:
        nbytes = probe.nbytes
    dtype = np.dtype(dtype)
    try:
        offset = operator.index(offset)
    except TypeError:
        raise TypeError(f"offset must be an integer, got offset={offset!r}") from None
    if offset < 0 or offset > nbytes:
        raise ValueError(f"offset={offset} is outside the buffer of {nbytes} bytes")
    if order not in ("C", "F"):
        raise ValueError(f"order must be 'C' or 'F', got order={order!r}")
    if dtype.itemsize == 0:
        raise ValueError(f"dtype={dtype} has no size")
    if shape is None:
        avail = nbytes - offset
        if avail % dtype.itemsize:
            raise ValueError(
                f"{avail} bytes after offset={offset} are not a multiple of "
                f"dtype={dtype} (itemsize {dtype.itemsize}); pass shape")
        shape = (avail // dtype.itemsize,)
    else:
        if isinstance(shape, (int, np.integer)):
            shape = (int(shape),)
        shape = tuple(operator.index(s) for s in shape)
        if any(s < 0 for s in shape):
            raise ValueError(f"shape={shape} has a negative dimension")
        need = dtype.itemsize * int(np.prod(shape, dtype=np.int64))
        if offset + need > nbytes:
            raise ValueError(
                f"shape={shape} of dtype={dtype} at offset={offset} needs "
                f"{offset + need} bytes; the buffer has {nbytes}")
    count = int(np.prod(shape, dtype=np.int64))
    flat = np.frombuffer(obj, dtype=dtype, count=count, offset=offset)
    arr = flat if len(shape) == 1 else flat.reshape(shape, order=order)
    return arr if subtype is np.ndarray else arr.view(subtype)


# ------------------------------------------------------------------ #
# Opening a file the way numpy.memmap does

# numpy/_core/memmap.py's tables, so that the error message is the same.
_VALID_MODES = ["r", "c", "r+", "w+"]
_MODE_EQUIVALENTS = {
    "readonly": "r",
    "copyonwrite": "c",
    "readwrite": "r+",
    "write": "w+",
}


def _normalize_mode(mode):
    try:
        return _MODE_EQUIVALENTS[mode]
    except KeyError:
        if mode not in _VALID_MODES:
            all_modes = _VALID_MODES + list(_MODE_EQUIVALENTS)
            raise ValueError(
                f"mode must be one of {all_modes!r} (got {mode!r})") from None
        return mode


def _normalize_order(order):
    # ndarray.__new__ takes 'C', 'F', 'A', 'K' (any case) and None; only
    # F (or f) gives a Fortran layout. Same rule, same message as numpy.
    if order is None:
        return "C"
    if isinstance(order, str) and len(order) == 1 and order.upper() in "CFAK":
        return "F" if order.upper() == "F" else "C"
    raise ValueError(f"order must be one of 'C', 'F', 'A', or 'K' (got {order!r})")


def _normalize_shape(shape):
    """shape as a tuple of ints, or None. numpy's rules: an int or any
    __index__ object is one dimension; a tuple or list is the shape."""
    if shape is None:
        return None
    if not isinstance(shape, (tuple, list)):
        try:
            shape = [operator.index(shape)]
        except TypeError:
            pass
    try:
        shape = tuple(operator.index(s) for s in shape)
    except TypeError:
        raise TypeError(
            f"shape must be an int or a sequence of ints, got shape={shape!r}") from None
    size = math.prod(shape)
    if any(s < 0 for s in shape):
        # numpy.memmap lets the stdlib mmap see the negative length
        # (OverflowError) when the product is negative, and ndarray
        # reject the shape (ValueError) when it is not; keep both types.
        exc = OverflowError if size < 0 else ValueError
        raise exc(f"shape={shape} has a negative dimension")
    return shape


def _check_size(shape, descr):
    # Before the file is opened: 'r+' and 'w+' would grow it to fit.
    if any(s > sys.maxsize for s in shape):
        # numpy's type: the dimension does not convert to a C long.
        raise OverflowError(f"shape={shape} has a dimension too large")
    nbytes = math.prod(shape) * descr.itemsize
    if nbytes > sys.maxsize:
        raise ValueError(
            f"array is too big: shape={shape} of dtype={descr} is {nbytes} bytes")


class _Mapping:
    """What _map_file found out: the map and how to view it."""
    __slots__ = ("mm", "dtype", "shape", "order", "filename", "mode")


def _map_file(filename, dtype, mode, offset, shape, order,
              populate=False, hugepages=False, advise=None):
    """Open and map a file with numpy.memmap's rules (modes, growing the
    file, file objects, the filename attribute), backed by fastio.mmap at
    the exact byte offset. Every check that needs no file is made before
    the file is opened or grown."""
    from .mapping import mmap as _mmap_type  # mapping imports arrays: import late

    mode = _normalize_mode(mode)
    if mode == "w+" and shape is None:
        raise ValueError("shape must be given if mode == 'w+'")
    descr = np.dtype(dtype)
    if descr.hasobject:
        # numpy.memmap would read file bytes as PyObject pointers.
        raise ValueError(f"dtype={descr} holds Python objects; it cannot be mapped")
    if descr.itemsize == 0:
        raise ValueError(f"dtype={descr} has no size")
    try:
        offset = operator.index(offset)
    except TypeError:
        raise TypeError(f"offset must be an integer, got offset={offset!r}") from None
    if offset < 0:
        # The stdlib mmap's (and numpy.memmap's) exception type.
        raise OverflowError(f"offset must not be negative, got offset={offset}")
    shape = _normalize_shape(shape)
    if shape is not None:
        _check_size(shape, descr)
    order = _normalize_order(order)

    if hasattr(filename, "read"):
        f_ctx = nullcontext(filename)  # the caller's file object: not ours to close
    else:
        f_ctx = open(os.fspath(filename), ("r" if mode == "c" else mode) + "b")

    with f_ctx as fid:
        # seek, as numpy does: it also flushes a buffered writer's data.
        fid.seek(0, 2)
        flen = fid.tell()
        itemsize = descr.itemsize
        if shape is None:
            avail = flen - offset
            if avail < 0:
                raise ValueError(
                    f"offset={offset} is past the end of the file "
                    f"({flen} bytes)")
            if avail % itemsize:
                raise ValueError(
                    "Size of available data is not a multiple of the data-type "
                    f"size: {avail} bytes after offset={offset}, dtype={descr} "
                    f"(itemsize {itemsize})")
            shape = (avail // itemsize,)
        nbytes = math.prod(shape) * itemsize
        end = offset + nbytes

        if mode in ("w+", "r+"):
            # numpy's rule: grow to the end of the array, and to one byte
            # at least so that an empty array can be mapped (gh-27723).
            need = max(end, 1)
            if flen < need:
                fid.seek(need - 1, 0)
                fid.write(b"\0")
                fid.flush()
                flen = need
        elif end > flen:
            raise ValueError(
                f"shape={shape} of dtype={descr} at offset={offset} needs "
                f"{end} bytes; the file has {flen}")

        # An empty array still needs a map (length 0 would mean "the whole
        # file"): one byte inside the file; the array does not use it.
        map_offset, map_len = offset, nbytes
        if nbytes == 0:
            if flen == 0:
                raise ValueError("cannot mmap an empty file")
            map_offset, map_len = min(offset, flen - 1), 1

        access = {"c": ACCESS_COPY, "r": ACCESS_READ}.get(mode, ACCESS_WRITE)
        mm = _mmap_type(fid.fileno(), map_len, access=access, offset=map_offset,
                        populate=populate, hugepages=hugepages)
        try:
            if advise is not None:
                mm.advise(advise)
            if isinstance(filename, os.PathLike):
                # numpy keeps a Path a Path (resolved).
                name = filename.resolve()
            elif hasattr(fid, "name") and isinstance(fid.name, str):
                name = os.path.abspath(fid.name)
            else:
                name = None
        except BaseException:
            mm.close()
            raise

    m = _Mapping()
    m.mm = mm
    # A subarray dtype expands the shape, as ndarray.__new__ does (and in
    # the same order: F order covers the subarray dimensions too).
    if descr.subdtype is not None:
        m.dtype, sub_shape = descr.subdtype
        m.shape = tuple(shape) + sub_shape
    else:
        m.dtype, m.shape = descr, tuple(shape)
    m.order = order
    m.filename = name
    m.mode = mode
    return m


def _view(m, subtype):
    try:
        return as_ndarray(m.mm, m.dtype, m.shape, 0, m.order, subtype)
    except BaseException:
        m.mm.close()
        raise


# ------------------------------------------------------------------ #
# memmap


class memmap(np.memmap):
    """memmap(filename, dtype=numpy.uint8, mode='r+', offset=0, shape=None, order='C', *, populate=False, hugepages=False, advise=None)

    numpy.memmap, backed by fastio.mmap. The constructor takes numpy.memmap's
    arguments with the same meaning (modes 'r', 'r+', 'w+', 'c' and their
    long names; 'w+' and 'r+' grow the file to fit; a file object is used,
    not closed) plus, keyword-only:

    populate   prefault the pages now (MADV_POPULATE_READ/WRITE), so that
               the first pass over the array takes no page faults;
    hugepages  ask for huge pages (MADV_HUGEPAGE where the filesystem has them);
    advise     an MADV_* constant applied to the whole map.

    Any byte offset is mapped directly (fastio.mmap aligns internally).
    close() is safe while views exist: the views keep the memory; the
    memmap's own map methods (flush, advise, ...) then raise ValueError.
    Slicing, ufuncs, reductions and fancy indexing behave as for
    numpy.memmap (isinstance(m, numpy.memmap) is True).
    """

    def __new__(subtype, filename, dtype=np.uint8, mode="r+", offset=0,
                shape=None, order="C", *, populate=False, hugepages=False,
                advise=None):
        m = _map_file(filename, dtype, mode, offset, shape, order,
                      populate=populate, hugepages=hugepages, advise=advise)
        self = _view(m, subtype)
        self._mmap = m.mm
        self.offset = offset  # as given, as numpy keeps it
        self.mode = m.mode
        self.filename = m.filename
        return self

    # numpy.memmap's __array_wrap__ and __getitem__ test `type(self) is
    # numpy.memmap`, which is False here; the same methods with this class
    # in its place, so that fastio.memmap gives what numpy.memmap gives and
    # a user's subclass what a user's subclass of numpy.memmap gets.
    def __array_wrap__(self, arr, context=None, return_scalar=False):
        arr = np.ndarray.__array_wrap__(self, arr, context)
        if self is arr or type(self) is not memmap:
            return arr
        if return_scalar:
            return arr[()]
        return arr.view(np.ndarray)

    def __getitem__(self, index):
        res = np.ndarray.__getitem__(self, index)
        if type(res) is memmap and res._mmap is None:
            return res.view(type=np.ndarray)
        return res

    def _live_map(self, what):
        mm = self._mmap
        if mm is None:
            raise ValueError(f"{what}: this array is not backed by a map (a copy)")
        if mm.closed:
            raise ValueError(f"{what}: the memmap is closed")
        return mm

    def flush(self):
        """Write the changes in the map to the file (msync), as numpy.memmap.flush.
        A copy (no map) does nothing, as in numpy; a closed memmap raises
        ValueError.
        """
        if self._mmap is None:
            return
        self._live_map("flush").flush()

    def close(self):
        """Close the map, at once and for every view of it sharing the map.
        Arrays already made from it stay readable: the memory is unmapped
        when the last of them is gone. Calling close() again does nothing.
        """
        if self._mmap is not None:
            self._mmap.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def advise(self, advice):
        """madvise(advice) over the whole map (not only this view's part).
        """
        return self._live_map("advise").advise(advice)

    def populate(self):
        """Prefault the whole map now (MADV_POPULATE_READ/WRITE).
        """
        return self._live_map("populate").populate()

    def residency(self):
        """(fraction, per-page bool array): how much of the map is in memory.
        """
        return self._live_map("residency").residency()


# ------------------------------------------------------------------ #
# open_array

_OPTIONS = ("populate", "hugepages", "advise")


def open_array(path, dtype, shape=None, mode="r", offset=0, *, order="C", **options):
    """open_array(path, dtype, shape=None, mode='r', offset=0, *, order='C', populate=False, hugepages=False, advise=None)

    A file mapped as a plain numpy.ndarray: fastio.memmap's opening rules
    (modes, growth, any byte offset), no memmap subclass. The array's .base
    chain holds a buffer export of the fastio.mmap, so the map lives exactly
    as long as the array or any view of it.
    """
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise TypeError(
            f"open_array() got unexpected keyword argument(s) {unknown}; "
            f"options are {list(_OPTIONS)}")
    m = _map_file(path, dtype, mode, offset, shape, order, **options)
    return _view(m, np.ndarray)
