"""fastio: every Linux way of moving bytes between files, memory and processes.

Import names from here; fastio._core is the C extension behind them.
"""
# On a free-threaded Python, importing the C core turns the GIL back on
# (fastio._core relies on it): _freethreading says so in fastio's words.
from ._freethreading import import_core as _import_core

_core = _import_core()
del _import_core
from ._core import (  # noqa: E402,F401  the stdlib mmap module's constants and error
    ACCESS_COPY, ACCESS_DEFAULT, ACCESS_READ, ACCESS_WRITE, ALLOCATIONGRANULARITY,
    PAGESIZE, PROT_EXEC, PROT_READ, PROT_WRITE, FastIOError, error,
)
from ._core import __dict__ as _core_dict  # noqa: E402

# Every MAP_*, MADV_* and MS_* constant the C module defines.
globals().update({k: v for k, v in _core_dict.items()
                  if k.startswith(("MAP_", "MADV_", "MS_"))})
del _core_dict

# Each module lists its public names in __all__.
from .mapping import *  # noqa: E402,F401,F403  mmap
from .memory import *  # noqa: E402,F401,F403  Buffer, empty, heap_info
from .fileio import *  # noqa: E402,F401,F403  pread, pwrite, ..., read_file
from .arrays import *  # noqa: E402,F401,F403  memmap, open_array
from .transfer import *  # noqa: E402,F401,F403  sendfile, copyfile, ...
from .shm import *  # noqa: E402,F401,F403  SharedMemory, SysVSharedMemory, memfd, SharedArray
from .sync import *  # noqa: E402,F401,F403  Lock, Semaphore, Channel
# fastio.aio holds the asynchronous API (Queue, ...) and its asyncio
# coroutines (fastio.aio.sendfile, ...): only the former are re-exported here,
# since the coroutines share names with the blocking functions.
from . import aio  # noqa: E402
from .aio import BackendUnavailable, File, Queue, backends, open, read_blocks, write_blocks  # noqa: E402,F401,E501

__version__ = "0.1.0"
