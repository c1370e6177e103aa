"""The lab's methods: named ways of getting a file's bytes into memory.

A method is a function ``f(path, size) -> int``: it processes the ``size``
bytes of the file at ``path`` (the whole file) and returns how many bytes it
processed; the runner checks that number and times the call. Each call does
everything a user's code would do (open, allocate, read or map, close), so
that allocation and teardown costs are counted on both sides.

A method names the *baseline* it is compared with (another method, measured
in the same run) and the fastio names it *requires*: when one is missing from
this build of fastio, the method is reported as unavailable with that reason
instead of failing the run.
"""
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np

import fastio


@dataclass(frozen=True)
class Method:
    """Method(name, fn, baseline=None, requires=(), group='', description='')

    One registered method. ``fn(path, size)`` returns the bytes processed.
    ``baseline`` is the name of the method this one is compared with (None
    for a baseline). ``requires`` lists dotted names under ``fastio`` that
    must exist (e.g. ``"mmap.residency"``).
    """

    name: str
    fn: Callable[[str, int], int] = field(repr=False)
    baseline: Optional[str] = None
    requires: Tuple[str, ...] = ()
    group: str = ""
    description: str = ""

    def unavailable_reason(self) -> Optional[str]:
        """unavailable_reason()

        None when every required fastio name exists, else a sentence naming
        the first missing one.
        """
        for req in self.requires:
            obj = fastio
            for part in req.split("."):
                if not hasattr(obj, part):
                    return f"fastio.{req} is not available in this build of fastio"
                obj = getattr(obj, part)
        return None


#: Every registered method by name, in registration order (baselines first
#: within a group, which is the order of the table).
METHODS: Dict[str, Method] = {}


def register(name: str, *, baseline: Optional[str] = None,
             requires: Iterable[str] = (), group: str = "",
             description: str = ""):
    """register(name, *, baseline=None, requires=(), group='', description='')

    Decorator adding ``fn(path, size) -> int`` to METHODS under ``name``.
    The baseline, if given, must already be registered.
    """
    if name in METHODS:
        raise ValueError(f"method name={name!r} is already registered")
    if baseline is not None and baseline not in METHODS:
        raise ValueError(f"baseline={baseline!r} of method {name!r} is not registered")

    def deco(fn):
        METHODS[name] = Method(name, fn, baseline, tuple(requires), group,
                               description or (fn.__doc__ or "").strip())
        return fn

    return deco


def selected(names: Optional[Iterable[str]] = None) -> List[Method]:
    """selected(names=None)

    The methods named (all when None), each with its baseline added, in
    registry order. Raises KeyError naming an unknown method.
    """
    if names is None:
        return list(METHODS.values())
    want = set()
    for n in names:
        if n not in METHODS:
            raise KeyError(f"unknown method {n!r}; known: {', '.join(METHODS)}")
        want.add(n)
        if METHODS[n].baseline:
            want.add(METHODS[n].baseline)
    return [m for m in METHODS.values() if m.name in want]


# ------------------------------------------------------------ read into memory

def _readinto_loop(f, view, size):
    # readinto may return less than asked (signals, >2 GiB reads on Linux):
    # loop as any correct caller must.
    done = 0
    while done < size:
        n = f.readinto(view[done:])
        if not n:
            break
        done += n
    return done


@register("bytearray.readinto", group="read into memory",
          description="bytearray(size) + f.readinto() on an unbuffered file, looped until full")
def bytearray_readinto(path, size):
    buf = bytearray(size)
    with open(path, "rb", buffering=0) as f, memoryview(buf) as view:
        return _readinto_loop(f, view, size)


@register("fastio.readinto_full", baseline="bytearray.readinto",
          requires=("empty", "readinto_full"), group="read into memory",
          description="fastio.empty(size) (page-aligned, not zeroed) + fastio.readinto_full(fd, buf)")
def fastio_readinto_full(path, size):
    buf = fastio.empty(size)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return fastio.readinto_full(fd, buf)
    finally:
        os.close(fd)


# ------------------------------------------------------------ file to ndarray

@register("numpy.fromfile", group="file to ndarray",
          description="numpy.fromfile(path, dtype='u1')")
def numpy_fromfile(path, size):
    return np.fromfile(path, dtype="u1").nbytes


@register("fastio.read_file", baseline="numpy.fromfile", requires=("read_file",),
          group="file to ndarray",
          description="fastio.read_file(path, dtype='u1')")
def fastio_read_file(path, size):
    return fastio.read_file(path, dtype="u1").nbytes


# ------------------------------------------------------------ mapped scan

@register("numpy.memmap.sum", group="mapped scan",
          description="numpy.memmap(path, mode='r').sum(): map, fault in and add every byte")
def numpy_memmap_sum(path, size):
    m = np.memmap(path, dtype="u1", mode="r")
    m.sum()
    return m.nbytes  # the mapping goes with the last reference, at return


@register("fastio.memmap.sum", baseline="numpy.memmap.sum", requires=("memmap",),
          group="mapped scan",
          description="fastio.memmap(path, mode='r').sum(): the same scan over fastio's mapping")
def fastio_memmap_sum(path, size):
    m = fastio.memmap(path, dtype="u1", mode="r")
    m.sum()
    return m.nbytes
