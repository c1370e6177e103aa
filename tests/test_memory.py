"""fastio.Buffer, fastio.empty and fastio.heap_info."""
import gc
import inspect
import os
import subprocess
import sys

import numpy as np
import pytest

import fastio
import probes
from conftest import LeakCheck

MiB = 1 << 20


def thp_available():
    return probes.thp().present


THP_REASON = f"no transparent huge pages here (independent probe: {probes.thp().detail})"


def buffer_of(arr):
    """The fastio.Buffer at the end of an ndarray's .base chain."""
    base = arr
    while isinstance(base, np.ndarray):
        base = base.base
    assert isinstance(base, memoryview)
    assert isinstance(base.obj, fastio.Buffer)
    return base.obj


# ------------------------------------------------------------------ Buffer

@pytest.mark.parametrize("nbytes", [0, 1, 4095, 4096, 4097, 100_000, 2 * MiB - 1, 3 * MiB + 5])
@pytest.mark.parametrize("align", [8, 16, 64, 4096, 65536, 2 * MiB])
@pytest.mark.smoke
def test_buffer_alignment_and_size(nbytes, align):
    with fastio.Buffer(nbytes, align=align) as buf:
        assert buf.nbytes == nbytes == len(buf)
        assert buf.align == align
        assert buf.address % align == 0
        assert buf.address != 0
        with memoryview(buf) as m:
            assert m.nbytes == nbytes and not m.readonly
            if nbytes:
                m[-1] = 2
                m[0] = 1
                assert m[0] == 1 and m[-1] == (2 if nbytes > 1 else 1)


def test_buffer_kind():
    assert fastio.Buffer(4096).kind == "heap"
    assert fastio.Buffer(2 * MiB - 1).kind == "heap"
    assert fastio.Buffer(2 * MiB).kind == "mmap"
    assert fastio.Buffer(4096, hugepages=True).kind == "mmap"
    assert fastio.Buffer(0, hugepages=True).kind == "heap"  # nothing to map


@pytest.mark.skipif(not thp_available(), reason=THP_REASON)
def test_buffer_hugepages_advised():
    buf = fastio.Buffer(4 * MiB, hugepages=True)
    assert buf.hugepages is True
    assert buf.address % (2 * MiB) == 0  # THP needs aligned 2 MiB ranges
    assert fastio.Buffer(4 * MiB).hugepages is False


@pytest.mark.parametrize("nbytes", [64, 100_000, 3 * MiB])
def test_buffer_zero(nbytes):
    buf = fastio.Buffer(nbytes, zero=True)
    assert bytes(memoryview(buf)) == bytes(nbytes)


def test_buffer_mmap_memory_is_zero_without_zero():
    buf = fastio.Buffer(3 * MiB)
    assert buf.kind == "mmap"
    assert not np.frombuffer(buf, np.uint8).any()


def test_buffer_populate():
    for nbytes in (1000, 3 * MiB):
        buf = fastio.Buffer(nbytes, populate=True, hugepages=True)
        assert bytes(memoryview(buf)) == bytes(nbytes)


@pytest.mark.parametrize("align", [0, 1, 2, 3, 4, 6, 4095, 4097, -8])
def test_buffer_bad_align(align):
    with pytest.raises(ValueError, match=f"align={align}"):
        fastio.Buffer(64, align=align)


@pytest.mark.smoke
def test_buffer_bad_nbytes():
    with pytest.raises(ValueError, match="nbytes=-1"):
        fastio.Buffer(-1)
    with pytest.raises(OverflowError, match="nbytes="):
        fastio.Buffer(2**100)
    with pytest.raises(OverflowError, match="nbytes="):
        fastio.Buffer(2**62)
    with pytest.raises(OverflowError, match=r"nbytes out of range .*nbytes="):
        fastio.Buffer(-2**100)  # past Py_ssize_t: the shared converter's words
    with pytest.raises(TypeError):
        fastio.Buffer("10")
    with pytest.raises(TypeError):
        fastio.Buffer(1.5)
    with pytest.raises(TypeError):
        fastio.Buffer(10, 4096)  # align is keyword-only


def test_buffer_out_of_memory_is_oserror():
    # 2**61 bytes: passes the size check, refused by the kernel.
    with pytest.raises((OSError, MemoryError)):
        fastio.Buffer(2**61)


@pytest.mark.parametrize("nbytes", [100, 3 * MiB])
@pytest.mark.smoke
def test_close_with_live_view(nbytes):
    buf = fastio.Buffer(nbytes)
    m = memoryview(buf)
    arr = np.frombuffer(buf, np.uint8)
    assert buf.exports == 2
    buf.close()
    assert buf.closed
    buf.close()  # idempotent
    # The views still own valid memory.
    m[0] = 7
    arr2 = arr.copy()
    assert arr2[0] == 7
    arr[-1] = 9
    assert m[-1] == 9
    with pytest.raises(ValueError):
        len(buf)
    with pytest.raises(ValueError):
        buf.address
    with pytest.raises(ValueError):
        memoryview(buf)
    assert buf.nbytes == nbytes
    assert "closed" in repr(buf)
    m.release()
    assert buf.exports == 1
    del arr
    gc.collect()
    assert buf.exports == 0


def test_context_manager():
    with fastio.Buffer(10) as buf:
        assert not buf.closed
    assert buf.closed
    with pytest.raises(ValueError):
        with buf:
            pass


def test_signature_and_repr():
    sig = inspect.signature(fastio.Buffer)
    assert list(sig.parameters) == ["nbytes", "align", "hugepages", "zero", "populate"]
    assert "nbytes=10" in repr(fastio.Buffer(10))
    assert str(inspect.signature(fastio.Buffer.close)) == "(self, /)"


def test_buffer_leaks():
    check = LeakCheck()
    for i in range(1000):
        nbytes = (100, 3 * MiB + 1)[i % 2]
        buf = fastio.Buffer(nbytes, hugepages=bool(i % 4 == 1))
        m = memoryview(buf)
        m[-1] = 1
        buf.close()
        m.release()
    del buf, m
    check.check()


# ------------------------------------------------------------------ empty

@pytest.mark.parametrize("shape,dtype", [
    (0, "u1"), (10, "u1"), ((3, 4), "f8"), ((2, 3, 5), "i4"), (4 * MiB, "u1"),
    ((1000, 1000), np.complex64), (7, [("a", "i4"), ("b", "f8")]),
])
@pytest.mark.smoke
def test_empty_shape_dtype(shape, dtype):
    a = fastio.empty(shape, dtype)
    expected = np.empty(shape, dtype)
    assert a.shape == expected.shape and a.dtype == expected.dtype
    assert a.flags.c_contiguous and a.flags.writeable
    assert a.ctypes.data % 4096 == 0
    a[...] = 0  # writable throughout
    buf = buffer_of(a)
    assert buf.nbytes == expected.nbytes
    assert buf.exports == 1


@pytest.mark.parametrize("align", [64, 4096, 2 * MiB])
def test_empty_align(align):
    assert fastio.empty(1000, align=align).ctypes.data % align == 0


@pytest.mark.skipif(not thp_available(), reason=THP_REASON)
def test_empty_hugepages_auto():
    assert buffer_of(fastio.empty(4 * MiB)).hugepages
    assert buffer_of(fastio.empty(MiB // 2, "f8")).hugepages  # 4 MiB
    assert not buffer_of(fastio.empty(MiB)).hugepages
    assert not buffer_of(fastio.empty(4 * MiB, hugepages=False)).hugepages
    assert buffer_of(fastio.empty(4096, hugepages=True)).kind == "mmap"


def test_empty_zero():
    assert not fastio.empty((100, 10), "f8", zero=True).any()
    assert not fastio.empty(5 * MiB, zero=True).any()


def test_empty_bad_input():
    with pytest.raises(TypeError):
        fastio.empty(10, "no such dtype")
    with pytest.raises(ValueError, match="dtype=object"):
        fastio.empty(10, object)
    with pytest.raises(ValueError, match="shape="):
        fastio.empty((3, -1))
    with pytest.raises(ValueError, match="shape="):
        fastio.empty(-5)
    with pytest.raises(TypeError, match="shape="):
        fastio.empty("abc")
    with pytest.raises(ValueError, match="hugepages="):
        fastio.empty(10, hugepages="yes")
    with pytest.raises(ValueError, match="align=3"):
        fastio.empty(10, align=3)
    with pytest.raises(OverflowError, match="nbytes="):
        fastio.empty((2**40, 2**40))


def test_empty_lifetime_export_count():
    a = fastio.empty((256, 256), "f4")
    buf = buffer_of(a)
    view = a[10:20, ::2]
    buf.close()  # safe: the arrays hold the export
    del a
    gc.collect()
    assert buf.exports == 1  # view still holds it
    view[:] = 1.0
    assert view.sum() == 10 * 128
    del view
    gc.collect()
    assert buf.exports == 0


def test_empty_leaks():
    check = LeakCheck()
    for i in range(1000):
        a = fastio.empty((3 * MiB,) if i % 2 else (64, 64))
        a[-1] = 1
        del a
    check.check()


# ------------------------------------------------------------------ heap_info

def test_heap_info_fields():
    info = fastio.heap_info()
    for name in ("arena", "ordblks", "hblks", "hblkhd", "uordblks", "fordblks",
                 "keepcost", "brk", "mmap_threshold"):
        value = getattr(info, name)
        assert isinstance(value, int) and value >= 0, name
    assert info.brk > 0
    # The main arena's bytes are the in-use plus the free ones.
    assert info.uordblks + info.fordblks == info.arena
    assert info.keepcost <= info.fordblks
    assert info._asdict()["arena"] == info.arena
    with pytest.raises(AttributeError):
        info.brk = 0  # read-only


def test_heap_info_threshold_default():
    env_set = "MALLOC_MMAP_THRESHOLD_" in os.environ or "GLIBC_TUNABLES" in os.environ
    info = fastio.heap_info()
    if not env_set:
        assert info.mmap_threshold == 128 * 1024
        assert info.mmap_threshold_source == "default"
        assert info.mmap_threshold_dynamic is True


@pytest.mark.parametrize("env", [
    {"MALLOC_MMAP_THRESHOLD_": "65536"},
    {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"},
])
def test_heap_info_threshold_from_environment(env):
    code = ("import fastio; i = fastio.heap_info(); "
            "print(i.mmap_threshold, i.mmap_threshold_source, i.mmap_threshold_dynamic)")
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")}
    full_env.update(env)
    out = subprocess.run([sys.executable, "-c", code], env=full_env, check=True,
                         capture_output=True, text=True).stdout.split()
    assert out == ["65536", "environment", "False"]


def test_heap_info_sees_malloc():
    before = fastio.heap_info()
    if before.arena == 0 and before.uordblks == 0:
        pytest.skip("malloc is not glibc's here (ASan or another allocator "
                    "replaced it): mallinfo2 reports zeros")
    # numpy allocates array data with malloc: 20000 blocks of 800 bytes are
    # below any mmap threshold, so they come from the arenas.
    keep = [np.ones(100) for _ in range(20000)]
    after = fastio.heap_info()
    assert after.uordblks - before.uordblks >= 20000 * 800 // 2
    assert after.brk >= before.brk  # fastio never lowers it; malloc may raise it
    del keep
