"""Backend-specific tests of the io_uring and linux_aio engines.

The backends (csrc/aio_uring.c, csrc/aio_linux.c) are driven here through
their ops table by the standalone C harness tests/c/engines.c, compiled with
gcc into a temporary directory: reads checked against pread, writes, fsync,
per-request errors, depth-full submission, reap timeouts, cancel_all and
close with requests in flight, registered files and buffers, eventfd,
SQPOLL, a ring created on one thread and used from another, O_DIRECT.
The behaviour shared by every backend through fastio.Queue is in
tests/test_aio.py.
"""
import os
import shutil
import subprocess
import sysconfig

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = ["tests/c/engines.c", "csrc/aio_uring.c", "csrc/aio_linux.c"]

CHECKS = {
    "io_uring": ["open", "reads_depth1", "reads_depth32", "writes", "fsync", "errors",
                 "depth_full", "reap_timeout", "cancel_all", "close_in_flight",
                 "registered", "eventfd", "other_thread", "busy_other_thread", "sqpoll",
                 "direct"],
    "linux_aio": ["open", "reads_depth1", "reads_depth32", "writes", "fsync", "errors",
                  "depth_full", "reap_timeout", "cancel_all", "close_in_flight",
                  "eventfd", "other_thread", "direct"],
}


def _compile(tmp, name, *defines):
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed: the C harness cannot be built")
    exe = os.path.join(tmp, name)
    cmd = [gcc, "-std=c11", "-O1", "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter",
           "-Wno-missing-field-initializers", "-D_GNU_SOURCE", *defines,
           "-I" + sysconfig.get_paths()["include"], "-I" + os.path.join(ROOT, "csrc"),
           *[os.path.join(ROOT, s) for s in SOURCES], "-o", exe, "-pthread"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return exe


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("engines"))
    return {
        "default": _compile(tmp, "engines"),
        # The pre-5.19 cancel path (one ASYNC_CANCEL per request in flight).
        "no_cancel_any": _compile(tmp, "engines_nocancelany",
                                  "-DFASTIO_URING_TEST_NO_CANCEL_ANY"),
    }


def _run(exe, *args, timeout=60):
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout)


def _probe(exe, backend):
    proc = _run(exe, "probe", backend)
    if proc.returncode == 77:
        probes.fail_or_skip(backend, probes.backend(backend), proc.stdout.strip())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return set(proc.stdout.split()[1:])


def _results(proc):
    results = {}
    for line in proc.stdout.splitlines():
        status, _, rest = line.partition(" ")
        if status in ("ok", "skip", "FAIL"):
            name, _, why = rest.partition(": ")
            results[name] = (status, why)
    return results


@pytest.mark.parametrize("backend", ["io_uring", "linux_aio"])
def test_probe_features(harness, backend):
    features = _probe(harness["default"], backend)
    assert "fsync" in features and "eventfd" in features
    if backend == "io_uring":
        assert {"register_files", "register_buffers", "async_buffered"} <= features
    else:
        # Linux AIO is synchronous on buffered files: never claimed.
        assert "async_buffered" not in features
        assert "register_files" not in features


@pytest.mark.parametrize("backend", ["io_uring", "linux_aio"])
@pytest.mark.smoke
def test_engine(harness, backend, tmp_path):
    _probe(harness["default"], backend)
    # O_DIRECT needs a real filesystem (tmpfs refuses it): the project's
    # directory is on one; the check is skipped by the harness otherwise.
    direct_dir = ROOT
    proc = _run(harness["default"], "test", backend, str(tmp_path), direct_dir)
    results = _results(proc)
    failed = {k: v for k, v in results.items() if v[0] == "FAIL"}
    assert not failed, proc.stdout + proc.stderr
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in CHECKS[backend]:
        assert name in results, f"check {name} did not run:\n{proc.stdout}"
    skipped = {k: why for k, (s, why) in results.items() if s == "skip"}
    for name in ("reads_depth32", "errors", "cancel_all", "eventfd"):
        assert name not in skipped
    # Leftovers: the harness unlinks what it creates.
    assert not [f for f in os.listdir(ROOT) if f.startswith("fastio-engines-direct")]


def test_io_uring_without_cancel_any(harness, tmp_path):
    """Kernels before 5.19: cancel_all sends one cancel per request in flight."""
    _probe(harness["no_cancel_any"], "io_uring")
    proc = _run(harness["no_cancel_any"], "test", "io_uring", str(tmp_path))
    results = _results(proc)
    for name in ("cancel_all", "close_in_flight", "reads_depth32", "depth_full"):
        assert results.get(name, ("missing",))[0] == "ok", proc.stdout + proc.stderr


def test_io_uring_setup_flags(harness):
    features = _probe(harness["default"], "io_uring")
    release = tuple(int(x) for x in os.uname().release.split("-")[0].split(".")[:2])
    if release >= (6, 1):
        # SINGLE_ISSUER (6.0) and DEFER_TASKRUN (6.1) exist; only a filter
        # refusing them would hide them.
        assert {"single_issuer", "defer_taskrun"} <= features
    if "defer_taskrun" in features:
        assert "single_issuer" in features  # the kernel requires both


@pytest.mark.parametrize("backend,errno_,expect", [
    ("io_uring", 1, ["EPERM", "kernel.io_uring_disabled=", "seccomp"]),
    ("io_uring", 38, ["ENOSYS", "kernel without io_uring"]),
    ("linux_aio", 1, ["EPERM", "seccomp"]),
    ("linux_aio", 11, ["EAGAIN", "fs.aio-max-nr="]),
    ("linux_aio", 38, ["ENOSYS", "CONFIG_AIO"]),
])
def test_probe_reason(harness, backend, errno_, expect):
    """The probe's one-line reason when the setup call is refused (a seccomp
    filter installed in the harness process plays the refusing host)."""
    proc = _run(harness["default"], "probe-filtered", backend, str(errno_))
    if proc.returncode == 77:
        pytest.skip(f"cannot install a seccomp filter here: {proc.stdout.strip()}")
    assert proc.returncode == 0, proc.stderr
    _, code, why = proc.stdout.strip().split(" ", 2)
    assert int(code) == -errno_
    for word in expect:
        assert word in why, why


# ---------------------------------------------------------------- through fastio.Queue
# The same backends as the Queue drives them (csrc/queue.c). Skipped where
# the Queue is not built yet.

import threading  # noqa: E402

import fastio  # noqa: E402
import probes  # noqa: E402

needs_queue = pytest.mark.skipif(not hasattr(fastio, "Queue"), reason="fastio.Queue not built")


def _available(name):
    info = fastio.backends()[name]
    if not info.available:
        probes.fail_or_skip(name, probes.backend(name), info.reason)
    return info


@pytest.fixture
def blob(tmp_path):
    data = os.urandom(1 << 20)
    p = tmp_path / "blob"
    p.write_bytes(data)
    fd = os.open(p, os.O_RDONLY)
    yield fd, data
    os.close(fd)


def _read_all(q, fd, data, n=64, size=4096, seed=0):
    import random
    rng = random.Random(seed)
    bufs = {}
    for i in range(n):
        off = rng.randrange(len(data) - size)
        buf = bytearray(size)
        bufs[i] = (off, buf)
        q.read(fd, buf, off, tag=i)
    done = dict(q.drain())
    assert done == {i: size for i in range(n)}
    for off, buf in bufs.values():
        assert bytes(buf) == data[off:off + size]


@needs_queue
@pytest.mark.parametrize("name", ["io_uring", "linux_aio"])
def test_backends_reports_probe(name):
    info = fastio.backends()[name]
    if info.available:
        assert info.reason == "" and "fsync" in info.features
        assert ("async_buffered" in info.features) == (name == "io_uring")
    else:
        assert info.reason.startswith(("io_uring", "io_setup", "IORING")), info.reason


@needs_queue
def test_queue_io_uring_sqpoll(blob):
    info = _available("io_uring")
    if "sqpoll" not in info.features:
        probes.fail_or_skip("io_uring SQPOLL", probes.io_uring_flag("SQPOLL"),
                            "no sqpoll in backends()['io_uring'].features")
    fd, data = blob
    with fastio.Queue(16, "io_uring", sqpoll=True, sqpoll_idle_ms=20) as q:
        assert "sqpoll" in q.features
        # DEFER_TASKRUN is refused with SQPOLL: the ring does without it.
        assert "defer_taskrun" not in q.features
        _read_all(q, fd, data, n=200)


@needs_queue
def test_queue_io_uring_defer_taskrun_and_other_thread(blob):
    info = _available("io_uring")
    fd, data = blob
    with fastio.Queue(8, "io_uring") as q:
        if "defer_taskrun" in info.features:
            assert {"single_issuer", "defer_taskrun"} <= q.features
        _read_all(q, fd, data, seed=1)
        # An idle single-issuer ring used from another thread becomes a
        # plain ring (see docs/backends.md): both threads work afterwards.
        errors = []

        def other():
            try:
                _read_all(q, fd, data, seed=2)
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert not errors, errors
        _read_all(q, fd, data, seed=3)


@needs_queue
def test_queue_io_uring_registered(blob):
    _available("io_uring")
    fd, data = blob
    buf = bytearray(64 * 1024)
    with fastio.Queue(8, "io_uring") as q:
        q.register_files([fd])
        q.register_buffers([buf])
        view = memoryview(buf)
        for i in range(16):
            q.read(fd, view[i * 4096:(i + 1) * 4096], (i * 7919) % 200 * 4096, tag=i)
        done = dict(q.drain())
        view.release()
        assert done == {i: 4096 for i in range(16)}
        for i in range(16):
            off = (i * 7919) % 200 * 4096
            assert buf[i * 4096:(i + 1) * 4096] == data[off:off + 4096]
