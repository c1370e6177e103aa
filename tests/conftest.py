"""Shared fixtures and helpers: leak counters, temporary files, forked
children.

Tests count what the kernel says a process holds, not what fastio thinks it
holds: open fds in /proc/self/fd, mappings in /proc/self/maps.
"""
import gc
import json
import multiprocessing
import os
import shutil
import subprocess
import tempfile
import time

import pytest


def count_fds():
    return len(os.listdir("/proc/self/fd"))


def count_maps():
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)


# FASTIO_VALGRIND=1 tells a test that it runs under valgrind's memcheck
# (.ci/run's valgrind step), for the rare one that cannot: it must skip
# saying why.
UNDER_VALGRIND = os.environ.get("FASTIO_VALGRIND") == "1"
# Under valgrind, /proc/self/maps also lists valgrind's own memory (its
# translation cache and arenas, in the same process), which grows as new code
# runs: mappings are counted loosely there, fds still exactly.
VALGRIND_MAP_SLACK = 64


class LeakCheck:
    """Snapshot fds and mappings; check() asserts they came back.

    A little slack for mappings: the allocator may map or unmap an arena of
    its own during a long loop, which is not fastio's doing.
    """

    def __init__(self, map_slack=4):
        self.map_slack = map_slack + (VALGRIND_MAP_SLACK if UNDER_VALGRIND else 0)
        gc.collect()
        self.fds = count_fds()
        self.maps = count_maps()

    def check(self):
        gc.collect()
        assert count_fds() == self.fds, "file descriptors leaked"
        assert count_maps() <= self.maps + self.map_slack, (
            f"mappings leaked: {self.maps} before, {count_maps()} after")


@pytest.fixture
def leakcheck():
    """Usage: def test_x(leakcheck): ...; leakcheck.check() at the end."""
    return LeakCheck()


@pytest.fixture
def datafile(tmp_path):
    """make(n) writes n bytes of deterministic, non-repeating data."""

    def make(n, name="data.bin"):
        p = tmp_path / name
        data = os.urandom(n) if n else b""
        p.write_bytes(data)
        return p, data

    return make


def fork(fn, *args):
    """Run fn(*args) in a forked child; exit code 0 when it returns."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            fn(*args)
        except BaseException:
            import traceback
            traceback.print_exc()
            code = 1
        os._exit(code)
    return pid


def join(pid):
    """Wait for a child from fork(); its exit code."""
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _noop():
    pass


@pytest.fixture(scope="module")
def mp_warm():
    """Load what multiprocessing loads once per process (modules, shared
    libraries) before the leak counters are taken: those are not leaks."""
    ctx = multiprocessing.get_context("fork")
    r, w = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_noop)
    p.start()
    p.join()
    r.close()
    w.close()


# ---------------------------------------------------------------- nothing left behind
#
# The whole run must leave no System V segment, no POSIX segment, no memfd
# and no temporary file behind. Other sessions may run fastio's tests on
# the same machine at the same time, so only what this run made is
# compared: System V segments whose creator pid is this process or one of
# its children (recorded at fork and at subprocess start), /dev/shm names
# that carry one of those pids (the tests' own prefixes) or that a registry
# record of this run names, memfds held by this process, and files left in
# the run's own TMPDIR. Each leftover is named with the test during which it
# appeared, then removed, and the session fails.

_SESSION_PIDS = {os.getpid()}
_APPEARED = {}   # ("sysv", id), ("posix", name), ("tmp", name) -> the test it appeared in
_RUN_TMP = []    # the run's own TMPDIR, once the session fixture made it


def _sysv_now():
    rows = {}
    try:
        with open("/proc/sysvipc/shm") as f:
            header = f.readline().split()
            for line in f:
                row = dict(zip(header, line.split()))
                if row:
                    rows[int(row["shmid"])] = (int(row["cpid"]), int(row["uid"]))
    except FileNotFoundError:
        pass
    return rows


def _dev_shm_now():
    try:
        return set(os.listdir("/dev/shm"))
    except FileNotFoundError:
        return set()


def _memfds_now():
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("/memfd:"):
            out.add((int(fd), target))
    return out


def _record_child_pid(pid_file, pid):
    try:
        fd = os.open(pid_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        return
    try:
        os.write(fd, f"{pid}\n".encode())
    finally:
        os.close(fd)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    sysv, shm, tmp = set(_sysv_now()), _dev_shm_now(), _tmp_now()
    yield
    for i in set(_sysv_now()) - sysv:
        _APPEARED.setdefault(("sysv", i), item.nodeid)
    for n in _dev_shm_now() - shm:
        _APPEARED.setdefault(("posix", n), item.nodeid)
    for n in _tmp_now() - tmp:
        _APPEARED.setdefault(("tmp", n), item.nodeid)


def _tmp_now():
    try:
        return set(os.listdir(_RUN_TMP[0])) if _RUN_TMP else set()
    except FileNotFoundError:
        return set()


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind(tmp_path_factory):
    tmp_path_factory.getbasetemp()  # pytest's own folders stay where they were
    uid = os.getuid()
    sysv_before = set(_sysv_now())
    shm_before = _dev_shm_now()
    memfd_before = _memfds_now()
    session = tempfile.mkdtemp(prefix=f"fastio-session-{os.getpid()}-")
    pid_file = os.path.join(session, "pids")
    run_tmp = os.path.join(session, "tmp")
    registry = os.path.join(session, "registry")
    os.mkdir(run_tmp)
    _RUN_TMP.append(run_tmp)
    saved = {k: os.environ.get(k) for k in ("TMPDIR", "FASTIO_SHM_REGISTRY")}
    os.environ["TMPDIR"] = run_tmp            # children inherit it
    os.environ["FASTIO_SHM_REGISTRY"] = registry
    tempfile.tempdir = None                   # re-read TMPDIR
    os.register_at_fork(after_in_child=lambda: _record_child_pid(pid_file, os.getpid()))
    real_execute_child = subprocess.Popen._execute_child

    def execute_child(self, *args, **kwargs):
        try:
            return real_execute_child(self, *args, **kwargs)
        finally:
            if getattr(self, "pid", None):
                _SESSION_PIDS.add(self.pid)

    subprocess.Popen._execute_child = execute_child
    # The shm watchdog's pipe is opened by the first creating SharedMemory of
    # a process; open it now, before any test counts its fds.
    import fastio.shm
    fastio.shm._watchdog_fd()
    yield
    subprocess.Popen._execute_child = real_execute_child
    gc.collect()
    pids = set(_SESSION_PIDS)
    try:
        with open(pid_file) as f:
            pids.update(int(x) for x in f.read().split())
    except FileNotFoundError:
        pass
    left = []
    # A moment for children killed at the very end to be gone.
    for _ in range(20):
        sysv_left = {i for i, (cpid, owner) in _sysv_now().items()
                     if i not in sysv_before and owner == uid and cpid in pids}
        if not sysv_left:
            break
        time.sleep(0.05)
    for i in sorted(sysv_left):
        left.append(f"System V segment id {i} (appeared in {_APPEARED.get(('sysv', i), '?')})")
        try:
            fastio.shm._core.sysv_remove(i)
        except OSError:
            pass
    ours = set()
    for n in _dev_shm_now() - shm_before:
        if any(n.startswith((f"fio{p}", f"fastio-test-{p}-")) for p in pids):
            ours.add(n)
    basetemp = str(tmp_path_factory.getbasetemp())
    for root in (registry, basetemp):
        for dirpath, _dirs, files in os.walk(root):
            for fn in files:
                if not fn.startswith("posix-"):
                    continue
                # A record of this run whose segment still exists (the same
                # inode): a test left it, persist=True or not.
                try:
                    with open(os.path.join(dirpath, fn)) as f:
                        rec = json.load(f)
                    st = os.stat(f"/dev/shm/{rec['name']}")
                    if rec.get("ino") in (None, st.st_ino):
                        ours.add(rec["name"])
                except (OSError, ValueError, KeyError, TypeError):
                    pass
    for n in sorted(ours - shm_before):
        left.append(f"/dev/shm/{n} (appeared in {_APPEARED.get(('posix', n), '?')})")
        try:
            os.unlink(f"/dev/shm/{n}")
        except OSError:
            pass
    for fd, target in sorted(_memfds_now() - memfd_before):
        left.append(f"memfd fd {fd} {target}")
    for fn in sorted(os.listdir(run_tmp)):
        if fn.startswith("pymp-"):
            continue  # multiprocessing's own folder of this process: removed at exit
        left.append(f"temporary file {fn} in the run's TMPDIR "
                    f"(appeared in {_APPEARED.get(('tmp', fn), '?')})")
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    tempfile.tempdir = None
    # multiprocessing removes its pymp- folder at exit (a finalizer of
    # priority -100): remove the session's folder after it.
    import multiprocessing.util
    multiprocessing.util.Finalize(None, shutil.rmtree, args=(session,),
                                  kwargs={"ignore_errors": True}, exitpriority=-200)
    assert not left, "the test run left behind:\n  " + "\n  ".join(left)


def pytest_sessionfinish(session, exitstatus):
    """FASTIO_ASSERT_GIL_OFF=1 (.ci/freethreaded.sh): fail the run if the
    GIL was on at its end (something turned it back on during the suite:
    fastio's import, or a module a test imported)."""
    import sys
    gil_on = getattr(sys, "_is_gil_enabled", lambda: True)()
    if os.environ.get("FASTIO_ASSERT_GIL_OFF") == "1" and gil_on:
        print("\nFASTIO_ASSERT_GIL_OFF: the GIL is on at the end of the run", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
