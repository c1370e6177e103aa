"""Promises the docs make that no other test held fastio to (issue 15).

- "EINTR retried", "short counts continued": an LD_PRELOAD shim built here
  makes the next read or write on a chosen file fail with EINTR, or caps
  every read and copy from it at 1000 bytes; every retrying call must still
  return the bytes. And a real signal with a Python handler during a
  blocking Channel.recv, and during a splice blocked on an empty FIFO, must
  not end the call.
- O_DIRECT buffer addresses: the C explanation and Python's _check_direct,
  each with its exact message.
- write_blocks' negative offset, with data of the right shape.
- Advice, readahead and fadvise change what is resident: the file is
  evicted first and residency is read with an independent mincore
  (tests/probes.py).
- The module's MADV_* constants are the kernel's (the stdlib's values).
- Channel.close() wakes a waiter at once, not at the end of a wait slice.
- The C sequence item stops at len(m); shared memory is created 0600.

Each of these failed on a bug planted by tools/mutants.py.
"""
import errno
import mmap as stdlib_mmap
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import fastio
import probes
from fastio import _core

PAGE = stdlib_mmap.PAGESIZE

# ---------------------------------------------------------------- EINTR shim

SHIM_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

/* eintr_arm: the next `left` calls on the file with this device and inode
 * fail with EINTR. short_arm: every read or copy from that file moves at
 * most `cap` bytes (a short count). `fired` counts what was done. */
static atomic_long left;
static atomic_long cap;
static atomic_long fired;
static dev_t arm_dev;
static ino_t arm_ino;

void eintr_arm(unsigned long dev, unsigned long ino, long n)
{
    arm_dev = (dev_t)dev;
    arm_ino = (ino_t)ino;
    atomic_store(&fired, 0);
    atomic_store(&cap, 0);
    atomic_store(&left, n);
}

void short_arm(unsigned long dev, unsigned long ino, long n)
{
    eintr_arm(dev, ino, 0);
    atomic_store(&cap, n);
}

long eintr_fired(void) { return atomic_load(&fired); }

static int same(int fd)
{
    struct stat st;
    return fstat(fd, &st) == 0 && st.st_dev == arm_dev && st.st_ino == arm_ino;
}

static int hit(int fd)
{
    if (atomic_load(&left) <= 0 || !same(fd))
        return 0;
    if (atomic_fetch_sub(&left, 1) <= 0)
        return 0;
    atomic_fetch_add(&fired, 1);
    errno = EINTR;
    return 1;
}

static size_t capped(int fd, size_t n)
{
    long c = atomic_load(&cap);
    if (c <= 0 || n <= (size_t)c || !same(fd))
        return n;
    atomic_fetch_add(&fired, 1);
    return (size_t)c;
}

#define NEXT(name) ((__typeof__(&name))dlsym(RTLD_NEXT, #name))

ssize_t pread(int fd, void *b, size_t n, off_t o)
{ return hit(fd) ? -1 : NEXT(pread)(fd, b, capped(fd, n), o); }
ssize_t pread64(int fd, void *b, size_t n, off_t o)
{ return hit(fd) ? -1 : NEXT(pread64)(fd, b, capped(fd, n), o); }
ssize_t pwrite(int fd, const void *b, size_t n, off_t o)
{ return hit(fd) ? -1 : NEXT(pwrite)(fd, b, n, o); }
ssize_t pwrite64(int fd, const void *b, size_t n, off_t o)
{ return hit(fd) ? -1 : NEXT(pwrite64)(fd, b, n, o); }
ssize_t preadv(int fd, const struct iovec *v, int c, off_t o)
{ return hit(fd) ? -1 : NEXT(preadv)(fd, v, c, o); }
ssize_t preadv64(int fd, const struct iovec *v, int c, off_t o)
{ return hit(fd) ? -1 : NEXT(preadv64)(fd, v, c, o); }
ssize_t pwritev(int fd, const struct iovec *v, int c, off_t o)
{ return hit(fd) ? -1 : NEXT(pwritev)(fd, v, c, o); }
ssize_t pwritev64(int fd, const struct iovec *v, int c, off_t o)
{ return hit(fd) ? -1 : NEXT(pwritev64)(fd, v, c, o); }
ssize_t readahead(int fd, off_t o, size_t n)
{ return hit(fd) ? -1 : NEXT(readahead)(fd, o, n); }
ssize_t copy_file_range(int i, loff_t *io, int o, loff_t *oo, size_t n, unsigned f)
{ return NEXT(copy_file_range)(i, io, o, oo, capped(i, n), f); }
ssize_t sendfile(int o, int i, off_t *off, size_t n)
{ return NEXT(sendfile)(o, i, off, capped(i, n)); }
ssize_t sendfile64(int o, int i, off_t *off, size_t n)
{ return NEXT(sendfile64)(o, i, off, capped(i, n)); }
"""

# Run in a child with the shim preloaded. Each case arms the shim for the
# file it works on, calls fastio, and checks the bytes and that the shim did
# fire (else the case proves nothing).
CHILD = r"""
import ctypes, os, sys
import numpy as np
import fastio
from fastio import _core

shim = ctypes.CDLL(None)
shim.eintr_arm.argtypes = (ctypes.c_ulong, ctypes.c_ulong, ctypes.c_long)
path, wpath = sys.argv[1], sys.argv[2]
data = open(path, "rb").read()
fd = os.open(path, os.O_RDONLY)
wfd = os.open(wpath, os.O_RDWR | os.O_CREAT, 0o600)

def arm(p, n=1):
    st = os.stat(p)
    shim.eintr_arm(st.st_dev, st.st_ino, n)

def case(name, p, fn, check, n=1):
    arm(p, n)
    try:
        got = fn()
    except BaseException as exc:
        print(f"{name}: raised {type(exc).__name__}: {exc}")
        return
    fired = shim.eintr_fired()
    if fired != n:
        print(f"{name}: the shim fired {fired} times, not {n}: the case proves nothing")
    elif not check(got):
        print(f"{name}: wrong result after EINTR: {got!r:.80}")
    else:
        print(f"{name}: ok")

buf = bytearray(4096)
case("pread", path, lambda: (fastio.pread(fd, buf, 8), bytes(buf)),
     lambda r: r == (4096, data[8:8 + 4096]))
case("pwrite", wpath, lambda: fastio.pwrite(wfd, b"w" * 100, 0),
     lambda r: r == 100 and os.pread(wfd, 100, 0) == b"w" * 100)
big = bytearray(len(data))
case("readinto_full", path, lambda: (fastio.readinto_full(fd, big, 0), bytes(big)),
     lambda r: r == (len(data), data))
a, b = bytearray(100), bytearray(5000)
case("preadv", path, lambda: (fastio.preadv(fd, [a, b], 3), bytes(a + b)),
     lambda r: r == (5100, data[3:5103]))
case("pwritev", wpath, lambda: fastio.pwritev(wfd, [b"x" * 10, b"y" * 20], 0),
     lambda r: r == 30 and os.pread(wfd, 30, 0) == b"x" * 10 + b"y" * 20)
case("readahead", path, lambda: fastio.readahead(fd, 0, len(data)), lambda r: r is None)
for method in ("pread", "threads"):
    case(f"read_file(method={method!r})", path,
         lambda: fastio.read_file(path, method=method),
         lambda r: r.tobytes() == data)
offs = np.array([0, 4096, 12288], np.int64)
case("read_blocks(backend='threads')", path,
     lambda: fastio.read_blocks(fd, offs, 4096, backend="threads"),
     lambda r: r.tobytes() == b"".join(data[o:o + 4096] for o in offs))
lab_buf = bytearray(4096)
lat = np.zeros(len(offs), np.int64)
case("_lab_pread", path, lambda: _core._lab_pread(fd, lab_buf, offs, lat),
     lambda r: r == 3 * 4096 and bytes(lab_buf) == data[12288:12288 + 4096])

# Short counts: every read or copy from the file moves at most 1000 bytes;
# the loops that promise the whole count must continue (fired >= 2).
shim.short_arm.argtypes = shim.eintr_arm.argtypes

def short(name, fn, check):
    st = os.stat(path)
    shim.short_arm(st.st_dev, st.st_ino, 1000)
    try:
        got = fn()
    except BaseException as exc:
        print(f"short {name}: raised {type(exc).__name__}: {exc}")
        return
    finally:
        fired = shim.eintr_fired()
        shim.short_arm(0, 0, 0)
    if fired < 2:
        print(f"short {name}: the shim capped {fired} calls: the case proves nothing")
    elif not check(got):
        print(f"short {name}: wrong result after short counts: {got!r:.80}")
    else:
        print(f"short {name}: ok")

def out_file(name):
    p = wpath + "." + name
    return p, os.open(p, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)

big2 = bytearray(len(data))
short("readinto_full", lambda: (fastio.readinto_full(fd, big2, 0), bytes(big2)),
      lambda r: r == (len(data), data))
short("read_file", lambda: fastio.read_file(path, method="pread"), lambda r: r.tobytes() == data)
p1, o1 = out_file("cfr")
short("copy_file_range with offsets",
      lambda: fastio.copy_file_range(fd, o1, 20000, src_offset=3, dst_offset=5,
                                     method="copy_file_range"),
      lambda r: open(p1, "rb").read() == bytes(5) + data[3:20003])
p2, o2 = out_file("sf")
short("sendfile", lambda: fastio.sendfile(o2, fd, 7, 20000),
      lambda r: open(p2, "rb").read() == data[7:20007])
"""


@pytest.fixture(scope="module")
def shim(tmp_path_factory):
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed: the EINTR shim cannot be built")
    d = tmp_path_factory.mktemp("shim")
    src = d / "eintr.c"
    src.write_text(SHIM_C)
    so = d / "eintr.so"
    p = subprocess.run([gcc, "-shared", "-fPIC", "-O1", "-o", str(so), str(src), "-ldl"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return str(so)


def test_every_retrying_call_survives_eintr_and_short_counts(shim, tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(os.urandom(64 * 1024 + 17))
    # Under ASan its runtime must come first in LD_PRELOAD.
    preload = " ".join(filter(None, [os.environ.get("LD_PRELOAD", ""), shim]))
    pkg = os.path.dirname(os.path.dirname(fastio.__file__))
    env = dict(os.environ, LD_PRELOAD=preload,
               PYTHONPATH=os.pathsep.join([pkg, os.environ.get("PYTHONPATH", "")]))
    p = subprocess.run([sys.executable, "-c", CHILD, str(path), str(tmp_path / "w.bin")],
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    lines = p.stdout.splitlines()
    assert len(lines) == 14, p.stdout + p.stderr
    bad = [line for line in lines if not line.endswith(": ok")]
    assert not bad, "\n".join(bad)


def test_a_signal_handler_does_not_end_a_blocking_wait():
    """A real signal (SIGALRM, with a Python handler that returns) during a
    blocking Channel.recv: the handler runs and the wait goes on until the
    message comes."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers run in the main thread only")
    ch = fastio.Channel(4096)
    seen = []
    old = signal.signal(signal.SIGALRM, lambda *a: seen.append(time.monotonic()))
    sender = threading.Timer(0.4, ch.send, (b"late",))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        sender.start()
        got = ch.recv(timeout=10)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        sender.join()
        ch.close()
    assert got == b"late" and len(seen) == 1


def test_a_signal_handler_does_not_end_a_blocking_splice_from_a_fifo(tmp_path):
    """A real signal (SIGALRM, Python handler that returns) while splice(2)
    blocks reading an empty FIFO: the kernel answers EINTR, fastio runs the
    handler and goes on; the bytes written later arrive whole."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers run in the main thread only")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    r = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    w = os.open(fifo, os.O_WRONLY)
    os.set_blocking(r, True)  # splice must block, not poll
    out = os.open(tmp_path / "out.bin", os.O_RDWR | os.O_CREAT, 0o600)
    seen = []
    old = signal.signal(signal.SIGALRM, lambda *a: seen.append(1))
    writer = threading.Timer(0.4, os.write, (w, b"hello fifo"))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        writer.start()
        t = fastio.splice(r, out, 10)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        writer.join()
        os.close(r)
        os.close(w)
    try:
        assert t == 10 and t.method == "splice"
        assert os.pread(out, 20, 0) == b"hello fifo" and seen == [1]
    finally:
        os.close(out)


# ---------------------------------------------------------------- O_DIRECT buffer addresses

def open_direct(tmp_path, mode):
    """fastio.open(direct=True) on two pages of zeros; fail where the kernel
    has O_DIRECT here and fastio cannot open it so."""
    p = tmp_path / "d.bin"
    p.write_bytes(b"\0" * 8192)
    try:
        return fastio.open(p, mode, direct=True)
    except OSError as exc:
        probes.fail_or_skip("O_DIRECT", probes.o_direct(tmp_path), exc)


def test_request_error_explains_a_misaligned_buffer_address(tmp_path):
    """The C explanation of an O_DIRECT EINVAL (what a kernel that refuses a
    misaligned buffer gets; ext4 on this kernel version may accept one, so
    the explanation is asked for directly with the request's values)."""
    with open_direct(tmp_path, "r") as f:
        mem, off = f.mem_alignment, f.alignment
        assert mem & (mem - 1) == 0 and off & (off - 1) == 0
        buf = fastio.empty(2 * 4096, align=4096)
        addr = buf.ctypes.data + 1  # aligned offset and length, misaligned address
        exc = _core._request_error(-errno.EINVAL, 0, "io_uring", f.fileno(), addr, off, 0)
        assert isinstance(exc, OSError) and exc.errno == errno.EINVAL
        assert str(exc) == (
            f"[Errno 22] O_DIRECT read (io_uring) needs its offset and length aligned to "
            f"{off} bytes and its buffer to {mem} bytes: the buffer address 0x{addr:x} is "
            f"not a multiple of {mem} (use fastio.Buffer or fastio.empty for aligned memory)")
        # The same request with an aligned address is no alignment problem:
        # plain EINVAL, no explanation.
        plain = _core._request_error(-errno.EINVAL, 0, "io_uring", f.fileno(), addr - 1, off, 0)
        assert "buffer address" not in str(plain) and plain.errno == errno.EINVAL


def test_check_direct_refuses_a_misaligned_buffer(tmp_path):
    with open_direct(tmp_path, "r+") as f:
        mem = f.mem_alignment
        out = fastio.empty(2 * 4096 + mem, align=4096)
        bad = out[1:1 + 4096]
        msg = (f"O_DIRECT needs buffers aligned to {mem} bytes: the buffer at "
               f"0x{bad.ctypes.data:x} is not (use fastio.empty for aligned memory)")
        with pytest.raises(ValueError) as ei:
            fastio.read_blocks(f, [0], 4096, out=bad)
        assert str(ei.value) == msg
        with pytest.raises(ValueError) as ei:
            fastio.write_blocks(f, [0], bad.reshape(1, 4096))
        assert str(ei.value) == msg
        # aligned: both work
        assert fastio.read_blocks(f, [0], 4096, out=out[:4096]) is not None
        fastio.write_blocks(f, [4096], out[:4096].reshape(1, 4096))


def test_write_blocks_negative_offset_with_proper_data(tmp_path):
    p = tmp_path / "w.bin"
    p.write_bytes(b"\0" * 8192)
    with pytest.raises(ValueError) as ei:
        fastio.write_blocks(p, [0, -1], np.zeros((2, 4096), np.uint8))
    assert str(ei.value) == "offsets[1] must be >= 0, got -1"
    assert p.read_bytes() == b"\0" * 8192  # nothing written


# ---------------------------------------------------------------- advice, by residency

N_PAGES = 64


@pytest.fixture
def cold(tmp_path):
    """A file of N_PAGES pages, written, synced and evicted: residency 0
    by an independent mincore, or skip (tmpfs keeps its pages)."""
    p = tmp_path / "cold.bin"
    p.write_bytes(os.urandom(N_PAGES * PAGE))
    if probes.evict(p) != 0.0:
        pytest.skip(f"the page cache of {tmp_path} cannot be dropped (tmpfs?)")
    return p


def wait_resident(p, want=1.0, timeout=5.0):
    """WILLNEED and readahead start reads and return: poll until done."""
    end = time.monotonic() + timeout
    while True:
        r = probes.residency(p)
        if r >= want or time.monotonic() > end:
            return r


def test_fadvise_willneed_loads_and_dontneed_drops(cold):
    fd = os.open(cold, os.O_RDONLY)
    try:
        assert fastio.fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED) is None
        assert wait_resident(cold) == 1.0
        assert fastio.fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED) is None
        assert probes.residency(cold) == 0.0
    finally:
        os.close(fd)


def test_readahead_loads_the_range(cold):
    fd = os.open(cold, os.O_RDONLY)
    try:
        assert fastio.readahead(fd, 0, 16 * PAGE) is None
        end = time.monotonic() + 5
        while probes.residency(cold) < 16 / N_PAGES and time.monotonic() < end:
            time.sleep(0.01)
        assert probes.residency(cold) >= 16 / N_PAGES
    finally:
        os.close(fd)


@pytest.mark.parametrize("mode", ["r", "r+"])
def test_mmap_populate_faults_the_file_in(cold, mode):
    with fastio.mmap(cold, mode=mode) as m:
        assert m.residency()[0] == 0.0  # agrees with the probe before
        m.populate()
        assert probes.residency(cold) == 1.0
        frac, pages = m.residency()
        assert frac == 1.0 and pages.all()


def test_mmap_advise_willneed_loads_the_file(cold):
    with fastio.mmap(cold, mode="r") as m:
        assert m.advise(fastio.MADV_WILLNEED) is None
        assert wait_resident(cold) == 1.0


def test_memmap_populate_faults_the_file_in(cold):
    f = fastio.memmap(cold, "u1", "r")
    assert f.residency()[0] == 0.0
    f.populate()
    assert probes.residency(cold) == 1.0 and f.residency()[0] == 1.0


def test_anonymous_dontneed_drops_pages():
    with fastio.mmap(-1, 8 * PAGE, flags=fastio.MAP_PRIVATE) as m:
        m.populate()
        m.advise(fastio.MADV_DONTNEED, 0, 4 * PAGE)
        frac, pages = m.residency()
        assert frac == 0.5 and not pages[:4].any() and pages[4:].all()


def test_madv_constants_are_the_kernels():
    """fastio's MADV_*/MAP_* values against the stdlib's (which come from
    the C headers); a swapped value passes every advice test that only
    checks the call returns."""
    names = [n for n in dir(stdlib_mmap) if n.startswith(("MADV_", "MAP_", "PROT_"))]
    assert names
    for n in names:
        if hasattr(fastio, n):
            assert getattr(fastio, n) == getattr(stdlib_mmap, n), n


# ---------------------------------------------------------------- Channel

def test_close_wakes_a_waiter_before_the_wait_slice_ends():
    """Channel waits in 50 ms slices; close() must wake the waiter at once,
    not leave it to notice at the end of its slice. Each trial closes 25 ms
    into a slice: a close that forgot to wake costs about 25 ms every time;
    the best of five trials must be under 15 ms."""
    lags = []
    for _ in range(5):
        ch = fastio.Channel(256)
        started = []
        ended = []

        def waiter():
            started.append(time.monotonic())
            try:
                ch.recv(timeout=30)
            except (ValueError, EOFError):
                pass
            ended.append(time.monotonic())

        t = threading.Thread(target=waiter)
        t.start()
        while not started:
            time.sleep(0.001)
        # 2 slices and a half into the wait
        time.sleep(max(0.0, started[0] + 0.125 - time.monotonic()))
        closed_at = time.monotonic()
        ch.close()
        t.join(10)
        assert not t.is_alive()
        lags.append(ended[0] - closed_at)
    assert min(lags) < 0.015, f"close() woke the waiter after {[round(x * 1e3) for x in lags]} ms"


# ---------------------------------------------------------------- the sequence protocol

@pytest.mark.parametrize("size", [1, 100, PAGE - 1, PAGE + 3])
def test_iteration_and_sequence_item_end_where_the_map_ends(tmp_path, size):
    """Iteration stops at len(m), as the stdlib's does; and the C type's
    sequence item (sq_item: PySequence_GetItem, the generic iterator; the
    public fastio.mmap subclass's __getitem__ hides it, so it is asked on
    fastio._core.mmap) yields bytes of length 1 up to len(m) - 1 and
    IndexError at len(m), not the byte past the end."""
    import ctypes
    getitem = ctypes.pythonapi.PySequence_GetItem
    getitem.argtypes = (ctypes.py_object, ctypes.c_ssize_t)
    getitem.restype = ctypes.py_object
    p = tmp_path / "it.bin"
    data = os.urandom(size)
    p.write_bytes(data)
    with open(p, "r+b") as fh, fastio.mmap(p, mode="r") as m:
        s = stdlib_mmap.mmap(fh.fileno(), 0, access=stdlib_mmap.ACCESS_READ)
        c = _core.mmap(fh.fileno(), 0, access=stdlib_mmap.ACCESS_READ)
        try:
            assert list(m) == list(s) == list(c)
            assert len(list(m)) == size
            assert getitem(c, size - 1) == getitem(s, size - 1) == data[-1:]
            for mm in (c, s):
                with pytest.raises(IndexError):
                    getitem(mm, size)
        finally:
            s.close()
            c.close()


# ---------------------------------------------------------------- secure by default

def test_shared_memory_is_created_0600_by_default():
    """DESIGN.md: shared memory is created exclusively, mode 0600. With a
    umask of 0 nothing masks a wrong default."""
    old = os.umask(0)
    try:
        with fastio.SharedMemory(create=True, size=4096) as a:
            st = os.stat(f"/dev/shm/{a.name.lstrip('/')}")
            assert st.st_mode & 0o777 == 0o600
        # The C type's own default (the Python layer always passes mode).
        name = f"/fastio-test-{os.getpid()}-{time.monotonic_ns()}"
        c = _core.SharedMemory(name, 4096, create=True)
        try:
            assert os.stat(f"/dev/shm{name}").st_mode & 0o777 == 0o600
        finally:
            c.close()
            if os.path.exists(f"/dev/shm{name}"):
                os.unlink(f"/dev/shm{name}")
        if os.path.exists("/proc/sysvipc/shm"):
            with fastio.SysVSharedMemory(None, 4096) as b:
                with open("/proc/sysvipc/shm") as f:
                    rows = [line.split() for line in f.readlines()[1:]]
                # perms is octal, with SHM_DEST (01000) and the like above 0o777
                perms = [int(r[2], 8) & 0o777 for r in rows if int(r[1]) == b.id]
                assert perms == [0o600]
    finally:
        os.umask(old)
