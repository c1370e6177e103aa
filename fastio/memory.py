"""Aligned and huge-page memory, and what glibc's malloc says about the heap.

fastio.Buffer (C, csrc/buffer.c) owns the memory and its lifetime; this
module holds the policy: when to ask for huge pages, and ndarrays over it.
"""
import operator
import os
from typing import NamedTuple

import numpy as np

from . import _core
from .arrays import as_ndarray

__all__ = ["Buffer", "empty", "heap_info", "HeapInfo", "HUGEPAGE_SIZE"]

Buffer = _core.Buffer


def _thp_size():
    """The transparent huge page size (2 MiB on x86-64 and arm64 with 4 KiB
    pages), as the kernel reports it."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 2 * 1024 * 1024


HUGEPAGE_SIZE = _thp_size()


def _shape_nbytes(shape_or_nbytes, dtype):
    if isinstance(shape_or_nbytes, (int, np.integer)):
        shape = (operator.index(shape_or_nbytes),)
    else:
        try:
            shape = tuple(operator.index(s) for s in shape_or_nbytes)
        except TypeError:
            raise TypeError(
                f"shape must be an int or a tuple of ints, got "
                f"shape={shape_or_nbytes!r}") from None
    if any(s < 0 for s in shape):
        raise ValueError(f"shape must not be negative, got shape={shape_or_nbytes!r}")
    count = 1
    for s in shape:
        count *= s  # Python ints: no overflow before the size check in C
    return shape, count * dtype.itemsize


def empty(shape_or_nbytes, dtype="u1", *, align=4096, hugepages="auto", zero=False,
          populate=False):
    """empty(shape_or_nbytes, dtype='u1', *, align=4096, hugepages='auto', zero=False, populate=False)

    A new ndarray of the given shape (an int is a length: with the default
    dtype, a number of bytes) on a fresh fastio.Buffer whose address is a
    multiple of align. The array's .base chain holds the Buffer's export;
    the memory is freed when the last view of it goes.

    hugepages: 'auto' asks for transparent huge pages when the array is at
    least one huge page (2 MiB) long; True always (the memory then comes from
    an anonymous mapping); False never.
    zero: the contents are zero. Memory of 2 MiB and more (or with
    hugepages) comes from an anonymous mapping and is zero anyway (the
    kernel zero-fills it); smaller memory comes from the heap
    (posix_memalign, recycled warm by glibc) and is zeroed only when zero
    is true.
    populate: fault every page in now (GIL released) instead of at first
    write.
    """
    dtype = np.dtype(dtype)
    if dtype.hasobject:
        raise ValueError(f"dtype={dtype} holds Python objects: raw memory cannot")
    if dtype.itemsize == 0:
        raise ValueError(f"dtype={dtype} has no size")
    shape, nbytes = _shape_nbytes(shape_or_nbytes, dtype)
    if hugepages == "auto":
        huge = nbytes >= HUGEPAGE_SIZE
    elif hugepages is True or hugepages is False:
        huge = hugepages
    else:
        raise ValueError(f"hugepages must be 'auto', True or False, got hugepages={hugepages!r}")
    buf = Buffer(nbytes, align=align, hugepages=huge, zero=zero, populate=populate)
    return as_ndarray(buf, dtype, shape)


# ------------------------------------------------------------------ heap_info

# glibc's default M_MMAP_THRESHOLD (DEFAULT_MMAP_THRESHOLD_MIN) and the ceiling
# its dynamic rule may raise it to on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX).
_GLIBC_MMAP_THRESHOLD = 128 * 1024
_GLIBC_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024


class HeapInfo(NamedTuple):
    """glibc malloc's view of the heap (mallinfo2), the program break, and
    the mmap threshold as far as it can be known."""

    arena: int          # bytes the main arena got from the break (sbrk)
    ordblks: int        # free chunks
    hblks: int          # chunks malloc served with mmap
    hblkhd: int         # bytes in those mmapped chunks
    uordblks: int       # bytes in use
    fordblks: int       # bytes free in the arenas
    keepcost: int       # bytes free at the top of the heap (trimmable)
    brk: int            # the program break now, sbrk(0)
    mmap_threshold: int  # requests at least this large are mmapped by malloc
    mmap_threshold_source: str  # 'default' (glibc's rule) or 'environment'
    mmap_threshold_dynamic: bool  # True: glibc may raise it at run time


def _env_threshold():
    """M_MMAP_THRESHOLD set from the environment, as glibc reads it at start."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    for item in tunables.replace(":", " ").split():
        name, _, value = item.partition("=")
        if name == "glibc.malloc.mmap_threshold":
            try:
                return int(value, 0)
            except ValueError:
                return None
    value = os.environ.get("MALLOC_MMAP_THRESHOLD_")
    if value is not None:
        try:
            return int(value, 0)
        except ValueError:
            return None
    return None


def heap_info():
    """heap_info()

    A HeapInfo record: glibc's mallinfo2() figures, the current program
    break (sbrk(0)) and the mmap threshold. Read-only: fastio never moves the
    break itself (glibc's malloc owns it).

    glibc has no call that reports M_MMAP_THRESHOLD. When the environment
    set it (GLIBC_TUNABLES=glibc.malloc.mmap_threshold=N or
    MALLOC_MMAP_THRESHOLD_=N, read by glibc at start-up) that value is
    reported, fixed. Otherwise glibc's default is reported, 128 KiB, with
    mmap_threshold_dynamic=True: glibc raises the threshold (up to 32 MiB)
    each time a chunk it had mmapped is freed, so the true value may be
    higher. A mallopt() call made by other code cannot be seen.
    """
    info = _core._heap_info()
    env = _env_threshold()
    if env is not None:
        threshold, source, dynamic = env, "environment", False
    else:
        threshold, source, dynamic = _GLIBC_MMAP_THRESHOLD, "default", True
    return HeapInfo(mmap_threshold=threshold, mmap_threshold_source=source,
                    mmap_threshold_dynamic=dynamic, **info)
