"""fastio: every Linux way of moving bytes between files, memory and processes.

Import names from here; fastio._core is the C extension behind them.
"""
from ._version import __version__  # noqa: F401  (pyproject.toml reads it there)
# On a free-threaded Python the C core runs without the GIL and the import
# leaves it off (docs/freethreading.md); _freethreading words the warning
# an old build that needs the GIL would cause.
from ._freethreading import import_core as _import_core


def _core_missing(error):
    """The ImportError to raise when fastio._core cannot be imported.

    The usual cause is importing from the source tree (a clone's root, where
    ``python -m pytest`` or ``python`` put the current directory first on
    sys.path), which has no built extension: say what to do, as numpy does,
    instead of the import system's "partially initialized module" message.
    """
    import importlib.machinery
    import os
    here = os.path.dirname(os.path.abspath(__file__))
    built = [f for f in os.listdir(here) if f.startswith("_core.")
             and f.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))]
    if built:
        # An extension is there but does not load (built for another
        # Python, or a missing symbol): the import system's error says why.
        msg = (f"fastio's C extension {', '.join(built)} in {here} failed to load "
               f"({error}). Rebuild it for this Python: python setup.py build_ext "
               f"--inplace (in the source tree), or pip install . again.")
    else:
        msg = (f"fastio was imported from {here}, where its C extension "
               f"(fastio._core) is not built: a source tree (a clone of the "
               f"repository) has none until it is built. Either build it in place "
               f"(python setup.py build_ext --inplace, in the clone's root), or "
               f"install fastio (pip install .) and run Python from another "
               f"directory, so that the installed package is imported instead of "
               f"the source tree.")
    return ImportError(msg, name="fastio._core")


try:
    _core = _import_core()
except ImportError as _e:
    raise _core_missing(_e) from _e
del _import_core, _core_missing
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
from .files import *  # noqa: E402,F401,F403  read_files, read_files_async, Files
# fastio.aio holds the asynchronous API (Queue, ...) and its asyncio
# coroutines (fastio.aio.sendfile, ...): only the former are re-exported here,
# since the coroutines share names with the blocking functions.
from . import aio  # noqa: E402
from .aio import BackendUnavailable, File, Queue, backends, open  # noqa: E402,F401
# The blocking read_blocks/write_blocks (fastio.aio's are their coroutines).
from .blocks import read_blocks, write_blocks  # noqa: E402,F401

__version__ = "0.1.0"
