"""fastio.sendfile, copy_file_range, splice, tee, copyfile and aio.sendfile.

Oracle: the bytes themselves (written with os.urandom, read back with plain
reads) and shutil.copyfile's behaviour towards the destination. The sinks'
readers are Python threads in this process: a transfer larger than a socket
or pipe buffer can only finish if the C loop released the GIL.
"""
import asyncio
import errno
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import pytest

import fastio
import probes
from conftest import LeakCheck

PAGE = os.sysconf("SC_PAGESIZE")
BIG = 64 * 1024 * 1024
SIZES = [0, 1, PAGE - 1, PAGE, PAGE + 1, BIG]
SHM = "/dev/shm"


@pytest.fixture(scope="module")
def payload():
    """64 MiB of random bytes, made once; tests slice it."""
    return os.urandom(BIG)


@pytest.fixture
def shm_dir():
    """A private directory on tmpfs, removed afterwards."""
    if not os.path.isdir(SHM):
        pytest.skip("no /dev/shm")
    d = os.path.join(SHM, f"fastio-test-{uuid.uuid4().hex}")
    os.mkdir(d)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def write_file(path, data):
    with open(path, "wb") as f:
        f.write(data)
    return path


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


# ---------------------------------------------------------------- sinks

class Drain:
    """A thread that reads fd until end of input into a bytearray."""

    def __init__(self, read, delay=0.0, chunk=1 << 20):
        self.data = bytearray()
        self.read = read
        self.delay = delay
        self.chunk = chunk
        self.error = None
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        try:
            while True:
                if self.delay:
                    time.sleep(self.delay)
                d = self.read(self.chunk)
                if not d:
                    return
                self.data += d
        except OSError as e:  # pragma: no cover - reported by result()
            self.error = e

    def result(self):
        self.thread.join(30)
        assert not self.thread.is_alive(), "reader did not finish"
        assert self.error is None
        return bytes(self.data)


class SocketPairSink:
    def __init__(self, tmp_path):
        self.out, self.peer = socket.socketpair()
        self.drain = Drain(self.peer.recv)

    def finish(self):
        self.out.close()
        data = self.drain.result()
        self.peer.close()
        return data


class TCPSink(SocketPairSink):
    def __init__(self, tmp_path):
        with socket.create_server(("127.0.0.1", 0)) as srv:
            self.out = socket.create_connection(srv.getsockname())
            self.peer, _ = srv.accept()
        self.drain = Drain(self.peer.recv)


class PipeSink:
    def __init__(self, tmp_path):
        r, self.out = os.pipe()
        self.r = r
        self.drain = Drain(lambda n: os.read(r, n))

    def finish(self):
        os.close(self.out)
        data = self.drain.result()
        os.close(self.r)
        return data


class FileSink:
    def __init__(self, tmp_path):
        self.path = os.path.join(self.directory(tmp_path), "sink.bin")
        self.out = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)

    def directory(self, tmp_path):
        return str(tmp_path)

    def finish(self):
        os.close(self.out)
        data = read_file(self.path)
        os.unlink(self.path)
        return data


class TmpfsSink(FileSink):
    def directory(self, tmp_path):
        if not os.path.isdir(SHM):
            pytest.skip("no /dev/shm")
        return SHM

    def __init__(self, tmp_path):
        self.path = os.path.join(SHM, f"fastio-test-{uuid.uuid4().hex}")
        self.out = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)


SINKS = {"socketpair": SocketPairSink, "tcp": TCPSink, "pipe": PipeSink,
         "ext4": FileSink, "tmpfs": TmpfsSink}


# ---------------------------------------------------------------- sendfile

@pytest.mark.parametrize("method", ["auto", "sendfile", "splice", "readwrite"])
@pytest.mark.parametrize("sink", list(SINKS))
@pytest.mark.parametrize("size", SIZES)
def test_sendfile_byte_exact(tmp_path, payload, size, sink, method):
    leaks = LeakCheck()
    src = write_file(tmp_path / "src.bin", payload[:size])
    s = SINKS[sink](tmp_path)
    try:
        n = fastio.sendfile(s.out, src, method=method)
    finally:
        got = s.finish()
    assert n == size and isinstance(n, int)
    assert n.method == ("sendfile" if method == "auto" else method)
    assert got == payload[:size]
    leaks.check()


@pytest.mark.smoke
def test_sendfile_offset_and_count(tmp_path, payload):
    data = payload[:100000]
    src = write_file(tmp_path / "src.bin", data)
    with open(src, "rb") as f:
        f.read(10)  # a buffered reader: its position is 10, the fd's is not
        for off, cnt in [(0, 0), (0, 1), (123, 4567), (99999, 5), (100000, 10),
                         (250000, 10), (5, None)]:
            s = SocketPairSink(tmp_path)
            n = fastio.sendfile(s.out, f, off, cnt)
            got = s.finish()
            want = data[off:] if cnt is None else data[off:off + cnt]
            assert got == want and n == len(want)
            assert f.tell() == 10, "an explicit offset must leave the position alone"
        assert f.read(5) == data[10:15]


def test_sendfile_offset_past_end_is_sendfile(tmp_path):
    src = write_file(tmp_path / "src.bin", b"abc")
    s = SocketPairSink(tmp_path)
    n = fastio.sendfile(s.out, src, offset=10)
    assert s.finish() == b""
    assert n == 0 and n.method == "sendfile"


def test_sendfile_offset_none_advances(tmp_path, payload):
    data = payload[:50000]
    src = write_file(tmp_path / "src.bin", data)
    # A raw descriptor: sendfile(2) with a NULL offset moves its position.
    fd = os.open(src, os.O_RDONLY)
    try:
        os.lseek(fd, 100, os.SEEK_SET)
        s = SocketPairSink(tmp_path)
        n = fastio.sendfile(s.out, fd, None, 1000)
        assert s.finish() == data[100:1100] and n == 1000
        assert os.lseek(fd, 0, os.SEEK_CUR) == 1100
    finally:
        os.close(fd)
    # A buffered file object: from its logical position, which then moves.
    with open(src, "rb") as f:
        assert f.read(7) == data[:7]
        s = SocketPairSink(tmp_path)
        n = fastio.sendfile(s.out, f, offset=None, count=3000)
        assert s.finish() == data[7:3007]
        assert f.tell() == 3007 and f.read(3) == data[3007:3010]


def test_sendfile_to_buffered_file_object(tmp_path, payload):
    src = write_file(tmp_path / "src.bin", payload[:10000])
    with open(tmp_path / "out.bin", "wb") as out:
        out.write(b"head")  # still in the buffer: must be flushed first
        fastio.sendfile(out, src)
        out.write(b"tail")
    assert read_file(tmp_path / "out.bin") == b"head" + payload[:10000] + b"tail"


def test_sendfile_from_pipe_and_socket(tmp_path, payload):
    """Inputs that sendfile(2) refuses go through splice."""
    data = payload[:300000]
    r, w = os.pipe()
    t = threading.Thread(target=lambda: (os.write(w, data), os.close(w)))
    t.start()
    s = TCPSink(tmp_path)
    n = fastio.sendfile(s.out, r)
    t.join()
    os.close(r)
    assert s.finish() == data and n == len(data)
    assert n.method in ("sendfile", "splice")

    a, b = socket.socketpair()
    t = threading.Thread(target=lambda: (a.sendall(data), a.close()))
    t.start()
    with open(tmp_path / "out.bin", "wb") as out:
        n = fastio.sendfile(out, b)
    t.join()
    b.close()
    assert n == len(data) and n.method == "splice"
    assert read_file(tmp_path / "out.bin") == data


def test_sendfile_nonblocking_slow_reader(tmp_path, payload):
    leaks = LeakCheck()
    data = payload[:3 * 1024 * 1024]
    src = write_file(tmp_path / "src.bin", data)
    for method in ("sendfile", "readwrite", "splice"):
        a, b = socket.socketpair()
        a.setblocking(False)
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        d = Drain(b.recv, delay=0.001, chunk=65536)
        n = fastio.sendfile(a, src, method=method)
        a.close()
        assert d.result() == data and n == len(data)
        b.close()
    leaks.check()


def test_sendfile_socket_timeout(tmp_path, payload):
    src = write_file(tmp_path / "src.bin", payload[:BIG // 4])
    a, b = socket.socketpair()
    a.settimeout(0.2)
    try:
        with pytest.raises(TimeoutError) as ei:
            fastio.sendfile(a, src)
        assert 0 < ei.value.bytes_sent < BIG // 4
        got = b.recv(ei.value.bytes_sent, socket.MSG_WAITALL)
        assert got == payload[:ei.value.bytes_sent]
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("method", ["sendfile", "splice", "readwrite"])
def test_sendfile_peer_closes(tmp_path, payload, method):
    leaks = LeakCheck()
    src = write_file(tmp_path / "src.bin", payload[:8 * 1024 * 1024])
    a, b = socket.socketpair()

    def close_soon():
        b.recv(1000)
        b.close()

    t = threading.Thread(target=close_soon)
    t.start()
    with pytest.raises(BrokenPipeError) as ei:
        fastio.sendfile(a, src, method=method)
    t.join()
    a.close()
    assert ei.value.bytes_sent >= 1000
    leaks.check()


SIGPIPE_CHILD = textwrap.dedent("""
    import os, signal, socket, sys
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)   # as a C embedder might
    src = sys.argv[1]
    a, b = socket.socketpair()
    b.close()
    if sys.argv[2] == "os":
        os.sendfile(a.fileno(), os.open(src, os.O_RDONLY), 0, 100)  # the control
    import fastio
    for method in ("sendfile", "splice", "readwrite"):
        try:
            fastio.sendfile(a, src, method=method)
        except BrokenPipeError:
            pass
        else:
            sys.exit("no error")
    r, w = os.pipe()
    os.close(r)
    try:
        fastio.sendfile(w, src)
    except BrokenPipeError:
        pass
    # The mask is restored: a SIGPIPE after the call still kills.
    assert not signal.pthread_sigmask(signal.SIG_BLOCK, []) & {signal.SIGPIPE}
    print("survived")
""")


def test_sendfile_sigpipe_default_does_not_kill(tmp_path):
    src = write_file(tmp_path / "src.bin", b"x" * 100000)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    control = subprocess.run([sys.executable, "-c", SIGPIPE_CHILD, str(src), "os"],
                             capture_output=True, env=env, timeout=60)
    assert control.returncode == -signal.SIGPIPE, "the control should die of SIGPIPE"
    r = subprocess.run([sys.executable, "-c", SIGPIPE_CHILD, str(src), "fastio"],
                       capture_output=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.strip() == b"survived"


def test_sendfile_signal_handler_runs_and_transfer_completes(tmp_path, payload):
    """EINTR: the handler runs (with the GIL) and the loop goes on."""
    data = payload[:4 * 1024 * 1024]
    src = write_file(tmp_path / "src.bin", data)
    hits = []
    old = signal.signal(signal.SIGALRM, lambda *a: hits.append(1))
    try:
        a, b = socket.socketpair()
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        d = Drain(b.recv, delay=0.002, chunk=32768)
        signal.setitimer(signal.ITIMER_REAL, 0.01, 0.01)
        try:
            n = fastio.sendfile(a, src)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        a.close()
        assert d.result() == data and n == len(data)
        b.close()
    finally:
        signal.signal(signal.SIGALRM, old)
    assert hits, "the signal handler never ran"


def test_sendfile_handler_exception_propagates(tmp_path, payload):
    src = write_file(tmp_path / "src.bin", payload[:BIG // 4])

    class Stop(Exception):
        pass

    def boom(*a):
        raise Stop

    old = signal.signal(signal.SIGALRM, boom)
    a, b = socket.socketpair()  # nobody reads: the call blocks
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        with pytest.raises(Stop) as ei:
            fastio.sendfile(a, src)
        assert ei.value.bytes_sent > 0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        a.close()
        b.close()


@pytest.mark.smoke
def test_sendfile_bad_input(tmp_path):
    leaks = LeakCheck()
    src = write_file(tmp_path / "src.bin", b"data")
    a, b = socket.socketpair()
    try:
        with pytest.raises(IsADirectoryError) as ei:
            fastio.sendfile(a, tmp_path)
        assert ei.value.filename == str(tmp_path)
        dfd = os.open(tmp_path, os.O_RDONLY)
        try:
            with pytest.raises(IsADirectoryError):
                fastio.sendfile(a, dfd)
        finally:
            os.close(dfd)
        with pytest.raises(FileNotFoundError) as ei:
            fastio.sendfile(a, tmp_path / "missing")
        assert ei.value.filename == str(tmp_path / "missing")
        fd = os.open(src, os.O_RDONLY)
        os.close(fd)
        with pytest.raises(OSError) as ei:
            fastio.sendfile(a, fd)
        assert ei.value.errno == errno.EBADF
        f = open(src, "rb")
        f.close()
        with pytest.raises(ValueError, match="closed file"):
            fastio.sendfile(a, f)
        with pytest.raises(ValueError, match=r"count must be >= 0, not -1"):
            fastio.sendfile(a, src, count=-1)
        with pytest.raises(ValueError, match=r"offset must be >= 0, not -5"):
            fastio.sendfile(a, src, offset=-5)
        with pytest.raises(TypeError, match="count"):
            fastio.sendfile(a, src, count=1.5)
        with open(src, "r") as text:
            with pytest.raises(ValueError, match="binary mode"):
                fastio.sendfile(a, text)
        with pytest.raises(ValueError, match="'mmap'"):
            fastio.sendfile(a, src, method="mmap")
        with pytest.raises(TypeError, match="out"):
            fastio.sendfile(str(src), src)
        c, d = socket.socketpair()
        c.close()
        d.close()
        with pytest.raises(OSError) as ei:
            fastio.sendfile(c, src)
        assert ei.value.errno == errno.EBADF
    finally:
        a.close()
        b.close()
    leaks.check()


def test_aio_reachable_from_import_fastio():
    assert callable(fastio.aio.sendfile)


def test_transferred_is_an_int():
    t = fastio.Transferred(5, "splice")
    assert t == 5 and t + 1 == 6 and str(t) == "5" and t.method == "splice"
    assert "splice" in repr(t)
    u = pickle.loads(pickle.dumps(t))
    assert u == 5 and u.method == "splice"


# ---------------------------------------------------------------- copy_file_range

@pytest.mark.parametrize("dst_fs", ["ext4", "tmpfs"])
@pytest.mark.parametrize("size", SIZES)
def test_copy_file_range_byte_exact(tmp_path, shm_dir, payload, size, dst_fs):
    leaks = LeakCheck()
    src = write_file(tmp_path / "src.bin", payload[:size])
    dst = os.path.join(str(tmp_path) if dst_fs == "ext4" else shm_dir, "dst.bin")
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        n = fastio.copy_file_range(fi, fo, None)
    assert n == size and read_file(dst) == payload[:size]
    # ext4 -> tmpfs: copy_file_range refuses other filesystems (EXDEV).
    assert n.method in ("copy_file_range", "readwrite")
    if dst_fs == "ext4" and size:
        assert n.method == "copy_file_range"
    leaks.check()


@pytest.mark.smoke
def test_copy_file_range_offsets(tmp_path, payload):
    data = payload[:200000]
    src = write_file(tmp_path / "src.bin", data)
    dst = write_file(tmp_path / "dst.bin", b"\0" * 1000)
    fi = os.open(src, os.O_RDONLY)
    fo = os.open(dst, os.O_RDWR)
    try:
        n = fastio.copy_file_range(fi, fo, 5000, src_offset=300, dst_offset=500)
        assert n == 5000
        assert os.lseek(fi, 0, os.SEEK_CUR) == 0 and os.lseek(fo, 0, os.SEEK_CUR) == 0
        assert read_file(dst) == b"\0" * 500 + data[300:5300]
        # Offsets None: the positions are used and advanced.
        os.lseek(fi, 10, os.SEEK_SET)
        os.lseek(fo, 0, os.SEEK_SET)
        n = fastio.copy_file_range(fi, fo, 20)
        assert n == 20 and os.lseek(fi, 0, os.SEEK_CUR) == 30
        assert os.lseek(fo, 0, os.SEEK_CUR) == 20
        # Count past the end: what exists.
        n = fastio.copy_file_range(fi, fo, 10 ** 9, src_offset=199990, dst_offset=0)
        assert n == 10
        n = fastio.copy_file_range(fi, fo, 10, src_offset=10 ** 6, dst_offset=0)
        assert n == 0
        with pytest.raises(ValueError, match="dst_offset must be >= 0, not -2"):
            fastio.copy_file_range(fi, fo, 1, dst_offset=-2)
        with pytest.raises(ValueError, match="'sendfile'"):
            fastio.copy_file_range(fi, fo, 1, method="sendfile")
    finally:
        os.close(fi)
        os.close(fo)


def test_copy_file_range_forced_method_fails_across_filesystems(tmp_path, shm_dir):
    src = write_file(tmp_path / "src.bin", b"abc" * 1000)
    with open(src, "rb") as fi, open(os.path.join(shm_dir, "x"), "wb") as fo:
        try:
            n = fastio.copy_file_range(fi, fo, None, method="copy_file_range")
        except OSError as e:
            assert e.errno in (errno.EXDEV, errno.EOPNOTSUPP, errno.EINVAL)
            assert "copy_file_range" in str(e)
        else:  # a kernel that copies across these filesystems
            assert n == 3000


# ---------------------------------------------------------------- copyfile

@pytest.mark.parametrize("method", ["auto", "reflink", "copy_file_range",
                                    "sendfile", "readwrite"])
@pytest.mark.parametrize("fs", ["ext4", "tmpfs", "ext4->tmpfs"])
@pytest.mark.parametrize("size", SIZES)
def test_copyfile_byte_exact(tmp_path, shm_dir, payload, size, fs, method):
    src_dir = shm_dir if fs == "tmpfs" else str(tmp_path)
    dst_dir = str(tmp_path) if fs == "ext4" else shm_dir
    if method == "reflink":
        # The kernel's answer (FICLONE between these directories), not
        # copyfile's: a reflink that breaks on a filesystem that has it fails.
        probes.skip_unless("FICLONE reflink", probes.ficlone(src_dir, dst_dir))
    leaks = LeakCheck()
    src = write_file(os.path.join(src_dir, "src.bin"), payload[:size])
    dst = os.path.join(dst_dir, "dst.bin")
    if method == "copy_file_range" and fs == "ext4->tmpfs":
        # Forced, no fallback: the kernel refuses other filesystems.
        with pytest.raises(OSError) as ei:
            fastio.copyfile(src, dst, method=method)
        assert ei.value.errno == errno.EXDEV
        leaks.check()
        return
    used = fastio.copyfile(src, dst, method=method).method
    if method != "auto":
        assert used == method
    elif size and fs == "ext4":  # auto tries FICLONE first: it must win where the kernel has it
        assert used == ("reflink" if probes.ficlone(src_dir, dst_dir) else "copy_file_range")
    elif size:  # tmpfs: no reflink; across: copy_file_range says EXDEV
        assert used in ("copy_file_range", "sendfile")
    assert read_file(dst) == payload[:size]
    leaks.check()


def test_copyfile_auto_picks_kernel_copy_on_ext4(tmp_path, payload):
    src = write_file(tmp_path / "src.bin", payload[:1 << 20])
    used = fastio.copyfile(src, tmp_path / "dst.bin").method
    assert used in ("reflink", "copy_file_range")


def test_copyfile_like_shutil_towards_destination(tmp_path):
    leaks = LeakCheck()
    src = write_file(tmp_path / "src.bin", b"new")
    dst = write_file(tmp_path / "dst.bin", b"old contents, longer")
    os.chmod(dst, 0o640)
    assert fastio.copyfile(src, dst) == dst  # shutil returns dst
    assert read_file(dst) == b"new"
    assert os.stat(dst).st_mode & 0o777 == 0o640  # truncated, not replaced
    created = tmp_path / "created.bin"
    fastio.copyfile(src, created)
    shutil.copyfile(src, tmp_path / "oracle.bin")
    assert os.stat(created).st_mode == os.stat(tmp_path / "oracle.bin").st_mode
    leaks.check()


def test_copyfile_onto_itself(tmp_path):
    leaks = LeakCheck()
    src = write_file(tmp_path / "src.bin", b"precious")
    os.link(src, tmp_path / "hard.bin")
    os.symlink(src, tmp_path / "sym.bin")
    for other in (src, tmp_path / "hard.bin", tmp_path / "sym.bin"):
        with pytest.raises(shutil.SameFileError):
            fastio.copyfile(src, other)
        with pytest.raises(shutil.SameFileError):
            shutil.copyfile(src, other)  # the oracle agrees
    fd = os.open(src, os.O_RDONLY)
    try:
        with pytest.raises(shutil.SameFileError):
            fastio.copyfile(f"/proc/self/fd/{fd}", src)
    finally:
        os.close(fd)
    assert read_file(src) == b"precious"
    leaks.check()


def test_copyfile_onto_itself_caught_after_open(tmp_path, monkeypatch):
    """If the path comparison misses an alias (a race, a bind mount), the
    descriptors are compared before the destination is truncated."""
    src = write_file(tmp_path / "src.bin", b"precious")
    monkeypatch.setattr(shutil, "_samefile", lambda a, b: False)
    with pytest.raises(shutil.SameFileError):
        fastio.copyfile(src, tmp_path / "src.bin")
    assert read_file(src) == b"precious"


SAME_FILE_CHILD = r"""
import os, resource, signal, sys
import fastio
# A regression would append forever (cat f >> f): a file size limit turns
# that into EFBIG instead of a full disk.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
path, how = sys.argv[1], sys.argv[2]
fd = os.open(path, os.O_RDWR)
os.lseek(fd, 0, os.SEEK_END)            # the output position: the end
if how == "copy_file_range":
    n = fastio.copy_file_range(fd, fd, None, 0)
else:
    n = fastio.sendfile(fd, fd, 3, method=how)
print(int(n), os.fstat(fd).st_size)
"""


@pytest.mark.parametrize("how", ["sendfile", "splice", "readwrite", "copy_file_range"])
def test_same_file_to_the_end_means_the_end_at_the_start(tmp_path, how):
    """One file as input and output, count None: the bytes up to the end as
    it was when the call started, once (found by the fuzzer: the loop chased
    the end its own writes moved)."""
    p = write_file(tmp_path / "f.bin", b"0123456789")
    proc = subprocess.run([sys.executable, "-c", SAME_FILE_CHILD, str(p), how],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    n, size = map(int, proc.stdout.split())
    if how == "copy_file_range":
        assert (n, size) == (10, 20)
        assert read_file(p) == b"0123456789" * 2
    else:
        assert (n, size) == (7, 17)
        assert read_file(p) == b"0123456789" + b"3456789"


@pytest.mark.smoke
def test_copyfile_bad_input(tmp_path):
    leaks = LeakCheck()
    src = write_file(tmp_path / "src.bin", b"abc")
    with pytest.raises(IsADirectoryError) as ei:
        fastio.copyfile(tmp_path, tmp_path / "d.bin")
    assert ei.value.filename == str(tmp_path)
    assert not (tmp_path / "d.bin").exists(), "dst must not be created"
    os.mkdir(tmp_path / "sub")
    with pytest.raises(IsADirectoryError):
        fastio.copyfile(src, tmp_path / "sub")
    with pytest.raises(FileNotFoundError):
        fastio.copyfile(tmp_path / "missing", tmp_path / "x.bin")
    assert not (tmp_path / "x.bin").exists()
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(shutil.SpecialFileError):
        fastio.copyfile(tmp_path / "fifo", tmp_path / "y.bin")
    with pytest.raises(ValueError, match="'fast'"):
        fastio.copyfile(src, tmp_path / "z.bin", method="fast")
    with pytest.raises(TypeError):
        fastio.copyfile(3, tmp_path / "z.bin")
    leaks.check()


@pytest.mark.parametrize("path", ["/proc/version", "/proc/self/cmdline",
                                  "/sys/kernel/mm/transparent_hugepage/enabled"])
def test_copyfile_pseudo_files(tmp_path, path):
    """procfs says 0 bytes, sysfs 4096: a kernel copy answers 0, fall back."""
    if not os.path.exists(path):
        pytest.skip(f"{path} missing")
    used = fastio.copyfile(path, tmp_path / "out").method
    want = read_file(path)
    assert want, "the oracle read nothing"
    assert read_file(tmp_path / "out") == want
    assert used in ("sendfile", "readwrite")


def test_copyfile_empty_file(tmp_path):
    src = write_file(tmp_path / "src.bin", b"")
    write_file(tmp_path / "dst.bin", b"junk")
    assert fastio.copyfile(src, tmp_path / "dst.bin").method in fastio.COPYFILE_METHODS
    assert read_file(tmp_path / "dst.bin") == b""


# ---------------------------------------------------------------- splice, tee

@pytest.mark.smoke
def test_splice_file_to_pipe_and_pipe_to_file(tmp_path, payload):
    leaks = LeakCheck()
    data = payload[:1 << 20]
    src = write_file(tmp_path / "src.bin", data)
    r, w = os.pipe()
    d = Drain(lambda n: os.read(r, n))
    with open(src, "rb") as f:
        n = fastio.splice(f, w, 500000, in_offset=1000)
        assert f.tell() == 0
    os.close(w)
    assert d.result() == data[1000:501000] and n == 500000 and n.method == "splice"
    os.close(r)

    r, w = os.pipe()
    t = threading.Thread(target=lambda: (os.write(w, data), os.close(w)))
    t.start()
    fo = os.open(tmp_path / "out.bin", os.O_RDWR | os.O_CREAT, 0o600)
    n = fastio.splice(r, fo, None, out_offset=10)
    t.join()
    assert n == len(data) and os.lseek(fo, 0, os.SEEK_CUR) == 0
    os.close(fo)
    os.close(r)
    assert read_file(tmp_path / "out.bin") == b"\0" * 10 + data
    leaks.check()


def test_splice_socket_to_file_through_internal_pipe(tmp_path, payload):
    leaks = LeakCheck()
    data = payload[:3 << 20]
    with socket.create_server(("127.0.0.1", 0)) as srv:
        a = socket.create_connection(srv.getsockname())
        b, _ = srv.accept()
    t = threading.Thread(target=lambda: (a.sendall(data), a.close()))
    t.start()
    with open(tmp_path / "out.bin", "wb") as out:
        n = fastio.splice(b, out)
    t.join()
    b.close()
    assert n == len(data) and read_file(tmp_path / "out.bin") == data
    # Count short of the stream: exactly count arrive.
    a, b = socket.socketpair()
    a.sendall(b"0123456789")
    with open(tmp_path / "out2.bin", "wb") as out:
        assert fastio.splice(b, out, 4) == 4
    assert read_file(tmp_path / "out2.bin") == b"0123"
    a.close()
    b.close()
    leaks.check()


def test_splice_timeout_on_silent_socket(tmp_path):
    a, b = socket.socketpair()
    try:
        with open(tmp_path / "out.bin", "wb") as out:
            b.setblocking(False)
            with pytest.raises(TimeoutError):
                fastio.splice(b, out, 10, timeout=0.05)
    finally:
        a.close()
        b.close()


@pytest.mark.smoke
def test_tee_duplicates_without_consuming():
    leaks = LeakCheck()
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    try:
        os.write(w1, b"hello world")
        assert fastio.tee(r1, w2, 5) == 5
        assert os.read(r2, 100) == b"hello"
        assert os.read(r1, 100) == b"hello world"
        assert fastio.tee(r1, w2, 0) == 0
        os.close(w1)
        w1 = -1
        assert fastio.tee(r1, w2, 10) == 0  # empty and closed: end of input
        os.set_blocking(r1, False)
        with pytest.raises(ValueError, match="count must be >= 0, not -3"):
            fastio.tee(r1, w2, -3)
        with pytest.raises(OSError) as ei:
            fastio.tee(r2, r2, 1)  # the write side of a read end: refused
        assert ei.value.errno in (errno.EINVAL, errno.EBADF)
    finally:
        for fd in (r1, w1, r2, w2):
            if fd >= 0:
                os.close(fd)
    leaks.check()


def test_tee_timeout():
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    try:
        os.set_blocking(r1, False)
        with pytest.raises(TimeoutError):
            fastio.tee(r1, w2, 10, timeout=0.05)
    finally:
        for fd in (r1, w1, r2, w2):
            os.close(fd)


# ---------------------------------------------------------------- asyncio

@pytest.mark.parametrize("method", ["auto", "sendfile", "readwrite"])
@pytest.mark.parametrize("size", [0, 1, PAGE + 1, 8 * 1024 * 1024])
def test_aio_sendfile(tmp_path, payload, size, method):
    leaks = LeakCheck()
    data = payload[:size]
    src = write_file(tmp_path / "src.bin", data)

    async def main():
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        a.setblocking(False)
        b.setblocking(False)
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32768)
        got = bytearray()

        async def reader():  # slow, and in the same loop: sendfile must yield
            while True:
                d = await loop.sock_recv(b, 65536)
                if not d:
                    return
                got.extend(d)
                await asyncio.sleep(0)

        task = asyncio.ensure_future(reader())
        with open(src, "rb") as f:
            f.read(0)
            n = await fastio.aio.sendfile(a, f, offset=0, method=method)
            assert f.tell() == 0
        a.close()
        await task
        b.close()
        return n, bytes(got)

    n, got = asyncio.run(main())
    assert n == size and got == data
    assert n.method == ("sendfile" if method == "auto" else method)
    leaks.check()


def test_aio_sendfile_offset_none_and_errors(tmp_path, payload):
    data = payload[:100000]
    src = write_file(tmp_path / "src.bin", data)

    async def main():
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        a.setblocking(False)
        b.setblocking(False)
        try:
            with open(src, "rb") as f:
                f.read(100)
                n = await fastio.aio.sendfile(a, f, offset=None, count=5000)
                assert n == 5000 and f.tell() == 5100
            got = b""
            while len(got) < 5000:
                got += await loop.sock_recv(b, 65536)
            assert got == data[100:5100]
            blocking, other = socket.socketpair()
            with blocking, other:
                with pytest.raises(ValueError, match="non-blocking"):
                    await fastio.aio.sendfile(blocking, src)
            with pytest.raises(IsADirectoryError):
                await fastio.aio.sendfile(a, tmp_path)
            b.close()
            with pytest.raises((BrokenPipeError, ConnectionResetError)):
                await fastio.aio.sendfile(a, src)
        finally:
            a.close()
            b.close()

    leaks = LeakCheck()
    asyncio.run(main())
    leaks.check()


def test_infinite_timeout_means_no_limit(tmp_path):
    # issue 12 audit: (int64_t)(timeout * 1e9) was undefined behaviour for
    # inf and huge values (it happened to saturate with this compiler), and
    # NaN silently meant no limit. inf now means no limit by definition; NaN
    # and a finite value past the clock's range are refused, naming it.
    import math
    r, w = os.pipe()
    r2, w2 = os.pipe()
    try:
        os.write(w, b"abc")
        assert fastio.tee(r, w2, 10, timeout=math.inf) == 3
        assert os.read(r2, 10) == b"abc"
        src = tmp_path / "src.bin"
        src.write_bytes(b"x" * 1000)
        with open(src, "rb") as f:
            assert fastio.splice(f.fileno(), w2, 1000, 0, timeout=math.inf) == 1000
        assert len(os.read(r2, 2000)) == 1000
        # the same checks and limit as every fastio timeout (Queue.wait, Channel)
        for call in (lambda t: fastio.tee(r, w2, 10, timeout=t),
                     lambda t: fastio.splice(r, w2, 10, timeout=t)):
            with pytest.raises(ValueError, match="non-negative number of seconds or None, "
                                                 "got timeout=nan"):
                call(math.nan)
            with pytest.raises(ValueError, match="got timeout=-1"):
                call(-1)
            with pytest.raises(OverflowError, match="at most 1000000000 seconds"):
                call(1e300)
            with pytest.raises(TypeError, match="got timeout of type str"):
                call("1")
    finally:
        for fd in (r, w, r2, w2):
            os.close(fd)
