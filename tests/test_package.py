"""The package as a user meets it: import, the stdlib mmap stand-in, docstrings."""
import inspect
import mmap as std_mmap
import os
import subprocess
import sys
import textwrap

import pytest

import fastio

STD_CONSTANTS = sorted(n for n in dir(std_mmap) if n.isupper())


def test_import_loads_the_c_core():
    assert fastio._core.__name__ == "fastio._core"
    assert fastio._core.__file__.endswith(".so")
    assert isinstance(fastio.__version__, str) and fastio.__version__


def test_import_in_a_fresh_interpreter():
    env = dict(os.environ)
    here = os.path.dirname(os.path.dirname(os.path.abspath(fastio.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([here] + [p for p in [env.get("PYTHONPATH")] if p])
    p = subprocess.run([sys.executable, "-c", "import fastio; print(fastio.__file__)"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == fastio.__file__


@pytest.mark.parametrize("name", STD_CONSTANTS)
def test_stdlib_mmap_constant(name):
    assert hasattr(fastio, name), f"fastio lacks the stdlib's mmap.{name}"
    assert getattr(fastio, name) == getattr(std_mmap, name)
    assert type(getattr(fastio, name)) is int


def test_error_is_oserror():
    assert fastio.error is OSError
    assert fastio.error is std_mmap.error


def test_fastioerror_is_an_exception_class():
    assert issubclass(fastio.FastIOError, Exception)


def test_mmap_is_a_type_named_mmap():
    assert isinstance(fastio.mmap, type)
    assert fastio.mmap.__name__ == "mmap"


# A script written against the stdlib; run once with the stdlib and once with
# fastio standing in for it; the outputs must be the same.
STAND_IN_SCRIPT = textwrap.dedent("""
    import sys
    if sys.argv[2] == "fastio":
        import fastio
        sys.modules["mmap"] = fastio
    import mmap

    path = sys.argv[1]
    with open(path, "r+b") as f:
        m = mmap.mmap(f.fileno(), 0)
        print(len(m), m[:5], m[-3:], m[7], m.find(b"needle"))
        m[0:5] = b"HELLO"
        m.flush()
        m.close()
        print(m.closed)
    with open(path, "rb") as f:
        print(f.read(6))
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as r:
        print(bytes(r[:6]), len(r), mmap.PAGESIZE == mmap.ALLOCATIONGRANULARITY)
        try:
            r[0] = 1
        except TypeError as e:
            print("read-only:", type(e).__name__)
    try:
        mmap.mmap(-1, 0)
    except (ValueError, OSError) as e:
        print("bad length:", isinstance(e, (ValueError, mmap.error)))
""")


def test_fastio_stands_in_for_the_stdlib_mmap_module(tmp_path):
    needed = ["__getitem__", "__setitem__", "find", "flush"]
    missing = [n for n in needed if not hasattr(fastio.mmap, n)]
    if missing:
        pytest.skip(f"not merged yet: fastio.mmap lacks {', '.join(missing)}")
    script = tmp_path / "script.py"
    script.write_text(STAND_IN_SCRIPT)
    env = dict(os.environ)
    here = os.path.dirname(os.path.dirname(os.path.abspath(fastio.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([here] + [p for p in [env.get("PYTHONPATH")] if p])
    outs = {}
    for impl in ("mmap", "fastio"):
        data = tmp_path / f"{impl}.bin"
        data.write_bytes(b"abcdefg\x07 with a needle in it" + bytes(5000))
        p = subprocess.run([sys.executable, str(script), str(data), impl], env=env,
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, f"{impl}: {p.stderr}"
        outs[impl] = p.stdout
    assert outs["fastio"] == outs["mmap"]
    assert "b'HELLOf'" in outs["mmap"]


def public_api():
    names = sorted(n for n in dir(fastio) if not n.startswith("_"))
    return [n for n in names
            if inspect.isclass(getattr(fastio, n)) or inspect.ismodule(getattr(fastio, n))
            or callable(getattr(fastio, n))]


def own_doc(obj):
    if inspect.isclass(obj):
        return obj.__dict__.get("__doc__")
    return getattr(obj, "__doc__", None)


@pytest.mark.parametrize("name", public_api())
def test_public_name_has_a_docstring(name):
    obj = getattr(fastio, name)
    if obj is OSError:
        return  # fastio.error is the built-in, as in the stdlib
    doc = own_doc(obj)
    assert doc and doc.strip(), f"fastio.{name} has no docstring of its own"


def test_every_module_all_is_exported():
    # The modules fastio/__init__.py star-imports (fastio.aio is not: its
    # coroutines share names with the blocking functions).
    star = [m for m in ("mapping", "memory", "fileio", "arrays", "transfer", "shm", "sync")
            if hasattr(fastio, m)]
    assert star[:4] == ["mapping", "memory", "fileio", "arrays"]
    for mod in (getattr(fastio, m) for m in star):
        for n in mod.__all__:
            assert getattr(fastio, n) is getattr(mod, n), f"fastio.{n} (from {mod.__name__})"


def _package_copy(tmp_path, extension=None):
    """A copy of the fastio package under tmp_path without its built extension
    (a source tree before `build_ext --inplace`), or with ``extension`` bytes
    as its _core extension file."""
    import importlib.machinery
    import shutil
    src = os.path.dirname(os.path.abspath(fastio.__file__))
    dst = tmp_path / "fastio"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(
        "_core.*.so", "_core.so", "*.pyd", "__pycache__"))
    assert not [p for p in dst.iterdir() if p.name.startswith("_core.") and p.suffix == ".so"]
    if extension is not None:
        (dst / ("_core" + importlib.machinery.EXTENSION_SUFFIXES[0])).write_bytes(extension)
    return tmp_path


def _import_from(cwd):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-c", "import fastio"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def test_import_from_a_source_tree_without_the_extension_says_what_to_do(tmp_path):
    # `python -c` puts the current directory first on sys.path, as at a
    # clone's root: the copy without _core*.so is what gets imported.
    p = _import_from(_package_copy(tmp_path))
    assert p.returncode == 1
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: fastio was imported from "), p.stderr
    assert str(tmp_path / "fastio") in last
    assert "build_ext --inplace" in last and "from another directory" in last
    assert "partially initialized" not in last and "circular import" not in last


def test_import_with_a_broken_extension_names_it(tmp_path):
    p = _import_from(_package_copy(tmp_path, extension=b"not an ELF file"))
    assert p.returncode == 1
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: fastio's C extension _core."), p.stderr
    assert "failed to load" in last and "Rebuild it" in last


def test_core_types_are_immutable_and_exception_classes_are_not():
    """Every extension type is immutable, as CPython's own are; the
    exception classes stay as PyErr_NewException makes them (mutable, like
    the stdlib modules' own), and fastio's Python subclasses stay ordinary."""
    with pytest.raises(TypeError):
        fastio._core.mmap.marker = 1
    with pytest.raises(TypeError):
        fastio._core.Lock.marker = 1
    for exc in (fastio.FastIOError, fastio.MappingError, fastio.OwnerDeadError,
                fastio.aio.BackendUnavailable):
        exc.marker = 1
        assert exc.marker == 1
        del exc.marker
