"""SIGINT / SIGTERM to the lab's own process (not its group) at six moments of
a default run: each ends within 2 s with status 130 (143), leaves no process
behind and removes its temporary file.

A driver subprocess makes itself a child subreaper (PR_SET_CHILD_SUBREAPER),
so that anything the lab leaves running is re-parented to the driver when
the lab exits, where /proc shows it; the driver kills and reports it.
"""
import json
import os
import signal
import subprocess
import sys

import pytest

import fastio

DRIVER = r'''
import ctypes, json, os, signal, subprocess, sys, time
sig, delay, work = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl(36, 1, 0, 0, 0)                     # PR_SET_CHILD_SUBREAPER
proc = subprocess.Popen([sys.executable, "-m", "fastio", "--size", "32M", "--repeat", "2",
                         "--dir", work], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
first = proc.stderr.readline()                 # the first progress line: the run has begun
time.sleep(delay)
alive = proc.poll() is None
t0 = time.monotonic()
proc.send_signal(sig)                          # the lab's process alone, not its group
try:
    proc.wait(timeout=30)
except subprocess.TimeoutExpired:
    proc.kill()
    proc.wait()
took = time.monotonic() - t0
err = first.decode() + proc.stderr.read().decode()
time.sleep(0.2)
left = []
for pid in os.listdir("/proc"):
    if not pid.isdigit():
        continue
    try:
        with open(f"/proc/{pid}/stat") as f:
            state, ppid = f.read().rsplit(")", 1)[1].split()[:2]
        ppid = int(ppid)
    except (OSError, ValueError, IndexError):
        continue
    # A zombie has exited and holds nothing: it waits for us, the subreaper,
    # to reap it (below). That is what fastio's shm watchdog is once it has
    # cleaned up after a forked IPC child the lab killed.
    if ppid == os.getpid() and state != "Z":
        left.append(int(pid))
for pid in left:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            pass
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
while True:
    try:
        os.waitpid(-1, 0)
    except ChildProcessError:
        break
print(json.dumps({"rc": proc.returncode, "took": took, "alive": alive, "left": left,
                  "files": os.listdir(work), "err": err[-3000:]}))
'''


def _env():
    env = dict(os.environ)
    here = os.path.dirname(os.path.dirname(os.path.abspath(fastio.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([here] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


# six moments of a ~8 s run: first progress line, early, middle, late
MOMENTS = [(signal.SIGINT, d) for d in (0.0, 0.3, 0.9, 1.8, 3.0, 4.5)] + \
          [(signal.SIGTERM, d) for d in (0.5, 2.5)]


@pytest.mark.parametrize("sig, delay", MOMENTS,
                         ids=[f"{signal.Signals(s).name}-{d}s" for s, d in MOMENTS])
def test_signal_at_any_moment_ends_the_lab_cleanly(tmp_path, sig, delay):
    work = tmp_path / "w"
    work.mkdir()
    p = subprocess.run([sys.executable, "-c", DRIVER, str(int(sig)), str(delay), str(work)],
                       env=_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout.strip().splitlines()[-1])
    if not got["alive"]:
        pytest.skip(f"the run had ended {delay} s after its start (a fast machine)")
    assert got["rc"] == 128 + sig, got["err"]
    assert got["took"] < 2.0, got
    assert got["left"] == [], f"processes left running: {got}"
    assert got["files"] == [], got


SWALLOWED = r'''
import os, signal, sys
import fastio.lab.runner as runner
sig = int(sys.argv[1])
make_file = runner.make_file
def make_file_that_swallows(*args, **kwargs):
    # a library that catches everything, as numpy.random's first import did
    # with a KeyboardInterrupt raised inside it
    try:
        os.kill(os.getpid(), sig)
        for _ in range(1000):
            pass
    except BaseException:
        pass
    return make_file(*args, **kwargs)
runner.make_file = make_file_that_swallows
from fastio.lab.cli import main
sys.exit(main(["--size", "1M", "--repeat", "1", "--dir", sys.argv[2]]))
'''


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_swallowed_by_library_code_still_ends_the_run(tmp_path, sig):
    # Deterministic form of the 0.0 s moment above, which failed 1 run in 8:
    # the interrupt landed in a lazy numpy.random import that swallowed it,
    # and the lab ran to the end and exited 0.
    p = subprocess.run([sys.executable, "-c", SWALLOWED, str(int(sig)), str(tmp_path)],
                       env=_env(), capture_output=True, text=True, timeout=120)
    assert p.returncode == 128 + sig, p.stderr
    assert "calls to make" in p.stderr and "repetition" not in p.stderr, p.stderr
    assert os.listdir(tmp_path) == []


def test_kept_signals_leaves_handlers_as_they_were_and_calls_a_quiet_handler_once():
    import threading
    from fastio.lab.runner import KeptSignals
    calls = []
    def quiet(signum, frame):
        calls.append(signum)
    old = signal.signal(signal.SIGINT, quiet)
    try:
        with KeptSignals() as kept:
            assert signal.getsignal(signal.SIGINT) is not quiet
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass
            kept.check()          # the handler did not raise: nothing to raise again
        assert calls == [signal.SIGINT]
        assert signal.getsignal(signal.SIGINT) is quiet
        # outside the main thread it does nothing (and does not fail)
        seen = []
        t = threading.Thread(target=lambda: seen.append(KeptSignals().__enter__()._wrapped))
        t.start()
        t.join()
        assert seen == [{}]
    finally:
        signal.signal(signal.SIGINT, old)
