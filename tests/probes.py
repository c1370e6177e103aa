"""Independent feature probes: ask the kernel, never fastio.

A test that skips because fastio says a feature does not work turns a
regression into "not available here". The probes below ask the kernel
directly (ctypes system calls, the stdlib's mmap and fcntl) and share no code
with csrc/, so the two answers can be compared:

- the probe says the feature is absent: the test skips, with the probe's
  reason (``skip_unless`` / ``require``);
- the probe says it is present and fastio fails: the test fails
  (``fail_or_skip``).

Every skip made here has the shape ``"no FEATURE here (independent probe:
DETAIL)"`` so that tools/check_skips.py (run by .ci/run) can find it in the
JUnit report, probe FEATURE again and fail the run if the kernel has it.

Run ``python tests/probes.py [DIR ...]`` to print what this machine has.
"""
import ctypes
import errno
import fcntl
import functools
import mmap
import os
import platform
import struct
import tempfile
from typing import NamedTuple

PAGE = mmap.PAGESIZE

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
_libc.mincore.restype = ctypes.c_int
_libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long)
_libc.mmap.restype = ctypes.c_void_p
_libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
_libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
_libc.mlock.argtypes = _libc.munlock.argtypes = (ctypes.c_void_p, ctypes.c_size_t)

# System call numbers: x86-64's own table, the generic table elsewhere
# (aarch64, riscv64, loongarch64). io_uring's are the same on all.
_SYSCALLS = {
    "x86_64": {"io_setup": 206, "io_destroy": 207, "io_uring_setup": 425, "io_uring_enter": 426},
    "generic": {"io_setup": 0, "io_destroy": 1, "io_uring_setup": 425, "io_uring_enter": 426},
}
_NR = _SYSCALLS["x86_64" if platform.machine() == "x86_64" else "generic"]

MADV_POPULATE_READ = 22
MADV_POPULATE_WRITE = 23
FICLONE = 0x40049409


class Probe(NamedTuple):
    present: bool
    detail: str

    def __bool__(self):
        return self.present


def _syscall(name, *args):
    """(result, errno) of a raw system call with integer arguments."""
    ctypes.set_errno(0)
    r = _libc.syscall(ctypes.c_long(_NR[name]), *(ctypes.c_long(a) for a in args))
    return r, (ctypes.get_errno() if r < 0 else 0)


def _err(call, e):
    return f"{call}: {errno.errorcode.get(e, e)} ({os.strerror(e)})"


def _address(buf):
    return ctypes.addressof(ctypes.c_char.from_buffer(buf))


# ---------------------------------------------------------------- io_uring

def _uring_submit_one(fd, sq, sqes, cq, p, sqe):
    """Put one SQE in the ring, enter, return the CQE's (user_data, res)."""
    # struct io_uring_params after the 40 bytes of scalars: sq_off, cq_off.
    sq_head, sq_tail, sq_mask, _, _, _, sq_array = struct.unpack_from("<7I", p, 40)
    cq_head, cq_tail, cq_mask, _, _, cq_cqes = struct.unpack_from("<6I", p, 80)
    tail = struct.unpack_from("<I", sq, sq_tail)[0]
    idx = tail & struct.unpack_from("<I", sq, sq_mask)[0]
    sqes[idx * 64:(idx + 1) * 64] = sqe
    struct.pack_into("<I", sq, sq_array + 4 * idx, idx)
    struct.pack_into("<I", sq, sq_tail, tail + 1)
    r, e = _syscall("io_uring_enter", fd, 1, 1, 1, 0, 0)  # IORING_ENTER_GETEVENTS
    if r < 0:
        return None, _err("io_uring_enter", e)
    head = struct.unpack_from("<I", cq, cq_head)[0]
    if struct.unpack_from("<I", cq, cq_tail)[0] == head:
        return None, "io_uring_enter returned with no completion"
    off = cq_cqes + 16 * (head & struct.unpack_from("<I", cq, cq_mask)[0])
    user_data, res = struct.unpack_from("<Qi", cq, off)
    struct.pack_into("<I", cq, cq_head, head + 1)
    return (user_data, res), ""


@functools.lru_cache(maxsize=None)
def io_uring():
    """io_uring_setup works and the ring runs a NOP and an IORING_OP_READ."""
    p = bytearray(120)  # struct io_uring_params
    r, e = _syscall("io_uring_setup", 4, _address(p))
    if r < 0:
        return Probe(False, _err("io_uring_setup", e))
    fd = r
    maps = []
    tmp = None
    try:
        sq_entries, cq_entries = struct.unpack_from("<2I", p, 0)
        sq_array = struct.unpack_from("<I", p, 40 + 24)[0]
        cq_cqes = struct.unpack_from("<I", p, 80 + 20)[0]
        prot = mmap.PROT_READ | mmap.PROT_WRITE
        sq = mmap.mmap(fd, sq_array + 4 * sq_entries, mmap.MAP_SHARED, prot, offset=0)
        cq = mmap.mmap(fd, cq_cqes + 16 * cq_entries, mmap.MAP_SHARED, prot, offset=0x8000000)
        sqes = mmap.mmap(fd, 64 * sq_entries, mmap.MAP_SHARED, prot, offset=0x10000000)
        maps = [sq, cq, sqes]
        nop = struct.pack("<BBHiQQIIQ", 0, 0, 0, -1, 0, 0, 0, 0, 0x6E6F70).ljust(64, b"\0")
        got, why = _uring_submit_one(fd, sq, sqes, cq, p, nop)
        if got is None:
            return Probe(False, "IORING_OP_NOP: " + why)
        if got != (0x6E6F70, 0):
            return Probe(False, f"IORING_OP_NOP completed as {got}")
        # IORING_OP_READ (22, Linux 5.6): what every engine needs.
        tmp = tempfile.TemporaryFile()
        tmp.write(b"uring-probe")
        tmp.flush()
        dst = bytearray(16)
        addr = _address(dst)
        read = struct.pack("<BBHiQQIIQ", 22, 0, 0, tmp.fileno(), 0, addr, 16, 0, 7).ljust(64, b"\0")
        got, why = _uring_submit_one(fd, sq, sqes, cq, p, read)
        if got is None:
            return Probe(False, "IORING_OP_READ: " + why)
        if got[1] < 0:
            return Probe(False, "IORING_OP_READ: " + _err("completion", -got[1]))
        if bytes(dst[:got[1]]) != b"uring-probe":
            return Probe(False, f"IORING_OP_READ read {bytes(dst[:got[1]])!r}")
        return Probe(True, "io_uring_setup + IORING_OP_NOP + IORING_OP_READ work")
    except OSError as exc:
        return Probe(False, f"mapping the ring: {exc}")
    finally:
        for m in maps:
            m.close()
        if tmp is not None:
            tmp.close()
        os.close(fd)


_URING_FLAGS = {"SQPOLL": 1 << 1, "SINGLE_ISSUER": 1 << 12}


@functools.lru_cache(maxsize=None)
def io_uring_flag(name):
    """io_uring_setup accepts IORING_SETUP_<name> (SQPOLL, SINGLE_ISSUER)."""
    p = bytearray(120)
    struct.pack_into("<I", p, 8, _URING_FLAGS[name])
    if name == "SQPOLL":
        struct.pack_into("<I", p, 16, 10)  # sq_thread_idle, ms
    r, e = _syscall("io_uring_setup", 2, _address(p))
    if r < 0:
        return Probe(False, _err(f"io_uring_setup(IORING_SETUP_{name})", e))
    os.close(r)
    return Probe(True, f"io_uring_setup(IORING_SETUP_{name}) works")


@functools.lru_cache(maxsize=None)
def linux_aio():
    ctx = ctypes.c_ulong(0)
    r, e = _syscall("io_setup", 1, ctypes.addressof(ctx))
    if r < 0:
        return Probe(False, _err("io_setup", e))
    _syscall("io_destroy", ctx.value)
    return Probe(True, "io_setup works")


@functools.lru_cache(maxsize=None)
def posix_aio():
    for lib in (None, "librt.so.1"):
        try:
            if hasattr(ctypes.CDLL(lib), "aio_read"):
                return Probe(True, "the C library has aio_read")
        except OSError:
            pass
    return Probe(False, "the C library has no aio_read")


def backend(name):
    """The kernel's (or libc's) answer for one of fastio.aio.BACKENDS."""
    if name == "io_uring":
        return io_uring()
    if name == "linux_aio":
        return linux_aio()
    if name == "posix_aio":
        return posix_aio()
    if name == "threads":
        return Probe(True, "threads need nothing from the kernel")
    raise ValueError(f"unknown backend {name!r}")


# ---------------------------------------------------------------- O_DIRECT

@functools.lru_cache(maxsize=None)
def _o_direct_dev(dev, directory):
    path = os.path.join(directory, f".probe-odirect-{os.getpid()}")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_DIRECT, 0o600)
    except OSError as exc:
        return Probe(False, _err(f"open(O_DIRECT) in {directory}", exc.errno))
    src = mmap.mmap(-1, 4096)  # page-aligned: enough for any logical block size
    dst = mmap.mmap(-1, 4096)
    try:
        src[:] = os.urandom(4096)
        os.pwrite(fd, src, 0)
        n = os.preadv(fd, [dst], 0)
        if n != 4096 or dst[:] != src[:]:
            return Probe(False, f"O_DIRECT pread in {directory} read {n} wrong bytes")
        return Probe(True, f"O_DIRECT open, 4 KiB aligned pwrite and pread work in {directory}")
    except OSError as exc:
        return Probe(False, _err(f"O_DIRECT I/O in {directory}", exc.errno))
    finally:
        src.close()
        dst.close()
        os.close(fd)
        os.unlink(path)


def o_direct(path):
    """O_DIRECT open + aligned pwrite/pread on the filesystem holding path."""
    directory = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    return _o_direct_dev(os.stat(directory).st_dev, str(directory))


# ---------------------------------------------------------------- RWF_DONTCACHE

@functools.lru_cache(maxsize=None)
def _dontcache_dev(dev, directory):
    path = os.path.join(directory, f".probe-dontcache-{os.getpid()}")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.pwrite(fd, b"x" * 4096, 0)
        os.preadv(fd, [bytearray(4096)], 0, 0x80)  # RWF_DONTCACHE (Linux 6.14)
        return Probe(True, f"preadv2(RWF_DONTCACHE) works in {directory}")
    except OSError as exc:
        return Probe(False, _err(f"preadv2(RWF_DONTCACHE) in {directory}", exc.errno))
    finally:
        os.close(fd)
        os.unlink(path)


def dontcache(path):
    """preadv2 with RWF_DONTCACHE (0x80, Linux 6.14+) on the filesystem
    holding path (tmpfs refuses it)."""
    directory = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    return _dontcache_dev(os.stat(directory).st_dev, str(directory))


# ---------------------------------------------------------------- memory

def _on_anonymous(call, npages, fn, undo=None):
    """fn(address, length) on fresh anonymous memory (then undo, if it
    worked): None when fn returned 0, else the failing Probe with errno."""
    m = mmap.mmap(-1, npages * PAGE)
    try:
        ctypes.set_errno(0)
        addr = ctypes.c_char.from_buffer(m)
        r = fn(ctypes.addressof(addr), npages * PAGE)
        e = ctypes.get_errno()
        if r == 0 and undo is not None:
            undo(ctypes.addressof(addr), npages * PAGE)
        del addr  # the export must go before m.close()
        return Probe(False, _err(call, e)) if r != 0 else None
    finally:
        m.close()


@functools.lru_cache(maxsize=None)
def populate():
    """madvise(MADV_POPULATE_WRITE) on anonymous memory (Linux 5.14)."""
    return _on_anonymous("madvise(MADV_POPULATE_WRITE)", 4,
                         lambda a, n: _libc.madvise(a, n, MADV_POPULATE_WRITE)) or \
        Probe(True, "madvise(MADV_POPULATE_WRITE) works on anonymous memory")


@functools.lru_cache(maxsize=None)
def mlock():
    """mlock(2) of one anonymous page (RLIMIT_MEMLOCK, CAP_IPC_LOCK)."""
    return _on_anonymous("mlock", 1, _libc.mlock, _libc.munlock) or \
        Probe(True, "mlock of one page works")


def thp_mode():
    """'always', 'madvise', 'never', or '' when the kernel has no THP."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            text = f.read()
    except OSError:
        return ""
    return text[text.index("[") + 1:text.index("]")] if "[" in text else ""


def thp():
    mode = thp_mode()
    return Probe(mode in ("always", "madvise"), f"transparent_hugepage/enabled is [{mode or 'absent'}]")


def hugepages_free():
    """Free reserved huge pages (HugePages_Free of /proc/meminfo)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("HugePages_Free:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def hugepages():
    n = hugepages_free()
    return Probe(n > 0, f"HugePages_Free is {n}")


# ---------------------------------------------------------------- reflink

def ficlone(src_dir, dst_dir=None):
    """FICLONE from a file in src_dir to one in dst_dir (default: the same)."""
    dst_dir = dst_dir or src_dir
    a = os.path.join(src_dir, f".probe-ficlone-{os.getpid()}-a")
    b = os.path.join(dst_dir, f".probe-ficlone-{os.getpid()}-b")
    try:
        with open(a, "wb") as fa:
            fa.write(b"x" * 4096)
        with open(a, "rb") as fa, open(b, "wb") as fb:
            fcntl.ioctl(fb.fileno(), FICLONE, fa.fileno())
        return Probe(True, f"FICLONE works from {src_dir} to {dst_dir}")
    except OSError as exc:
        return Probe(False, _err(f"FICLONE from {src_dir} to {dst_dir}", exc.errno))
    finally:
        for p in (a, b):
            if os.path.exists(p):
                os.unlink(p)


# ---------------------------------------------------------------- page cache

def residency(path):
    """Fraction of path's pages in the page cache: mincore(2) on a read-only
    shared map made with libc's mmap (mapping faults nothing in)."""
    size = os.path.getsize(path)
    if size == 0:
        return 1.0
    npages = (size + PAGE - 1) // PAGE
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    finally:
        os.close(fd)
    if addr in (None, ctypes.c_void_p(-1).value):
        raise OSError(ctypes.get_errno(), "mmap for mincore failed")
    try:
        vec = (ctypes.c_ubyte * npages)()
        if _libc.mincore(ctypes.c_void_p(addr), size, vec) != 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e), "mincore")
        return sum(v & 1 for v in vec) / npages
    finally:
        _libc.munmap(ctypes.c_void_p(addr), ctypes.c_size_t(size))


def evict(path):
    """Drop path's clean pages from the page cache (fsync, then
    POSIX_FADV_DONTNEED); return the residency left (0.0 on a disk
    filesystem, 1.0 on tmpfs, whose pages cannot be dropped)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return residency(path)


# ---------------------------------------------------------------- a thread's own descriptor table

_OWN_TABLE_CHILD = r"""
import ctypes, os, sys, threading
libc = ctypes.CDLL(None, use_errno=True)
fd = os.open(sys.executable, os.O_RDONLY)
try:
    p = os.open(f"/proc/self/task/{threading.get_native_id()}/fd/{fd}", os.O_PATH)
    os.close(p)
except OSError as e:
    print("open /proc/self/task/TID/fd/N:", e); sys.exit(1)
# A range above every descriptor closes nothing; a single-threaded process
# shares its table with nobody: only the flag is checked (ENOSYS before
# close_range, 5.9; EINVAL where CLOSE_RANGE_UNSHARE is unknown).
r = libc.syscall(ctypes.c_long(436), ctypes.c_uint(1 << 30), ctypes.c_uint(0xFFFFFFFF),
                 ctypes.c_uint(2))
if r < 0:
    e = ctypes.get_errno()
    print(f"close_range(CLOSE_RANGE_UNSHARE): {os.strerror(e)}"); sys.exit(1)
"""


@functools.lru_cache(maxsize=None)
def own_fd_table():
    """A thread can take an empty descriptor table of its own
    (close_range(CLOSE_RANGE_UNSHARE), Linux 5.9) and reopen a descriptor
    through /proc/self/task/TID/fd/N. Probed in a child process (this
    process's threads must keep sharing their table)."""
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-c", _OWN_TABLE_CHILD], capture_output=True,
                       text=True)
    if r.returncode:
        return Probe(False, (r.stdout + r.stderr).strip()[-200:])
    return Probe(True, "close_range(CLOSE_RANGE_UNSHARE) and /proc/self/task/TID/fd/N")


@functools.lru_cache(maxsize=None)
def inotify():
    fd = _libc.inotify_init1(os.O_CLOEXEC)
    if fd < 0:
        return Probe(False, _err("inotify_init1", ctypes.get_errno()))
    os.close(fd)
    return Probe(True, "inotify_init1")


class FileEvents:
    """inotify on one file (a path, or /proc/self/fd/N for an unlinked
    file or a memfd): the IN_OPEN / IN_CLOSE_NOWRITE / IN_CLOSE_WRITE
    events since the watch was added, as 'open' / 'close' strings (O_PATH
    opens make none). inotify merges an event identical to the one still
    unread before it: count on alternating sequences only."""

    MASKS = {0x20: "open", 0x10: "close", 0x08: "close"}

    def __init__(self, path):
        self.fd = _libc.inotify_init1(os.O_CLOEXEC | os.O_NONBLOCK)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        if _libc.inotify_add_watch(self.fd, os.fsencode(path), 0x20 | 0x10 | 0x08) < 0:
            e = ctypes.get_errno()
            os.close(self.fd)
            raise OSError(e, f"inotify_add_watch({path})")

    def events(self):
        out = []
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return out
            at = 0
            while at < len(data):
                _, mask, _, ln = struct.unpack_from("iIII", data, at)
                at += 16 + ln
                out += [name for bit, name in self.MASKS.items() if mask & bit]

    def close(self):
        os.close(self.fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------- verdicts

def skip_unless(feature, probe):
    """Skip (the kernel lacks the feature) unless the probe found it."""
    import pytest
    if not probe.present:
        pytest.skip(f"no {feature} here (independent probe: {probe.detail})")


def fail_or_skip(feature, probe, fastio_said):
    """fastio said the feature does not work: fail when the kernel has it,
    skip (with the kernel's reason) when it does not."""
    import pytest
    if probe.present:
        pytest.fail(f"the kernel has {feature} ({probe.detail}) but fastio says: {fastio_said}")
    pytest.skip(f"no {feature} here (independent probe: {probe.detail})")


# The features tools/check_skips.py can probe again, by the name used in the
# skip message. Values: a callable of no argument; features that depend on a
# directory are probed on the directory given by the caller (default: the
# temporary directory, which is where tmp_path lives).
FEATURES = {
    "io_uring": lambda d=None: io_uring(),
    "linux_aio": lambda d=None: linux_aio(),
    "posix_aio": lambda d=None: posix_aio(),
    "io_uring SQPOLL": lambda d=None: io_uring_flag("SQPOLL"),
    "io_uring SINGLE_ISSUER": lambda d=None: io_uring_flag("SINGLE_ISSUER"),
    "MADV_POPULATE_WRITE": lambda d=None: populate(),
    "mlock": lambda d=None: mlock(),
    "transparent huge pages": lambda d=None: thp(),
    "reserved huge pages": lambda d=None: hugepages(),
    "O_DIRECT": lambda d=None: o_direct(d or tempfile.gettempdir()),
    "FICLONE reflink": lambda d=None: ficlone(d or tempfile.gettempdir()),
    "RWF_DONTCACHE": lambda d=None: dontcache(d or tempfile.gettempdir()),
    "own descriptor tables": lambda d=None: own_fd_table(),
    "inotify": lambda d=None: inotify(),
}


if __name__ == "__main__":
    import sys
    dirs = sys.argv[1:] or [tempfile.gettempdir(), os.path.dirname(os.path.abspath(__file__))]
    for name in ("io_uring", "io_uring SQPOLL", "io_uring SINGLE_ISSUER",
                 "linux_aio", "posix_aio", "MADV_POPULATE_WRITE", "mlock",
                 "transparent huge pages", "reserved huge pages",
                 "own descriptor tables", "inotify"):
        print(f"{name:24} {FEATURES[name]()}")
    for d in dirs:
        print(f"{'O_DIRECT':24} {o_direct(d)}")
        print(f"{'FICLONE reflink':24} {ficlone(d)}")
