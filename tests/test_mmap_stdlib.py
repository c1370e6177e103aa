"""CPython's own mmap test suite (Lib/test/test_mmap.py), run against fastio.

The suite's module-global ``mmap`` is replaced by ``fastio``, so every
``mmap.mmap(...)``, ``mmap.ACCESS_READ``, ``mmap.error``... in it means
fastio's. Each of its test methods becomes one pytest test. Every one must
pass, except the short list of deliberate deviations below; each of those is
an xfail(strict=True) -- so the list cannot go stale -- and is checked by a
fastio test of its own (named in the reason).

The suite is the running interpreter's own: pyenv's builds carry their
test package; Debian's interpreters have it in libpython3.x-testsuite
(.ci/forky.sh installs it for 3.14 and 3.15, under /usr/lib/python3.x/test,
which a venv of that interpreter imports as `test`). Where it is not
installed (Debian's python3 without that package), the whole module is
skipped, saying so.
"""
import unittest

import pytest

import fastio

try:
    from test import test_mmap as stdlib_suite
except ImportError as exc:  # pragma: no cover - depends on the Python build
    stdlib_suite = None
    SKIP_REASON = f"CPython's test package is not installed ({exc})"

# test id -> why fastio deliberately differs, and which fastio test checks it.
DEVIATIONS = {
    "MmapTests.test_repr": (
        "repr names the class users hold, '<fastio.mmap closed=...>', where the "
        "stdlib's says '<mmap.mmap ...>'; the rest of the format is the same. "
        "Checked by tests/test_mmap.py::test_repr_matches_stdlib_format."),
    "MmapTests.test_flush_return_value": (
        "flush(offset, size) rounds the range out to whole pages (fastio maps "
        "start at any byte offset, so a user offset is not page-aligned in "
        "memory anyway); the stdlib passes it to msync unrounded and so raises "
        "EINVAL for flush(1, 6). Checked by "
        "tests/test_mmap.py::test_flush_any_offset_rounds_to_pages."),
}


def _collect():
    if stdlib_suite is None:
        return []
    loader = unittest.TestLoader()
    ids = []
    for name in dir(stdlib_suite):
        obj = getattr(stdlib_suite, name)
        if isinstance(obj, type) and issubclass(obj, unittest.TestCase):
            for method in loader.getTestCaseNames(obj):
                ids.append(f"{name}.{method}")
    return sorted(ids)


TEST_IDS = _collect()


def _params():
    if not TEST_IDS:
        return [pytest.param("none", marks=pytest.mark.skip(reason=SKIP_REASON))]
    out = []
    for tid in TEST_IDS:
        marks = []
        if tid in DEVIATIONS:
            marks.append(pytest.mark.xfail(reason=DEVIATIONS[tid], strict=True))
        out.append(pytest.param(tid, marks=marks, id=tid))
    return out


def test_deviations_are_real_tests():
    if stdlib_suite is None:
        pytest.skip(SKIP_REASON)
    assert set(DEVIATIONS) <= set(TEST_IDS)


@pytest.mark.parametrize("test_id", _params())
def test_stdlib_mmap_suite(test_id, tmp_path, monkeypatch):
    # The suite works on a file named by a relative path (TESTFN): run it in
    # a private directory. fastio stands in for the module under test.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(stdlib_suite, "mmap", fastio)
    monkeypatch.setattr(stdlib_suite, "PAGESIZE", fastio.PAGESIZE)
    cls_name, method = test_id.split(".")
    case = getattr(stdlib_suite, cls_name)(method)
    result = unittest.TestResult()
    case.run(result)
    problems = result.errors + result.failures
    if problems:
        pytest.fail("\n".join(text for _, text in problems), pytrace=False)
    for _, reason in result.skipped:
        pytest.skip(reason)
    assert result.testsRun == 1
