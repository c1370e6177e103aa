"""fastio.mmap beyond CPython's own suite (tests/test_mmap_stdlib.py runs that):
the deviations it lists, bad input, lifetimes, any byte offset, the extras,
the path/mode constructor, fork sharing and a close racing a copy.

The stdlib mmap and os.pread are the oracles.
"""
import errno
import gc
import itertools
import mmap as stdlib_mmap
import os
import pickle
import re
import sys
import threading
import weakref

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import fastio
import probes
from conftest import LeakCheck

PAGE = fastio.PAGESIZE
CLOSED = "mmap closed or invalid"
READONLY = "mmap can't modify a readonly memory map."


def maps_mentioning(text):
    with open("/proc/self/maps") as f:
        return [line for line in f if text in line]


@pytest.fixture
def rwfile(datafile):
    """(path, data, fd open O_RDWR) for a file of 3 pages + 123 bytes."""
    path, data = datafile(3 * PAGE + 123)
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    yield path, data, fd
    os.close(fd)


# ---------------------------------------------------------------- deviations
# Each deviation from CPython's suite (DEVIATIONS in test_mmap_stdlib.py)
# is checked here.

def test_repr_matches_stdlib_format(rwfile):
    path, data, fd = rwfile
    offset = PAGE
    for access, pos in itertools.product(
            ("ACCESS_DEFAULT", "ACCESS_READ", "ACCESS_COPY", "ACCESS_WRITE"), (0, 7)):
        kw = dict(access=getattr(fastio, access), offset=offset)
        with fastio.mmap(fd, 1000, **kw) as ours, stdlib_mmap.mmap(fd, 1000, **kw) as theirs:
            ours.seek(pos)
            theirs.seek(pos)
            assert repr(ours) == repr(theirs).replace("<mmap.mmap", "<fastio.mmap")
            assert re.fullmatch(
                rf"<fastio\.mmap closed=False, access={access}, length=1000, "
                rf"pos={pos}, offset={offset}>", repr(ours))
        assert repr(ours) == "<fastio.mmap closed=True>"


def test_flush_any_offset_rounds_to_pages(rwfile):
    path, data, fd = rwfile
    # The stdlib raises EINVAL for flush(1, 6): its range goes to msync as is.
    with stdlib_mmap.mmap(-1, 16) as m:
        with pytest.raises(OSError):
            m.flush(1, 6)
    # fastio widens it to pages: it works, at any offset, and writes back.
    with fastio.mmap(fd, 2 * PAGE, offset=PAGE + 5) as m:
        m[PAGE + 1:PAGE + 7] = b"python"
        assert m.flush(PAGE + 1, 6) is None
        assert m.flush(1, 6, async_=True) is None
        assert m.flush() is None
        assert os.pread(fd, 6, 2 * PAGE + 6) == b"python"
    with fastio.mmap(-1, 16) as m:
        assert m.flush(1, 6) is None


@pytest.mark.smoke
def test_close_with_live_exports_is_safe(rwfile):
    # The stdlib raises BufferError here; fastio closes and unmaps later.
    path, data, fd = rwfile
    with stdlib_mmap.mmap(fd, 0) as sm:
        view = memoryview(sm)
        with pytest.raises(BufferError):
            sm.close()
        view.release()
    m = fastio.mmap(fd, 0)
    view = memoryview(m)
    m.close()
    assert m.closed
    assert bytes(view[:10]) == data[:10]
    view.release()


# ---------------------------------------------------------------- bad input

@pytest.mark.smoke
def test_bad_length_and_offset(rwfile):
    path, data, fd = rwfile
    with pytest.raises(OverflowError, match="length must be positive, got length=-1"):
        fastio.mmap(fd, -1)
    with pytest.raises(OverflowError, match="offset must be positive, got offset=-5"):
        fastio.mmap(fd, 10, offset=-5)
    with pytest.raises(OverflowError):
        fastio.mmap(fd, 2**64)
    with pytest.raises(OverflowError):
        fastio.mmap(fd, 10, offset=2**64)
    with pytest.raises(TypeError):
        fastio.mmap(fd, 10, offset=None)
    with pytest.raises(ValueError, match=f"offset={len(data) + 1}"):
        fastio.mmap(fd, 0, offset=len(data) + 1)
    with pytest.raises(ValueError, match="offset is greater than file size"):
        fastio.mmap(fd, 0, offset=len(data))
    with pytest.raises(ValueError, match="length is greater than file size"):
        fastio.mmap(fd, len(data) + 1)
    with pytest.raises(ValueError, match="length is greater than file size"):
        fastio.mmap(fd, 10, offset=len(data) - 5)


def test_empty_file(datafile):
    path, _ = datafile(0)
    with open(path, "rb") as f:
        with pytest.raises(ValueError, match="cannot mmap an empty file"):
            fastio.mmap(f.fileno(), 0, access=fastio.ACCESS_READ)
    with pytest.raises(ValueError, match="cannot mmap an empty file"):
        fastio.mmap(path, mode="r")


def test_access_conflicts(rwfile):
    path, data, fd = rwfile
    with pytest.raises(ValueError, match="can't specify both access and flags, prot"):
        fastio.mmap(fd, 10, flags=fastio.MAP_PRIVATE, access=fastio.ACCESS_READ)
    with pytest.raises(ValueError, match="can't specify both access and flags, prot"):
        fastio.mmap(fd, 10, prot=fastio.PROT_READ, access=fastio.ACCESS_WRITE)
    for bad in (4, -1, 99):
        with pytest.raises(ValueError, match=f"invalid access parameter: access={bad}"):
            fastio.mmap(fd, 10, access=bad)


def test_flags_the_kernel_rejects(rwfile):
    path, data, fd = rwfile
    # Neither MAP_SHARED nor MAP_PRIVATE.
    with pytest.raises(OSError) as info:
        fastio.mmap(fd, 10, flags=0)
    assert info.value.errno == errno.EINVAL
    assert "(mmap)" in str(info.value)
    # Huge pages on a regular file (not hugetlbfs).
    with pytest.raises(OSError) as info:
        fastio.mmap(fd, 10, flags=fastio.MAP_SHARED | fastio.MAP_HUGETLB)
    assert info.value.errno == errno.EINVAL


def test_write_to_readonly_map_raises_typeerror(rwfile):
    path, data, fd = rwfile
    maps = [fastio.mmap(fd, 100, access=fastio.ACCESS_READ),
            fastio.mmap(fd, 100, prot=fastio.PROT_READ),
            fastio.mmap(path, 100, mode="r")]
    for m in maps:
        for op in (lambda: m.__setitem__(0, 1),
                   lambda: m.__setitem__(slice(0, 2), b"ab"),
                   lambda: m.__setitem__(slice(0, 4, 2), b"ab"),
                   lambda: m.write(b"abc"),
                   lambda: m.write_byte(1),
                   lambda: m.move(0, 1, 1)):
            with pytest.raises(TypeError, match=re.escape(READONLY)):
                op()
        with pytest.raises(TypeError, match="readonly or copy-on-write"):
            m.resize(50)
        assert m[:] == data[:100]
        m.close()
    assert os.pread(fd, 100, 0) == data[:100]


def test_closed_fd_raises_ebadf(datafile):
    path, _ = datafile(100)
    fd = os.open(path, os.O_RDONLY)
    os.close(fd)
    with pytest.raises(OSError) as info:
        fastio.mmap(fd, 10, access=fastio.ACCESS_READ)
    assert info.value.errno == errno.EBADF


def test_missing_path_and_directory(tmp_path):
    missing = tmp_path / "nope.bin"
    with pytest.raises(FileNotFoundError) as info:
        fastio.mmap(missing, mode="r")
    assert info.value.filename == str(missing)
    for mode in ("r", "r+", "c"):
        with pytest.raises(IsADirectoryError) as info:
            fastio.mmap(tmp_path, mode=mode)
        assert info.value.filename == str(tmp_path)
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        with pytest.raises(IsADirectoryError):
            fastio.mmap(fd, 10, access=fastio.ACCESS_READ)
    finally:
        os.close(fd)


def test_path_argument_errors(rwfile, leakcheck):
    path, data, fd = rwfile
    with pytest.raises(ValueError, match="mode=.*'x'"):
        fastio.mmap(path, mode="x")
    with pytest.raises(ValueError, match="either mode= or access="):
        fastio.mmap(path, mode="r", access=fastio.ACCESS_WRITE)
    with pytest.raises(ValueError, match="mode= is for a path"):
        fastio.mmap(fd, 10, mode="r")
    with pytest.raises(ValueError, match="needs length > 0"):
        fastio.mmap(path, mode="w+")
    with pytest.raises(ValueError, match="length is greater than file size"):
        fastio.mmap(path, len(data) + 1, mode="r")
    with pytest.raises(TypeError, match="length"):
        fastio.mmap(fd)
    leakcheck.check()


ALL_METHODS = {
    "read": (), "read_byte": (), "readline": (), "write": (b"a",),
    "write_byte": (1,), "seek": (0,), "tell": (), "find": (b"a",),
    "rfind": (b"a",), "move": (0, 0, 0), "resize": (10,), "flush": (),
    "madvise": (fastio.MADV_NORMAL,), "advise": (fastio.MADV_NORMAL,),
    "size": (), "populate": (), "lock": (), "unlock": (), "residency": (), "valid": (),
    "set_name": ("x",),
    "asarray": (), "__enter__": (), "__len__": (), "__getitem__": (0,),
    "__setitem__": (0, 1), "__iter__": (), "__contains__": (b"a",),
}


@pytest.mark.smoke
def test_every_method_after_close_raises_valueerror(rwfile):
    path, data, fd = rwfile
    # seekable() answers True even when closed, as Python 3.13's mmap does.
    # (set_name too raises here; Python 3.15's returns None on a closed map.)
    public = {n for n in dir(fastio.mmap) if not n.startswith("_")} - {
        "close", "closed", "seekable"}
    assert public <= set(ALL_METHODS), "a method is missing from this test"
    for m in (fastio.mmap(fd, 100), fastio.mmap(-1, 100)):
        m.close()
        for name, args in ALL_METHODS.items():
            with pytest.raises(ValueError, match=CLOSED):
                getattr(m, name)(*args)
        with pytest.raises(ValueError, match=CLOSED):
            memoryview(m)
        with pytest.raises(ValueError, match=CLOSED):
            np.frombuffer(m, dtype=np.uint8)
        assert m.close() is None  # idempotent
        assert m.closed


def test_iterator_raises_after_close():
    m = fastio.mmap(-1, 10)
    it = iter(m)
    assert next(it) == b"\0"
    m.close()
    with pytest.raises(ValueError, match=CLOSED):
        next(it)


def _child(code, timeout=60):
    import subprocess
    import textwrap
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.dirname(fastio.__file__))] +
        ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=timeout, env=env)


def test_iterator_state_is_not_reachable():
    # issue 12, finding 5: the iterator was a callable-iterator whose state
    # was a list [map, index] reachable from Python; a negative index read
    # before the mapping (segfault). In a child: before the fix it dies.
    r = _child("""
        import fastio
        m = fastio.mmap(-1, 4096)
        it = iter(m)
        try:
            state = it.__reduce__()[1][0].__self__
        except AttributeError:
            print("unreachable")
        else:
            state[1] = -(1 << 40)
            next(it)
            print("read before the map")
        """)
    assert r.returncode == 0, (r.returncode, r.stderr)
    assert r.stdout == "unreachable\n"


def test_iterator_is_its_own_type_like_the_stdlib():
    data = bytes(range(10))
    m = fastio.mmap(-1, 10)
    m[:] = data
    s = stdlib_mmap.mmap(-1, 10)
    s[:] = data
    it, sit = iter(m), iter(s)
    assert iter(it) is it
    assert type(it).__name__ == "mmap_iterator"
    with pytest.raises(TypeError):
        type(it)()  # not constructible from Python
    with pytest.raises(TypeError):
        type(it).foo = 1  # immutable
    assert next(it) == next(sit) == b"\0"
    assert it.__length_hint__() == sit.__length_hint__() == 9
    # Pickling: the stdlib's seqiter form (iter, (map,), index); the map
    # refuses to pickle, so the iterator does too, in both.
    fn, args, index = it.__reduce__()
    assert fn is iter and args == (m,) and index == 1
    assert sit.__reduce__()[2] == 1
    for x in (it, sit):
        with pytest.raises(TypeError, match="cannot pickle"):
            pickle.dumps(x)
    # __setstate__ clamps a negative index to the start, as seqiter does.
    it.__setstate__(-5)
    sit.__setstate__(-5)
    assert list(it) == list(sit) == [bytes([b]) for b in data]
    assert it.__length_hint__() == sit.__length_hint__() == 0
    with pytest.raises(StopIteration):
        next(it)
    assert it.__reduce__() == (iter, ((),))
    it2 = iter(m)
    it2.__setstate__(1 << 40)  # past the end: just exhausted
    assert list(it2) == []
    with pytest.raises(TypeError):
        it2.__setstate__(0.5)


def test_iterator_is_collected_in_a_cycle():
    # The iterator is GC-tracked: a cycle map -> iterator -> map is freed.
    class M(fastio.mmap):
        pass
    m = M(-1, 10)
    m.it = iter(m)
    r = weakref.ref(m)
    del m
    gc.collect()
    assert r() is None


def test_write_only_map_reads_like_the_stdlib():
    # PROT_WRITE alone is readable on Linux; the stdlib's mmap reads it, so
    # fastio's does too (only maps with neither READ nor WRITE are refused).
    m = fastio.mmap(-1, 4096, prot=fastio.PROT_WRITE)
    s = stdlib_mmap.mmap(-1, 4096, prot=stdlib_mmap.PROT_WRITE)
    for x in (m, s):
        x[0] = 7
        x[1:3] = b"ab"
    assert m[0] == s[0] == 7 and m[:3] == s[:3] == b"\x07ab"


def test_last_buffer_release_keeps_the_gil():
    # issue 12, finding 15: the munmap deferred to the release of the last
    # export ran with the GIL released, inside the caller's PyBuffer_Release.
    # C code that releases a buffer while holding a lock of its own then
    # deadlocked with a thread waiting for that lock with the GIL held.
    # Modelled with ctypes.PyDLL (calls that keep the GIL) and a pthread
    # mutex; the unfixed build hangs (the child is killed at the timeout).
    import subprocess
    code = """
        import ctypes, sys, threading
        import fastio
        sys.setswitchinterval(100)  # this thread keeps the GIL unless it blocks
        libc = ctypes.PyDLL(None)
        mutex = ctypes.create_string_buffer(64)  # PTHREAD_MUTEX_INITIALIZER
        ev = threading.Event()
        def other():
            ev.wait()
            libc.pthread_mutex_lock(mutex)  # waits with the GIL held
            libc.pthread_mutex_unlock(mutex)
        t = threading.Thread(target=other)
        t.start()
        m = fastio.mmap(-1, 16 << 20)
        m.write(b"x" * (16 << 20))
        mv = memoryview(m)
        m.close()                       # deferred: the view holds the memory
        libc.pthread_mutex_lock(mutex)  # C code holding its own lock...
        ev.set()                        # (the other thread now wants the GIL)
        mv.release()                    # ...releases the last export: munmap
        libc.pthread_mutex_unlock(mutex)
        t.join()
        print("ok")
        """
    try:
        r = _child(code, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("deadlock: the last buffer release dropped the GIL")
    assert r.returncode == 0, (r.returncode, r.stderr)
    assert r.stdout == "ok\n"


@pytest.mark.parametrize("prot", [0, fastio.PROT_EXEC])
def test_map_without_prot_read_raises_instead_of_segfault(prot):
    # issue 12, finding 15: m[0] on a map without PROT_READ (prot=0: the
    # stdlib's segfaults too) segfaulted. In a child, so that the unfixed
    # build dies there rather than here.
    r = _child(f"""
        import fastio
        m = fastio.mmap(-1, 4096, prot={prot})
        calls = [lambda: m[0], lambda: m[0:4], lambda: m[::2], lambda: list(m),
                 lambda: m.read(4), lambda: m.read_byte(), lambda: m.readline(),
                 lambda: m.find(b"a"), lambda: m.rfind(b"a"), lambda: b"a" in m,
                 lambda: 1 in m]
        for call in calls:
            try:
                call()
            except TypeError as e:
                assert "without PROT_READ" in str(e), e
            else:
                raise SystemExit("read a map without PROT_READ")
        print("ok")
        """)
    assert r.returncode == 0, (r.returncode, r.stderr)
    assert r.stdout == "ok\n"


def test_resize_with_live_memoryview_raises_buffererror(rwfile):
    path, data, fd = rwfile
    m = fastio.mmap(fd, 0)
    view = memoryview(m)
    with pytest.raises(BufferError, match="extant buffers"):
        m.resize(100)
    arr = m.asarray()
    view.release()
    with pytest.raises(BufferError):
        m.resize(100)
    del arr
    m.resize(100)
    assert len(m) == 100 and os.fstat(fd).st_size == 100
    m.close()


def test_close_with_live_numpy_array(tmp_path):
    path = tmp_path / "unique-name-for-maps.bin"
    data = os.urandom(5 * PAGE + 17)
    path.write_bytes(data)
    m = fastio.mmap(path, mode="r+", offset=3)
    arr = m.asarray()
    view = arr[10:20]
    m.close()
    assert m.closed
    # The array still works: the memory stays mapped while it lives.
    assert bytes(arr) == data[3:]
    arr[0] = 7
    assert view.tobytes() == data[13:23]
    assert maps_mentioning(path.name)
    del arr
    assert maps_mentioning(path.name), "a view of the array still holds the memory"
    del view
    gc.collect()
    assert not maps_mentioning(path.name)
    assert path.read_bytes()[3] == 7


def test_readonly_map_gives_readonly_array(rwfile):
    path, data, fd = rwfile
    with fastio.mmap(path, mode="r") as m:
        arr = m.asarray()
        assert not arr.flags.writeable
        with pytest.raises(ValueError):
            arr[0] = 1
        del arr
    with fastio.mmap(path, mode="c") as m:
        arr = m.asarray(dtype="u1")
        assert arr.flags.writeable
        arr[:] = 0
        del arr
    assert path.read_bytes() == data


def test_open_view_close_cycles_leak_nothing(datafile):
    path, data = datafile(2 * PAGE + 5)
    expected = int(np.frombuffer(data[1:], dtype=np.uint8).sum())
    check = LeakCheck()
    for i in range(1000):
        m = fastio.mmap(path, mode="r", offset=1)
        arr = m.asarray()
        if i % 2:
            m.close()  # close first, array later
            assert int(arr.sum()) == expected
            del arr
        else:
            assert int(arr.sum()) == expected
            del arr
            m.close()
        with fastio.mmap(-1, PAGE) as a:
            a[0:4] = b"abcd"
            memoryview(a).release()
    check.check()


# ---------------------------------------------------------------- any byte offset

FILE_SIZE = 3 * PAGE + 321


@pytest.fixture(scope="module")
def oracle_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("oracle") / "data.bin"
    path.write_bytes(os.urandom(FILE_SIZE))
    return path  # not the bytes: hypothesis would print them on failure


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(offset=st.integers(0, FILE_SIZE - 1), length=st.integers(0, FILE_SIZE))
def test_any_offset_matches_file_bytes(oracle_file, offset, length):
    path = oracle_file
    data = path.read_bytes()
    length = min(length, FILE_SIZE - offset)
    expect = data[offset:offset + length] if length else data[offset:]
    with open(path, "rb") as f:
        with fastio.mmap(f.fileno(), length, access=fastio.ACCESS_READ,
                         offset=offset) as m:
            assert len(m) == len(expect)
            assert m[:] == expect
            assert bytes(memoryview(m)) == expect
            assert m.read() == expect
            if expect:
                assert m[-1] == expect[-1]
                assert m.find(expect[-3:], 0) == expect.find(expect[-3:])
                assert m.rfind(expect[:2], 0) == expect.rfind(expect[:2])
            assert m.size() == FILE_SIZE
    with fastio.mmap(path, length, mode="r", offset=offset) as m:
        assert m[:] == expect
        assert np.array_equal(m.asarray(), np.frombuffer(expect, dtype=np.uint8))


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(offset=st.integers(0, 2 * PAGE), length=st.integers(1, PAGE + 100),
       new_length=st.integers(1, 3 * PAGE))
def test_resize_at_any_offset(tmp_path, offset, length, new_length):
    path = tmp_path / "resize.bin"
    data = os.urandom(offset + length)
    path.write_bytes(data)
    with fastio.mmap(path, mode="r+", offset=offset) as m:
        assert m[:] == data[offset:]
        m.resize(new_length)
        assert len(m) == new_length
        assert m.size() == offset + new_length == os.path.getsize(path)
        keep = min(length, new_length)
        assert m[:keep] == data[offset:offset + keep]
        # The new tail is the file's (zero-filled by ftruncate) and writes
        # land at the right file offset.
        m[new_length - 1] = 0xAB
        m.flush()
    expected = bytearray(data[:offset + keep] + bytes(new_length - keep))
    expected[offset + new_length - 1] = 0xAB
    assert path.read_bytes() == expected


@pytest.mark.smoke
def test_resize_anonymous_keeps_data():
    with fastio.mmap(-1, 100, flags=fastio.MAP_PRIVATE) as m:
        m[:] = bytes(range(100))
        m.resize(5 * PAGE)
        assert m[:100] == bytes(range(100)) and m[100:] == bytes(5 * PAGE - 100)
        m.resize(10)
        assert m[:] == bytes(range(10))
        with pytest.raises(ValueError, match="new size out of range"):
            m.resize(-1)


def test_resize_anonymous_shared_grows_as_the_running_stdlib():
    """An anonymous shared map is backed by a shared memory object of fixed
    size. Python 3.14's mmap refuses any growth (ValueError), even back to a
    size the map had; fastio does the same there. Before 3.14 the stdlib's
    mremap grows the mapping past that object and the next access past it is
    a SIGBUS: fastio grows it within the object only."""
    with fastio.mmap(-1, 2 * PAGE) as m:
        m[:5] = b"hello"
        m.resize(10)  # shrinking always works
        assert m[:] == b"hello" + bytes(5)
        if sys.version_info >= (3, 14):
            with stdlib_mmap.mmap(-1, 2 * PAGE) as sm:
                sm.resize(10)
                with pytest.raises(ValueError) as theirs:
                    sm.resize(2 * PAGE)
            with pytest.raises(ValueError) as ours:
                m.resize(2 * PAGE)
            assert str(ours.value) == f"{theirs.value}: length=10, newsize={2 * PAGE}"
            with pytest.raises(ValueError, match="can't expand"):
                m.resize(11)
            assert len(m) == 10 and m[:] == b"hello" + bytes(5)
            return
        m.resize(2 * PAGE)  # back up to the original size: fine
        assert m[-1] == 0 and m[:5] == b"hello"
        with pytest.raises(ValueError, match=f"original {2 * PAGE} bytes.*newsize={2 * PAGE + 1}"):
            m.resize(2 * PAGE + 1)
        assert len(m) == 2 * PAGE


def test_modes(tmp_path):
    path = tmp_path / "modes.bin"
    with fastio.mmap(path, 100, mode="w+", offset=7) as m:
        assert os.path.getsize(path) == 107 and len(m) == 100
        m[:5] = b"hello"
    assert path.read_bytes()[7:12] == b"hello"
    with fastio.mmap(str(path), mode="r+") as m:
        assert len(m) == 107
        m[0:3] = b"abc"
    assert path.read_bytes()[:3] == b"abc"
    with fastio.mmap(os.fsencode(path), mode="c") as m:
        m[0:3] = b"xyz"
        assert m[0:3] == b"xyz"
    assert path.read_bytes()[:3] == b"abc"
    with fastio.mmap(path, 3, offset=7, mode="readonly") as m:
        assert m[:] == b"hel" and repr(m).startswith("<fastio.mmap closed=False, access=ACCESS_READ")
    with fastio.mmap(path) as m:  # no mode: read-write shared, as 'r+'
        assert len(m) == 107 and "ACCESS_DEFAULT" in repr(m)
        m[0] = ord("A")
    assert path.read_bytes()[:3] == b"Abc"


def test_asarray_shapes(tmp_path):
    path = tmp_path / "arr.bin"
    ref = np.arange(24, dtype="<i4")
    path.write_bytes(b"xyz" + ref.tobytes())
    with fastio.mmap(path, mode="r", offset=3) as m:
        a = m.asarray("<i4")
        assert np.array_equal(a, ref)
        b = m.asarray("<i4", shape=(4, 6))
        assert np.array_equal(b, ref.reshape(4, 6))
        f = m.asarray("<i4", shape=(4, 6), order="F")
        assert np.array_equal(f, ref.reshape((4, 6), order="F"))
        c = m.asarray("<i4", shape=2, offset=8)
        assert c.tolist() == [2, 3]
        with pytest.raises(ValueError, match="shape"):
            m.asarray("<i4", shape=(5, 6))


# ---------------------------------------------------------------- stdlib parity

@pytest.mark.smoke
def test_items_slices_iteration_contains():
    s = bytes(reversed(range(256)))
    with fastio.mmap(-1, 256) as m, stdlib_mmap.mmap(-1, 256) as sm:
        m[:] = s
        sm[:] = s
        assert list(m) == list(sm) and all(type(b) is bytes and len(b) == 1 for b in m)
        for x in (b"\x05", b"\x05\x04", 5, bytearray(b"\x05"), b"", "a"):
            assert (x in m) == (x in sm)
        m[-1] = 9
        sm[-1] = 9
        m[10:20:3] = b"abcd"
        sm[10:20:3] = b"abcd"
        assert m[:] == sm[:] and m[::-7] == sm[::-7] and m[-1] == 9
        for bad in (256, -1):
            with pytest.raises(ValueError, match=r"range\(0, 256\)"):
                m[0] = bad
        with pytest.raises(IndexError, match="wrong size"):
            m[0:3] = b"ab"
        with pytest.raises(TypeError, match="item deletion"):
            del m[0]
        with pytest.raises(IndexError, match="out of range"):
            m[256]
        # Overlapping slice assignment from a view of the map itself.
        m[0:10] = b"0123456789"
        with memoryview(m) as v:
            m[2:10] = v[0:8]
        assert m[0:10] == b"0101234567"


@pytest.mark.smoke
def test_read_write_seek_find_readline():
    with fastio.mmap(-1, 32) as m, stdlib_mmap.mmap(-1, 32) as sm:
        for mm in (m, sm):
            assert mm.write(b"one\ntwo\nthree") == 13
            mm.seek(0)
        for mm in (m, sm):
            mm.seek(0)
        assert [m.readline() for _ in range(4)] == [sm.readline() for _ in range(4)]
        m.seek(2)
        sm.seek(2)
        assert m.find(b"t") == sm.find(b"t")
        assert m.rfind(b"t", None, None) == sm.rfind(b"t")
        assert m.find(b"") == sm.find(b"") and m.rfind(b"") == sm.rfind(b"")
        assert m.find(b"o", -30, -1) == sm.find(b"o", -30, -1)


def test_no_pickling_but_subclass_and_weakref():
    m = fastio.mmap(-1, 10)
    with pytest.raises(TypeError, match="cannot pickle 'fastio.mmap' object"):
        pickle.dumps(m)

    class Anon(fastio.mmap):
        def __new__(cls, n):
            return super().__new__(cls, -1, n)

    a = Anon(PAGE)
    assert isinstance(a, fastio.mmap) and len(a) == PAGE
    assert repr(a).startswith(f"<{__name__}.test_no_pickling_but_subclass_and_weakref.<locals>.Anon")
    r = weakref.ref(a)
    del a
    gc.collect()
    assert r() is None
    m.close()


def test_size_of_anonymous_map_is_its_length():
    # The stdlib raises OSError(EBADF) (it fstat()s fd -1); documented.
    with fastio.mmap(-1, 123) as m:
        assert m.size() == 123


def test_stdlib_code_runs_with_fastio_as_mmap(monkeypatch, rwfile):
    path, data, fd = rwfile
    monkeypatch.setitem(sys.modules, "mmap", fastio)
    import mmap
    assert mmap is fastio
    with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as m:
        assert m[:] == data and isinstance(m, mmap.mmap)
    assert mmap.error is OSError


# ---------------------------------------------------------------- extras

@pytest.mark.smoke
def test_advise_rounds_and_never_discards_outside_range():
    with fastio.mmap(-1, 4 * PAGE, flags=fastio.MAP_PRIVATE) as m:
        m[:] = b"\xff" * len(m)
        # Discarding advice only drops whole pages inside the range.
        m.advise(fastio.MADV_DONTNEED, 10, 2 * PAGE)
        assert m[:PAGE] == b"\xff" * PAGE
        assert m[PAGE:2 * PAGE] == bytes(PAGE)
        assert m[2 * PAGE:] == b"\xff" * (2 * PAGE)
        # Other advice is widened to pages: any start works.
        m.advise(fastio.MADV_WILLNEED, 1, 3)
        m.advise(fastio.MADV_SEQUENTIAL, start=PAGE + 1)
        with pytest.raises(ValueError, match="start=-1"):
            m.advise(fastio.MADV_NORMAL, -1)
        with pytest.raises(ValueError, match=f"length={5 * PAGE}"):
            m.advise(fastio.MADV_NORMAL, 0, 5 * PAGE)
        with pytest.raises(OSError) as info:
            m.advise(12345)
        assert info.value.errno == errno.EINVAL and "madvise" in str(info.value)


def test_madvise_at_any_offset(rwfile):
    path, data, fd = rwfile
    with fastio.mmap(fd, 2 * PAGE, offset=7) as m:
        assert m.madvise(fastio.MADV_NORMAL, 3, 10) is None
        assert m.madvise(fastio.MADV_WILLNEED) is None


# The kernel's answer, not populate()'s: a populate() that breaks must fail.
needs_populate = pytest.mark.skipif(
    not probes.populate(),
    reason=f"no MADV_POPULATE_WRITE here (independent probe: {probes.populate().detail})")


@needs_populate
def test_populate_and_residency(rwfile):
    path, data, fd = rwfile
    with fastio.mmap(-1, 8 * PAGE, flags=fastio.MAP_PRIVATE) as m:
        raw = fastio._core.mmap.residency(m)
        assert isinstance(raw, bytes) and len(raw) == 8 and set(raw) <= {0, 1}
        assert m.populate() is None
        frac, pages = m.residency()
        assert frac == 1.0 and pages.dtype == bool and pages.shape == (8,)
        m.advise(fastio.MADV_DONTNEED, 0, 4 * PAGE)
        frac, pages = m.residency()
        assert frac == 0.5 and not pages[:4].any() and pages[4:].all()
    # Evict first: the file was just written and is resident already.
    evicted = probes.evict(path) == 0.0
    with fastio.mmap(fd, 0, offset=5, populate=True) as m:
        frac, pages = m.residency()
        assert frac == 1.0 and len(pages) == 4
        if evicted:
            assert probes.residency(path) == 1.0


@needs_populate
def test_populate_past_end_of_file_is_oserror_not_sigbus(tmp_path):
    path = tmp_path / "shrinks.bin"
    path.write_bytes(b"x" * (4 * PAGE))
    with fastio.mmap(path, mode="r") as m:
        os.truncate(path, PAGE)
        with pytest.raises(OSError) as info:
            m.populate()
        assert info.value.errno == errno.EFAULT


def test_lock_unlock():
    with fastio.mmap(-1, PAGE) as m:
        try:
            m.lock()
        except OSError as exc:
            assert exc.errno in (errno.ENOMEM, errno.EPERM)
            assert "RLIMIT_MEMLOCK" in str(exc)
            probes.fail_or_skip("mlock", probes.mlock(), exc)
        assert m.unlock() is None


def _lock_over_limit():
    """Map more than RLIMIT_MEMLOCK allows and lock it; the OSError's text."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    limit = soft if soft != resource.RLIM_INFINITY else 16 * PAGE
    with fastio.mmap(-1, limit + 16 * PAGE) as m:
        try:
            m.lock()
        except OSError as exc:
            return exc.errno, str(exc)
    return None, "lock() succeeded over the limit"


@pytest.mark.skipif(bool(maps_mentioning("libasan")),
                    reason="AddressSanitizer replaces mlock with a no-op")
def test_lock_over_limit_names_rlimit():
    import resource
    if os.geteuid() != 0:
        if resource.getrlimit(resource.RLIMIT_MEMLOCK)[0] == resource.RLIM_INFINITY:
            pytest.skip("no locked-memory limit applies")
        err, text = _lock_over_limit()
    else:
        # Root ignores the limit (CAP_IPC_LOCK): check it in a child that
        # sets a small limit and becomes an unprivileged user.
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(r)
                resource.setrlimit(resource.RLIMIT_MEMLOCK, (4 * PAGE, 4 * PAGE))
                os.setgid(65534)
                os.setuid(65534)
                err, text = _lock_over_limit()
                os.write(w, f"{err}|{text}".encode())
            finally:
                os._exit(0)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            out = f.read().decode()
        os.waitpid(pid, 0)
        if not out:
            pytest.skip("could not drop privileges in a child")
        err, text = out.split("|", 1)
        err = None if err == "None" else int(err)
    assert err in (errno.ENOMEM, errno.EPERM), text
    assert "RLIMIT_MEMLOCK" in text and "ulimit -l" in text


# ---------------------------------------------------------------- processes and threads

def test_anonymous_shared_map_is_shared_with_forked_child():
    shared = fastio.mmap(-1, PAGE)  # MAP_SHARED by default
    private = fastio.mmap(-1, PAGE, flags=fastio.MAP_PRIVATE)
    pid = os.fork()
    if pid == 0:  # child: write both, exit without running pytest's teardown
        try:
            shared[0:5] = b"hello"
            private[0:5] = b"hello"
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert shared[0:5] == b"hello"
    assert private[0:5] == bytes(5)
    shared.close()
    private.close()


def test_close_while_another_thread_copies():
    size = 64 << 20  # far above FASTIO_NOGIL_COPY_THRESHOLD: copied without the GIL
    for _ in range(5):
        m = fastio.mmap(-1, size)
        m[size - 1] = 1
        start = threading.Barrier(2)
        copied_once = threading.Event()
        results = []

        def reader():
            start.wait()
            try:
                while True:
                    got = m[0:size]
                    results.append(len(got) == size and got[-1] == 1)
                    copied_once.set()
                    m.seek(0)
                    got = m.read()
                    results.append(len(got) == size and got[-1] == 1)
            except ValueError as exc:
                results.append(str(exc) == CLOSED)
            finally:
                copied_once.set()

        t = threading.Thread(target=reader)
        t.start()
        start.wait()
        copied_once.wait()  # then close while the next copies run
        m.close()
        t.join()
        assert results and all(results)


# ---------------------------------------------------------------- introspection

def test_signatures_and_stub_match_runtime():
    import ast
    import inspect
    for name in dir(fastio._core.mmap):
        attr = getattr(fastio._core.mmap, name)
        if not name.startswith("_") and callable(attr):
            inspect.signature(attr)  # every docstring starts with a text signature
    inspect.signature(fastio.mmap)
    stub = ast.parse(open(os.path.join(os.path.dirname(fastio.__file__), "_core.pyi")).read())
    cls = next(n for n in stub.body if isinstance(n, ast.ClassDef) and n.name == "mmap")
    stubbed = {n.name for n in cls.body if isinstance(n, ast.FunctionDef)}
    runtime = {n for n in vars(fastio._core.mmap) if not n.startswith("_")}
    assert runtime <= stubbed


# ---------------------------------------------------------------- Python 3.13
# What Python 3.13's mmap added, which fastio has on every Python.

def test_seekable_and_seek_returns_the_position():
    m = fastio.mmap(-1, 100)
    assert m.seekable() is True
    assert m.seek(10) == 10
    assert m.seek(5, 1) == 15
    assert m.seek(-1, 2) == 99
    assert m.tell() == 99
    m.close()
    assert m.seekable() is True  # as the stdlib's, even closed


def _check_trackfd_size_error(m):
    """size() of a map made with trackfd=False raises what the running
    Python's stdlib raises: ValueError from 3.15, OSError (EBADF: it fstats
    fd -1) on 3.13 and 3.14, and before 3.13 (no trackfd) 3.13's answer."""
    with pytest.raises((OSError, ValueError)) as info:
        m.size()
    if sys.version_info >= (3, 13):
        with stdlib_mmap.mmap(-1, 16, trackfd=False) as sm:
            with pytest.raises(Exception) as theirs:
                sm.size()
        assert type(info.value) is type(theirs.value)
    if sys.version_info >= (3, 15):
        assert str(info.value) == "can't get size with trackfd=False"
    else:
        assert type(info.value) is OSError and info.value.errno == errno.EBADF


def test_trackfd_false_keeps_no_descriptor(rwfile, leakcheck):
    path, data, fd = rwfile
    before = len(os.listdir("/proc/self/fd"))
    m = fastio.mmap(fd, len(data), trackfd=False)
    assert len(os.listdir("/proc/self/fd")) == before, "trackfd=False dup()ed the fd"
    assert m[:] == data
    _check_trackfd_size_error(m)
    with pytest.raises(ValueError, match="trackfd=False"):
        m.resize(10)
    assert m.valid() is True  # no descriptor to ask
    m[0] = data[0] ^ 0xFF
    m.flush()
    assert os.pread(fd, 1, 0)[0] == data[0] ^ 0xFF
    m.close()
    leakcheck.check()


def test_trackfd_false_outlives_the_callers_fd(tmp_path, leakcheck):
    p = tmp_path / "f.bin"
    p.write_bytes(b"abcdef" * 100)
    fd = os.open(p, os.O_RDWR)
    m = fastio.mmap(fd, 0, trackfd=False)
    os.close(fd)  # the mapping holds the file
    assert m[:6] == b"abcdef"
    m[0] = ord("X")
    m.close()
    assert p.read_bytes()[:6] == b"Xbcdef"
    leakcheck.check()


def test_trackfd_false_anonymous():
    m = fastio.mmap(-1, 64, trackfd=False)
    # fastio's anonymous size() answers len(); not without a tracked fd
    _check_trackfd_size_error(m)
    with pytest.raises(ValueError, match="trackfd=False"):
        m.resize(32)
    m[0] = 7
    assert m[0] == 7 and len(m) == 64
    m.close()


def test_trackfd_with_a_path(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"z" * 4096)
    with fastio.mmap(p, mode="r", trackfd=False) as m:
        assert m[:] == b"z" * 4096
        _check_trackfd_size_error(m)


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="MAP_32BIT is x86-64 only")
def test_map_32bit_constant():
    # The kernel's value (<asm/mman.h>); Python 3.13's mmap has it too.
    assert fastio.MAP_32BIT == getattr(stdlib_mmap, "MAP_32BIT", 0x40) == 0x40


# ---------------------------------------------------------------- Python 3.14 and 3.15
# What Python 3.14's and 3.15's mmap added or changed. Where the change is
# in behaviour (find past the end, growing a shared anonymous map, size()
# with trackfd=False), fastio follows the running Python's stdlib, which is
# the oracle here; what they added (flush's flags, set_name) fastio has on
# every Python.

FIND_ARGS = [(b"",), (b"", 12), (b"", 13), (b"", 20), (b"", -1), (b"", -20),
             (b"", 12, 12), (b"", 13, 20), (b"", 5, 3), (b"l", 13), (b"kl", 10),
             (b"a", -100, 100), (b"", 11, -1)]


@pytest.mark.parametrize("args", FIND_ARGS, ids=repr)
def test_find_past_the_end_as_the_running_stdlib(args):
    data = b"abcdefghijkl"
    with fastio.mmap(-1, 12) as m, stdlib_mmap.mmap(-1, 12) as sm:
        m[:] = sm[:] = data
        for name in ("find", "rfind"):
            assert getattr(m, name)(*args) == getattr(sm, name)(*args), (name, args)
    # and what each Python says, spelled out
    with fastio.mmap(-1, 12) as m:
        m[:] = data
        past = -1 if sys.version_info >= (3, 15) else 12
        assert m.find(b"", 13) == m.rfind(b"", 20) == past
        assert m.find(b"", 12) == 12


def test_flush_flags(rwfile):
    path, data, fd = rwfile
    for name, value in (("MS_ASYNC", 1), ("MS_INVALIDATE", 2), ("MS_SYNC", 4)):
        assert getattr(fastio, name) == getattr(stdlib_mmap, name, value) == value
    with fastio.mmap(fd, 0) as m:
        m[:6] = b"flush!"
        assert m.flush(flags=fastio.MS_SYNC) is None
        assert os.pread(fd, 6, 0) == b"flush!"
        assert m.flush(0, PAGE, flags=fastio.MS_ASYNC | fastio.MS_INVALIDATE) is None
        assert m.flush(PAGE * 2, flags=fastio.MS_INVALIDATE) is None
        assert m.flush(flags=0) is None          # 0: MS_SYNC, the default
        assert m.flush(PAGE, -1) is None         # -1: to the end (3.15's default)
        assert m.flush(1, 6, flags=fastio.MS_SYNC) is None  # any offset, as ever
        # The kernel judges the flags, the range being fine; even an empty
        # range, as the stdlib's msync call does.
        for call in (lambda: m.flush(flags=-1), lambda: m.flush(0, 0, flags=-1),
                     lambda: m.flush(flags=fastio.MS_SYNC | fastio.MS_ASYNC)):
            with pytest.raises(OSError) as info:
                call()
            assert info.value.errno == errno.EINVAL and "msync" in str(info.value)
        with pytest.raises(ValueError, match=r"flush values out of range: size=-2"):
            m.flush(0, -2)
        with pytest.raises(ValueError, match=r"not both .*flags=1"):
            m.flush(flags=fastio.MS_ASYNC, async_=True)
        with pytest.raises(TypeError):
            m.flush(flags="x")
        with pytest.raises(TypeError):
            m.flush(flags=None)
    with fastio.mmap(fd, 0, access=fastio.ACCESS_READ) as ro, \
            fastio.mmap(fd, 0, access=fastio.ACCESS_COPY) as cow:
        assert ro.flush(flags=-1) is None and cow.flush(0, -1, flags=-1) is None
    if hasattr(stdlib_mmap, "MS_SYNC"):  # 3.15: the same answers
        with stdlib_mmap.mmap(fd, 0) as sm:
            assert sm.flush(flags=0) is None and sm.flush(PAGE, -1) is None
            for kw in ({"flags": -1}, {"flags": stdlib_mmap.MS_SYNC | stdlib_mmap.MS_ASYNC}):
                with pytest.raises(OSError):
                    sm.flush(**kw)
            with pytest.raises(OSError):
                sm.flush(0, 0, flags=-1)
            with pytest.raises(ValueError):
                sm.flush(0, -2)


def _kernel_names_anonymous_maps():
    """0 when prctl(PR_SET_VMA_ANON_NAME) works on a private anonymous page
    (Linux 5.17+ built with CONFIG_ANON_VMA_NAME), else its errno; asked
    without fastio."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    with stdlib_mmap.mmap(-1, PAGE, flags=stdlib_mmap.MAP_PRIVATE) as sm:
        ref = ctypes.c_char.from_buffer(sm)
        addr = ctypes.addressof(ref)
        del ref
        rc = libc.prctl(0x53564D41, 0, ctypes.c_ulong(addr), ctypes.c_ulong(PAGE),
                        ctypes.c_char_p(b"fastio-probe"))
    return 0 if rc == 0 else ctypes.get_errno()


def test_set_name_checks_as_python_315(rwfile):
    path, data, fd = rwfile
    with fastio.mmap(-1, PAGE) as m:
        assert m.set_name("ok") is None
        assert m.set_name("x" * 66) is None and m.set_name("é" * 33) is None
        for bad, exc, msg in [
                ("x" * 67, ValueError, "name is too long: 67 bytes in UTF-8, at most 66"),
                ("é" * 34, ValueError, "name is too long: 68 bytes in UTF-8, at most 66"),
                ("a\0b", ValueError, "embedded null character"),
                (b"x", TypeError, "set_name() argument must be str, not bytes"),
                (None, TypeError, "set_name() argument must be str, not NoneType"),
                ("\udc80", UnicodeEncodeError, None)]:
            with pytest.raises(exc) as info:
                m.set_name(bad)
            assert msg is None or str(info.value) == msg
            if hasattr(stdlib_mmap.mmap, "set_name"):  # 3.15: the same type
                with stdlib_mmap.mmap(-1, PAGE) as sm, pytest.raises(exc):
                    sm.set_name(bad)
        with pytest.raises(TypeError):
            m.set_name(name="kw")  # positional only, as the stdlib's
    with fastio.mmap(-1, PAGE, flags=fastio.MAP_PRIVATE) as m:
        assert m.set_name("private") is None
    with fastio.mmap(fd, PAGE) as m:
        with pytest.raises(ValueError, match="^Cannot set annotation on non-anonymous mappings$"):
            m.set_name("file")


SET_NAME_CHILD = r"""
import sys, fastio
m = fastio.mmap(-1, fastio.PAGESIZE, flags=fastio.MAP_PRIVATE)
try:
    r = m.set_name("fastio-test-name")
except OSError as e:
    print("OSError", e.errno, e)
else:
    print("ok", r, [l.split()[-1] for l in open("/proc/self/maps") if "fastio-test-name" in l])
"""


@pytest.mark.parametrize("dev", [False, True], ids=["normal", "dev_mode"])
def test_set_name_names_the_mapping_or_says_why_not(dev):
    """fastio always asks the kernel (the stdlib only in development mode).
    Where the kernel names anonymous maps, /proc/self/maps shows the name
    with the stdlib's prefix; where it cannot (no CONFIG_ANON_VMA_NAME:
    EINVAL), set_name raises OSError in development mode only, as Python
    3.15's does, and is silent otherwise."""
    import subprocess
    cmd = [sys.executable] + (["-X", "dev"] if dev else []) + ["-c", SET_NAME_CHILD]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    refused = _kernel_names_anonymous_maps()
    if not refused:
        assert out.strip() == "ok None ['[anon:cpython:mmap:fastio-test-name]']"
    elif dev:
        assert out.startswith(f"OSError {refused} ") and "(prctl)" in out
    else:
        assert out.strip() == "ok None []"


def _nonzero(n):
    return bytes(i % 255 + 1 for i in range(n))


class _ResizesWhileExporting:
    """A value whose buffer export (PEP 688, Python 3.12+) resizes or closes
    the map first: the slice assignment's bounds were computed before."""
    def __init__(self, m, data, new_size):
        self.m, self.data, self.new_size = m, data, new_size

    def __buffer__(self, flags):
        if self.new_size is None:
            self.m.close()
        else:
            self.m.resize(self.new_size)
        return memoryview(self.data)


@pytest.mark.skipif(sys.version_info < (3, 12), reason="__buffer__ is Python 3.12+")
def test_slice_assignment_resized_by_the_value():
    """Python 3.14's mmap (gh-157335): a slice that no longer fits raises
    IndexError; one that still fits is written (fastio raised ValueError
    for any resize; 3.13's mmap wrote past the end)."""
    cases = [  # (size, new size, slice, fits)
        (2 * PAGE, PAGE, slice(0, 2 * PAGE), False),
        (2 * PAGE, PAGE, slice(PAGE - 5, PAGE + 5), False),
        (2 * PAGE, PAGE, slice(2 * PAGE - 20, 2 * PAGE, 2), False),
        (2 * PAGE, PAGE, slice(PAGE + 10, 10, -7), False),
        (2 * PAGE, PAGE, slice(0, 10), True),
        (2 * PAGE, PAGE, slice(0, 20, 2), True),
        (2 * PAGE, PAGE, slice(PAGE - 1, None, -3), True),
        (PAGE, 2 * PAGE, slice(0, PAGE), True),
    ]
    impls = [fastio.mmap] + ([stdlib_mmap.mmap] if sys.version_info >= (3, 14) else [])
    for size, new_size, sl, fits in cases:
        n = len(range(*sl.indices(size)))
        results = []
        for impl in impls:
            with impl(-1, size, flags=stdlib_mmap.MAP_PRIVATE) as m:
                value = _ResizesWhileExporting(m, _nonzero(n), new_size)
                if fits:
                    m[sl] = value
                    results.append(m[:])
                else:
                    with pytest.raises(IndexError, match="mmap slice assignment is wrong size"):
                        m[sl] = value
                    results.append(m[:])
                assert len(m) == new_size
        if fits:
            expected = bytearray(new_size)
            expected[sl] = _nonzero(n)
            assert results[0] == expected, (sl,)
        else:
            assert results[0] == bytes(new_size), (sl,)  # nothing written
        assert all(r == results[0] for r in results), (sl,)
    with fastio.mmap(-1, PAGE) as m:
        with pytest.raises(ValueError, match=CLOSED):
            m[0:10] = _ResizesWhileExporting(m, bytes(10), None)
