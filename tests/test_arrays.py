"""as_ndarray and open_array: plain ndarrays over fastio memory, and their
lifetimes. numpy.memmap on the same file is the oracle for the values."""
import gc
import inspect
import os
import pickle

import numpy as np
import pytest

import fastio
from conftest import LeakCheck
from fastio.arrays import as_ndarray

PAGE = fastio.PAGESIZE
FILE_LEN = 2 * PAGE + 43  # a multiple of no itemsize > 1


@pytest.fixture
def data(tmp_path):
    p = tmp_path / "data.bin"
    p.write_bytes(os.urandom(FILE_LEN))
    return p


def maps_of(path):
    with open("/proc/self/maps") as fh:
        return [line for line in fh if line.rstrip().endswith(str(path))]


def base_chain(a):
    chain = []
    while a is not None:
        chain.append(a)
        a = getattr(a, "base", None)
    return chain


def the_map(a):
    """The fastio.mmap at the end of an array's .base chain."""
    end = base_chain(a)[-1]
    assert isinstance(end, memoryview), type(end)
    return end.obj


# ------------------------------------------------------------------ #
# as_ndarray


def test_as_ndarray_keeps_the_export_after_close():
    mm = fastio.mmap(-1, 3 * PAGE)
    a = as_ndarray(mm, "<u4", (3, PAGE // 4))
    a[:] = 7
    mm.close()
    del mm
    gc.collect()
    assert (a == 7).all()  # still mapped: the memoryview holds the export
    a[1, 1] = 9
    assert a.sum() == 7 * (a.size - 1) + 9


def test_as_ndarray_memory_goes_with_the_last_view(data):
    lc = LeakCheck(map_slack=0)
    with open(data, "rb") as fh:
        mm = fastio.mmap(fh.fileno(), 0, access=fastio.ACCESS_READ)
    a = as_ndarray(mm, "u1")
    v = a[10:20]
    mm.close()
    del a, mm
    gc.collect()
    assert maps_of(data)
    assert bytes(v) == data.read_bytes()[10:20]
    del v
    lc.check()
    assert not maps_of(data)


def test_as_ndarray_readonly_follows_the_buffer():
    assert not as_ndarray(b"abcd").flags.writeable
    assert as_ndarray(bytearray(b"abcd")).flags.writeable
    mm = fastio.mmap(-1, PAGE, prot=fastio.PROT_READ)
    assert not as_ndarray(mm).flags.writeable


@pytest.mark.parametrize("kw, words", [
    (dict(dtype="<u4", shape=(3,)), ["shape=(3,)", "uint32", "10"]),
    (dict(dtype="<u4"), ["10 bytes", "uint32"]),
    (dict(offset=11), ["offset=11", "10"]),
    (dict(shape=(2, -1)), ["shape=(2, -1)"]),
    (dict(order="X", shape=2), ["order='X'"]),
])
def test_as_ndarray_bad_fit_names_values(kw, words):
    with pytest.raises(ValueError) as ei:
        as_ndarray(bytearray(10), **kw)
    for w in words:
        assert w in str(ei.value)


@pytest.mark.parametrize("order", ["C", "F"])
def test_as_ndarray_matches_ndarray_layout(order):
    buf = bytearray(os.urandom(96))
    a = as_ndarray(buf, "<i2", (4, 3), offset=8, order=order)
    b = np.ndarray((4, 3), "<i2", buffer=buf, offset=8, order=order)
    assert a.strides == b.strides and (a == b).all()
    s = as_ndarray(buf, "u1", subtype=np.memmap)
    assert type(s) is np.memmap


# ------------------------------------------------------------------ #
# open_array


@pytest.mark.parametrize("mode", ["r", "r+", "c", "readonly", "readwrite", "copyonwrite"])
@pytest.mark.parametrize("offset", [0, 1, PAGE + 3])
@pytest.mark.parametrize("shape", [None, 6, (2, 3)])
def test_open_array_matches_numpy_memmap(data, mode, offset, shape):
    if shape is None:
        with open(data, "r+b") as fh:  # make the rest fit the itemsize
            fh.truncate(offset + (FILE_LEN - offset) // 2 * 2)
    n = np.memmap(data, "<i2", mode, offset, shape)
    a = fastio.open_array(data, "<i2", shape, mode, offset)
    assert type(a) is np.ndarray
    assert a.shape == n.shape and a.strides == n.strides
    assert a.flags.writeable == n.flags.writeable
    assert a.tobytes() == np.asarray(n).tobytes()


def test_open_array_defaults_to_readonly(data):
    a = fastio.open_array(data, "u1")
    assert not a.flags.writeable
    assert a.tobytes() == data.read_bytes()


def test_open_array_writes_reach_the_file(data):
    a = fastio.open_array(data, "<u2", (4, 5), "r+", 3, order="F")
    a[:] = np.arange(20).reshape(4, 5)
    del a
    gc.collect()
    raw = data.read_bytes()[3:43]
    assert (np.frombuffer(raw, "<u2").reshape((4, 5), order="F")
            == np.arange(20).reshape(4, 5)).all()


def test_open_array_w_plus_creates(tmp_path):
    p = tmp_path / "new.bin"
    a = fastio.open_array(p, "<f8", (3, 3), "w+", 5)
    assert (a == 0).all() and a.flags.writeable
    assert p.stat().st_size == 5 + 72


def test_open_array_base_chain_keeps_the_map(data):
    a = fastio.open_array(data, "u1", (2, PAGE), "r", 1)
    mm = the_map(a)
    assert isinstance(mm, fastio.mmap)
    assert not any(isinstance(x, np.memmap) for x in base_chain(a))
    v = a[1, ::3]
    assert the_map(v) is mm
    del a, mm
    gc.collect()
    assert maps_of(data)
    assert bytes(v) == data.read_bytes()[1 + PAGE::3][:len(v)]
    # closing the map under the view is safe too
    the_map(v).close()
    assert bytes(v[:4]) == data.read_bytes()[1 + PAGE:1 + PAGE + 12:3]
    del v
    gc.collect()
    assert not maps_of(data)


def test_open_array_pickles_as_a_plain_copy(data):
    a = fastio.open_array(data, "<u4", (3, 4), offset=2)
    b = pickle.loads(pickle.dumps(a))
    assert type(b) is np.ndarray and (b == a).all()
    assert b.base is None or not isinstance(base_chain(b)[-1], memoryview)


@pytest.mark.parametrize("kw, exc, words", [
    (dict(shape=FILE_LEN + 1), ValueError, [f"shape=({FILE_LEN + 1},)", str(FILE_LEN)]),
    (dict(shape=(FILE_LEN,), offset=1), ValueError, ["offset=1", str(FILE_LEN)]),
    (dict(dtype="<u8"), ValueError, ["uint64", "offset=0"]),
    (dict(offset=FILE_LEN + 1), ValueError, [f"offset={FILE_LEN + 1}"]),
    (dict(mode="rw"), ValueError, ["'rw'"]),
    (dict(mode="w+"), ValueError, ["shape"]),
    (dict(offset=-1), OverflowError, ["offset=-1"]),
    (dict(shape=(2, -1)), OverflowError, ["shape=(2, -1)"]),
    (dict(dtype=object, shape=2), ValueError, ["object"]),
])
def test_open_array_bad_input_names_values(data, kw, exc, words):
    kw = dict(dict(dtype="u1"), **kw)
    with pytest.raises(exc) as ei:
        fastio.open_array(data, **kw)
    for w in words:
        assert w in str(ei.value), (w, str(ei.value))


def test_open_array_missing_file(tmp_path):
    p = tmp_path / "missing.bin"
    with pytest.raises(FileNotFoundError) as ei:
        fastio.open_array(p, "u1")
    assert ei.value.filename == str(p)


def test_open_array_directory(tmp_path):
    with pytest.raises(IsADirectoryError) as ei:
        fastio.open_array(tmp_path, "u1")
    assert ei.value.filename == str(tmp_path)


def test_open_array_empty_file(tmp_path):
    p = tmp_path / "empty"
    p.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        fastio.open_array(p, "u1")


def test_open_array_unknown_option(data):
    with pytest.raises(TypeError, match="prefetch"):
        fastio.open_array(data, "u1", prefetch=True)


@pytest.mark.parametrize("mode", ["r", "r+"])
def test_open_array_options(data, mode, leakcheck):
    a = fastio.open_array(data, "u1", mode=mode, populate=True)
    b = fastio.open_array(data, "u1", mode=mode, hugepages=True)
    assert a.tobytes() == b.tobytes() == data.read_bytes()
    if hasattr(fastio.mmap, "residency"):
        assert the_map(a).residency()[0] == 1.0
    if hasattr(fastio.mmap, "advise"):
        c = fastio.open_array(data, "u1", mode=mode, advise=fastio.MADV_SEQUENTIAL)
        assert c.tobytes() == a.tobytes()
        del c
    del a, b
    leakcheck.check()


def test_open_array_cycles_do_not_leak(data):
    fastio.open_array(data, "u1", 10)
    lc = LeakCheck()
    for i in range(1000):
        a = fastio.open_array(data, "<u2", (5, 4), "r" if i % 3 else "r+", i % 13)
        v = a[1:, ::2]
        the_map(a).close()
        del a
        assert v.shape == (4, 2)
        del v
    lc.check()
    assert not maps_of(data)


def test_open_array_failures_do_not_leak(data, tmp_path):
    lc = LeakCheck()
    for _ in range(200):
        for kw in (dict(shape=FILE_LEN + 1), dict(dtype="<u8"), dict(offset=-1)):
            kw = dict(dict(dtype="u1"), **kw)
            with pytest.raises((ValueError, OverflowError)):
                fastio.open_array(data, **kw)
        with pytest.raises(FileNotFoundError):
            fastio.open_array(tmp_path / "missing", "u1")
    lc.check()


# ------------------------------------------------------------------ #
# fastio.mmap.asarray (fastio/mapping.py): the same fit checks


def _asarray_or_skip():
    fn = getattr(fastio.mmap, "asarray", None)
    if fn is None:
        pytest.skip("mmap.asarray not merged yet")
    params = inspect.signature(fn).parameters
    if not {"dtype", "shape", "offset"} <= set(params):
        pytest.skip(f"mmap.asarray has another signature: {inspect.signature(fn)}")


@pytest.mark.parametrize("kw, words", [
    (dict(dtype="u1", shape=(FILE_LEN + 1,)), [f"{FILE_LEN + 1}", str(FILE_LEN)]),
    (dict(dtype="<u8"), ["uint64"]),
    (dict(dtype="u1", offset=FILE_LEN + 1), [f"offset={FILE_LEN + 1}"]),
])
def test_mmap_asarray_bad_fit_names_values(data, kw, words):
    _asarray_or_skip()
    with open(data, "rb") as fh:
        mm = fastio.mmap(fh.fileno(), 0, access=fastio.ACCESS_READ)
    with pytest.raises(ValueError) as ei:
        mm.asarray(**kw)
    for w in words:
        assert w in str(ei.value)
    mm.close()
