"""Loading fastio._core on a free-threaded CPython (3.13t and later).

fastio._core declares Py_mod_gil = Py_MOD_GIL_USED (csrc/module.c): its
types keep their state consistent by holding the GIL (a region's export and
pin counters, which decide when memory may be unmapped; an mmap's position;
the closed flags; a Queue's in-flight table and a Channel's indices), so it
is not safe to run without it. On a free-threaded build the interpreter then
turns the GIL back on when the module is imported and says so in a generic
RuntimeWarning. import_core() replaces that warning with one that says what
it means for fastio, and warns too when the GIL was forced off (PYTHON_GIL=0
or -X gil=0), which fastio does not support. On a default build (with the
GIL) it is a plain import and warns about nothing. docs/freethreading.md has
the details.
"""
import sys
import warnings

DOCS = "docs/freethreading.md"

GIL_ENABLED_MESSAGE = (
    "fastio enabled the GIL: this is a free-threaded Python, and fastio's C "
    "extension (fastio._core) relies on the GIL to keep its objects' state "
    "consistent between threads, so the interpreter turned the GIL back on "
    "when it was imported. fastio works as on a default build; Python "
    "threads no longer run in parallel in this process. See " + DOCS + ".")

GIL_FORCED_OFF_MESSAGE = (
    "fastio is running with the GIL disabled (PYTHON_GIL=0 or -X gil=0), "
    "which it does not support: its C extension relies on the GIL, and "
    "using one fastio object from several threads at once can corrupt it or "
    "crash the process. Unset PYTHON_GIL to let the interpreter enable the "
    "GIL when fastio is imported. See " + DOCS + ".")

# The start of the interpreter's own warning (Python/import.c), silenced
# while fastio._core is imported: GIL_ENABLED_MESSAGE says it for fastio.
_INTERPRETER_MESSAGE = (r"The global interpreter lock \(GIL\) has been enabled to load "
                        r"module 'fastio\._core'")


def gil_enabled():
    """True where the GIL is on: always on a default build."""
    is_enabled = getattr(sys, "_is_gil_enabled", None)
    return True if is_enabled is None else is_enabled()


def import_core():
    """Import and return fastio._core, saying what happened to the GIL."""
    if gil_enabled():
        # A default build, or a free-threaded one whose GIL is already on
        # (PYTHON_GIL=1, or another module turned it on): nothing changes.
        from . import _core
        return _core
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_INTERPRETER_MESSAGE,
                                category=RuntimeWarning)
        from . import _core
    # stacklevel 3: the warning points at the user's `import fastio`
    # (this function, then fastio/__init__.py, then the importer; the
    # import machinery's own frames are skipped by the warnings module).
    if gil_enabled():
        warnings.warn(GIL_ENABLED_MESSAGE, RuntimeWarning, stacklevel=3)
    else:
        warnings.warn(GIL_FORCED_OFF_MESSAGE, RuntimeWarning, stacklevel=3)
    return _core
