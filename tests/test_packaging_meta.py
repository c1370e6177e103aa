"""Packaging: the version in one place, the metadata users read (classifiers,
license, URLs), what the sdist carries, and the features that depend on the
C library's version, looked up at run time (a wheel built against glibc 2.28
must keep them on newer systems: docs/index.md, "Wheels")."""
import ctypes
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import fastio

ROOT = Path(__file__).resolve().parent.parent  # the clone or the unpacked sdist
# The CPython versions CI builds and tests fastio on (.ci/run: pyenv's
# 3.10-3.13, Debian forky's 3.14 and 3.15 through .ci/forky.sh).
SUPPORTED = ["3.10", "3.11", "3.12", "3.13", "3.14", "3.15"]


def _installed_dist():
    """The installed distribution fastio was imported from, or None when it
    was imported from a source tree (PYTHONPATH, an in-place build)."""
    try:
        dist = importlib.metadata.distribution("fastio")
    except importlib.metadata.PackageNotFoundError:
        return None
    where = Path(dist.locate_file("fastio/__init__.py")).resolve()
    return dist if where == Path(fastio.__file__).resolve() else None


def _pyproject():
    try:
        import tomllib
    except ImportError:  # 3.10
        tomllib = pytest.importorskip("tomli", reason="reading pyproject.toml on 3.10 needs tomli")
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def _classifiers():
    dist = _installed_dist()
    if dist is not None:
        return dist.metadata.get_all("Classifier") or []
    return _pyproject()["project"]["classifiers"]


def test_version_is_written_once():
    # pyproject.toml reads the version from fastio/_version.py; nothing else
    # in the package or the build spells it.
    if (ROOT / "pyproject.toml").exists():
        project = _pyproject()
        assert "version" not in project["project"]
        assert "version" in project["project"]["dynamic"]
        assert project["tool"]["setuptools"]["dynamic"]["version"] == {
            "attr": "fastio._version.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+([ab]|rc)?\d*(\.dev\d+)?", fastio.__version__)
    from fastio import _version
    assert fastio.__version__ == _version.__version__


def test_version_equals_metadata():
    dist = _installed_dist()
    if dist is None:
        pytest.skip("fastio is imported from a source tree, not an installed "
                    "distribution: there is no metadata of its own to compare")
    assert importlib.metadata.version("fastio") == fastio.__version__


def test_classifiers():
    classifiers = _classifiers()
    for v in SUPPORTED:
        assert f"Programming Language :: Python :: {v}" in classifiers
    # The interpreter running this suite is one fastio supports: a new CPython
    # in the test matrix gets its classifier in pyproject.toml.
    running = "{}.{}".format(*sys.version_info[:2])
    assert f"Programming Language :: Python :: {running}" in classifiers
    assert "Typing :: Typed" in classifiers
    assert "Operating System :: POSIX :: Linux" in classifiers
    # The free-threading classifier exactly when the C module declares that
    # it runs without the GIL (Py_MOD_GIL_NOT_USED): `import fastio` on a
    # free-threaded build then leaves the GIL off.
    module_c = ROOT / "csrc" / "module.c"
    if module_c.exists():
        gil_free = re.search(r"\{\s*Py_mod_gil\s*,\s*Py_MOD_GIL_NOT_USED\s*\}",
                             module_c.read_text()) is not None
        claims = [c for c in classifiers
                  if c.startswith("Programming Language :: Python :: Free Threading")]
        assert bool(claims) == gil_free, (claims, gil_free)
    try:
        from trove_classifiers import classifiers as known
    except ImportError:
        return
    assert [c for c in classifiers if c not in known] == []


def test_typed_license_urls():
    # py.typed and the stubs ship with the package (PEP 561).
    here = Path(fastio.__file__).parent
    assert (here / "py.typed").exists() and (here / "_core.pyi").exists()
    dist = _installed_dist()
    if dist is None:
        assert (ROOT / "LICENSE").read_text().startswith("MIT License")
        return
    meta = dist.metadata
    # An SPDX expression where setuptools >= 77 built it, the older field otherwise.
    assert meta.get("License-Expression", meta.get("License")) == "MIT"
    assert any(str(f).endswith("LICENSE") for f in dist.files)
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL") or [])
    assert urls.get("Source", "").startswith("https://github.com/")
    assert {"Homepage", "Documentation", "Issues"} <= set(urls)


def test_sdist_contents(tmp_path):
    """The sdist carries what the build and the tests need: every csrc file
    (headers included: setup.py only lists them as depends), the license,
    tests/ and the docs page tests/test_errors.py reads."""
    if not (ROOT / "setup.py").exists() or not (ROOT / "MANIFEST.in").exists():
        pytest.skip(f"{ROOT} is not a source tree (no setup.py / MANIFEST.in)")
    pytest.importorskip("setuptools", reason="building an sdist needs setuptools")
    # A copy, so that egg-info and the sdist are not written into the tree.
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "wheelhouse", "*.egg-info", "__pycache__", "*.so",
        ".pytest_cache", ".hypothesis"))
    subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path / "dist")],
                   cwd=src, check=True, capture_output=True)
    (sdist,) = (tmp_path / "dist").glob("fastio-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    wanted = {f"csrc/{p.name}" for p in (ROOT / "csrc").iterdir() if p.suffix in (".c", ".h")}
    wanted |= {"LICENSE", "README.md", "pyproject.toml", "setup.py", "fastio/py.typed",
               "fastio/_core.pyi", "fastio/_version.py", "tests/conftest.py",
               "tests/test_packaging_meta.py", "docs/errors.md"}
    assert sorted(wanted - names) == []
    assert not [n for n in names if n.endswith((".so", ".o", ".pyc"))]


def _libc_has(symbol):
    return hasattr(ctypes.CDLL(None), symbol)


@pytest.mark.smoke
def test_heap_info_follows_the_running_c_library():
    """heap_info looks mallinfo2 up at run time: a wheel built against glibc
    2.28 (which has none) keeps it on a glibc 2.33+ system. (It was a
    compile-time check, and such a wheel raised NotImplementedError on glibc
    2.36.) The oracle is the running C library itself, through ctypes."""
    if _libc_has("mallinfo2"):
        info = fastio.heap_info()
        assert info.brk > 0 and info.arena >= 0 and info.uordblks >= 0
    else:
        with pytest.raises(NotImplementedError, match="mallinfo2"):
            fastio.heap_info()


@pytest.mark.smoke
def test_no_glibc_version_test_at_compile_time():
    """No compile-time glibc version test in the C sources: what depends on
    the C library's version is looked up at run time (dlsym)."""
    csrc = ROOT / "csrc"
    if not csrc.is_dir():
        pytest.skip(f"no C sources at {csrc} (an installed test tree)")
    found = [f"{p.name}:{i}" for p in sorted(csrc.glob("*.[ch]"))
             for i, line in enumerate(p.read_text().splitlines(), 1)
             if re.search(r"__GLIBC_MINOR__|__GLIBC_PREREQ", line)]
    assert found == []



class _StatxTimestamp(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_int64), ("tv_nsec", ctypes.c_uint32),
                ("reserved", ctypes.c_int32)]


class _Statx(ctypes.Structure):
    """The kernel's struct statx (uapi linux/stat.h, Linux 6.1), field by field."""
    _fields_ = [("stx_mask", ctypes.c_uint32), ("stx_blksize", ctypes.c_uint32),
                ("stx_attributes", ctypes.c_uint64), ("stx_nlink", ctypes.c_uint32),
                ("stx_uid", ctypes.c_uint32), ("stx_gid", ctypes.c_uint32),
                ("stx_mode", ctypes.c_uint16), ("spare0", ctypes.c_uint16),
                ("stx_ino", ctypes.c_uint64), ("stx_size", ctypes.c_uint64),
                ("stx_blocks", ctypes.c_uint64), ("stx_attributes_mask", ctypes.c_uint64),
                ("stx_atime", _StatxTimestamp), ("stx_btime", _StatxTimestamp),
                ("stx_ctime", _StatxTimestamp), ("stx_mtime", _StatxTimestamp),
                ("stx_rdev_major", ctypes.c_uint32), ("stx_rdev_minor", ctypes.c_uint32),
                ("stx_dev_major", ctypes.c_uint32), ("stx_dev_minor", ctypes.c_uint32),
                ("stx_mnt_id", ctypes.c_uint64), ("stx_dio_mem_align", ctypes.c_uint32),
                ("stx_dio_offset_align", ctypes.c_uint32), ("spare", ctypes.c_uint64 * 12)]


@pytest.mark.smoke
def test_dio_alignment_follows_the_running_kernel(tmp_path):
    """The O_DIRECT alignment comes from statx's STATX_DIOALIGN whenever the
    running kernel reports it, however old the headers fastio was built with
    (it was an #ifdef STATX_DIOALIGN, lost in builds against pre-6.1 headers).
    The oracle: statx called through ctypes with the kernel's struct."""
    assert ctypes.sizeof(_Statx) == 256
    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "statx"):
        pytest.skip("the C library has no statx (glibc < 2.28)")
    path = tmp_path / "f"
    path.write_bytes(b"x" * 4096)
    fd = os.open(path, os.O_RDONLY)
    try:
        stx = _Statx()
        STATX_DIOALIGN, AT_EMPTY_PATH = 0x2000, 0x1000
        rc = libc.statx(fd, b"", AT_EMPTY_PATH, STATX_DIOALIGN, ctypes.byref(stx))
        assert rc == 0, os.strerror(ctypes.get_errno())
        st = os.fstat(fd)
        assert (stx.stx_ino, stx.stx_size) == (st.st_ino, st.st_size)  # the layout holds
        got = fastio._core._dio_alignment(fd)
    finally:
        os.close(fd)
    if not stx.stx_mask & STATX_DIOALIGN or stx.stx_dio_offset_align == 0:
        pytest.skip(f"the kernel reports no O_DIRECT alignment for {tmp_path} "
                    f"(STATX_DIOALIGN needs Linux 6.1 and a filesystem that supports O_DIRECT)")
    assert got == (stx.stx_dio_mem_align, stx.stx_dio_offset_align, "statx")
