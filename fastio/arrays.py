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
import operator

import numpy as np

__all__: list = []


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
