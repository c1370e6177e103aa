# Stubs for fastio._core. tests/test_stubs.py checks them against the runtime.
# One section per C file; keep each section's edits inside it.
from typing import Any, Final

from typing_extensions import Buffer as _BufferLike

# ---------------------------------------------------------------- module.c

class FastIOError(Exception): ...

error = OSError
ACCESS_DEFAULT: Final[int]
ACCESS_READ: Final[int]
ACCESS_WRITE: Final[int]
ACCESS_COPY: Final[int]
PAGESIZE: Final[int]
ALLOCATIONGRANULARITY: Final[int]
PROT_READ: Final[int]
PROT_WRITE: Final[int]
PROT_EXEC: Final[int]
MAP_SHARED: Final[int]
MAP_PRIVATE: Final[int]
MAP_ANON: Final[int]
MAP_ANONYMOUS: Final[int]
MAP_DENYWRITE: Final[int]
MAP_EXECUTABLE: Final[int]
MAP_POPULATE: Final[int]
MAP_STACK: Final[int]
MAP_NORESERVE: Final[int]
MAP_HUGETLB: Final[int]
MAP_LOCKED: Final[int]
MADV_NORMAL: Final[int]
MADV_RANDOM: Final[int]
MADV_SEQUENTIAL: Final[int]
MADV_WILLNEED: Final[int]
MADV_DONTNEED: Final[int]
MADV_REMOVE: Final[int]
MADV_DONTFORK: Final[int]
MADV_DOFORK: Final[int]
MADV_HWPOISON: Final[int]
MADV_MERGEABLE: Final[int]
MADV_UNMERGEABLE: Final[int]
MADV_HUGEPAGE: Final[int]
MADV_NOHUGEPAGE: Final[int]
MADV_DONTDUMP: Final[int]
MADV_DODUMP: Final[int]
MADV_FREE: Final[int]
MADV_WIPEONFORK: Final[int]
MADV_KEEPONFORK: Final[int]
MADV_COLD: Final[int]
MADV_PAGEOUT: Final[int]
MADV_POPULATE_READ: Final[int]
MADV_POPULATE_WRITE: Final[int]
MADV_DONTNEED_LOCKED: Final[int]
MADV_COLLAPSE: Final[int]
MS_ASYNC: Final[int]
MS_SYNC: Final[int]
MS_INVALIDATE: Final[int]

# ---------------------------------------------------------------- mmap.c

class mmap:
    def __new__(cls, fileno: int, length: int, flags: int = ..., prot: int = ...,
                access: int = ..., offset: int = ..., *, populate: bool = ...,
                hugepages: bool = ...) -> mmap: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    def __len__(self) -> int: ...
    def __buffer__(self, flags: int, /) -> memoryview: ...
    def __enter__(self) -> mmap: ...
    def __exit__(self, *args: Any) -> None: ...

# ---------------------------------------------------------------- end mmap.c

# ---------------------------------------------------------------- buffer.c

class Buffer: ...

# ---------------------------------------------------------------- end buffer.c

# ---------------------------------------------------------------- rw.c

# ---------------------------------------------------------------- end rw.c

# ---------------------------------------------------------------- transfer.c

# ---------------------------------------------------------------- end transfer.c
