"""Loading fastio._core on a free-threaded CPython (3.13t and later).

fastio._core declares Py_mod_gil = Py_MOD_GIL_NOT_USED (csrc/module.c): each
of its objects keeps its state consistent under a critical section on
itself (docs/freethreading.md has the model), so on a free-threaded build
`import fastio` leaves the GIL off and warns about nothing. The interpreter
would still turn the GIL on, with its own generic RuntimeWarning, if the
fastio._core being imported were an older build that declared
Py_MOD_GIL_USED: import_core() then says what that means, in fastio's words.
On a default build (with the GIL) it is a plain import.
"""
import sys
import warnings

DOCS = "docs/freethreading.md"

GIL_ENABLED_MESSAGE = (
    "fastio enabled the GIL: this fastio._core was built without free-threading "
    "support (it declares that it needs the GIL), so the interpreter turned the "
    "GIL back on when it was imported. Rebuild fastio from a source that "
    "declares Py_MOD_GIL_NOT_USED. See " + DOCS + ".")

# The start of the interpreter's own warning (Python/import.c), replaced by
# GIL_ENABLED_MESSAGE should it ever be raised for fastio._core.
_INTERPRETER_MESSAGE = (r"The global interpreter lock \(GIL\) has been enabled to load "
                        r"module 'fastio\._core'")


def gil_enabled():
    """True where the GIL is on: always on a default build."""
    is_enabled = getattr(sys, "_is_gil_enabled", None)
    return True if is_enabled is None else is_enabled()


def import_core():
    """Import and return fastio._core; the GIL stays as it was."""
    if gil_enabled():
        # A default build, or a free-threaded one whose GIL is on
        # (PYTHON_GIL=1, or another module turned it on): nothing changes.
        from . import _core
        return _core
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_INTERPRETER_MESSAGE,
                                category=RuntimeWarning)
        from . import _core
    if gil_enabled():
        # stacklevel 3: the warning points at the user's `import fastio`.
        warnings.warn(GIL_ENABLED_MESSAGE, RuntimeWarning, stacklevel=3)
    return _core
