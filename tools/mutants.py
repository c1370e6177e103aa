#!/usr/bin/env python3
"""Mutation check: plant small bugs in csrc/, one at a time, and see whether
the tests that should notice them do.

    python tools/mutants.py                 # every mutant, one worker
    python tools/mutants.py -j 2            # two scratch copies side by side
    python tools/mutants.py --only pread_eintr --only populate_noop
    python tools/mutants.py --list          # names, files, what each breaks
    python tools/mutants.py --markdown out.md   # also write the table as markdown

How: the repository's files (not .git, build/ or built .so files) are copied
to a scratch directory under /tmp (one per worker); every csrc/*.c is
compiled there once with setup.py's flags, by gcc directly, so that a mutant
costs one file's compile and a link instead of a whole build. For each
mutant: the find string (which must occur exactly once in its file) is
replaced, that file compiled, _core linked, the mutant's test files run from
the scratch tests/ with `pytest -x -q` (and `-m "not slow"` unless the mutant
says otherwise), then the file and its object are restored.

Verdicts: caught (pytest failed: the first failing test is named), caught
(timeout: a hang), survived (every test passed: a hole in the suite, or an
argument why the bug cannot be seen, recorded in docs/testing.md),
stale (the find string is not in the file exactly once: the C code changed,
update the mutant), build error (the mutant does not compile: fix the
mutant). A survivor makes the exit status 1.

The baseline (the unmutated scratch build) runs each distinct set of test
files first unless --no-baseline: a failure there makes every verdict of
that set meaningless, and the table says so.
"""
import argparse
import concurrent.futures
import datetime
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from typing import List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Mutant:
    name: str
    file: str           # under csrc/
    find: str
    replace: str
    tests: List[str]    # test files (or node ids / -k expressions) under tests/
    what: str
    slow: bool = False  # also run the tests marked slow
    extra: List[str] = field(default_factory=list)  # more pytest arguments


# The five planted by hand in issue 15 come first; then at least one per C file.
MUTANTS = [
    Mutant("pread_eintr", "rw.c",
           "        if (n >= 0 || err != EINTR) {\n            break;\n        }\n"
           "        if (PyErr_CheckSignals() < 0) {\n            PyBuffer_Release(&view);",
           "        if (1) {\n            break;\n        }\n"
           "        if (PyErr_CheckSignals() < 0) {\n            PyBuffer_Release(&view);",
           ["test_promises.py", "test_rw.py"],
           "pread/pwrite stop at EINTR instead of retrying"),
    Mutant("dio_buffer_message", "queue.c",
           "            else if (mem && (uintptr_t)r->buf % mem) {",
           "            else if (0) {",
           ["test_promises.py", "test_aio.py", "test_errors.py"],
           "the misaligned-buffer-address explanation of an O_DIRECT EINVAL is dropped"),
    Mutant("populate_noop", "mmap.c",
           "    int err = advise_range(self, addr, len, advice);\n    if (err < 0) {\n"
           "        return fastio_oserror(err, advice == MADV_POPULATE_WRITE",
           "    int err = 0; (void)addr; (void)len;\n    if (err < 0) {\n"
           "        return fastio_oserror(err, advice == MADV_POPULATE_WRITE",
           ["test_promises.py", "test_mmap.py", "test_sigbus.py"],
           "mmap.populate() does nothing"),
    Mutant("uring_probe_enosys", "aio_uring.c",
           "    int fd = sys_setup(2, &p);\n    if (fd < 0) {\n        if (fd == -ENOSYS)",
           "    int fd = -ENOSYS;\n    if (fd < 0) {\n        if (fd == -ENOSYS)",
           ["test_aio.py", "test_aio_asyncio.py"],
           "the io_uring probe reports ENOSYS on a kernel that has io_uring"),
    Mutant("release_keeps_closed_region", "region.c",
           "    r->exports--;\n    region_free_if_unused(r);",
           "    r->exports--;",
           # test_leaks.py is all marked slow: name the fast test there.
           ["test_leaks.py::test_close_under_a_live_export_frees_at_the_last_release",
            "test_mmap.py"],
           "the last buffer release no longer frees a closed region (a leak)", slow=True),
    # ---- rw.c: the other retry loops, the advice calls
    Mutant("readinto_full_eintr", "rw.c",
           "        if (err != EINTR) {\n            break;\n        }\n        err = 0;",
           "        if (1) {\n            break;\n        }\n        err = 0;",
           ["test_promises.py", "test_rw.py"],
           "readinto_full gives up at EINTR"),
    Mutant("preadv_eintr", "rw.c",
           "        if (n >= 0 || err != EINTR) {\n            break;\n        }\n"
           "        if (PyErr_CheckSignals() < 0) {\n            goto done;",
           "        if (1) {\n            break;\n        }\n"
           "        if (PyErr_CheckSignals() < 0) {\n            goto done;",
           ["test_promises.py", "test_rw.py"],
           "preadv/pwritev stop at EINTR"),
    Mutant("readahead_noop", "rw.c",
           "        r = readahead(fd, (off64_t)offset, (size_t)length);",
           "        r = 0; (void)offset; (void)length;",
           ["test_promises.py", "test_rw.py"],
           "readahead() does nothing"),
    Mutant("fadvise_noop", "rw.c",
           "    err = posix_fadvise(fd, (off_t)offset, (off_t)length, advice);",
           "    err = 0; (void)advice;",
           ["test_promises.py", "test_rw.py"],
           "fadvise() does nothing (bad advice is no longer refused either)"),
    # ---- the engines
    Mutant("linux_aio_res_short", "aio_linux.c",
           "        out[got].res = ev->res;",
           "        out[got].res = ev->res > 0 ? ev->res - 1 : ev->res;",
           ["test_aio.py"],
           "Linux AIO completions report one byte fewer than moved"),
    Mutant("posix_aio_error_lost", "aio_posix.c",
           "            out[got].res = e != 0 ? -(int64_t)e : (int64_t)rv;",
           "            out[got].res = (int64_t)rv;",
           ["test_aio.py"],
           "a failed POSIX aio request completes as -1 (EPERM) instead of its errno"),
    Mutant("threads_eintr", "aio_threads.c",
           "        if (errno != EINTR) {\n            return -errno;\n        }",
           "        if (1) {\n            return -errno;\n        }",
           ["test_promises.py", "test_aio.py"],
           "the thread pool's pread/pwrite fail with EINTR instead of retrying"),
    Mutant("uring_cq_head_kept", "aio_uring.c",
           "    store_release(c->cq_head, head);\n    return got;",
           "    return got;",
           ["test_aio.py"],
           "io_uring completions are consumed but the CQ head never advances"),
    Mutant("queue_depth_zero", "queue.c",
           "    if (depth < 1 || depth > DEPTH_MAX) {",
           "    if (depth < 0 || depth > DEPTH_MAX) {",
           ["test_aio.py", "test_errors.py"],
           "Queue(depth=0) is accepted"),
    # ---- memory and mappings
    Mutant("buffer_unaligned", "buffer.c",
           "        start = (char *)(((uintptr_t)p + align - 1) & ~((uintptr_t)align - 1));",
           "        start = (char *)p;",
           ["test_memory.py"],
           "Buffer's large alignments are not honoured"),
    Mutant("mmap_index_off_by_one", "mmap.c",
           "static PyObject *\nmmap_item(MmapObject *self, Py_ssize_t i)\n{\n"
           "    if (check_valid(self) < 0) {\n        return NULL;\n    }\n"
           "    if (i < 0 || i >= self->region.size) {",
           "static PyObject *\nmmap_item(MmapObject *self, Py_ssize_t i)\n{\n"
           "    if (check_valid(self) < 0) {\n        return NULL;\n    }\n"
           "    if (i < 0 || i > self->region.size) {",
           ["test_promises.py", "test_mmap.py", "test_mmap_stdlib.py"],
           "the sequence item (sq_item) at len(m) reads one byte past the end"),
    Mutant("module_madv_dontneed", "module.c",
           '    {"MADV_DONTNEED", MADV_DONTNEED},',
           '    {"MADV_DONTNEED", MADV_WILLNEED},',
           ["test_promises.py", "test_mmap.py"],
           "fastio.MADV_DONTNEED has the value of MADV_WILLNEED"),
    Mutant("sigbus_no_address", "sigbus.c",
           "        g->addr = si->si_code > 0 ? (const char *)si->si_addr : NULL;",
           "        g->addr = NULL;",
           ["test_sigbus.py"],
           "a SIGBUS in a guarded copy loses the faulting address (and the offset in the message)"),
    Mutant("shm_not_exclusive", "shm_posix.c",
           "            oflag |= O_CREAT | O_EXCL;",
           "            oflag |= O_CREAT;",
           ["test_shm.py"],
           "SharedMemory(create=True) silently opens an existing name"),
    Mutant("shm_mode_0644", "shm_posix.c",
           "    unsigned int mode = 0600;\n    if (!PyArg_ParseTupleAndKeywords(args, kwds, \"O|n$pIppp:SharedMemory\"",
           "    unsigned int mode = 0644;\n    if (!PyArg_ParseTupleAndKeywords(args, kwds, \"O|n$pIppp:SharedMemory\"",
           ["test_promises.py", "test_shm.py"],
           "POSIX shared memory is created world-readable by default"),
    Mutant("sysv_not_exclusive", "shm_sysv.c",
           "            flags |= IPC_CREAT | IPC_EXCL | (int)mode;",
           "            flags |= IPC_CREAT | (int)mode;",
           ["test_sysv.py"],
           "SysVSharedMemory(create) attaches to an existing key"),
    # ---- the rest
    Mutant("channel_close_no_wake", "channel.c",
           "        self->anchor.closed = 1;\n        wake_both(sh);",
           "        self->anchor.closed = 1;\n        (void)sh;",
           ["test_promises.py", "test_channel.py"],
           "Channel.close() forgets to wake a waiter (the 50 ms wait slice hides it)"),
    Mutant("sync_wait_keeps_gil", "sync.c",
           "        Py_BEGIN_ALLOW_THREADS\n        rc = wait_op(obj, &ts);\n        Py_END_ALLOW_THREADS",
           "        rc = wait_op(obj, &ts);",
           ["test_sync.py"],
           "Lock/Semaphore waits keep the GIL (other threads stop)"),
    Mutant("errors_no_syscall_name", "errors.c",
           '        msg = PyUnicode_FromFormat("%s (%s)", strerror(err), syscall);',
           "        msg = PyUnicode_FromString(strerror(err));",
           ["test_errors.py", "test_mmap.py"],
           "OSError messages no longer name the failing system call"),
    Mutant("lab_latency_zero", "lab.c",
           "        lat[i] = now_ns() - t0;\n        total += (int64_t)bs;\n    }\n    return total;\n}\n\nPyDoc_STRVAR(lab_pread_doc,",
           "        lat[i] = 0; (void)t0;\n        total += (int64_t)bs;\n    }\n    return total;\n}\n\nPyDoc_STRVAR(lab_pread_doc,",
           ["test_lab.py"],
           "the lab's pread loop records zero latencies"),
    Mutant("lab_pread_eintr", "lab.c",
           "                if (errno == EINTR)\n                    continue;",
           "                if (0)\n                    continue;",
           ["test_promises.py", "test_lab.py"],
           "the lab's pread loop fails at EINTR"),
    Mutant("transfer_out_offset_kept", "transfer.c",
           "            if (x->out_off >= 0) {\n                x->out_off += n;\n            }\n            continue;\n"
           "        }\n        if (n == 0) {\n            x->eof = 1;\n            return 0;\n        }\n"
           "        int r = xfer_retry(x, errno, 1, 1, \"copy_file_range\");",
           "            if (x->out_off >= 0) {\n                x->out_off += 0;\n            }\n            continue;\n"
           "        }\n        if (n == 0) {\n            x->eof = 1;\n            return 0;\n        }\n"
           "        int r = xfer_retry(x, errno, 1, 1, \"copy_file_range\");",
           ["test_promises.py", "test_transfer.py"],
           "copy_file_range with an explicit output offset does not advance it between chunks"),
    Mutant("read_file_threads_eintr", "rw.c",
           "            else if (errno != EINTR) {\n                int expected = 0;",
           "            else if (1) {\n                int expected = 0;",
           ["test_promises.py", "test_rw.py"],
           "read_file's worker threads give up at EINTR"),
    Mutant("mmap_write_bound", "mmap.c",
           "    if (self->pos > self->region.size || self->region.size - self->pos < data.len) {",
           "    if (self->pos > self->region.size || self->region.size - self->pos + 1 < data.len) {",
           ["test_mmap.py", "test_mmap_stdlib.py"],
           "mmap.write() accepts one byte past the end"),
    Mutant("mmap_move_bound", "mmap.c",
           "    if (dest < 0 || src < 0 || cnt < 0 || size - dest < cnt || size - src < cnt) {",
           "    if (dest < 0 || src < 0 || cnt < 0 || size - dest < cnt) {",
           ["test_mmap.py", "test_mmap_stdlib.py"],
           "mmap.move() reads past the end of the source range"),
    Mutant("transfer_eintr_fails", "transfer.c",
           "    if (err == EINTR) {\n        return xfer_check_signals(x) < 0 ? -EINTR : 0;\n    }",
           "    if (0) {\n        return xfer_check_signals(x) < 0 ? -EINTR : 0;\n    }",
           ["test_promises.py", "test_transfer.py"],
           "sendfile/splice/copy_file_range loops fail at EINTR instead of retrying"),
]


# ---------------------------------------------------------------- building

def compile_flags():
    """What setuptools passes for setup.py's Extension: the interpreter's
    CFLAGS and CCSHARED (-DNDEBUG among them), then setup.py's own flags
    (kept in step by hand). No -Icsrc: csrc/aio.h would hide <aio.h>."""
    cv = sysconfig.get_config_var
    inc = sysconfig.get_paths()["include"]
    return [*(cv("CFLAGS") or "").split(), *(cv("CCSHARED") or "-fPIC").split(),
            "-D_GNU_SOURCE=1", "-I" + inc, "-std=c11", "-fvisibility=hidden", "-Wall",
            "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers", "-O2"]


def cc():
    return (sysconfig.get_config_var("CC") or "gcc").split()


def so_path(scratch):
    return os.path.join(scratch, "fastio", "_core" + sysconfig.get_config_var("EXT_SUFFIX"))


def compile_one(scratch, cfile):
    obj = os.path.join(scratch, "build-mutants", cfile[:-2] + ".o")
    cmd = [*cc(), *compile_flags(), "-c", os.path.join("csrc", cfile), "-o", obj]
    return subprocess.run(cmd, cwd=scratch, capture_output=True, text=True)


def link(scratch):
    objs = sorted(os.path.join("build-mutants", f) for f in
                  os.listdir(os.path.join(scratch, "build-mutants")) if f.endswith(".o"))
    ldshared = (sysconfig.get_config_var("LDSHARED") or "gcc -shared").split()
    cmd = [*ldshared, "-pthread", *objs, "-o", so_path(scratch)]
    return subprocess.run(cmd, cwd=scratch, capture_output=True, text=True)


def make_scratch(base, i):
    scratch = os.path.join(base, f"w{i}")
    ignore = shutil.ignore_patterns(".git", "build", "build-mutants", "*.so", "__pycache__",
                                    ".pytest_cache", "*.egg-info", ".hypothesis")
    shutil.copytree(ROOT, scratch, ignore=ignore)
    os.makedirs(os.path.join(scratch, "build-mutants"))
    for c in sorted(os.listdir(os.path.join(scratch, "csrc"))):
        if c.endswith(".c"):
            p = compile_one(scratch, c)
            if p.returncode:
                sys.exit(f"the unmutated {c} does not compile:\n{p.stderr}")
    p = link(scratch)
    if p.returncode:
        sys.exit(f"linking the unmutated build failed:\n{p.stderr}")
    return scratch


# ---------------------------------------------------------------- running

def run_tests(scratch, tests, slow, extra, timeout):
    args = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
            "-o", "addopts=", *extra]
    if not slow:
        args += ["-m", "not slow"]
    args += tests
    env = dict(os.environ, PYTHONPATH=scratch, CI="true", FASTIO_FUZZ_SECONDS="0",
               PYTHONDONTWRITEBYTECODE="1")
    t0 = time.monotonic()
    try:
        p = subprocess.run(args, cwd=os.path.join(scratch, "tests"), env=env,
                           capture_output=True, text=True, timeout=timeout,
                           start_new_session=True)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout or ""
        if isinstance(out, bytes):
            out = out.decode(errors="replace")
        return "timeout", out, time.monotonic() - t0
    return p.returncode, p.stdout + p.stderr, time.monotonic() - t0


def summary_line(out):
    m = re.findall(r"^=+ (.*(?:passed|failed|error|skipped).*) =+$", out, re.M)
    return m[-1] if m else out.strip().splitlines()[-1] if out.strip() else ""


def first_failure(out):
    m = re.search(r"^(?:FAILED|ERROR) (.+?)(?: - .*)?$", out, re.M)
    return m.group(1) if m else ""


def apply(scratch, mut):
    path = os.path.join(scratch, "csrc", mut.file)
    with open(path) as f:
        text = f.read()
    n = text.count(mut.find)
    if n != 1:
        return None, f"find string occurs {n} times in {mut.file}"
    with open(path, "w") as f:
        f.write(text.replace(mut.find, mut.replace))
    return text, ""


def restore(scratch, mut, text):
    with open(os.path.join(scratch, "csrc", mut.file), "w") as f:
        f.write(text)
    compile_one(scratch, mut.file)


def run_mutant(scratch, mut, timeout):
    orig, why = apply(scratch, mut)
    if orig is None:
        return {"verdict": "stale", "detail": why, "secs": 0.0}
    try:
        p = compile_one(scratch, mut.file)
        if p.returncode == 0:
            p = link(scratch)
        if p.returncode:
            err = next((l for l in p.stderr.splitlines() if "error" in l), p.stderr[-200:])
            return {"verdict": "build error", "detail": err.strip(), "secs": 0.0}
        rc, out, secs = run_tests(scratch, mut.tests, mut.slow, mut.extra, timeout)
    finally:
        restore(scratch, mut, orig)
        link(scratch)
    if rc == "timeout":
        return {"verdict": "caught", "detail": f"timeout after {timeout} s (a hang)", "secs": secs}
    if rc == 0:
        return {"verdict": "survived", "detail": summary_line(out), "secs": secs}
    if rc == 5:
        return {"verdict": "stale", "detail": "no tests collected", "secs": secs}
    fail = first_failure(out)
    if not fail and rc < 0:
        fail = f"pytest died of signal {-rc}"
    return {"verdict": "caught", "detail": fail or summary_line(out), "secs": secs}


# ---------------------------------------------------------------- tables

def table(rows, markdown):
    head = ["mutant", "file", "planted bug", "test files", "verdict", "by / why"]
    body = [[r["name"], r["file"], r["what"], " ".join(r["tests"]), r["verdict"],
             r["detail"]] for r in rows]
    if markdown:
        esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(esc(c) for c in b) + " |" for b in body]
        return "\n".join(lines)
    widths = [min(max(len(str(x)) for x in col), 48) for col in zip(head, *body)]
    fmt = lambda cells: "  ".join(str(c)[:w].ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(b) for b in body])


def git_head():
    try:
        return subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True).stdout.strip() or "?"
    except OSError:
        return "?"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", action="append", default=[], metavar="NAME",
                    help="run this mutant (repeatable); default: all")
    ap.add_argument("-j", "--jobs", type=int, default=1, help="scratch copies run side by side")
    ap.add_argument("--scratch", help="base directory for the scratch copies (default: a new "
                    "one under /tmp, removed at the end)")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per mutant's test run")
    ap.add_argument("--markdown", metavar="FILE", help="also write the table as markdown")
    ap.add_argument("--no-baseline", action="store_true",
                    help="skip running the unmutated build's test files first")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    args = ap.parse_args(argv)

    names = {m.name for m in MUTANTS}
    unknown = [n for n in args.only if n not in names]
    if unknown:
        ap.error(f"unknown mutant(s): {', '.join(unknown)}; --list shows them")
    todo = [m for m in MUTANTS if not args.only or m.name in args.only]
    if args.list:
        for m in todo:
            print(f"{m.name:28} {m.file:14} {m.what}")
        return 0

    base = args.scratch or tempfile.mkdtemp(prefix="fastio-mutants-")
    os.makedirs(base, exist_ok=True)
    t0 = time.monotonic()
    try:
        jobs = max(1, min(args.jobs, len(todo)))
        print(f"scratch {base}: building {jobs} copies", flush=True)
        with concurrent.futures.ThreadPoolExecutor(jobs) as ex:
            scratches = list(ex.map(lambda i: make_scratch(base, i), range(jobs)))

        broken_sets = {}
        if not args.no_baseline:
            sets = sorted({tuple(m.tests) + (("slow",) if m.slow else ()) for m in todo})
            for s in sets:
                slow = s[-1] == "slow"
                tests = list(s[:-1] if slow else s)
                rc, out, secs = run_tests(scratches[0], tests, slow, [], args.timeout)
                print(f"baseline {' '.join(tests)}: {summary_line(out)} ({secs:.0f} s)", flush=True)
                if rc != 0:
                    # Once more: a test that fails on a loaded machine now
                    # and then is named, not taken for a broken baseline.
                    first = first_failure(out) or summary_line(out)
                    rc, out, secs = run_tests(scratches[0], tests, slow, [], args.timeout)
                    print(f"baseline again: {summary_line(out)} ({secs:.0f} s)"
                          f"{'; flaky: ' + first if rc == 0 else ''}", flush=True)
                if rc != 0:
                    broken_sets[s] = first_failure(out) or summary_line(out)

        pool = list(scratches)
        import threading
        lock = threading.Lock()

        def one(m):
            with lock:
                scratch = pool.pop()
            try:
                res = run_mutant(scratch, m, args.timeout)
            finally:
                with lock:
                    pool.append(scratch)
            key = tuple(m.tests) + (("slow",) if m.slow else ())
            if key in broken_sets and res["verdict"] == "caught":
                res["verdict"] = "unknown"
                res["detail"] = f"the unmutated build fails these tests too ({broken_sets[key]})"
            row = {"name": m.name, "file": m.file, "what": m.what, "tests": m.tests, **res}
            print(f"{m.name}: {res['verdict']}: {res['detail']} ({res['secs']:.0f} s)", flush=True)
            return row

        with concurrent.futures.ThreadPoolExecutor(jobs) as ex:
            rows = list(ex.map(one, todo))
    finally:
        if not args.scratch:
            shutil.rmtree(base, ignore_errors=True)

    caught = sum(r["verdict"] == "caught" for r in rows)
    survived = [r["name"] for r in rows if r["verdict"] == "survived"]
    other = [r["name"] for r in rows if r["verdict"] not in ("caught", "survived")]
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    foot = (f"{caught} of {len(rows)} caught, {len(survived)} survived"
            f"{', ' + str(len(other)) + ' stale/broken/unknown' if other else ''}; "
            f"commit {git_head()}, {stamp}, {time.monotonic() - t0:.0f} s")
    print()
    print(table(rows, False))
    print(foot)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table(rows, True) + "\n\n" + foot + "\n")
    return 1 if survived or other else 0


if __name__ == "__main__":
    sys.exit(main())
