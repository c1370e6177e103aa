"""Property tests (hypothesis) for public functions with a stdlib oracle
that had none: fastio.mmap's search, slicing and cursor methods against the
stdlib mmap on the same bytes; pread/preadv against os.pread/os.preadv;
copyfile against the source's bytes; Channel against a FIFO (deque);
read_file against numpy.fromfile; read_blocks/write_blocks against
os.pread/os.pwrite; empty against numpy.empty; sendfile, copy_file_range
and splice against os.sendfile, os.copy_file_range and os.splice.
"""
import mmap as std_mmap
import os
from collections import deque

import numpy as np

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastio

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

small_bytes = st.binary(min_size=1, max_size=600)


def _pair(data):
    """A fastio.mmap and a stdlib mmap holding `data` (anonymous)."""
    a = fastio.mmap(-1, len(data))
    b = std_mmap.mmap(-1, len(data))
    a[:] = data
    b[:] = data
    return a, b


@SETTINGS
@given(data=small_bytes, sub=st.binary(min_size=0, max_size=4),
       start=st.none() | st.integers(-700, 700), end=st.none() | st.integers(-700, 700))
def test_find_rfind_match_stdlib(data, sub, start, end):
    a, b = _pair(data)
    try:
        args = (sub,) if start is None else (sub, start) if end is None else (sub, start, end)
        assert a.find(*args) == b.find(*args)
        assert a.rfind(*args) == b.rfind(*args)
        # `in` iterates, like the stdlib's (items are 1-byte bytes), so it
        # is not a substring test: the stdlib is the oracle, not bytes.
        assert (sub in a) == (sub in b)
    finally:
        a.close()
        b.close()


@SETTINGS
@given(data=small_bytes, start=st.none() | st.integers(-700, 700),
       stop=st.none() | st.integers(-700, 700),
       step=st.none() | st.integers(-5, 5).filter(lambda s: s != 0))
def test_slicing_matches_bytes(data, start, stop, step):
    a, _ = _pair(data)
    try:
        assert a[start:stop:step] == data[start:stop:step]
    finally:
        a.close()


cursor_ops = st.lists(st.one_of(
    st.tuples(st.just("read"), st.none() | st.integers(-2, 700)),
    st.tuples(st.just("readline"), st.none()),
    st.tuples(st.just("read_byte"), st.none()),
    st.tuples(st.just("seek"), st.tuples(st.integers(-700, 700), st.integers(0, 2))),
), max_size=12)


@SETTINGS
@given(data=st.binary(min_size=1, max_size=400).map(lambda d: d.replace(b"\0", b"\n")),
       ops=cursor_ops)
def test_cursor_methods_match_stdlib(data, ops):
    a, b = _pair(data)
    try:
        for name, arg in ops:
            outs = []
            for m in (a, b):
                try:
                    if name == "seek":
                        m.seek(*arg)
                        outs.append(("ok", None))
                    elif arg is None:
                        outs.append(("ok", getattr(m, name)()))
                    else:
                        outs.append(("ok", getattr(m, name)(arg)))
                except (ValueError, OSError) as e:
                    outs.append(("raised", type(e)))
            assert outs[0] == outs[1], (name, arg, outs)
            assert a.tell() == b.tell()
    finally:
        a.close()
        b.close()


@SETTINGS
@given(content=st.binary(max_size=5000), sizes=st.lists(st.integers(0, 700), min_size=1,
                                                        max_size=6),
       offset=st.integers(0, 6000))
def test_pread_preadv_match_os(tmp_path, content, sizes, offset):
    p = tmp_path / "f.bin"
    p.write_bytes(content)
    fd = os.open(p, os.O_RDONLY)
    try:
        buf = bytearray(sizes[0])
        n = fastio.pread(fd, buf, offset)
        assert bytes(buf[:n]) == os.pread(fd, sizes[0], offset)
        mine = [bytearray(s) for s in sizes]
        theirs = [bytearray(s) for s in sizes]
        assert fastio.preadv(fd, mine, offset) == os.preadv(fd, theirs, offset)
        assert mine == theirs
    finally:
        os.close(fd)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=300_000),
       method=st.sampled_from(["auto", "copy_file_range", "sendfile", "readwrite"]))
def test_copyfile_copies_the_bytes(tmp_path, content, method):
    src, dst = tmp_path / "src.bin", tmp_path / "dst.bin"
    src.write_bytes(content)
    fastio.copyfile(src, dst, method=method)
    assert dst.read_bytes() == content


@SETTINGS
@given(ops=st.lists(st.one_of(st.binary(max_size=900), st.none()), max_size=40))
def test_channel_is_a_fifo(ops):
    """send (bytes) and recv (None) in any order: the Channel returns what a
    deque returns, and says 'full' only when the ring really has no room."""
    fifo = deque()
    with fastio.Channel(2048) as ch:
        for op in ops:
            if op is None:
                if fifo:
                    assert ch.recv_bytes(timeout=0) == fifo.popleft()
                else:
                    try:
                        ch.recv_bytes(timeout=0)
                    except TimeoutError:
                        pass
                    else:
                        raise AssertionError("received from an empty Channel")
            else:
                try:
                    ch.send_bytes(op, timeout=0)
                    fifo.append(op)
                except TimeoutError:
                    assert fifo, "an empty ring refused a message that fits"
        while fifo:
            assert ch.recv_bytes(timeout=0) == fifo.popleft()


# ---------------------------------------------------------------- whole files and blocks

@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(items=st.integers(0, 70_000), dtype=st.sampled_from(["u1", "<i2", "<f4", "<f8"]),
       method=st.sampled_from(fastio.READ_FILE_METHODS))
def test_read_file_matches_numpy_fromfile(tmp_path, items, dtype, method):
    p = tmp_path / "f.bin"
    p.write_bytes(os.urandom(items * np.dtype(dtype).itemsize))
    got = fastio.read_file(p, dtype, method=method)
    want = np.fromfile(p, dtype)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.tobytes() == want.tobytes()


@SETTINGS
@given(content=st.binary(min_size=1, max_size=20_000), size=st.integers(1, 3000),
       picks=st.lists(st.floats(0, 1), min_size=0, max_size=50),
       backend=st.sampled_from(["auto", "threads"]), depth=st.sampled_from([1, 4, 64]))
def test_read_blocks_match_os_pread(tmp_path, content, size, picks, backend, depth):
    size = min(size, len(content))
    p = tmp_path / "f.bin"
    p.write_bytes(content)
    offsets = np.array([int(x * (len(content) - size)) for x in picks], np.int64)
    out = fastio.read_blocks(p, offsets, size, backend=backend, depth=depth)
    assert out.shape == (len(offsets), size)
    fd = os.open(p, os.O_RDONLY)
    try:
        for row, off in zip(out, offsets.tolist()):
            assert row.tobytes() == os.pread(fd, size, off)
    finally:
        os.close(fd)


@SETTINGS
@given(blocks=st.dictionaries(st.integers(0, 40), st.binary(min_size=512, max_size=512),
                              max_size=30),
       backend=st.sampled_from(["auto", "threads"]))
def test_write_blocks_match_os_pwrite(tmp_path, blocks, backend):
    # Distinct offsets: requests in flight together have no order.
    mine, theirs = tmp_path / "mine.bin", tmp_path / "theirs.bin"
    mine.write_bytes(b"")
    theirs.write_bytes(b"")
    offsets = np.array([k * 512 for k in blocks], np.int64)
    data = np.frombuffer(b"".join(blocks.values()), np.uint8).reshape(len(blocks), 512)
    fastio.write_blocks(mine, offsets, data, backend=backend)
    fd = os.open(theirs, os.O_WRONLY)
    try:
        for off, b in zip(offsets.tolist(), blocks.values()):
            os.pwrite(fd, b, off)
    finally:
        os.close(fd)
    assert mine.read_bytes() == theirs.read_bytes()


@SETTINGS
@given(shape=st.one_of(st.integers(0, 5000),
                       st.lists(st.integers(0, 40), min_size=1, max_size=3).map(tuple)),
       dtype=st.sampled_from(["u1", "i2", "f4", "f8", "c16"]))
def test_empty_matches_numpy_empty(shape, dtype):
    got = fastio.empty(shape, dtype)
    want = np.empty(shape, dtype)
    assert (got.shape, got.dtype, got.nbytes) == (want.shape, want.dtype, want.nbytes)
    if got.size:   # numpy itself gives size-0 arrays varying strides
        assert got.strides == want.strides
    assert got.flags.c_contiguous and got.flags.writeable
    assert got.ctypes.data % 4096 == 0 or got.nbytes == 0


# ---------------------------------------------------------------- transfer

def _fds(tmp_path, content):
    src = tmp_path / "src.bin"
    src.write_bytes(content)
    # O_TRUNC: tmp_path is the same directory for every example of a test
    flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC
    return (os.open(src, os.O_RDONLY), os.open(tmp_path / "a.bin", flags),
            os.open(tmp_path / "b.bin", flags))


def _close(*fds):
    for fd in fds:
        os.close(fd)


def _whole(fd):
    return os.pread(fd, os.fstat(fd).st_size, 0)


@SETTINGS
@given(content=st.binary(max_size=100_000), offset=st.integers(0, 110_000),
       count=st.integers(0, 110_000),
       method=st.sampled_from(["auto", "sendfile", "splice", "readwrite"]))
def test_sendfile_matches_os_sendfile(tmp_path, content, offset, count, method):
    # To a file (os.sendfile's out may be any fd since Linux 2.6.33): the
    # same bytes land, the count is the same, in_'s position is untouched.
    src, mine, theirs = _fds(tmp_path, content)
    try:
        got = fastio.sendfile(mine, src, offset, count, method=method)
        want = 0
        while want < count:
            n = os.sendfile(theirs, src, offset + want, count - want)
            if n == 0:
                break
            want += n
        assert int(got) == want
        assert _whole(mine) == _whole(theirs) == content[offset:offset + count]
        assert os.lseek(src, 0, os.SEEK_CUR) == 0
    finally:
        _close(src, mine, theirs)


@SETTINGS
@given(content=st.binary(max_size=100_000), count=st.integers(0, 110_000),
       src_offset=st.none() | st.integers(0, 110_000),
       dst_offset=st.none() | st.integers(0, 5_000))
def test_copy_file_range_matches_os(tmp_path, content, count, src_offset, dst_offset):
    src, mine, theirs = _fds(tmp_path, content)
    try:
        got = fastio.copy_file_range(src, mine, count, src_offset, dst_offset)
        pos_after = os.lseek(src, 0, os.SEEK_CUR)
        os.lseek(src, 0, os.SEEK_SET)
        want = 0
        while want < count:   # os.copy_file_range may return short: loop as fastio does
            n = os.copy_file_range(src, theirs, count - want,
                                   None if src_offset is None else src_offset + want,
                                   None if dst_offset is None else dst_offset + want)
            if n == 0:
                break
            want += n
        assert int(got) == want
        assert pos_after == os.lseek(src, 0, os.SEEK_CUR)  # the position moved alike
        assert _whole(mine) == _whole(theirs)
    finally:
        _close(src, mine, theirs)


@SETTINGS
@given(content=st.binary(max_size=60_000), count=st.integers(0, 65_536),
       in_offset=st.none() | st.integers(0, 70_000))
def test_splice_file_to_pipe_matches_os_splice(tmp_path, content, count, in_offset):
    # The pipe holds 64 KiB: counts up to that need no reader.
    src = tmp_path / "src.bin"
    src.write_bytes(content)
    fd = os.open(src, os.O_RDONLY)
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    try:
        got = int(fastio.splice(fd, w1, count, in_offset))
        fast_pos = os.lseek(fd, 0, os.SEEK_CUR)
        os.lseek(fd, 0, os.SEEK_SET)
        want = 0
        while want < count:
            n = os.splice(fd, w2, count - want,
                          None if in_offset is None else in_offset + want)
            if n == 0:
                break
            want += n
        assert got == want and fast_pos == os.lseek(fd, 0, os.SEEK_CUR)
        assert (os.read(r1, 70_000) if got else b"") == (os.read(r2, 70_000) if want else b"")
    finally:
        _close(fd, r1, w1, r2, w2)
