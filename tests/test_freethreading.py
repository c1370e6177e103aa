"""fastio on a free-threaded CPython (3.13t): importing it turns the GIL on.

fastio._core declares Py_mod_gil = Py_MOD_GIL_USED (csrc/module.c): its
objects rely on the GIL (docs/freethreading.md says why). On a free-threaded
build the import must therefore leave the GIL enabled, with fastio's own
warning instead of the interpreter's generic one; with PYTHON_GIL=0 the GIL
stays off and fastio warns that this is unsupported. On a default build the
import warns about nothing. Each case runs in a fresh interpreter, since a
process's GIL state is decided by its first import of fastio.
"""
import json
import os
import pathlib
import re
import subprocess
import sys
import sysconfig
import textwrap

import pytest

import fastio
from fastio import _freethreading

ROOT = pathlib.Path(__file__).resolve().parent.parent
FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
needs_free_threaded = pytest.mark.skipif(
    not FREE_THREADED, reason="not a free-threaded CPython build (Py_GIL_DISABLED unset)")

# Imports fastio in a fresh interpreter and reports the GIL state before and
# after, and every warning the import raised.
CHILD = textwrap.dedent("""
    import json, sys, warnings
    before = getattr(sys, "_is_gil_enabled", lambda: True)()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import fastio
    after = getattr(sys, "_is_gil_enabled", lambda: True)()
    print(json.dumps({"before": before, "after": after, "file": fastio.__file__,
                      "warnings": [[w.category.__name__, str(w.message), w.filename]
                                   for w in caught]}))
""")


def import_in_child(**env_changes):
    env = dict(os.environ)
    env.pop("PYTHON_GIL", None)
    here = os.path.dirname(os.path.dirname(os.path.abspath(fastio.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([here] + [p for p in [env.get("PYTHONPATH")] if p])
    env.update(env_changes)
    p = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["file"] == fastio.__file__, "the child imported another fastio"
    return out


@pytest.mark.skipif(FREE_THREADED, reason="free-threaded build: the import warns by design")
def test_default_build_import_warns_nothing():
    out = import_in_child()
    assert out["before"] is True and out["after"] is True
    assert out["warnings"] == []


@needs_free_threaded
def test_free_threaded_import_enables_the_gil_with_fastios_warning():
    out = import_in_child()
    assert out["before"] is False, "the GIL was on before fastio was imported"
    assert out["after"] is True, "importing fastio left the GIL off"
    runtime = [w for w in out["warnings"] if w[0] == "RuntimeWarning"]
    # Exactly fastio's warning, pointing at the importer's line (the -c
    # script), and not the interpreter's generic one as well.
    assert runtime == [["RuntimeWarning", _freethreading.GIL_ENABLED_MESSAGE, "<string>"]]


@needs_free_threaded
def test_free_threaded_gil_forced_off_stays_off_with_a_warning():
    out = import_in_child(PYTHON_GIL="0")
    assert out["before"] is False and out["after"] is False
    runtime = [w for w in out["warnings"] if w[0] == "RuntimeWarning"]
    assert runtime == [["RuntimeWarning", _freethreading.GIL_FORCED_OFF_MESSAGE, "<string>"]]


@needs_free_threaded
def test_this_process_runs_with_the_gil_unless_forced_off():
    # fastio is imported here: the GIL is on, unless PYTHON_GIL=0 / -X gil=0
    # forced it off (sys.flags.gil is 0 then, None when unset).
    assert sys._is_gil_enabled() is (sys.flags.gil != 0)


def test_module_declaration_matches_readme_and_docs():
    # What csrc/module.c declares is what README.md and the docs page state.
    src = (ROOT / "csrc" / "module.c").read_text()
    assert re.findall(r"\{Py_mod_gil, (\w+)\}", src) == ["Py_MOD_GIL_USED"]
    readme = (ROOT / "README.md").read_text()
    assert "Py_MOD_GIL_USED" in readme and "docs/freethreading.md" in readme
    docs = (ROOT / "docs" / "freethreading.md").read_text()
    assert "Py_MOD_GIL_USED" in docs
    assert _freethreading.DOCS in _freethreading.GIL_ENABLED_MESSAGE
