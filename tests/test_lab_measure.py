"""The lab measures like a careful experimenter (issue 11): rounds, warm-up,
isolation, memory state, spread, one-sample figures, the memory methods,
children's CPU, progress, and what a notebook shows. Small files: fast."""
import io
import json
import os
import re
import threading
import time

import numpy as np
import pytest

import fastio
from fastio import lab
from fastio.lab import METHODS, Job, Results
from fastio.lab import runner
from fastio.lab.methods import register

KIB = 1 << 10
MIB = 1 << 20


@pytest.fixture(scope="module")
def datafile(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "data.bin"
    path.write_bytes(np.random.default_rng(5).bytes(2 * MIB))
    return str(path)


@pytest.fixture(scope="module")
def res(datafile):
    return lab.run(["fastio.read_file", "ipc.pipe", "hugepages", "mmap.anonymous",
                    "mmap.shared", "psync"], file=datafile, block_size="256k", repeat=3,
                   progress=False, seed=3)


def test_warmup_then_rounds_in_a_new_order_each(res):
    order = res.env["order"]
    assert res.env["warmup_rounds"] == 1 and len(order) == 1 + 3
    assert all(sorted(o) == sorted(order[0]) for o in order)
    assert len({tuple(o) for o in order}) > 1          # not the same order every round
    reps = {}
    for r in res.records:
        reps.setdefault(r["method"], []).append(r["repetition"])
    assert all(sorted(v) == [0, 1, 2] for v in reps.values())   # the warm-up is not kept


def test_same_seed_same_order(datafile):
    a = runner._rounds(list(METHODS.values()), 3, 7, True)
    b = runner._rounds(list(METHODS.values()), 3, 7, True)
    assert [[m.name for m in o] for o in a] == [[m.name for m in o] for o in b]
    for order in a:   # each family's methods together: a method runs near its baseline
        groups = [m.group for m in order]
        runs = [g for i, g in enumerate(groups) if i == 0 or groups[i - 1] != g]
        assert len(runs) == len(set(groups))
    assert len({tuple(m.name for m in o) for o in a}) == len(a)


def test_memory_state_is_recorded_and_the_fresh_cost_measured(res):
    mem = res.env["memory"]
    for state in ("fresh", "recycled"):
        for page in ("4k", "2m"):
            d = mem[state][page]
            assert d["ms"] > 0 and d["us_per_page"] > 0 and d["minor_faults"] > 0
    assert mem["fresh"]["4k"]["minor_faults"] >= mem["bytes"] // 4096 * 0.9
    assert "recycled" in mem["policy"]
    assert all(r["memory"] == "recycled" for r in res.records if r["status"] == "ok")
    line = lab.runner.describe_memory(mem)
    assert "4 KiB page" in line and "2 MiB page" in line


@pytest.mark.parametrize("what", ["thread", "descriptor"])
def test_a_method_that_leaves_something_running_fails_loudly(datafile, what, monkeypatch):
    monkeypatch.setattr(runner, "SURVIVOR_GRACE_S", 0.3)  # what stays, stays
    stop = threading.Event()
    fds = []

    @register("test.leaky", group="read/write", whole_file=True)
    def leaky(job):
        if what == "thread":
            threading.Thread(target=stop.wait, daemon=True).start()
        else:
            fds.extend(os.pipe())
        return lab.Outcome(os.path.getsize(job.path), 1, np.array([1], np.int64))
    try:
        r = lab.run(["test.leaky"], file=datafile, repeat=1, warmup=False, progress=False)
        rec = r.records[0]
        assert rec["status"] == "error"
        assert "left running" in rec["reason"] and what in rec["reason"]
        if what == "thread":  # the report names the thread: "TID (comm)"
            # (3.14+ names the OS thread after the Python one: "Thread-3 (wait)",
            # cut to 15 bytes, so the name may hold spaces and parentheses)
            assert re.search(r"thread\(s\) \(\d+ \(.+\)\)$", rec["reason"]), rec["reason"]
        assert not r.ok
    finally:
        stop.set()
        for fd in fds:
            os.close(fd)
        del METHODS["test.leaky"]


def test_a_pool_whose_idle_threads_end_on_their_own_timer_is_waited_for(datafile):
    """glibc's POSIX aio pool (aio.posix_aio) ends its threads 1 s after
    their last request, later on a loaded machine: the runner waits for
    them (CI saw "left running: 1 thread(s)" with a 1 s wait). This method's
    thread ends 1.5 s after the call, as a late glibc thread would."""
    @register("test.lingering", group="read/write", whole_file=True)
    def lingering(job):
        threading.Thread(target=time.sleep, args=(1.5,)).start()
        return lab.Outcome(os.path.getsize(job.path), 1, np.array([1], np.int64))
    try:
        r = lab.run(["test.lingering"], file=datafile, repeat=1, warmup=False, progress=False)
        recs = [x for x in r.records if x["method"] == "test.lingering"]
        assert [x["status"] for x in recs] == ["ok"], [x["reason"] for x in recs]
        assert lab.runner.SURVIVOR_GRACE_S > 1.5
    finally:
        del METHODS["test.lingering"]


def test_posix_aio_leaves_no_thread_behind(datafile):
    """The real pool: aio.posix_aio's glibc threads are gone before the
    runner's next method (the runner's check passed, status ok)."""
    r = lab.run(["aio.posix_aio"], file=datafile, repeat=2, warmup=False, progress=False)
    recs = [x for x in r.records if x["method"] == "aio.posix_aio"]
    if recs[0]["status"] == "unavailable":
        pytest.skip(recs[0]["reason"])
    assert [x["status"] for x in recs] == ["ok", "ok"], [x["reason"] for x in recs]


def test_whole_file_rows_print_a_dash_for_one_sample_figures(res):
    row = [r for r in res.summary() if r["method"] == "fastio.read_file"][0]
    assert row["single_sample"] and row["iops"] is None and row["latency_ns"]["p99"] is None
    line = [ln for ln in res.table().splitlines() if "fastio.read_file" in ln][0]
    cells = line.split()
    assert cells.count("-") >= 4          # IOPS, p50, p99, p99.9
    assert "one request per repetition" in res.table()


def test_every_row_has_its_spread_and_the_ratio_its_range(res):
    rows = res.summary()
    for r in rows:
        if r.get("throughput_Bps"):
            recs = [x["throughput_Bps"] for x in res.records
                    if x["method"] == r["method"] and x["status"] == "ok"]
            assert r["throughput_min"] == min(recs) and r["throughput_max"] == max(recs)
            assert r["spread"] == pytest.approx(max(recs) / min(recs))
            assert r["spread_flag"] == (r["spread"] > 1.5)
    r = [x for x in rows if x["method"] == "fastio.read_file"][0]
    mine = {x["repetition"]: x["throughput_Bps"] for x in res.records
            if x["method"] == "fastio.read_file"}
    base = {x["repetition"]: x["throughput_Bps"] for x in res.records
            if x["method"] == "numpy.fromfile"}
    paired = [mine[k] / base[k] for k in mine]
    assert r["ratio_min"] == pytest.approx(min(paired))
    assert r["ratio_max"] == pytest.approx(max(paired))
    head = res.table().splitlines()[0]
    assert "MB/s min-max" in head and "ratio min-max" in head


def test_flagged_rows_have_a_footnote(res):
    recs = [dict(r) for r in res.records]
    for r in recs:
        if r["method"] == "psync" and r["repetition"] == 0:
            r["throughput_Bps"] /= 4
    text = Results(recs, res.env).table()
    line = [ln for ln in text.splitlines() if ln.strip().startswith(("psync", "* psync"))][0]
    assert " !" in line
    assert "raise --repeat" in text


def test_json_keeps_every_repetition_and_the_summary(res, tmp_path):
    d = json.loads(res.to_json())
    assert len(d["jobs"]) == len(res.records)
    summ = {r["method"]: r for r in d["fastio_summary"]}
    assert summ["psync"]["throughput_min"] <= summ["psync"]["throughput_Bps"] <= \
        summ["psync"]["throughput_max"]
    assert "ratio_min" in summ["psync"] and "spread" in summ["psync"]
    assert d["fastio_env"]["cpu_counted"].startswith("this process")


def test_ipc_cpu_counts_the_receiving_child(res):
    recs = [r for r in res.records if r["method"] == "ipc.pipe" and r["status"] == "ok"]
    assert recs
    for r in recs:
        assert r["cpu"]["children_user_s"] + r["cpu"]["children_sys_s"] > 0
        assert "RUSAGE_CHILDREN" in r["cpu"]["counted"]
    row = [x for x in res.summary() if x["method"] == "ipc.pipe"][0]
    assert row["cpu_s"] >= min(r["cpu"]["children_user_s"] + r["cpu"]["children_sys_s"]
                               for r in recs)


def test_hugepages_asks_for_2mib_units(datafile):
    # 256 KiB blocks out of 2 MiB units: ~one fault per 2 MiB, not per 4 KiB
    offs = lab.offsets_for(2 * MIB, 256 * KIB, "seq")
    job = Job(datafile, 2 * MIB, 256 * KIB, offs)
    fn = METHODS["hugepages"].fn
    fn(job)
    import resource
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    fn(job)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
    if faults > 64:
        pytest.skip(f"transparent huge pages not granted here ({faults} faults for 2 MiB)")
    assert faults < 2 * MIB // 4096 // 4


def test_mmap_anonymous_is_private_and_mmap_shared_is_shared():
    assert "MAP_PRIVATE" in METHODS["mmap.anonymous"].description
    assert "MAP_SHARED" in METHODS["mmap.shared"].description
    maps_before = open("/proc/self/maps").read()
    a = METHODS["mmap.anonymous"]
    # the allocation the method makes: a private mapping (no /dev/zero, no shmem)
    m = fastio.mmap(-1, 1 << 16, flags=fastio.MAP_PRIVATE)
    try:
        addr = np.frombuffer(m, np.uint8).ctypes.data
        line = [ln for ln in open("/proc/self/maps") if
                int(ln.split("-")[0], 16) <= addr < int(ln.split()[0].split("-")[1], 16)][0]
        assert line.split()[1][3] == "p" and "zero" not in line
    finally:
        m.close()
    assert a.group == "malloc/brk" and maps_before


def test_sync_methods_say_depth_does_not_apply(datafile):
    r = lab.run(["psync", "aio.threads"], file=datafile, block_size="256k", depth=4,
                repeat=1, warmup=False, progress=False)
    recs = {x["method"]: x for x in r.records}
    assert recs["psync"]["depth_applies"] is False
    assert recs["aio.threads"]["depth_applies"] is True
    assert "does not apply" in r.table()


def test_progress_lines_and_silence(datafile, capsys):
    lab.run(["psync"], file=datafile, block_size="256k", repeat=1, progress=False)
    assert capsys.readouterr().err == ""
    lab.run(["psync"], file=datafile, block_size="256k", repeat=1, progress=True)
    err = capsys.readouterr().err
    assert "calls to make" in err and "elapsed" in err and "left" in err
    assert "psync" in err and "repetition" in err


def test_progress_on_a_terminal_is_one_live_line():
    class Tty(io.StringIO):
        def isatty(self):
            return True
    out = Tty()
    p = runner.Progress(2, "lab", True, stream=out)
    p.plan(["a", "b"])
    p.start("a", "1/1")
    p.finish()
    p.start("b", "1/1")
    p.finish()
    p.close()
    text = out.getvalue()
    assert text.count("\n") == 1 and "\r" in text and "b (repetition 1/1)" in text


def test_progress_in_a_notebook_uses_tqdm(monkeypatch):
    tqdm = pytest.importorskip("tqdm.auto")
    made = []

    class Bar:
        def __init__(self, **kw):
            made.append(kw)
            self.n = 0

        def update(self, k):
            self.n += k

        def set_postfix_str(self, s, refresh=True):
            self.post = s

        def close(self):
            made.append("closed")
    monkeypatch.setattr(runner, "_in_notebook", lambda: True)
    monkeypatch.setattr(tqdm, "tqdm", lambda total, desc, leave: Bar(total=total))
    p = runner.Progress(1, "lab", True)
    p.start("psync", "1/1")
    p.finish()
    p.close()
    assert made[0] == {"total": 1} and made[-1] == "closed"


def test_repr_and_html(res):
    text = repr(res)
    assert text.startswith("<fastio.lab.Results:") and "methods" in text and "fastest" in text
    assert len(text) < 300
    html = res._repr_html_()
    assert html.startswith("<table>") and "MB/s min-max" in html
    for m in res.methods:
        assert m in html


def test_shm_watchdog_started_before_the_first_timed_call(tmp_path):
    """fastio.SharedMemory's first create in a process starts its watchdog
    (a child and a pipe, by design). In a fresh process without a warm-up
    round, shm.posix's first repetition used to be an error: the isolation
    check saw the watchdog as a child and a descriptor left running."""
    import subprocess
    import sys
    code = ("from fastio import lab, shm\n"
            "assert shm._watchdog is None\n"
            "res = lab.run(['shm.posix'], size='4M', repeat=2, warmup=False, progress=False,"
            f" directory={str(tmp_path)!r})\n"
            "print([(r['method'], r['status'], r.get('reason')) for r in res.records])\n"
            "assert all(r['status'] == 'ok' for r in res.records)\n")
    here = os.path.dirname(os.path.dirname(os.path.abspath(fastio.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [here] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120, env=env, cwd=str(tmp_path))
    assert p.returncode == 0, p.stdout + p.stderr


IPC_METHODS = [n for n, m in METHODS.items() if m.group == "shared memory"]


@pytest.mark.parametrize("where", ["fork", "pipe"])
@pytest.mark.parametrize("name", IPC_METHODS)
def test_ipc_method_that_fails_before_its_child_leaves_nothing(datafile, monkeypatch,
                                                               name, where):
    # os.fork (EAGAIN) or os.pipe (EMFILE) failing after the method made its
    # channel or segment: the segment, the pipes and the map are given back.
    m = METHODS[name]
    if m.unavailable("warm"):
        pytest.skip(m.unavailable("warm"))
    if name == "shm.posix":
        from fastio import shm
        shm._watchdog_fd()   # its pipe and child are the module's, not the method's
    job = Job(datafile, 2 * MIB, 256 * KIB, np.arange(8, dtype=np.int64) * 256 * KIB, 1,
              False, "seq", False)
    if where == "fork":
        def fail_fork():
            raise BlockingIOError(11, "Resource temporarily unavailable")
        monkeypatch.setattr(os, "fork", fail_fork)
        exc = BlockingIOError
    else:
        real_pipe = os.pipe
        calls = []

        def fail_last_pipe():
            calls.append(1)
            # the method's own os.pipe is the last one it makes: fail each
            # call from the second on (a maker's own pipe is the first)
            if len(calls) >= 2 or name in ("ipc.mp_queue", "ipc.channel"):
                raise OSError(24, "Too many open files")
            return real_pipe()
        monkeypatch.setattr(os, "pipe", fail_last_pipe)
        exc = OSError
    # the segments this method makes (other processes may make theirs meanwhile)
    made = []
    for cls in ("SharedMemory", "SysVSharedMemory"):
        real = getattr(fastio, cls)

        def making(*args, real=real, **kwargs):
            seg = real(*args, **kwargs)
            made.append(seg)
            return seg
        monkeypatch.setattr(fastio, cls, making)
    fds = set(os.listdir("/proc/self/fd"))
    kids = runner._children()
    with pytest.raises(exc):
        m.fn(job)
    monkeypatch.undo()
    assert set(os.listdir("/proc/self/fd")) == fds
    assert runner._children() == kids
    with open("/proc/sysvipc/shm") as f:
        sysv = {int(line.split()[1]) for line in f.readlines()[1:]}
    for seg in made:
        if isinstance(seg.id if hasattr(seg, "id") else None, int):
            assert seg.id not in sysv, f"System V segment {seg.id} left"
        else:
            assert not os.path.exists(f"/dev/shm/{seg.name.lstrip('/')}"), seg.name
    assert len(made) == (1 if name in ("shm.posix", "shm.sysv") else 0)


def test_ipc_fork_keeps_signals_blocked_until_the_child_has_its_defaults():
    # A SIGINT landing in the child between the fork and its try would raise
    # KeyboardInterrupt there and run the parent's cleanup a second time
    # (in the child). _fork blocks it; _die_with_parent restores the default
    # action first, so the pending signal then ends the child as SIGINT does.
    import signal
    from fastio.lab import methods
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    parent = os.getpid()
    pid, mask = methods._fork()
    if pid == 0:
        try:
            os.kill(os.getpid(), signal.SIGINT)       # pending: blocked
            for _ in range(10000):
                pass                                  # no KeyboardInterrupt here
            methods._die_with_parent(parent, mask)    # default action, unblocked: dies
        finally:
            os._exit(7)
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGINT, status
