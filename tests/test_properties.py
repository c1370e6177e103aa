"""Property tests (hypothesis) for public functions with a stdlib oracle
that had none: fastio.mmap's search, slicing and cursor methods against the
stdlib mmap on the same bytes; pread/preadv against os.pread/os.preadv;
copyfile against the source's bytes; Channel against a FIFO (deque).
"""
import mmap as std_mmap
import os
from collections import deque

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
