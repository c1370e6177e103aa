"""fastio.mmap: the stdlib mmap.mmap's superset, plus numpy-facing methods.

The C type fastio._core.mmap owns the syscalls and the memory's lifetime;
this subclass adds the policy: opening a path with numpy's mode words and
the numpy views.
"""
from . import _core


__all__ = ["mmap"]


class mmap(_core.mmap):
    __slots__ = ()
