"""atheris fuzz target: the argument parsing of every C type and function.

Each input picks a target (a constructor or a method of fastio.mmap,
Buffer, SharedMemory, SysVSharedMemory, Lock, Semaphore, Channel, Queue, or
a function of fastio._core: csrc/rw.c, transfer.c, shm_posix.c (memfd,
shm_unlink), shm_sysv.c (ftok, stat, remove), lab.c, queue.c, buffer.c, and
the public transfer functions over them) and 0-4 arguments drawn from ints
(small, edge and huge), floats, bytes, str, None, tuples, and buffers; it
calls the target and accepts any ordinary exception. A crash, a hang
(libFuzzer's -timeout) or an exception outside EXPECTED is a finding; an
unexpected exception prints the call that raised it ("fuzz_args: finding:").

File descriptors are drawn from the target's own (a data file, -1 and a
closed number); transfer calls that name 0-2 are left out (they would read
the fuzzer's stdin or write its stdout). Sizes stay small so that a run
cannot exhaust memory; calls that could wait get timeout=0 or are left out;
calls that could destroy what is not the fuzzer's (shm_unlink of an existing
name, sysv_remove of a valid id, copyfile to a path) are left out or guarded.
The fuzzer works in its own scratch directory, so relative paths land there.

    python fuzz/fuzz_args.py -max_total_time=60       # CI: .ci/run
    python fuzz/fuzz_args.py --describe crash-...     # the call an input makes
"""
import os
import sys
import tempfile

import atheris

with atheris.instrument_imports():
    import fastio
    from fastio import _core

EXPECTED = (TypeError, ValueError, OverflowError, OSError, IndexError, RuntimeError,
            BufferError, EOFError, KeyError, NotImplementedError, MemoryError,
            ArithmeticError,
            # numpy.dtype("%,...") parses a repeat count with ast.literal_eval
            # (asarray's dtype argument): numpy's behaviour, not fastio's.
            SyntaxError)

_dir = tempfile.mkdtemp(prefix="fastio-fuzz-")
_path = os.path.join(_dir, "data.bin")
with open(_path, "wb") as f:
    f.write(os.urandom(16384))
FD = os.open(_path, os.O_RDWR)
FD_SIZE = 16384
FDS = [FD, -1, 987654]
# relative paths land in an empty directory of the fuzzer's own, not on the data file
os.mkdir(os.path.join(_dir, "cwd"))
os.chdir(os.path.join(_dir, "cwd"))

INTS = [0, 1, -1, 2, 7, 8, 16, 63, 64, 255, 256, 4095, 4096, 4097, 65536,
        2**31 - 1, 2**31, -2**31, 2**32, 2**62, 2**63 - 1, 2**63, -2**63, 2**64, 10**30]


def draw(fdp, depth=0):
    kind = fdp.ConsumeIntInRange(0, 10)
    if kind == 0:
        return INTS[fdp.ConsumeIntInRange(0, len(INTS) - 1)]
    if kind == 1:
        return fdp.ConsumeIntInRange(-70000, 70000)
    if kind == 2:
        return fdp.ConsumeFloat()
    if kind == 3:
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 300))
    if kind == 4:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 40))
    if kind == 5:
        return None
    if kind == 6:
        return bytearray(fdp.ConsumeIntInRange(0, 8192))
    if kind == 7:
        return FDS[fdp.ConsumeIntInRange(0, len(FDS) - 1)]
    if kind == 8 and depth < 2:
        return tuple(draw(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 3)))
    if kind == 9:
        return fdp.ConsumeBool()
    return [bytearray(16), b"ab"]


def _objects():
    """Live objects whose methods are fuzzed (remade when a call closes one)."""
    seg = fastio.mmap(-1, 8192)
    return dict(
        mmap=fastio.mmap(FD, 16384), anon=fastio.mmap(-1, 4096),
        buffer=fastio.Buffer(4096), shm=fastio.SharedMemory(create=True, size=8192),
        sysv=fastio.SysVSharedMemory(size=8192), seg=seg,
        lock=fastio.Lock(seg, 0), sem=fastio.Semaphore(seg, 64, value=1),
        channel=fastio.Channel(4096), queue=fastio.Queue(8, "threads"))


OBJ = _objects()

# Methods that can wait get timeout=0 (or blocking=False) appended.
WAITS = {"acquire": {"blocking": False}, "recv_bytes": {"timeout": 0},
         "send_bytes": {"timeout": 0}, "_recv": {"timeout": 0},
         "_recv_view": {"timeout": 0}, "wait": {"timeout": 0}, "recv": {"timeout": 0},
         "recv_view": {"timeout": 0}, "send": {"timeout": 0}, "_send_frame": {}}
SKIP = {"close", "remove", "__del__", "__init__", "lock", "unlock", "mark_consistent",
        "drain", "__exit__", "__enter__", "resize"}


def _targets():
    out = [
        ("mmap()", lambda *a: fastio.mmap(*a).close()),
        ("mmap(fd)", lambda *a: fastio.mmap(FD, *a).close()),
        ("Buffer()", lambda *a: fastio.Buffer(*a).close()),
        ("pread", fastio.pread), ("pwrite", fastio.pwrite),
        ("preadv", fastio.preadv), ("pwritev", fastio.pwritev),
        ("readinto_full", fastio.readinto_full), ("fadvise", fastio.fadvise),
        ("readahead", fastio.readahead),
        ("Lock()", lambda *a: fastio.Lock(OBJ["seg"], *a).close()),
        ("Semaphore()", lambda *a: fastio.Semaphore(OBJ["seg"], *a).close()),
        ("Channel()", lambda *a: fastio.Channel(*a).close()),
        ("Queue()", lambda *a: fastio.Queue(*a).close()),
        ("SharedMemory()", lambda *a: fastio.SharedMemory(*a).close()),
        ("SysVSharedMemory()", lambda *a: fastio.SysVSharedMemory(*a).close()),
        ("pread_parallel", _core.pread_parallel),
        ("memfd_create", lambda *a: os.close(_core.memfd_create(*a))),
        ("memfd", lambda *a: fastio.shm.memfd(*a).close()),
        ("shm_unlink", _core.shm_unlink),
        ("ftok", _core.ftok), ("sysv_stat", _core.sysv_stat),
        ("sysv_remove", _core.sysv_remove),
        ("_dio_alignment", _core._dio_alignment), ("_heap_info", _core._heap_info),
        ("_backends", _core._backends), ("_request_error", _core._request_error),
        ("_lab_pread", _core._lab_pread), ("_lab_copy", _core._lab_copy),
        ("_transfer", _core._transfer), ("_tee", _core._tee),
        ("sendfile", fastio.sendfile), ("copy_file_range", fastio.copy_file_range),
        ("splice", fastio.splice), ("tee", fastio.tee),
    ]
    for name, obj in OBJ.items():
        for attr in dir(type(obj)):
            if attr.startswith("__") or attr in SKIP or attr.endswith("_async"):
                continue
            if callable(getattr(type(obj), attr, None)):
                out.append((f"{name}.{attr}", (name, attr)))
    return out


TARGETS = _targets()


def call(target, args):
    if isinstance(target, tuple):
        name, attr = target
        method = getattr(OBJ[name], attr)
        return method(*args, **WAITS.get(attr, {}))
    return target(*args)


TRANSFERS = {"_transfer", "_tee", "sendfile", "copy_file_range", "splice", "tee"}


def _harmless(name, args):
    """False for a call that could touch what is not the fuzzer's."""
    if name in TRANSFERS:
        # an int 0-2 (or a bool) may be taken as stdin/stdout/stderr
        return not any(isinstance(a, int) and 0 <= a <= 2 for a in args)
    if name == "pread_parallel" and len(args) > 3 and isinstance(args[3], int):
        return args[3] <= 64  # nthreads: 70000 threads is a fork bomb, not a finding
    if name == "shm_unlink" and args and isinstance(args[0], (str, bytes)):
        seg = os.fsdecode(args[0]).lstrip("/")
        return "\0" in seg or not os.path.lexists(os.path.join("/dev/shm", seg))
    if name == "sysv_remove" and args and isinstance(args[0], int):
        return not 0 <= args[0] < 2**31  # a valid id may be another process's
    return True


def decode(data):
    """The target (name, callable) and the arguments an input calls it with."""
    fdp = atheris.FuzzedDataProvider(data)
    name, target = TARGETS[fdp.ConsumeIntInRange(0, len(TARGETS) - 1)]
    args = [draw(fdp) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    return name, target, args


def TestOneInput(data):
    name, target, args = decode(data)
    if name.startswith(("Queue()",)) and args and isinstance(args[0], int) and args[0] > 4096:
        return  # a deep ring is a legitimate large allocation, not a finding
    if name.endswith(("madvise", "advise")) and any(a in (100, 101) for a in args
                                                    if isinstance(a, int)):
        return  # MADV_HWPOISON / MADV_SOFT_OFFLINE: as root they poison real pages
    if not _harmless(name, args):
        return
    try:
        r = call(target, args)
    except EXPECTED:
        return
    except BaseException:
        print(f"fuzz_args: finding: {name} with args {args!r}", file=sys.stderr, flush=True)
        raise
    finally:
        if name in TRANSFERS:
            # the data file may have been the output: keep it its size
            os.ftruncate(FD, FD_SIZE)
            os.lseek(FD, 0, os.SEEK_SET)
        if name.startswith("queue.") and not OBJ["queue"].closed:
            # completions of what the call queued: reap them before the
            # buffers go (the Queue pins them, so this is only tidiness)
            try:
                OBJ["queue"].wait(0, timeout=0)
            except EXPECTED:
                pass
    if name.startswith("channel.") and name.endswith(("_recv", "_recv_view")):
        OBJ["channel"].release()
    del r


def main():
    if sys.argv[1:2] == ["--describe"]:
        for path in sys.argv[2:]:
            with open(path, "rb") as f:
                name, _, args = decode(f.read())
            print(f"{path}: {name} with args {args!r}")
        return
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
