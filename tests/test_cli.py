"""python -m fastio, run as a user runs it: in a subprocess.

The subprocess imports the same fastio as this test process (PYTHONPATH is
set to the directory holding it). No timing assertions: only that every
figure is there and consistent, the exit codes, and the files.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

import fastio
import probes
from fastio.lab import GROUPS, METHODS

MIB = 1 << 20


def cli_env():
    env = dict(os.environ)
    here = os.path.dirname(os.path.dirname(os.path.abspath(fastio.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([here] + [p for p in [env.get("PYTHONPATH")] if p])
    env["MPLBACKEND"] = "Agg"
    return env


def run_cli(*args, cwd, timeout=300):
    return subprocess.run([sys.executable, "-m", "fastio", *args], cwd=cwd,
                          env=cli_env(), capture_output=True, text=True, timeout=timeout)


def have_matplotlib():
    # Not under the ASan preload: matplotlib's C++ extensions abort there.
    if "libasan" in os.environ.get("LD_PRELOAD", "") or os.environ.get("FASTIO_SANITIZE") == "1":
        return False
    try:
        import matplotlib  # noqa: F401
        return True
    except ImportError:
        return False


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """One quick comparison on a 4 MiB temporary file, shared by the checks."""
    d = tmp_path_factory.mktemp("cli")
    work = d / "tmpdir"
    work.mkdir()
    args = ["--size", "4M", "--repeat", "1", "--json", "out.json", "--dir", str(work)]
    if have_matplotlib():
        args += ["--plot", "out.png"]
    p = run_cli(*args, cwd=d)
    data = json.loads((d / "out.json").read_text()) if (d / "out.json").exists() else None
    return p, data, work, d


def test_quick_exits_zero_and_removes_its_file(quick):
    p, data, work, _ = quick
    assert p.returncode == 0, p.stderr
    assert list(work.iterdir()) == []
    assert data is not None


def test_quick_runs_every_method(quick):
    p, data, _, _ = quick
    names = {j["jobname"] for j in data["jobs"]}
    assert names == set(METHODS)
    for j in data["jobs"]:
        f = j["fastio"]
        why = METHODS[j["jobname"]].unavailable("warm")
        if why:
            assert f["status"] == "unavailable" and f["reason"] == why
            assert why in p.stdout
        else:
            assert f["status"] == "ok", f["reason"]
            assert j["read"]["bw_bytes"] > 0 and j["read"]["clat_ns"]["percentile"]
            assert j["fastio"]["params"]["block_size"] == MIB


def test_quick_table_and_header(quick):
    p, data, _, _ = quick
    out = p.stdout
    for g in GROUPS:
        assert f"[{g}]" in out
    assert "file:" in out and "(temporary, 4 MiB;" in out
    assert "cache:   warm; mincore" in out and "every check passed" in out
    assert os.uname().release in out
    assert out.count("* ") >= len(GROUPS)   # a winner per I/O family
    assert "results written to out.json" in out
    # the memory state, stated as the cache state is, and the rounds
    assert "memory:  first touch of " in out and "2 MiB page" in out
    assert "rounds:  1 warm-up round (not recorded) + 1 measured" in out
    assert "first_touch.2m" in out and "MB/s min-max" in out
    # not a terminal: progress lines on stderr, with the time left
    assert "calls to make" in p.stderr and "left" in p.stderr


def test_quick_plot(quick):
    if not have_matplotlib():
        pytest.skip("--plot needs matplotlib (fastio[lab]), which aborts under ASan")
    p, _, _, d = quick
    assert (d / "out.png").read_bytes()[:4] == b"\x89PNG"
    assert "plot written to out.png" in p.stdout


def test_run_with_fio_like_options(tmp_path):
    p = run_cli("run", "--method", "aio.threads", "--pattern", "rand", "--bs", "4k",
                "--depth", "8", "--size", "1M", "--repeat", "1", "--baseline", "psync",
                "--json", "r.json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    d = json.loads((tmp_path / "r.json").read_text())
    assert {j["jobname"] for j in d["jobs"]} == {"aio.threads", "psync", "read.bytearray"}
    for j in d["jobs"]:
        assert j["job options"]["rw"] == "randread" and j["job options"]["bs"] == "4096"
        assert j["job options"]["iodepth"] == "8"
        assert j["read"]["total_ios"] == 256
    assert "aio.threads" in p.stdout and "psync" in p.stdout


def test_run_direct(tmp_path):
    p = run_cli("run", "--group", "read/write", "--bs", "64k", "--size", "1M", "--repeat", "1",
                "--cache", "direct", "--json", "d.json", cwd=tmp_path)
    if p.returncode == 1 and "Invalid argument" in p.stdout + p.stderr:
        probes.fail_or_skip("O_DIRECT", probes.o_direct(tmp_path), p.stdout + p.stderr)
    assert p.returncode == 0, p.stdout + p.stderr
    jobs = {j["jobname"]: j for j in json.loads((tmp_path / "d.json").read_text())["jobs"]}
    assert jobs["psync"]["fastio"]["direct"] is True
    assert jobs["psync"]["job options"]["direct"] == "1"
    assert jobs["read.bytearray"]["fastio"]["status"] == "unavailable"
    assert "O_DIRECT" in jobs["read.bytearray"]["fastio"]["reason"]


def test_sweep_command(tmp_path):
    p = run_cli("sweep", "--method", "psync", "--bs", "64k,256k", "--depth", "1",
                "--size", "1M", "--repeat", "1", "--json", "s.json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    jobs = json.loads((tmp_path / "s.json").read_text())["jobs"]
    assert {j["job options"]["bs"] for j in jobs} == {"65536", "262144"}


def test_list_command(tmp_path):
    p = run_cli("list", cwd=tmp_path)
    assert p.returncode == 0
    for name in METHODS:
        assert name in p.stdout
    for name, info in fastio.backends().items():
        if not info.available:
            assert info.reason in p.stdout


def test_existing_file_is_used_and_left_alone(tmp_path):
    f = tmp_path / "given.bin"
    payload = os.urandom(MIB + 123)
    f.write_bytes(payload)
    p = run_cli("run", "--method", "fastio.read_file", "--file", str(f), "--repeat", "1",
                "--bs", "64k", "--json", "o.json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    data = json.loads((tmp_path / "o.json").read_text())
    assert data["fastio_env"]["file"]["temporary"] is False
    assert all(j["read"]["io_bytes"] == len(payload) for j in data["jobs"])
    assert f.read_bytes() == payload
    assert "(given, " in p.stdout


@pytest.mark.parametrize("cmd", [[], ["run"], ["sweep"], ["list"]])
def test_help_explains_every_option(tmp_path, cmd):
    p = run_cli(*cmd, "--help", cwd=tmp_path)
    assert p.returncode == 0
    text = " ".join(p.stdout.split())
    opts = {(): ["--size", "--file", "--dir", "--repeat", "--json", "--plot", "--cache",
                 "--bs", "--threads", "--baseline", "run", "sweep", "list"],
            ("run",): ["--method", "--group", "--pattern", "--bs", "--depth", "--cache",
                       "--json", "--plot", "O_DIRECT"],
            ("sweep",): ["--method", "--bs", "--depth", "progress"],
            ("list",): ["run here"]}[tuple(cmd)]
    for o in opts:
        assert o in text, o
    for name in METHODS:
        assert name in text


@pytest.mark.parametrize("args, words", [
    (["--size", "-1"], ["--size", "'-1'"]),
    (["--size", "lots"], ["--size", "'lots'"]),
    (["--repeat", "0"], ["--repeat", "'0'"]),
    (["--size", "1M", "--file", "f"], ["not allowed with"]),
    (["--bogus"], ["unrecognized arguments: --bogus"]),
    (["--cache", "hot"], ["--cache", "'hot'"]),
    (["run", "--method", "nope"], ["--method", "unknown method 'nope'"]),
    (["run", "--pattern", "zigzag"], ["--pattern", "'zigzag'"]),
    (["run", "--depth", "0"], ["--depth", "'0'"]),
    (["run", "--bs", "4q"], ["--bs", "'4q'"]),
    (["run", "--group", "nope"], ["unknown group 'nope'"]),
    (["sweep"], ["--method"]),
    (["run", "--bs", "2M", "--size", "1M"], ["block_size=2097152 is larger"]),
])
def test_bad_options_exit_2_with_a_clear_error(tmp_path, args, words):
    p = run_cli(*args, cwd=tmp_path)
    assert p.returncode == 2, p.stderr
    assert "python -m fastio" in p.stderr
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


def test_missing_dir_exits_1(tmp_path):
    p = run_cli("--size", "1M", "--dir", str(tmp_path / "missing"), cwd=tmp_path)
    assert p.returncode == 1
    assert "cannot make the test file" in p.stderr


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130),
                                       (signal.SIGTERM, 128 + signal.SIGTERM)])
def test_interrupted_run_removes_its_file(tmp_path, sig, code):
    work = tmp_path / "w"
    work.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastio", "run", "--method", "read.bytearray", "--bs", "4k",
         "--size", "8M", "--repeat", "1000", "--dir", str(work)], cwd=tmp_path, env=cli_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not any(work.iterdir()):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the temporary file never appeared"
            time.sleep(0.01)
        time.sleep(0.3)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == code, err
    assert list(work.iterdir()) == []


def test_console_script_is_the_same_program(tmp_path):
    script = shutil.which("fastio")
    if script is None:
        pytest.skip("no fastio script on PATH: fastio is not pip-installed here")
    p = subprocess.run([script, "list"], cwd=tmp_path, env=cli_env(), capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    bad = subprocess.run([script, "--size", "-1"], cwd=tmp_path, env=cli_env(),
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "'-1'" in bad.stderr
