"""python -m fastio, run as a user runs it: in a subprocess.

The subprocess imports the same fastio as this test process (PYTHONPATH is
set to the directory holding it), so the tests check the build under test,
installed or in place. No timing assertions: only that every figure is there,
positive, and consistent with the others.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

import fastio
from fastio.lab import METHODS

MIB = 1 << 20


def cli_env():
    env = dict(os.environ)
    here = os.path.dirname(os.path.dirname(os.path.abspath(fastio.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([here] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def run_cli(*args, cwd, timeout=300):
    return subprocess.run([sys.executable, "-m", "fastio", *args], cwd=cwd,
                          env=cli_env(), capture_output=True, text=True,
                          timeout=timeout)


def table_rows(stdout):
    """{method: (baseline, gbps-or-status, ratio)} from the printed table."""
    lines = stdout.splitlines()
    start = next(i for i, l in enumerate(lines) if l.split()[:2] == ["method", "baseline"])
    rows = {}
    for line in lines[start + 2:]:
        if not line.strip():
            break
        name, baseline, gb, ratio = line.split()
        rows[name] = (baseline, gb, ratio)
    return rows


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """One run of the CLI on an 8 MiB temporary file, shared by the checks."""
    d = tmp_path_factory.mktemp("cli")
    work = d / "tmpdir"
    work.mkdir()
    p = run_cli("--size", "8M", "--repeat", "1", "--json", "out.json",
                "--dir", str(work), cwd=d)
    data = json.loads((d / "out.json").read_text()) if (d / "out.json").exists() else None
    return p, data, work


def test_exits_zero_and_removes_its_file(small_run):
    p, data, work = small_run
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    assert list(work.iterdir()) == [], "the temporary file was left behind"


def test_json_has_every_method_and_consistent_figures(small_run):
    p, data, _ = small_run
    assert data is not None, p.stderr
    rows = {r["method"]: r for r in data["results"]}
    assert list(rows) == list(METHODS)
    assert data["file"]["size"] == 8 * MIB
    assert data["file"]["filesystem"]["type"]
    assert data["repeat"] == 1
    assert data["machine"]["kernel"] == os.uname().release
    assert data["cache"]["state"].startswith(("warm", "partly", "cold"))
    for name, r in rows.items():
        assert r["baseline"] == METHODS[name].baseline
        assert r["status"] in ("ok", "unavailable"), (name, r["reason"])
        if r["status"] == "unavailable":
            assert "fastio." in r["reason"] and r["gbps"] is None
            continue
        assert r["nbytes"] == 8 * MIB
        assert len(r["times_ns"]) == 1 and r["times_ns"][0] > 0
        assert r["median_ns"] == r["times_ns"][0]
        assert r["gbps"] == pytest.approx(r["nbytes"] / r["median_ns"])
        assert r["gbps"] > 0
        base = rows[r["baseline"]] if r["baseline"] else r
        if base["gbps"] is None:
            assert r["ratio"] is None
        else:
            assert r["ratio"] == pytest.approx(r["gbps"] / base["gbps"])


def test_table_matches_json(small_run):
    p, data, _ = small_run
    rows = table_rows(p.stdout)
    assert list(rows) == list(METHODS)
    for r in data["results"]:
        baseline, gb, ratio = rows[r["method"]]
        assert baseline == (r["baseline"] or "(baseline)")
        if r["status"] == "ok":
            assert float(gb) == pytest.approx(r["gbps"], abs=0.0006)
            if r["ratio"] is not None:
                assert float(ratio) == pytest.approx(r["ratio"], abs=0.006)
                # The printed ratio follows from the printed figures, up to rounding.
                if r["baseline"]:
                    bgb = float(rows[r["baseline"]][1])
                    assert float(ratio) == pytest.approx(float(gb) / bgb, rel=0.02, abs=0.02)
        else:
            assert gb == r["status"] and ratio == "-"
            assert f"{r['method']}: {r['status']}: {r['reason']}" in p.stdout


def test_header_names_machine_file_and_cache(small_run):
    p, data, _ = small_run
    out = p.stdout
    assert re.search(r"^file: .*temporary, 8 MiB; \S+ on ", out, re.M)
    assert re.search(r"^cache: +(warm|partly|cold)", out, re.M)
    assert os.uname().release in out
    assert "median of 1 timed runs" in out


@pytest.mark.parametrize("name", [n for n in METHODS if METHODS[n].requires])
def test_every_fastio_method_is_measured(small_run, name):
    reason = METHODS[name].unavailable_reason()
    if reason:
        pytest.skip(f"not merged yet: {reason}")
    p, data, _ = small_run
    r = {r["method"]: r for r in data["results"]}[name]
    assert r["status"] == "ok", r["reason"]
    assert r["gbps"] > 0 and r["ratio"] > 0


def test_cache_state_is_verified(small_run):
    if not hasattr(fastio.mmap, "residency"):
        pytest.skip("not merged yet: fastio.mmap.residency")
    p, data, _ = small_run
    c = data["cache"]
    assert c["verified_by"] and 0 <= c["resident_fraction"] <= 1
    assert "unverified" not in c["state"]


def test_existing_file_is_used_and_left_alone(tmp_path):
    f = tmp_path / "given.bin"
    payload = os.urandom(MIB + 123)  # not a multiple of the page size
    f.write_bytes(payload)
    p = run_cli("--file", str(f), "--repeat", "1", "--json", "o.json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    data = json.loads((tmp_path / "o.json").read_text())
    assert data["temporary"] is False and data["file"]["size"] == len(payload)
    assert all(r["nbytes"] == len(payload) for r in data["results"])
    assert f.read_bytes() == payload
    assert "(given, " in p.stdout


def test_help_explains_every_option(tmp_path):
    p = run_cli("--help", cwd=tmp_path)
    assert p.returncode == 0
    for opt in ("--size", "--file", "--dir", "--repeat", "--json"):
        assert opt in p.stdout
    assert "256M" in p.stdout  # the default size
    for name in METHODS:
        assert name in p.stdout.replace("\n", " ")


@pytest.mark.parametrize("args, words", [
    (["--size", "-1"], ["--size", "'-1'", "at least 1 byte"]),
    (["--size", "0"], ["--size", "'0'"]),
    (["--size", "lots"], ["--size", "'lots'"]),
    (["--repeat", "0"], ["--repeat", "'0'"]),
    (["--repeat", "x"], ["--repeat", "'x'"]),
    (["--size", "1M", "--file", "f"], ["not allowed with"]),
    (["--bogus"], ["unrecognized arguments: --bogus"]),
])
def test_bad_options_exit_2_with_a_clear_error(tmp_path, args, words):
    p = run_cli(*args, cwd=tmp_path)
    assert p.returncode == 2
    assert p.stdout == ""
    assert "usage: python -m fastio" in p.stderr
    for w in words:
        assert w in p.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content", [None, b""], ids=["missing", "empty"])
def test_bad_file_exits_2(tmp_path, content):
    f = tmp_path / "f.bin"
    if content is not None:
        f.write_bytes(content)
    p = run_cli("--file", str(f), cwd=tmp_path)
    assert p.returncode == 2
    assert str(f) in p.stderr and "not a non-empty regular file" in p.stderr


def test_unwritable_dir_exits_1(tmp_path):
    p = run_cli("--size", "1M", "--dir", str(tmp_path / "missing"), cwd=tmp_path)
    assert p.returncode == 1
    assert "cannot make the test file" in p.stderr


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 128 + signal.SIGTERM)])
def test_interrupted_run_removes_its_file(tmp_path, sig, code):
    work = tmp_path / "w"
    work.mkdir()
    # Many repeats so the run is still going when the signal comes.
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastio", "--size", "32M", "--repeat", "1000",
         "--dir", str(work)], cwd=tmp_path, env=cli_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not any(work.iterdir()):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the temporary file never appeared"
            time.sleep(0.01)
        time.sleep(0.2)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == code, err
    assert list(work.iterdir()) == []


def test_console_script_is_the_same_program(tmp_path):
    """`pip install .` puts a `fastio` script on PATH (README's first command)."""
    script = shutil.which("fastio")
    if script is None:
        pytest.skip("no fastio script on PATH: fastio is not pip-installed here")
    p = subprocess.run([script, "--size", "1M", "--repeat", "1", "--json", "o.json"],
                       cwd=tmp_path, env=cli_env(), capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    data = json.loads((tmp_path / "o.json").read_text())
    assert [r["method"] for r in data["results"]] == list(METHODS)
    bad = subprocess.run([script, "--size", "-1"], cwd=tmp_path, env=cli_env(),
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert "usage: fastio " in bad.stderr and "'-1'" in bad.stderr
