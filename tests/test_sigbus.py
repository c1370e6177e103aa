"""SIGBUS under a map: fastio's accessors raise MappingError, the rest dies.

Each test truncates the mapped file in-process, so that the map's tail is
no longer backed by the file, then touches the lost pages. What must kill
the process (numpy access, a fault outside any guard) runs in a child
process and is checked by its exit signal.
"""
import errno
import os
import signal
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import fastio
import probes
from conftest import LeakCheck

PAGE = fastio.PAGESIZE
SIZE = 4 * PAGE
KEEP = 2 * PAGE  # the file is truncated to this: pages 2 and 3 are lost


@pytest.fixture
def shrunk(tmp_path):
    """A shared writable map of SIZE zero bytes whose file now has KEEP."""
    path = tmp_path / "shrink.bin"
    path.write_bytes(b"\0" * SIZE)
    m = fastio.mmap(path, mode="r+")
    os.truncate(path, KEEP)
    yield m
    m.close()


def assert_mapping_error(excinfo, op, offset=None):
    e = excinfo.value
    assert isinstance(e, fastio.MappingError)
    assert isinstance(e, OSError) and isinstance(e, fastio.FastIOError)
    assert e.errno == errno.EFAULT
    assert "past the file's end" in str(e)
    assert f"({op})" in str(e)
    # The offset reported is where a lost page starts in the map. Which lost
    # page a multi-byte copy or search touches first is libc's choice (large
    # memmoves may start at the end): exact only for one-byte accesses.
    assert e.offset is not None
    assert KEEP <= e.offset < SIZE and e.offset % PAGE == 0
    assert f"offset {e.offset} of {SIZE}" in str(e)
    if offset is not None:
        assert e.offset == offset - offset % PAGE


def test_exception_type():
    assert issubclass(fastio.MappingError, fastio.FastIOError)
    assert issubclass(fastio.MappingError, OSError)
    assert fastio.MappingError.__module__ == "fastio"


@pytest.mark.smoke
def test_valid(tmp_path):
    path = tmp_path / "v.bin"
    path.write_bytes(b"a" * SIZE)
    with fastio.mmap(path, mode="r") as m:
        assert m.valid()
        os.truncate(path, SIZE - 1)
        assert not m.valid()
        os.truncate(path, 2 * SIZE)  # growing back covers the map again
        assert m.valid()
    # A map at an offset: the file must cover offset + length.
    with fastio.mmap(path, 100, mode="r", offset=PAGE + 5) as m:
        assert m.valid()
        os.truncate(path, PAGE + 104)
        assert not m.valid()
    with fastio.mmap(-1, SIZE) as m:
        assert m.valid()
    m.close()
    with pytest.raises(ValueError):
        m.valid()


@pytest.mark.smoke
def test_populate_reports_instead_of_faulting(shrunk):
    try:
        shrunk.populate()
    except OSError as e:
        assert e.errno == errno.EFAULT
    else:
        probes.fail_or_skip("MADV_POPULATE_WRITE", probes.populate(),
                            "populate() past the file's end returned without error")


@pytest.mark.parametrize("op, call, offset", [
    ("index", lambda m: m[KEEP + 7], KEEP + 7),
    ("index", lambda m: m[-1], SIZE - 1),
    ("slice", lambda m: m[:], None),
    ("slice", lambda m: m[KEEP - 10:KEEP + 10], None),
    ("slice", lambda m: m[::3], None),
    ("read", lambda m: m.read(), None),
    ("read_byte", lambda m: (m.seek(KEEP + 1), m.read_byte()), KEEP + 1),
    ("readline", lambda m: m.readline(), None),
    ("find", lambda m: m.find(b"needle"), None),
    ("rfind", lambda m: m.rfind(b"needle"), None),
    ("move", lambda m: m.move(0, KEEP + 3, 10), None),
    ("move", lambda m: m.move(KEEP + 5, 0, 10), None),
    ("write", lambda m: (m.seek(KEEP - 1), m.write(b"xyz")), None),
    ("write_byte", lambda m: (m.seek(KEEP), m.write_byte(1)), KEEP),
    ("item assignment", lambda m: m.__setitem__(KEEP + 2, 65), KEEP + 2),
    ("slice assignment", lambda m: m.__setitem__(slice(KEEP - 4, KEEP + 4), b"12345678"),
     None),
    ("slice assignment", lambda m: m.__setitem__(slice(KEEP, KEEP + 8, 2), b"1234"), KEEP),
    ("iteration", lambda m: list(m), KEEP),
    ("in", lambda m: b"\x01" in m, None),
    ("in", lambda m: 1 in m, KEEP),
])
@pytest.mark.smoke
def test_accessor_raises_and_process_lives(shrunk, op, call, offset):
    with pytest.raises(fastio.MappingError) as excinfo:
        call(shrunk)
    assert_mapping_error(excinfo, op, offset)
    # The map still works. (A write straddling the file's end may have
    # stored its bytes before the lost page, as libc's memmove or ASan's
    # copies them in its own order: only the bytes well before are checked.)
    assert shrunk[:KEEP - 8] == b"\0" * (KEEP - 8)
    shrunk[0] = 1
    assert shrunk[0] == 1


@pytest.mark.parametrize("mode", ["r", "c"])
def test_read_only_and_copy_on_write_maps(tmp_path, mode):
    path = tmp_path / "ro.bin"
    path.write_bytes(b"r" * SIZE)
    with fastio.mmap(path, mode=mode) as m:
        os.truncate(path, KEEP)
        with pytest.raises(fastio.MappingError) as excinfo:
            m[:]
        assert_mapping_error(excinfo, "slice")
        assert m[:KEEP] == b"r" * KEEP


def test_offset_map_reports_offset_in_the_map(tmp_path):
    # The map starts 5 bytes into page 1 of the file: file page 2, the
    # first one lost, starts at map offset PAGE - 5.
    path = tmp_path / "off.bin"
    path.write_bytes(b"o" * SIZE)
    with fastio.mmap(path, 2 * PAGE, mode="r", offset=PAGE + 5) as m:
        os.truncate(path, KEEP)
        assert not m.valid()
        assert m[PAGE - 6] == ord("o")
        with pytest.raises(fastio.MappingError) as excinfo:
            m[PAGE + 100]
        assert excinfo.value.offset == PAGE - 5
        assert f"offset {PAGE - 5} of {2 * PAGE}" in str(excinfo.value)


def test_large_copies_with_gil_released(tmp_path):
    # Past FASTIO_NOGIL_COPY_THRESHOLD (1 MiB): the copy runs without the GIL
    # and the exception is raised after it is taken back.
    size = 4 << 20
    path = tmp_path / "big.bin"
    with open(path, "wb") as f:
        f.truncate(size)
    m = fastio.mmap(path, mode="r+")
    os.truncate(path, 3 << 20)
    ops = [
        ("slice", lambda: m[:]),
        ("read", lambda: (m.seek(0), m.read())),
        ("find", lambda: m.find(b"x")),
        ("rfind", lambda: m.rfind(b"x")),
        ("in", lambda: b"x" in m),
        ("move", lambda: m.move(0, 2 << 20, 2 << 20)),
        ("slice assignment", lambda: m.__setitem__(slice(2 << 20, 4 << 20), bytes(2 << 20))),
        ("write", lambda: (m.seek(2 << 20), m.write(bytes(2 << 20)))),
    ]
    for op, call in ops:
        with pytest.raises(fastio.MappingError) as excinfo:
            call()
        assert f"({op})" in str(excinfo.value)
        assert excinfo.value.errno == errno.EFAULT
        off = excinfo.value.offset
        assert 3 << 20 <= off < size and off % PAGE == 0
    m.close()


def test_copy_from_another_shrunk_map(shrunk, tmp_path):
    # The fault is in the source of the copy, another map: still caught.
    src_path = tmp_path / "src.bin"
    src_path.write_bytes(b"s" * SIZE)
    src = fastio.mmap(src_path, mode="r")
    os.truncate(src_path, PAGE)
    with pytest.raises(fastio.MappingError) as excinfo:
        shrunk[:PAGE * 2] = memoryview(src)[:PAGE * 2]
    assert "(slice assignment)" in str(excinfo.value)
    src.close()


def test_no_leak_on_faults(tmp_path):
    path = tmp_path / "leak.bin"
    path.write_bytes(b"\0" * SIZE)
    leaks = LeakCheck()
    for _ in range(200):
        m = fastio.mmap(path, mode="r+")
        os.truncate(path, KEEP)
        for call in (lambda: m[:], lambda: m[KEEP], lambda: m.find(b"a")):
            with pytest.raises(fastio.MappingError):
                call()
        m.close()
        os.truncate(path, SIZE)
    leaks.check()


def test_threads_fault_concurrently(tmp_path):
    # Each thread has its own guard: each gets its own exception, with its
    # own map's offset, while the others fault at the same time.
    nthreads, rounds = 4, 200
    maps = []
    for t in range(nthreads):
        path = tmp_path / f"t{t}.bin"
        path.write_bytes(b"\0" * SIZE)
        m = fastio.mmap(path, mode="r")
        os.truncate(path, KEEP)
        maps.append(m)
    barrier = threading.Barrier(nthreads)
    results = [None] * nthreads

    def worker(t):
        m = maps[t]
        got = []
        barrier.wait()
        for i in range(rounds):
            off = KEEP + (t * 97 + i) % (SIZE - KEEP)
            try:
                m[off]
            except fastio.MappingError as e:
                got.append(e.offset == off - off % PAGE)
            try:
                m[:]
            except fastio.MappingError as e:
                got.append(KEEP <= e.offset < SIZE)
        results[t] = got

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(nthreads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for got in results:
        assert got is not None and len(got) == 2 * rounds and all(got)
    for m in maps:
        m.close()


# ------------------------------------------------------------------ children

def run_child(code, tmp_path, env_extra=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.dirname(fastio.__file__))] +
        ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    # Under ASan (LD_PRELOAD), let the SIGBUS of an unguarded fault reach the
    # default action, so that the child dies of SIGBUS as it would without
    # ASan, instead of ASan's report and exit(1).
    if "libasan" in env.get("LD_PRELOAD", ""):
        env["ASAN_OPTIONS"] = ",".join(filter(None, [env.get("ASAN_OPTIONS"),
                                                      "handle_sigbus=0"]))
    env.pop("PYTHONFAULTHANDLER", None)
    env.update(env_extra or {})
    prelude = textwrap.dedent(f"""\
        import os
        path = {str(tmp_path / 'child.bin')!r}
        with open(path, "wb") as f:
            f.truncate({SIZE})
        """)
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=60, env=env)


def test_numpy_access_is_not_protected(tmp_path):
    # The docs' "not protected" statement: numpy's own element access goes
    # around fastio, and the lost page kills the process with SIGBUS.
    r = run_child(f"""
        import fastio
        m = fastio.mmap(path, mode="r+")
        a = m.asarray()
        os.truncate(path, {KEEP})
        assert not m.valid()
        try:
            m[{KEEP}]
        except fastio.MappingError:
            print("guarded", flush=True)
        print(int(a[{KEEP}]), flush=True)
        print("survived", flush=True)
        """, tmp_path)
    assert r.returncode == -signal.SIGBUS, (r.returncode, r.stderr)
    assert r.stdout == "guarded\n"


def test_faulthandler_enabled_before_import_still_chained(tmp_path):
    # faulthandler first, then fastio: our handler is in front and chains
    # to faulthandler for a fault outside any guard.
    r = run_child(f"""
        import faulthandler, sys
        faulthandler.enable()
        import fastio
        import numpy as np
        m = fastio.mmap(path, mode="r")
        a = np.frombuffer(m, dtype=np.uint8)
        os.truncate(path, {KEEP})
        try:
            m[{KEEP}]
        except fastio.MappingError:
            print("guarded", flush=True)
        def touch_the_lost_page():
            return int(a[{KEEP}])
        touch_the_lost_page()
        """, tmp_path)
    assert r.returncode == -signal.SIGBUS, (r.returncode, r.stderr)
    assert r.stdout == "guarded\n"
    assert "Fatal Python error: Bus error" in r.stderr
    assert "touch_the_lost_page" in r.stderr


def test_faulthandler_enabled_after_import(tmp_path):
    # faulthandler in front of ours: it sees a guarded fault first, prints
    # its report, puts our handler back and re-raises; the guard still turns
    # the fault into MappingError and the process lives. An unguarded fault
    # then dies of SIGBUS.
    r = run_child(f"""
        import fastio
        import faulthandler
        faulthandler.enable()
        import numpy as np
        m = fastio.mmap(path, mode="r")
        a = np.frombuffer(m, dtype=np.uint8)
        os.truncate(path, {KEEP})
        try:
            m[{KEEP}]
        except fastio.MappingError as e:
            print("guarded", e.errno, e.offset, flush=True)
        int(a[{KEEP}])
        """, tmp_path)
    assert r.returncode == -signal.SIGBUS, (r.returncode, r.stderr)
    assert r.stdout.startswith(f"guarded {errno.EFAULT} ")
    assert "Fatal Python error: Bus error" in r.stderr


def test_sigbus_sent_by_kill_is_not_caught(tmp_path):
    # A SIGBUS sent from outside is no fault of a guarded copy: the previous
    # disposition applies (here the default: death).
    r = run_child("""
        import signal
        import fastio
        os.kill(os.getpid(), signal.SIGBUS)
        print("survived")
        """, tmp_path)
    assert r.returncode == -signal.SIGBUS, (r.returncode, r.stderr)
    assert r.stdout == ""


SEND_SIGBUS_WITH_CODE = textwrap.dedent("""
    import ctypes, signal
    libc = ctypes.CDLL(None, use_errno=True)
    def send_sigbus(code):
        # siginfo_t: si_signo, si_errno, si_code, then the union (si_addr at
        # offset 16 on 64-bit). A process may give itself any si_code with
        # rt_sigqueueinfo; the kernel refuses si_code >= 0 only towards others.
        info = (ctypes.c_char * 128)()
        ctypes.c_int.from_buffer(info, 0).value = signal.SIGBUS
        ctypes.c_int.from_buffer(info, 8).value = code
        ctypes.c_void_p.from_buffer(info, 16).value = 0x1000
        SYS_rt_sigqueueinfo = 129  # x86-64
        if libc.syscall(SYS_rt_sigqueueinfo, os.getpid(), signal.SIGBUS, info) != 0:
            raise OSError(ctypes.get_errno(), "rt_sigqueueinfo")
    """)


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="syscall number for x86-64")
@pytest.mark.parametrize("with_fastio", [False, True])
def test_asynchronous_mceerr_ao_is_not_swallowed(tmp_path, with_fastio):
    # issue 12, finding 14: a BUS_MCEERR_AO (code 5: the kernel's notice that
    # some page of the process is poisoned) is not a fault of a guarded
    # access and does not repeat when the handler returns. Under the default
    # disposition it kills the process, with or without fastio; fastio used
    # to restore the default and return, so the process lived on with its
    # guard silently gone.
    r = run_child(SEND_SIGBUS_WITH_CODE + textwrap.dedent(f"""
        {"import fastio" if with_fastio else ""}
        send_sigbus(5)
        print("survived", flush=True)
        """), tmp_path)
    assert r.returncode == -signal.SIGBUS, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == ""


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="syscall number for x86-64")
def test_mceerr_ao_ignored_stays_ignored_and_guard_stays(tmp_path):
    # SIG_IGN before fastio: an AO notice (sent, not forced) stays ignored,
    # and the guard still works afterwards.
    r = run_child(SEND_SIGBUS_WITH_CODE + textwrap.dedent(f"""
        signal.signal(signal.SIGBUS, signal.SIG_IGN)
        import fastio
        send_sigbus(5)
        m = fastio.mmap(path, mode="r")
        os.truncate(path, {KEEP})
        try:
            m[{KEEP}]
        except fastio.MappingError:
            print("guarded", flush=True)
        """), tmp_path)
    assert r.returncode == 0, (r.returncode, r.stderr)
    assert r.stdout == "guarded\n"


def test_stdlib_mmap_is_not_protected(tmp_path):
    # fastio's handler changes nothing for other code: the stdlib's mmap over
    # a shrunk file still dies of SIGBUS with fastio imported.
    r = run_child(f"""
        import mmap
        import fastio
        f = open(path, "r+b")
        m = mmap.mmap(f.fileno(), {SIZE})
        os.truncate(path, {KEEP})
        m[{KEEP}]
        print("survived")
        """, tmp_path)
    assert r.returncode == -signal.SIGBUS, (r.returncode, r.stderr)


@pytest.fixture
def shm_file():
    """A file in /dev/shm (tmpfs: truncating it drops its pages at once)."""
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm")
    path = f"/dev/shm/fastio-test-sigbus-{os.getpid()}-{os.urandom(4).hex()}"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    os.ftruncate(fd, 65536)
    yield fd
    os.close(fd)
    os.unlink(path)


@pytest.mark.parametrize("side", ["send", "recv"])
@pytest.mark.smoke
def test_channel_on_truncated_segment_raises(shm_file, side):
    """Channel's copies into and out of the ring are guarded: with its file
    cut back to the first page (the header survives), a copy touching the
    lost pages raises MappingError; the process lives and the ring's
    header is left consistent (the frame is neither published nor
    consumed)."""
    m = fastio.mmap(shm_file, 65536)
    ch = fastio.Channel(buffer=m)
    ch.send_bytes(b"a" * 16)
    assert ch.recv_bytes() == b"a" * 16
    if side == "recv":
        ch.send_bytes(b"r" * 16000)
    os.ftruncate(shm_file, 4096)
    with pytest.raises(fastio.MappingError) as info:
        if side == "send":
            ch.send_bytes(b"s" * 16000)
        else:
            ch.recv_bytes()
    assert f"Channel.{side}" in str(info.value)
    assert ch.pending == (16000 + 16 if side == "recv" else 0)
    os.ftruncate(shm_file, 65536)  # the pages come back (zeroed)
    if side == "send":
        ch.send_bytes(b"t" * 16000)
        assert ch.recv_bytes() == b"t" * 16000
    else:
        # The payload starts 304 bytes into the map (256-byte header, the
        # 32-byte first frame, a 16-byte frame header): what the first page
        # kept is intact, the rest came back as zeros.
        kept = 4096 - 304
        assert ch.recv_bytes() == b"r" * kept + bytes(16000 - kept)
    ch.close()
    m.close()


# ---------------------------------------------------------------- disk full

# Run inside a private mount namespace (unshare -m): mounts a small
# filesystem on a temporary directory, maps a sparse file larger than it,
# writes through fastio's accessors until the blocks run out, then frees
# space and writes again. Exit 77: this machine cannot mount it (skip).
DISK_FULL_CHILD = r'''
import errno, os, shutil, subprocess, sys, tempfile
import fastio

kind = sys.argv[1]
PAGE = fastio.PAGESIZE
top = tempfile.mkdtemp()
d = os.path.join(top, "mnt")
os.mkdir(d)
clean = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
import atexit
# Nothing left in the temporary directory, whatever the outcome (exit 77
# included): unmounted first if still mounted.
atexit.register(lambda: (subprocess.run(["umount", d], capture_output=True, env=clean),
                         shutil.rmtree(top, ignore_errors=True)))

def run(*cmd):
    r = subprocess.run(cmd, capture_output=True, text=True, env=clean)
    if r.returncode:
        print(f"{' '.join(cmd)}: {r.stderr.strip() or r.returncode}", file=sys.stderr)
        sys.exit(77)

if kind == "tmpfs":
    run("mount", "-t", "tmpfs", "-o", "size=512k", "none", d)
else:  # a 2 MiB ext4 image on a loop device, no journal, no reserve
    img = os.path.join(top, "fs.img")
    with open(img, "wb") as f:
        f.truncate(2 << 20)
    if shutil.which("mkfs.ext4") is None:
        print("mkfs.ext4 not found", file=sys.stderr)
        sys.exit(77)
    run("mkfs.ext4", "-q", "-F", "-O", "^has_journal", "-b", "4096", "-m", "0", img)
    run("mount", "-o", "loop", img, d)

# A filler takes some of the space, to be given back at the end.
with open(os.path.join(d, "filler.bin"), "wb") as f:
    f.write(b"f" * (16 * PAGE))
size = 4 << 20  # more than the filesystem holds; > 1 MiB copies drop the GIL
path = os.path.join(d, "sparse.bin")
with open(path, "wb") as f:
    f.truncate(size)
m = fastio.mmap(path, mode="r+")
assert m.valid()

def lost(call, op):
    try:
        call()
    except fastio.MappingError as e:
        assert isinstance(e, OSError) and e.errno == errno.EIO, (op, e.errno, e)
        assert "could not back the mapped page" in str(e) and f"({op})" in str(e), e
        assert e.offset is not None and e.offset % PAGE == 0, e.offset
        return e.offset
    raise AssertionError(f"{op}: no MappingError on a full filesystem")

# Fill page by page with slice assignment until the blocks run out.
first = lost(lambda: [m.__setitem__(slice(o, o + PAGE), b"y" * PAGE)
                      for o in range(0, size, PAGE)], "slice assignment")
assert 0 < first < size, first
assert m[:PAGE] == b"y" * PAGE and m[first - 1] == ord("y")
# Every writing accessor, on the lost page and past it.
m.seek(first)
lost(lambda: m.write(b"w" * 100), "write")
m.seek(first + 10)
lost(lambda: m.write_byte(1), "write_byte")
lost(lambda: m.__setitem__(first + 5, 1), "item assignment")
lost(lambda: m.move(first, 0, 3 * PAGE), "move")
big = size - first - PAGE  # past the 1 MiB threshold: the GIL is released
assert big > 1 << 20
off = lost(lambda: m.__setitem__(slice(first, first + big), bytes(big)), "slice assignment")
assert first <= off < size
# Reading a hole needs no block on ext4 (the zero page); tmpfs allocates
# a page for it, which a full tmpfs cannot: MappingError too, no crash.
try:
    assert m[size - 10:] == bytes(10)
except fastio.MappingError as e:
    assert kind == "tmpfs" and e.errno == errno.EIO, (kind, e)
# A system call copying into the lost page: an OSError or a short count.
src = os.open(os.path.join(d, "filler.bin"), os.O_RDONLY)
try:
    n = os.preadv(src, [memoryview(m)[first:first + PAGE]], 0)
    assert n < PAGE, n
except OSError as e:
    assert e.errno in (errno.EFAULT, errno.ENOSPC, errno.EIO), e
os.close(src)
# The process and the map go on: free space, write the lost page again.
os.unlink(os.path.join(d, "filler.bin"))
m[first:first + PAGE] = b"z" * PAGE
m.flush()
assert m[first:first + PAGE] == b"z" * PAGE
with open(path, "rb") as f:
    f.seek(first)
    assert f.read(PAGE) == b"z" * PAGE
m.close()
run("umount", d)
print("ok", first)
'''


@pytest.mark.parametrize("kind", ["tmpfs", "ext4"])
def test_disk_full_under_a_sparse_map(kind):
    """Issue 7: a sparse file's filesystem fills up under a writable map.
    The write fault that finds no block is a SIGBUS; fastio's accessors
    raise MappingError(EIO) instead, and the map works again once space is
    freed. Runs as root in a private mount namespace."""
    import shutil
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare (util-linux) not found: no private mount namespace")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.dirname(fastio.__file__))] +
        ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.pop("PYTHONFAULTHANDLER", None)
    r = subprocess.run([unshare, "-m", "--propagation", "private", sys.executable, "-c",
                        DISK_FULL_CHILD, kind], capture_output=True, text=True,
                       timeout=120, env=env)
    if r.returncode == 77:
        pytest.skip(f"cannot mount a small {kind} here: {r.stderr.strip()}")
    if r.returncode == 1 and "unshare failed" in r.stderr:
        pytest.skip(f"no private mount namespace here: {r.stderr.strip()}")
    assert r.returncode == 0, (
        f"child died (signal {-r.returncode})" if r.returncode < 0 else r.returncode,
        r.stderr[-3000:])
    assert r.stdout.startswith("ok "), r.stdout


# ------------------------------------------------------------------ segments

@pytest.mark.parametrize("old_kernel", [False, True])
@pytest.mark.parametrize("kind", ["memfd", "posix"])
@pytest.mark.parametrize("size", [SIZE, 4 << 20])  # memset, and pwrite sizes
def test_segment_fill_and_populate_on_a_shrunk_segment(tmp_path, kind, size,
                                                       old_kernel):
    # issue 12, finding 8: SharedMemory.fill() (and populate's fallback)
    # touched the segment without the SIGBUS guard: a memfd or POSIX segment
    # that another holder shrank killed the process. Now they raise
    # MappingError as the mmap accessors do. In a child: the unfixed build
    # dies there. (A large fill writes through the descriptor: it must not
    # grow the shrunk segment back either.) old_kernel: populate's fallback
    # for kernels without MADV_POPULATE (5.14-), which touches each page.
    r = run_child(f"""
        import errno, fastio
        from fastio import _core
        kind, size = {kind!r}, {size}
        if kind == "memfd":
            fd = _core.memfd_create("shrunk", size)
            seg = _core.SharedMemory(fd)
            shrink = lambda: os.ftruncate(fd, {KEEP})
            end = lambda: os.fstat(fd).st_size
        else:
            name = "/fio_test_shrunk_%d" % os.getpid()
            seg = _core.SharedMemory(name, size, create=True)
            _core.shm_unlink(name)
            fd = seg.fileno()
            shrink = lambda: os.ftruncate(seg.fileno(), {KEEP})
            end = lambda: os.fstat(seg.fileno()).st_size
        seg.fill(7, 0, {KEEP})
        shrink()
        for what, call in [("fill", lambda: seg.fill(1)),
                           ("fill", lambda: seg.fill(1, {KEEP} - 10, 20)),
                           ("populate", seg.populate),
                           ("fill", lambda: seg.fill(2))]:  # populated now
            try:
                call()
            except fastio.MappingError as e:
                assert e.errno == errno.EFAULT, e
                assert "(%s)" % what in str(e), e
                assert "shrank" in str(e), e
            else:
                raise SystemExit("no MappingError from " + what)
            assert end() == {KEEP}, (what, end())
        # The kept pages still work (a failed fill may have stored part of
        # its range before the lost page, as a failed copy does).
        seg.fill(3, 0, 100)
        assert bytes(memoryview(seg)[:100]) == b"\\x03" * 100
        print("survived", flush=True)
        """, tmp_path, {"FASTIO_NO_MADV_POPULATE": "1"} if old_kernel else None)
    assert r.returncode == 0, (r.returncode, r.stderr)
    assert r.stdout == "survived\n"


def test_sysv_fill_is_guarded_too(tmp_path):
    # A System V segment cannot shrink, but its fill goes through the same
    # guarded path: it works and reports its range errors in the same words.
    if not os.path.exists("/proc/sysvipc/shm"):
        pytest.skip("no System V IPC here")
    seg = fastio._core.SysVSharedMemory(0, SIZE, create=True)
    try:
        seg.fill(5)
        assert bytes(memoryview(seg)) == b"\5" * SIZE
        seg.fill(6, 10, 5)
        assert bytes(memoryview(seg)[8:17]) == b"\5\5" + b"\6" * 5 + b"\5\5"
        with pytest.raises(ValueError, match="fill length out of range"):
            seg.fill(0, 10, SIZE)
        seg.populate()
    finally:
        seg.close()
        seg.remove()


def test_read_file_mmap_method_is_guarded(tmp_path):
    # read_file(method="mmap") copied out of its map with numpy (unguarded):
    # a file shrinking during the read killed the process. It copies with
    # the guarded memmove now (mmap._readinto, which read_file calls; the
    # window between read_file's fstat and its copy is too short to hit
    # from a test, so the map is shrunk under _readinto directly).
    r = run_child(f"""
        import fastio
        from fastio import _core
        fd = os.open(path, os.O_RDONLY)
        m = _core.mmap(fd, {SIZE}, access=_core.ACCESS_READ)
        os.truncate(path, {KEEP})
        buf = fastio.Buffer({SIZE})
        try:
            m._readinto(buf)
        except fastio.MappingError as e:
            print("guarded", "(read)" in str(e), flush=True)
        m2 = _core.mmap(fd, {KEEP}, access=_core.ACCESS_READ)
        print(m2._readinto(buf), flush=True)
        """, tmp_path)
    assert r.returncode == 0, (r.returncode, r.stderr)
    assert r.stdout == f"guarded True\n{KEEP}\n"
