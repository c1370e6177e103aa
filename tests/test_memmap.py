"""fastio.memmap against numpy.memmap as the oracle.

Every test builds both from the same arguments on the same (or an identical)
file and checks that they give the same bytes, shapes, strides, attributes,
result types and exceptions. Where fastio differs on purpose (object dtypes,
close(), the extra options) the test says so.
"""
import copy
import gc
import os
import pickle
import shutil
import tempfile
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastio
import probes
from conftest import LeakCheck

PAGE = fastio.PAGESIZE
FILE_LEN = 3 * PAGE + 123  # not a multiple of any itemsize > 1 below

MODES = ["r", "r+", "c", "readonly", "readwrite", "copyonwrite"]
WRITE_MODES = ["r+", "w+", "c", "readwrite", "write", "copyonwrite"]
DTYPES = [
    "u1", "i2", "<f8", ">i4", "c8", "?", "S3", "<U2",
    np.dtype([("a", "u1"), ("b", "<i4")]),               # packed, itemsize 5
    np.dtype([("a", "u1"), ("b", "<i4")], align=True),   # padded, itemsize 8
    np.dtype([("x", "<f4", (2,)), ("y", ">u2")]),
    "(2,3)<f4",                                           # subarray dtype
]
OFFSETS = [0, 1, 3, 8, PAGE - 1, PAGE, PAGE + 1, 2 * PAGE + 7]


def has_map_method(name):
    return hasattr(fastio.mmap, name)


def need(name):
    if not has_map_method(name):
        pytest.skip(f"mmap.{name} not merged yet")


@pytest.fixture
def data(tmp_path):
    p = tmp_path / "data.bin"
    p.write_bytes(os.urandom(FILE_LEN))
    return p


def twin(path):
    """An identical copy, for modes that write: numpy and fastio each get one."""
    q = path.with_name(path.name + ".np")
    shutil.copyfile(path, q)
    return q


def assert_same_array(n, f):
    """Same shape, dtype, strides, flags that matter and bytes."""
    assert f.shape == n.shape
    assert f.dtype == n.dtype
    assert f.strides == n.strides
    assert f.flags.writeable == n.flags.writeable
    assert f.flags.c_contiguous == n.flags.c_contiguous
    assert f.flags.f_contiguous == n.flags.f_contiguous
    assert np.asarray(f).tobytes(order="A") == np.asarray(n).tobytes(order="A")


def assert_same_result(n, f, ntype=np.memmap, ftype=fastio.memmap):
    """numpy's result type mapped to fastio's: numpy.memmap -> fastio.memmap
    (or a user subclass to its twin), anything else to the same type."""
    if type(n) is ntype:
        assert type(f) is ftype, (type(n), type(f))
    else:
        assert type(f) is type(n), (type(n), type(f))
    if isinstance(n, np.ndarray):
        assert_same_array(n, f)
    else:
        assert np.asarray(f).tobytes() == np.asarray(n).tobytes()


def both(path, *args, **kw):
    return np.memmap(path, *args, **kw), fastio.memmap(path, *args, **kw)


def raised(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001  the type is what we compare
        return e
    return None


# ------------------------------------------------------------------ #
# Construction: values, shapes, orders, offsets


def test_is_a_numpy_memmap(data):
    f = fastio.memmap(data, mode="r")
    assert isinstance(f, np.memmap)
    assert isinstance(f._mmap, fastio.mmap)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("offset", OFFSETS)
def test_default_shape_matches_numpy(data, dtype, offset):
    itemsize = np.dtype(dtype).itemsize
    size = (FILE_LEN - offset) // itemsize * itemsize
    # numpy takes the rest of the file: make it fit the itemsize.
    with open(data, "r+b") as fh:
        fh.truncate(offset + size)
    n, f = both(data, dtype=dtype, mode="r", offset=offset)
    assert_same_array(n, f)
    assert (f.filename, f.offset, f.mode) == (n.filename, n.offset, n.mode)


@pytest.mark.parametrize("shape", [7, (3, 4), [2, 3], (2, 3, 2), (), (0,), (3, 0),
                                   np.int64(5)], ids=repr)
@pytest.mark.parametrize("order", ["C", "F", "A", "K", "f", None])
@pytest.mark.parametrize("offset", [0, 5, PAGE + 3])
def test_shape_order_offset_match_numpy(data, shape, order, offset):
    n, f = both(data, dtype="<i2", mode="r", offset=offset, shape=shape, order=order)
    assert_same_array(n, f)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("order", ["C", "F"])
def test_dtypes_with_shape_match_numpy(data, dtype, order):
    n, f = both(data, dtype=dtype, mode="r", offset=3, shape=(2, 3), order=order)
    assert_same_array(n, f)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("offset", [0, 1, PAGE + 1])
def test_modes_match_numpy(data, mode, offset):
    nfile = twin(data)
    n = np.memmap(nfile, "u1", mode, offset, (100,))
    f = fastio.memmap(data, "u1", mode, offset, (100,))
    assert_same_array(n, f)
    assert f.mode == n.mode
    if n.flags.writeable:
        n[:] = 7
        f[:] = 7
        assert_same_array(n, f)
    del n, f
    gc.collect()
    assert data.read_bytes() == nfile.read_bytes()


def test_readonly_refuses_writes_like_numpy(data):
    n, f = both(data, "u1", "r", shape=4)
    en = raised(lambda: n.__setitem__(0, 1))
    ef = raised(lambda: f.__setitem__(0, 1))
    assert type(ef) is type(en) is ValueError


def test_copyonwrite_never_reaches_the_file(data):
    before = data.read_bytes()
    f = fastio.memmap(data, "u1", "c")
    f[:] = 0
    assert not f.any()
    del f
    assert data.read_bytes() == before


@pytest.mark.parametrize("mode", ["w+", "write"])
@pytest.mark.parametrize("offset", [0, 3, PAGE + 1])
def test_w_plus_truncates_and_sizes_like_numpy(data, mode, offset):
    nfile = twin(data)
    n = np.memmap(nfile, "<f4", mode, offset, (5, 3), order="F")
    f = fastio.memmap(data, "<f4", mode, offset, (5, 3), order="F")
    assert_same_array(n, f)
    n[:] = np.arange(15).reshape(5, 3)
    f[:] = np.arange(15).reshape(5, 3)
    del n, f
    gc.collect()
    assert data.stat().st_size == nfile.stat().st_size == offset + 60
    assert data.read_bytes() == nfile.read_bytes()


@pytest.mark.parametrize("mode", ["r+", "w+"])
def test_empty_shape_grows_empty_file_to_one_byte_like_numpy(tmp_path, mode):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"")
    b.write_bytes(b"")
    n = np.memmap(a, "u1", mode, shape=(0,))
    f = fastio.memmap(b, "u1", mode, shape=(0,))
    assert_same_array(n, f)
    assert a.stat().st_size == b.stat().st_size == 1


def test_r_plus_grows_the_file_like_numpy(data):
    nfile = twin(data)
    shape = (FILE_LEN // 8 + 10,)
    n = np.memmap(nfile, "<u8", "r+", 5, shape)
    f = fastio.memmap(data, "<u8", "r+", 5, shape)
    assert_same_array(n, f)
    assert data.stat().st_size == nfile.stat().st_size == 5 + 8 * shape[0]


@pytest.mark.parametrize("offset", [0, FILE_LEN - 1, FILE_LEN])
def test_zero_size_at_any_offset_like_numpy(data, offset):
    n, f = both(data, "u1", "r", offset, (0,))
    assert_same_array(n, f)


def test_filename_attribute_like_numpy(data, tmp_path, monkeypatch):
    # a str path
    n, f = both(str(data), mode="r")
    assert f.filename == n.filename == str(data)
    # a Path stays a Path (resolved), as in numpy
    n, f = both(data, mode="r")
    assert type(f.filename) is type(n.filename)
    assert f.filename == n.filename
    # relative paths become absolute
    monkeypatch.chdir(tmp_path)
    n, f = both(data.name, mode="r")
    assert f.filename == n.filename == str(data)
    # a file with no name
    with tempfile.TemporaryFile() as fh:
        fh.write(b"x" * 10)
        fh.flush()
        n, f = both(fh, mode="r")
        assert f.filename is n.filename is None


@pytest.mark.parametrize("mode", ["r", "r+", "c"])
def test_file_object_used_not_closed_like_numpy(data, mode):
    nfile = twin(data)
    fmode = "r+b" if mode == "r+" else "rb"
    with open(nfile, fmode) as fn, open(data, fmode) as ff:
        fn.seek(10)
        ff.seek(10)
        n = np.memmap(fn, "u1", mode, 3, (50,))
        f = fastio.memmap(ff, "u1", mode, 3, (50,))
        assert_same_array(n, f)
        assert not ff.closed
        assert ff.tell() == fn.tell()  # numpy leaves it at the end; so do we
        assert f.filename == os.path.abspath(ff.name)
        ff.seek(0)
        assert ff.read(5) == data.read_bytes()[:5]
    # the map has its own descriptor: still usable after the file is closed
    assert_same_array(n, f)


def test_file_object_unflushed_writes_are_mapped(tmp_path):
    # numpy seeks the file object, which flushes a buffered writer first.
    p = tmp_path / "w.bin"
    with open(p, "w+b") as fh:
        fh.write(b"abcdefgh")  # still in the BufferedRandom's buffer
        f = fastio.memmap(fh, "u1", "r+")
        assert bytes(f) == b"abcdefgh"
        del f


# ------------------------------------------------------------------ #
# Views, ufuncs, reductions, fancy indexing


OPS = {
    "slice": lambda m: m[1:],
    "step": lambda m: m[::2],
    "row": lambda m: m[1],
    "item": lambda m: m[1, 2],
    "ellipsis": lambda m: m[...],
    "newaxis": lambda m: m[None],
    "empty_slice": lambda m: m[2:2],
    "fancy": lambda m: m[[0, 2]],
    "bool_mask": lambda m: m[m > 100],
    "T": lambda m: m.T,
    "reshape": lambda m: m.reshape(-1),
    "ravel": lambda m: m.ravel(),
    "view_same": lambda m: m.view(),
    "view_dtype": lambda m: m.view("u1"),
    "view_ndarray": lambda m: m.view(np.ndarray),
    "asarray": lambda m: np.asarray(m),
    "copy": lambda m: m.copy(),
    "astype": lambda m: m.astype("<f8"),
    "add": lambda m: m + 1,
    "np_add": lambda m: np.add(m, 1),
    "neg": lambda m: -m,
    "compare": lambda m: m == 3,
    "sum": lambda m: m.sum(),
    "np_sum": lambda m: np.sum(m),
    "sum_axis": lambda m: m.sum(axis=0),
    "sum_keepdims": lambda m: m.sum(keepdims=True),
    "mean": lambda m: m.mean(),
    "max": lambda m: m.max(),
    "argmax": lambda m: m.argmax(),
    "cumsum": lambda m: np.cumsum(m),
    "sort": lambda m: np.sort(m, axis=None),
    "dot": lambda m: m.dot(m.T),
    "where": lambda m: np.where(m > 3, m, 0),
    "concat": lambda m: np.concatenate([m, m]),
    "zero_d": lambda m: m[1:2, 2:3].reshape(()),
    "zero_d_add": lambda m: m[1:2, 2:3].reshape(()) + 1,
    "slice_then_sum": lambda m: m[1:].sum(axis=1),
    "fancy_then_slice": lambda m: m[[0, 2]][1:],
    "copy_copy": lambda m: copy.copy(m),
    "copy_deepcopy": lambda m: copy.deepcopy(m),
    "asanyarray": lambda m: np.asanyarray(m),
    "item_method": lambda m: m.item(3),
    "tolist": lambda m: m.tolist(),
    "tobytes": lambda m: m.tobytes(),
    "len": lambda m: len(m),
    "iter_rows": lambda m: list(m)[1],
}


@pytest.mark.parametrize("op", list(OPS), ids=list(OPS))
@pytest.mark.parametrize("offset", [0, 7])
def test_results_match_numpy(data, op, offset):
    n, f = both(data, "<u2", "r", offset, (3, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rn, rf = OPS[op](n), OPS[op](f)
    assert_same_result(rn, rf)
    for attr in ("filename", "offset", "mode"):
        assert getattr(rf, attr, "absent") == getattr(rn, attr, "absent")
    # shares the map exactly when numpy's does
    if type(rn) is np.memmap:
        assert (rf._mmap is f._mmap) == (rn._mmap is n._mmap)
        assert (rf._mmap is None) == (rn._mmap is None)


class NSub(np.memmap):
    pass


class FSub(fastio.memmap):
    pass


class NSubFinalize(np.memmap):
    def __array_finalize__(self, obj):
        super().__array_finalize__(obj)
        self.tag = getattr(obj, "tag", "fresh")


class FSubFinalize(fastio.memmap):
    def __array_finalize__(self, obj):
        super().__array_finalize__(obj)
        self.tag = getattr(obj, "tag", "fresh")


@pytest.mark.parametrize("op", list(OPS), ids=list(OPS))
@pytest.mark.parametrize("classes", [(NSub, FSub), (NSubFinalize, FSubFinalize)],
                         ids=["plain", "finalize"])
def test_user_subclass_results_match_numpy(data, op, classes):
    ncls, fcls = classes
    n = ncls(data, "<u2", "r", 3, (3, 4))
    f = fcls(data, "<u2", "r", 3, (3, 4))
    assert type(f) is fcls
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rn, rf = OPS[op](n), OPS[op](f)
    assert_same_result(rn, rf, ncls, fcls)
    assert getattr(rf, "tag", None) == getattr(rn, "tag", None)


@pytest.mark.parametrize("mode", ["r+", "c"])
def test_inplace_ufunc_returns_self_like_numpy(data, mode):
    nfile = twin(data)
    n = np.memmap(nfile, "u1", mode, 1, (10,))
    f = fastio.memmap(data, "u1", mode, 1, (10,))
    rn = np.add(n, 1, out=n)
    rf = np.add(f, 1, out=f)
    assert rn is n and rf is f
    f += 1
    n += 1
    assert_same_array(n, f)
    v = f[2:5]
    v[:] = 0
    assert not f[2:5].any()


def test_view_attributes_follow_numpy(data):
    n, f = both(data, "u1", "r", 9, (20,))
    for sl in (np.s_[2:], np.s_[::3], np.s_[5]):
        vn, vf = n[sl], f[sl]
        assert type(vf) is (fastio.memmap if type(vn) is np.memmap else type(vn))
    vf = f[2:]
    assert vf._mmap is f._mmap
    assert (vf.filename, vf.offset, vf.mode) == (f.filename, f.offset, f.mode)
    cf = f[2:].copy()
    assert type(cf) is fastio.memmap  # as numpy: a memmap with no map
    assert cf._mmap is None and cf.filename is None


# ------------------------------------------------------------------ #
# Pickling


@pytest.mark.parametrize("index", [np.s_[:], np.s_[1:3], np.s_[1]], ids=["all", "slice", "row"])
def test_pickle_like_numpy(data, index):
    n, f = both(data, "<i4", "r", 1, (3, 4))
    n, f = n[index], f[index]
    ln = pickle.loads(pickle.dumps(n))
    lf = pickle.loads(pickle.dumps(f))
    assert_same_result(ln, lf)
    if isinstance(ln, np.memmap):
        assert ln._mmap is None and lf._mmap is None
        assert lf.filename is ln.filename
        lf.flush()  # a copy: nothing to write, as in numpy
        ln.flush()
    # a copy: the map can go away
    f._mmap.close()
    del f, n
    gc.collect()
    assert_same_result(ln, lf)


# ------------------------------------------------------------------ #
# Bad input: the same exception types as numpy.memmap


BAD = {
    "mode_x": dict(mode="x"),
    "mode_none": dict(mode=None),
    "mode_upper": dict(mode="R"),
    "w_plus_no_shape": dict(mode="w+"),
    "write_no_shape": dict(mode="write"),
    "offset_negative": dict(mode="r", offset=-1),
    "offset_past_end": dict(mode="r", offset=FILE_LEN + 1),
    "offset_past_end_c": dict(mode="c", offset=FILE_LEN + 1),
    "zero_shape_past_end": dict(mode="r", offset=FILE_LEN + 1, shape=(0,)),
    "not_multiple": dict(mode="r", dtype="<u4"),
    "not_multiple_offset": dict(mode="r", dtype="<u8", offset=4),
    "shape_too_big": dict(mode="r", shape=FILE_LEN + 1),
    "shape_too_big_offset": dict(mode="r", shape=(FILE_LEN,), offset=1),
    "shape_too_big_c": dict(mode="c", shape=(FILE_LEN // 2, 3)),
    "shape_negative": dict(mode="r", shape=(-1,)),
    "shape_negative_2d": dict(mode="r", shape=(2, -3)),
    "shape_two_negative": dict(mode="r", shape=(-2, -3)),
    "shape_too_big_for_memory": dict(mode="r", shape=(2**62, 4)),
    "shape_too_big_for_memory_c": dict(mode="c", shape=(2**40, 2**40)),
    "shape_dim_too_big": dict(mode="r", shape=(2**63,)),
    "shape_float": dict(mode="r", shape=2.5),
    "shape_float_in_tuple": dict(mode="r", shape=(2.5,)),
    "shape_str": dict(mode="r", shape="ab"),
    "order_bad": dict(mode="r", shape=(2, 2), order="X"),
    "order_empty": dict(mode="r", shape=(2, 2), order=""),
    "dtype_bad": dict(mode="r", dtype="not-a-dtype"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_input_raises_like_numpy(data, case):
    kw = BAD[case]
    nfile = twin(data)
    en = raised(lambda: np.memmap(nfile, **kw))
    ef = raised(lambda: fastio.memmap(data, **kw))
    assert en is not None, f"numpy accepted {kw}"
    assert type(ef) is type(en), (ef, en)
    if type(en) is ValueError and "mode" in kw and kw.get("mode") not in ("r", "c"):
        assert str(ef) == str(en)
    # nothing was done to the file before the check
    assert data.read_bytes() == nfile.read_bytes()


@pytest.mark.parametrize("kw, words", [
    (dict(mode="r", shape=(FILE_LEN,), offset=1), ["shape=", f"offset=1", str(FILE_LEN)]),
    (dict(mode="r", dtype="<u4", shape=(2, PAGE)), ["shape=(2, ", "uint32", str(FILE_LEN)]),
    (dict(mode="r", dtype="<u4"), ["offset=0", "uint32", str(FILE_LEN)]),
    (dict(mode="r", offset=FILE_LEN + 1), [f"offset={FILE_LEN + 1}", str(FILE_LEN)]),
    (dict(mode="r", shape=(-1, 2)), ["shape=(-1, 2)"]),
    (dict(mode="r", offset=-3), ["offset=-3"]),
    (dict(mode="r", shape=2.5), ["shape=2.5"]),
    (dict(mode="r+", shape=(2**62, 4)), ["shape=(4611686018427387904, 4)", "too big"]),
])
def test_bad_input_message_names_the_values(data, kw, words):
    with pytest.raises((ValueError, OverflowError, TypeError)) as ei:
        fastio.memmap(data, **kw)
    for w in words:
        assert w in str(ei.value), (w, str(ei.value))
    assert data.stat().st_size == FILE_LEN  # checked before the file was grown


def test_missing_file_like_numpy(tmp_path):
    p = tmp_path / "nope.bin"
    for mode in ("r", "r+", "c"):
        with pytest.raises(FileNotFoundError) as ef:
            fastio.memmap(p, mode=mode)
        with pytest.raises(FileNotFoundError) as en:
            np.memmap(p, mode=mode)
        assert ef.value.filename == en.value.filename == str(p)


def test_directory_like_numpy(tmp_path):
    for mode in ("r", "r+", "c", "w+"):
        ef = raised(lambda: fastio.memmap(tmp_path, mode=mode, shape=3))
        en = raised(lambda: np.memmap(tmp_path, mode=mode, shape=3))
        assert type(ef) is type(en) is IsADirectoryError
        assert ef.filename == str(tmp_path)


@pytest.mark.parametrize("mode", ["r", "c"])
@pytest.mark.parametrize("shape", [None, (0,)])
def test_empty_file_readonly_like_numpy(tmp_path, mode, shape):
    p = tmp_path / "empty"
    p.write_bytes(b"")
    en = raised(lambda: np.memmap(p, mode=mode, shape=shape))
    ef = raised(lambda: fastio.memmap(p, mode=mode, shape=shape))
    assert type(ef) is type(en) is ValueError
    assert "empty" in str(ef)
    assert p.stat().st_size == 0


def test_write_map_on_readonly_file_object_fails_like_numpy(data):
    with open(data, "rb") as fh:
        en = raised(lambda: np.memmap(fh, "u1", "r+"))
        ef = raised(lambda: fastio.memmap(fh, "u1", "r+"))
    assert isinstance(en, OSError) and type(ef) is type(en)


# Differences on purpose (docs/arrays.md lists them).

def test_object_dtype_refused(data):
    # numpy.memmap would read file bytes as object pointers.
    with pytest.raises(ValueError, match="object"):
        fastio.memmap(data, dtype=object, mode="r", shape=2)
    with pytest.raises(ValueError, match="object"):
        fastio.memmap(data, dtype=[("a", "u1"), ("o", "O")], mode="r", shape=2)


def test_non_integer_offset_is_a_type_error(data):
    with pytest.raises(TypeError, match="offset=1.5"):
        fastio.memmap(data, mode="r", offset=1.5)


# ------------------------------------------------------------------ #
# close(), flush() and the map methods


def maps_of(path):
    with open("/proc/self/maps") as fh:
        return [line for line in fh if line.rstrip().endswith(str(path))]


def test_close_with_live_views(data):
    expect = np.frombuffer(data.read_bytes(), "u1")
    f = fastio.memmap(data, "u1", "r+", 5)
    v = f[10:20]
    w = f.reshape(-1)[::7]
    arr = np.asarray(f)
    assert maps_of(data)
    f.close()
    f.close()  # again: nothing
    assert f._mmap.closed
    # the views and the memmap's own data still read, no crash
    assert (v == expect[15:25]).all()
    assert (w == expect[5::7]).all()
    assert (arr == expect[5:]).all()
    assert int(f.sum()) == int(expect[5:].sum())
    v[0] = 1  # and write
    assert f[10] == 1
    # the map methods refuse
    for call in (f.flush, v.flush, f.populate, f.residency,
                 lambda: f.advise(fastio.MADV_NORMAL)):
        with pytest.raises(ValueError, match="closed"):
            call()
    assert maps_of(data)
    del f, v, w, arr
    gc.collect()
    assert not maps_of(data)


def test_close_then_fancy_and_ufunc_on_views(data):
    f = fastio.memmap(data, "<u2", "r", 1, (8, 8))
    v = f[2:]
    f.close()
    assert v[[0, 1]].shape == (2, 8)
    assert type((v + 1)) is np.ndarray
    assert v.sum() == f[2:].sum()


def test_context_manager_closes(data):
    with fastio.memmap(data, "u1", "r") as f:
        v = f[:4]
        assert not f._mmap.closed
    assert f._mmap.closed
    assert bytes(v) == data.read_bytes()[:4]


def test_close_and_gc_leave_no_map_or_fd(data):
    lc = LeakCheck(map_slack=0)
    f = fastio.memmap(data, "u1", "r")
    del f
    lc.check()
    f = fastio.memmap(data, "u1", "r")
    f.close()
    del f
    lc.check()


def test_open_view_close_cycles_do_not_leak(data):
    f = fastio.memmap(data, "<u4", "r", 3, (10, 10))  # warm caches
    del f
    lc = LeakCheck()
    for i in range(1000):
        f = fastio.memmap(data, "<u4", "r+" if i % 2 else "r", i % 17, (10, 10))
        v = f[i % 10]
        f.close()
        assert v.shape == (10,)
        del f, v
    lc.check()
    assert not maps_of(data)


def test_failed_constructions_do_not_leak(data, tmp_path):
    lc = LeakCheck()
    for _ in range(200):
        for kw in (dict(shape=FILE_LEN + 1), dict(dtype="<u4"), dict(offset=-1),
                   dict(dtype=object, shape=1)):
            with pytest.raises((ValueError, OverflowError)):
                fastio.memmap(data, mode="r", **kw)
        with pytest.raises(FileNotFoundError):
            fastio.memmap(tmp_path / "missing", mode="r")
    lc.check()


def test_flush_on_copy_is_a_no_op_like_numpy(data):
    n, f = both(data, "u1", "r", 0, (4,))
    cn, cf = n + 0, f + 0
    cn = cn.view(np.memmap)
    cf = cf.view(fastio.memmap)
    assert cn.flush() is None and cf.flush() is None


def test_flush_writes_to_the_file(data):
    need("flush")
    f = fastio.memmap(data, "u1", "r+", PAGE + 1, (10,))
    f[:] = np.arange(10)
    assert f.flush() is None
    assert f[2:].flush() is None  # a view flushes the map, as numpy
    with open(data, "rb") as fh:
        assert os.pread(fh.fileno(), 10, PAGE + 1) == bytes(range(10))


@pytest.mark.parametrize("mode", ["r", "c"])
def test_flush_readonly_and_copy_like_numpy(data, mode):
    need("flush")
    n, f = both(data, "u1", mode, 3, (10,))
    assert type(raised(f.flush)) is type(raised(n.flush))


def test_populate_and_residency(data):
    need("populate")
    need("residency")
    # Evict first: a just-written file is resident before populate() too.
    if probes.evict(data) != 0.0:
        pytest.skip(f"the page cache of {data.parent} cannot be dropped (tmpfs?)")
    f = fastio.memmap(data, "u1", "r", 1)
    assert f.residency()[0] == 0.0
    assert f.populate() is None
    frac, pages = f.residency()
    assert frac == 1.0
    assert pages.dtype == np.bool_ and pages.all()
    assert f[5:].residency()[0] == 1.0  # a view asks about the whole map


def test_advise_forwards(data):
    need("advise")
    f = fastio.memmap(data, "u1", "r")
    for adv in (fastio.MADV_SEQUENTIAL, fastio.MADV_WILLNEED, fastio.MADV_NORMAL):
        assert f.advise(adv) is None
    g = fastio.memmap(data, "u1", "r", advise=fastio.MADV_RANDOM)
    assert (g == f).all()


def test_advise_failure_leaks_nothing(data):
    need("advise")
    lc = LeakCheck()
    for _ in range(50):
        with pytest.raises(OSError):
            fastio.memmap(data, "u1", "r", advise=12345)
    lc.check()


@pytest.mark.parametrize("mode", ["r", "r+", "c"])
def test_populate_and_hugepages_options(data, mode, leakcheck):
    expect = data.read_bytes()[7:]
    evicted = probes.evict(data) == 0.0  # else populate=True is not what made it resident
    f = fastio.memmap(data, "u1", mode, 7, populate=True)
    if evicted:
        assert probes.residency(data) == 1.0
    assert bytes(f) == expect
    if has_map_method("residency"):
        assert f.residency()[0] == 1.0
    g = fastio.memmap(data, "u1", mode, 7, hugepages=True)
    assert bytes(g) == expect
    del f, g
    leakcheck.check()


def test_options_are_keyword_only(data):
    with pytest.raises(TypeError):
        fastio.memmap(data, "u1", "r", 0, None, "C", True)


# ------------------------------------------------------------------ #
# Property: any offset and shape, as numpy


DT = st.sampled_from(["u1", "<i2", ">u4", "<f8", "S3", np.dtype([("a", "u1"), ("b", "<i2")])])


@pytest.fixture(scope="module")
def hfile(tmp_path_factory):
    p = tmp_path_factory.mktemp("h") / "h.bin"
    p.write_bytes(os.urandom(2 * PAGE + 77))
    return p


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dtype=DT,
       offset=st.integers(0, 2 * PAGE + 100),
       shape=st.none() | st.lists(st.integers(0, 40), min_size=0, max_size=3).map(tuple),
       order=st.sampled_from("CF"),
       mode=st.sampled_from(["r", "c"]))
def test_property_matches_numpy(hfile, dtype, offset, shape, order, mode):
    en = ef = None
    try:
        n = np.memmap(hfile, dtype, mode, offset, shape, order)
    except Exception as e:  # noqa: BLE001
        en = e
    try:
        f = fastio.memmap(hfile, dtype, mode, offset, shape, order)
    except Exception as e:  # noqa: BLE001
        ef = e
    assert type(ef) is type(en), (en, ef)
    if en is None:
        assert_same_array(n, f)
        if f.ndim:
            assert_same_result(n[-1:], f[-1:])
            if f.dtype.kind in "iu":
                assert_same_result(n.sum(axis=0), f.sum(axis=0))


def test_signature_is_numpys_plus_keyword_options():
    import inspect
    n = inspect.signature(np.memmap.__new__).parameters
    f = inspect.signature(fastio.memmap.__new__).parameters
    # The class parameter's name is numpy's own business (numpy 2.5 renamed
    # `subtype` to `cls`); no caller can pass it by keyword, so only its
    # place is compared.
    assert [(p.name, p.default, p.kind) for p in list(f.values())[1:len(n)]] == \
        [(p.name, p.default, p.kind) for p in list(n.values())[1:]]
    extra = list(f.values())[len(n):]
    assert [(p.name, p.default, p.kind) for p in extra] == [
        (name, default, inspect.Parameter.KEYWORD_ONLY)
        for name, default in (("populate", False), ("hugepages", False), ("advise", None))]
