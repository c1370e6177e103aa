"""Nothing left behind: a killed creator's segments, a planted registry
folder, and the `fastio shm` command line.

Every scenario runs in subprocesses with a private registry (and, where the
registry's location is the point, a private TMPDIR), so that nothing here
can disturb another test or another user of the machine.
"""
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

import fastio

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastio.__file__)))


def _env(tmp_path, **extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["FASTIO_SHM_REGISTRY"] = str(tmp_path / "registry")
    env.update(extra)
    return env


def _sysv_ids_of(pids):
    out = set()
    with open("/proc/sysvipc/shm") as f:
        header = f.readline().split()
        for line in f:
            row = dict(zip(header, line.split()))
            if row and int(row["cpid"]) in pids:
                out.add(int(row["shmid"]))
    return out


CREATOR = r"""
import pickle, sys, time
import fastio
kind = sys.argv[1]
if kind == "array":
    obj = fastio.SharedArray(1000, "i8")     # the default backend
    obj[:] = 7
    name = obj.segment.name
    handle = pickle.dumps(obj)
else:
    obj = fastio.SharedMemory(create=True, size=8000)   # the defaults
    obj.buf[:8] = (7).to_bytes(8, "little")
    name = obj.name
    handle = pickle.dumps(obj.name)
open(sys.argv[2], "wb").write(handle)
print(name, flush=True)
time.sleep(600)
"""

WORKER = r"""
import pickle, sys
import fastio
kind = sys.argv[1]
handle = pickle.loads(open(sys.argv[2], "rb").read())
if kind == "array":
    arr = handle
else:
    seg = fastio.SharedMemory(handle)
    arr = seg.asarray("i8")
print("attached", int(arr[0]), flush=True)
for line in sys.stdin:
    arr[:] += 1                      # still reads and writes the memory
    print(int(arr.sum()) if kind == "array" else int(arr[0]), flush=True)
"""


@pytest.mark.parametrize("kind", ["array", "shm"])
def test_sigkilled_creator_leaves_nothing(tmp_path, kind):
    """A creator killed with SIGKILL: its worker keeps working; once the
    worker exits, nothing is left in /dev/shm, in System V or in the
    registry (before the watchdog, fio_... stayed in /dev/shm)."""
    env = _env(tmp_path)
    handle = tmp_path / "handle.pickle"
    creator = subprocess.Popen([sys.executable, "-c", CREATOR, kind, str(handle)],
                               stdout=subprocess.PIPE, text=True, env=env)
    worker = name = None
    try:
        name = creator.stdout.readline().strip()
        assert name and os.path.exists(f"/dev/shm/{name}")
        worker = subprocess.Popen([sys.executable, "-c", WORKER, kind, str(handle)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True, env=env)
        assert worker.stdout.readline().split() == ["attached", "7"]
        creator.send_signal(signal.SIGKILL)
        creator.wait(30)
        worker.stdin.write("go\n")
        worker.stdin.flush()
        expected = 8000 if kind == "array" else 8
        assert int(worker.stdout.readline()) == expected, "the worker lost its memory"
        worker.stdin.close()
        assert worker.wait(30) == 0
        deadline = time.monotonic() + 10
        while os.path.exists(f"/dev/shm/{name}") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not os.path.exists(f"/dev/shm/{name}"), "the killed creator's segment stayed"
        assert not _sysv_ids_of({creator.pid, worker.pid})
        assert os.listdir(tmp_path / "registry") == [], "its record stayed"
    finally:
        for p in (creator, worker):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        if name:
            try:
                os.unlink(f"/dev/shm/{name}")
            except FileNotFoundError:
                pass


def test_watchdog_leaves_a_named_segment_reattachable_while_creator_lives(tmp_path):
    """The watchdog acts only at the creator's death: a name stays
    attachable by name (the stdlib's interface) while its creator lives,
    and a persist=True segment is never touched."""
    code = r"""
import os, signal, sys, subprocess, time
import fastio
a = fastio.SharedMemory(create=True, size=100)
p = fastio.SharedMemory(create=True, size=100, persist=True)
b = fastio.SharedMemory(a.name)          # attach by name
b.close()
print(a.name, p.name, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
    out = subprocess.run([sys.executable, "-c", code], env=_env(tmp_path),
                         stdout=subprocess.PIPE, text=True)
    assert out.returncode == -signal.SIGKILL
    gone, kept = out.stdout.split()
    try:
        deadline = time.monotonic() + 10
        while os.path.exists(f"/dev/shm/{gone}") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not os.path.exists(f"/dev/shm/{gone}")
        assert os.path.exists(f"/dev/shm/{kept}"), "persist=True must survive its creator"
    finally:
        for n in (gone, kept):
            try:
                os.unlink(f"/dev/shm/{n}")
            except FileNotFoundError:
                pass


# ---------------------------------------------------------------- a planted registry folder

PLANTED = r"""
import os, sys, warnings
import fastio   # before dropping root: the interpreter's files may be root's only
uid = int(sys.argv[1])
if uid != os.getuid():
    os.setgid(uid)
    os.setuid(uid)
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    seg = fastio.SharedMemory(create=True, size=100)
    seg2 = fastio.SharedMemory(create=True, size=100)
try:
    where = fastio.registry_dir()
except PermissionError:
    where = None
listed = [s.name for s in fastio.shm_segments()] if where else []
# (The watchdog may fail to start as another uid: /root/.pyenv is root's.)
print(repr((where, seg.name in listed,
            [str(x.message) for x in w if "watchdog" not in str(x.message)])))
seg.close()
seg2.close()
"""


def _run_planted(tmp_path, uid, cache):
    env = _env(tmp_path, TMPDIR=str(tmp_path / "tmp"), XDG_CACHE_HOME=str(cache),
               HOME=str(tmp_path / "home"))
    del env["FASTIO_SHM_REGISTRY"]
    env.pop("XDG_RUNTIME_DIR", None)
    out = subprocess.run([sys.executable, "-c", PLANTED, str(uid)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert out.returncode == 0, out.stderr
    import ast
    return ast.literal_eval(out.stdout)


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="planting a folder of another uid needs root")


@needs_root
def test_planted_registry_folder_of_another_uid(tmp_path):
    """Another user (root here) made <tempdir>/fastio-shm-<uid> first: the
    create still works (it used to raise PermissionError), and the records
    go to the user's own cache folder, where shm_segments() finds them."""
    uid = 12345
    # pytest's tmp_path is under a root-only folder: the other uid could
    # not reach it (and would fall back to /tmp itself).
    # (So is the session's TMPDIR, see conftest.py: /tmp itself then.)
    top = tempfile.mkdtemp(prefix="fastio-test-planted-", dir="/tmp")
    try:
        os.chmod(top, 0o755)
        base = pathlib.Path(top)
        tmp = base / "tmp"
        tmp.mkdir()
        os.chmod(tmp, 0o1777)
        (tmp / f"fastio-shm-{uid}").mkdir(mode=0o700)       # planted by root
        cache = base / "cache"
        cache.mkdir()
        os.chown(cache, uid, uid)
        where, listed, warned = _run_planted(base, uid, cache)
        assert where == str(cache / "fastio-shm")
        assert listed and warned == []
    finally:
        shutil.rmtree(top)


@needs_root
def test_planted_registry_folder_for_this_uid(tmp_path):
    """The folder for this user's name owned by someone else (uid 12345)."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    planted = tmp / f"fastio-shm-{os.getuid()}"
    planted.mkdir(mode=0o700)
    os.chown(planted, 12345, 12345)
    where, listed, warned = _run_planted(tmp_path, os.getuid(), tmp_path / "cache")
    assert where == str(tmp_path / "cache" / "fastio-shm")
    assert listed and warned == []
    assert os.listdir(planted) == []


@needs_root
def test_no_usable_registry_creates_without_record_and_warns_once(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    for d in (tmp / f"fastio-shm-{os.getuid()}", tmp_path / "cache"):
        d.mkdir(mode=0o700)
        os.chown(d, 12345, 12345)
    (tmp_path / "cache" / "fastio-shm").mkdir(mode=0o700)
    os.chown(tmp_path / "cache" / "fastio-shm", 12345, 12345)
    where, listed, warned = _run_planted(tmp_path, os.getuid(), tmp_path / "cache")
    assert where is None and not listed
    assert len(warned) == 1 and "without a record" in warned[0]


# ---------------------------------------------------------------- fastio shm list / cleanup

ORPHAN = r"""
import os, signal
import fastio, fastio.shm
seg = fastio.SharedMemory(create=True, size=4096)
print(seg.name, flush=True)
# Without its watchdog (as where it cannot start), a killed creator leaves
# an orphan: the case 'fastio shm cleanup' is for.
os.kill(fastio.shm._watchdog[2], signal.SIGKILL)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _cli(env, *args):
    return subprocess.run([sys.executable, "-m", "fastio", "shm", *args], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=60)


def test_cli_list_and_cleanup_remove_only_orphans(tmp_path):
    env = _env(tmp_path)
    out = subprocess.run([sys.executable, "-c", ORPHAN], env=env, stdout=subprocess.PIPE,
                         text=True, timeout=60)
    orphan = out.stdout.strip()
    alive = None
    try:
        assert out.returncode == -signal.SIGKILL and os.path.exists(f"/dev/shm/{orphan}")
        # A live creator's segment (this process, the same private registry).
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("FASTIO_SHM_REGISTRY", env["FASTIO_SHM_REGISTRY"])
            alive = fastio.SharedMemory(create=True, size=8192)
        listed = _cli(env, "list")
        assert listed.returncode == 0, listed.stderr
        lines = {ln.split()[1]: ln.split() for ln in listed.stdout.splitlines()[1:]}
        assert lines[orphan][:5] == ["posix", orphan, lines[orphan][2], lines[orphan][3],
                                     "orphaned"]
        assert lines[alive.name][3:5] == [str(os.getpid()), "alive"]
        rows = {r["name"]: r for r in json.loads(_cli(env, "list", "--json").stdout)}
        assert rows[orphan]["state"] == "orphaned" and rows[orphan]["size"] == 4096
        assert rows[alive.name]["state"] == "alive" and rows[alive.name]["pid"] == os.getpid()

        dry = _cli(env, "cleanup", "--dry-run")
        assert dry.returncode == 0 and f"would remove posix {orphan}" in dry.stdout
        assert alive.name not in dry.stdout
        assert os.path.exists(f"/dev/shm/{orphan}"), "--dry-run removed something"

        done = _cli(env, "cleanup")
        assert done.returncode == 0 and f"removed posix {orphan}" in done.stdout
        assert not os.path.exists(f"/dev/shm/{orphan}")
        assert os.path.exists(f"/dev/shm/{alive.name}"), "cleanup removed a live one"
        assert orphan not in _cli(env, "list").stdout
        assert "no orphans" in _cli(env, "cleanup").stdout
    finally:
        if alive is not None:
            alive.close()
        if orphan:
            try:
                os.unlink(f"/dev/shm/{orphan}")
            except FileNotFoundError:
                pass


def test_cli_bad_usage_and_unusable_registry(tmp_path):
    env = _env(tmp_path)
    bad = _cli(env, "frobnicate")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
    d = tmp_path / "open"
    d.mkdir()
    os.chmod(d, 0o777)
    env["FASTIO_SHM_REGISTRY"] = str(d)
    out = _cli(env, "list")
    assert out.returncode == 1 and "no usable shm registry" in out.stderr


def test_watchdog_never_writes_into_a_reused_descriptor(tmp_path):
    """A program that closes every descriptor (os.closerange) and opens a
    file that gets the watchdog pipe's number: fastio starts a new watchdog
    instead of writing its lines into that file."""
    code = r"""
import os, sys
import fastio, fastio.shm
a = fastio.SharedMemory(create=True, size=100)
old = fastio.shm._watchdog[1]
os.close(old)
f = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fd = os.dup2(f, old)          # the pipe's number now names the file
os.close(f)
b = fastio.SharedMemory(create=True, size=100)
a.close(); b.close()
os.close(fd)
print(os.path.getsize(sys.argv[1]), fastio.shm._watchdog[1] != old)
"""
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "victim")],
                         env=_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", "True"]


def _gone_within(names, seconds=10):
    deadline = time.monotonic() + seconds
    while any(os.path.exists(f"/dev/shm/{n}") for n in names) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [n for n in names if os.path.exists(f"/dev/shm/{n}")]


def _unlink_all(names):
    for n in names:
        try:
            os.unlink(f"/dev/shm/{n}")
        except FileNotFoundError:
            pass


def _creator_killed_leaves_nothing(code, tmp_path, what_failed):
    """Run code (it prints two segment names and a check that must be True,
    then SIGKILLs itself); both segments must be gone soon after."""
    out = subprocess.run([sys.executable, "-c", code], env=_env(tmp_path),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    names = out.stdout.split()[:2]
    try:
        assert out.returncode == -signal.SIGKILL, out.stderr
        assert out.stdout.split()[2] == "True", what_failed
        assert _gone_within(names) == [], "a killed creator's segment stayed"
    finally:
        _unlink_all(names)


def test_watchdog_cut_off_by_a_closed_pipe_does_not_unlink_live_segments(tmp_path):
    """A program that closes the watchdog's pipe (os.closerange) while it
    still uses its segments: the watchdog reads end of file, but the creator
    lives, so it waits for the creator's exit before unlinking (it used to
    unlink the live segment at once). A second segment made afterwards gets
    a new watchdog that is told about both."""
    code = r"""
import os, signal, sys, time
import fastio, fastio.shm
a = fastio.SharedMemory(create=True, size=100)
os.close(fastio.shm._watchdog[1])
time.sleep(0.5)                      # the old watchdog has read end of file
alive = os.path.exists("/dev/shm/" + a.name)
b = fastio.SharedMemory(create=True, size=100)
print(a.name, b.name, alive, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
    _creator_killed_leaves_nothing(code, tmp_path, "the live segment was unlinked")


def test_killed_watchdog_is_replaced_and_told_every_owned_segment(tmp_path):
    """The watchdog killed (by a careless `pkill python`): the next segment
    operation finds its pipe broken, starts a new one and sends it every
    segment the process still owns, so a later SIGKILL of the creator
    still leaves nothing behind."""
    code = r"""
import os, signal, sys
import fastio, fastio.shm
a = fastio.SharedMemory(create=True, size=100)
old = fastio.shm._watchdog[2]
os.kill(old, signal.SIGKILL)
os.waitpid(old, 0)
b = fastio.SharedMemory(create=True, size=100)
print(a.name, b.name, fastio.shm._watchdog[2] != old, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
    _creator_killed_leaves_nothing(code, tmp_path, "no new watchdog")
