"""atheris fuzz target: the argument parsing of every C type and function.

Each input picks a target (a constructor or a method of fastio.mmap,
Buffer, SharedMemory, SysVSharedMemory, Lock, Semaphore, Channel, Queue, or
a function of fastio._core: csrc/rw.c, transfer.c, shm_posix.c (memfd,
shm_unlink), shm_sysv.c (ftok, stat, remove), lab.c, queue.c, buffer.c, and
the public transfer functions over them) and 0-4 arguments drawn from ints
(small, edge and huge), floats, bytes, str, None, tuples, and buffers, and
hostile arguments: objects whose __index__, __len__, __iter__, __fspath__,
__buffer__ (Python 3.12+) or __del__ act on what the call is working on
(close one of the live objects, clear the list being walked, resize the
bytearray that is also the destination, truncate the data file, run the
garbage collector), numpy arrays that alias the destination bytearray, and
timeouts of inf, -inf, nan, 1e300 (given to calls that can wait, where the
wait completes at once); it calls the target and accepts any ordinary
exception. A crash, a hang
(libFuzzer's -timeout) or an exception outside EXPECTED is a finding; an
unexpected exception prints the call that raised it ("fuzz_args: finding:").

File descriptors are drawn from the target's own (a data file, -1 and a
closed number); transfer calls that name 0-2 are left out (they would read
the fuzzer's stdin or write its stdout). Sizes stay small so that a run
cannot exhaust memory; calls that could wait get timeout=0 or are left out;
calls that could destroy what is not the fuzzer's (shm_unlink of an existing
name, sysv_remove of a valid id, copyfile to a path) are left out or guarded.
The fuzzer works in its own scratch directory, removed at once (the data
file stays open, the working directory is a deleted one, so relative paths
land nowhere): libFuzzer leaves with exit(), which runs no Python atexit
handler, so nothing may depend on one to be cleaned up. For the same reason
the System V segment is marked for removal as soon as it is made.

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
_tmp = os.path.join(_dir, "data.bin")
with open(_tmp, "wb") as f:
    f.write(os.urandom(16384))
FD = os.open(_tmp, os.O_RDWR)
FD_SIZE = 16384
FDS = [FD, -1, 987654]
# A path to the data file that needs no directory entry.
_path = f"/proc/self/fd/{FD}"
# relative paths land in a deleted directory: nowhere, and nothing left behind
_START_CWD = os.getcwd()
os.mkdir(os.path.join(_dir, "cwd"))
os.chdir(os.path.join(_dir, "cwd"))
os.unlink(_tmp)
os.rmdir(os.path.join(_dir, "cwd"))
os.rmdir(_dir)

INTS = [0, 1, -1, 2, 7, 8, 16, 63, 64, 255, 256, 4095, 4096, 4097, 65536,
        2**31 - 1, 2**31, -2**31, 2**32, 2**62, 2**63 - 1, 2**63, -2**63, 2**64, 10**30]


TIMEOUTS = [float("inf"), float("-inf"), float("nan"), 1e300, -1e300, 1e-300, 0.0, -0.0,
            2.0**63, 2**64, 1e-9]

# The bytearray that hostile arguments resize and that aliasing arrays view:
# it is also drawn as a destination, so that a call may write into memory
# its other arguments are read from.
VICTIM = bytearray(8192)


def _act(action):
    """What a hostile hook does: one of the things that must not crash a
    call that is in the middle of using it."""
    try:
        if action == 0:
            name = ("mmap", "anon", "buffer", "shm", "sysv", "seg", "channel", "queue",
                    "lock", "sem")[_act.which % 10]
            OBJ[name].close()
        elif action == 1:
            for a in _CURRENT:
                if isinstance(a, list):
                    a.clear()
        elif action == 2:
            VICTIM.extend(b"\0" * 4096)   # BufferError while exported: fine
        elif action == 3:
            del VICTIM[:]
        elif action == 4:
            os.ftruncate(FD, 0)           # restored after the call
        else:
            import gc
            gc.collect()
    except EXPECTED:
        pass


_act.which = 0
_CURRENT = []  # the arguments of the call being made (for action 1)


class HostileIndex:
    def __init__(self, value, action):
        self.value, self.action = value, action

    def __index__(self):
        _act(self.action)
        return self.value

    __int__ = __index__

    def __repr__(self):
        return f"HostileIndex({self.value!r}, action={self.action})"


class HostileSeq:
    """A sequence (offsets, lengths, buffers) whose __len__/__iter__/
    __getitem__ act while the call walks it."""

    def __init__(self, items, action):
        self.items, self.action = list(items), action

    def __len__(self):
        _act(self.action)
        return len(self.items)

    def __iter__(self):
        for x in list(self.items):
            _act(self.action)
            yield x

    def __getitem__(self, i):
        _act(self.action)
        return self.items[i]

    def __repr__(self):
        return f"HostileSeq({self.items!r}, action={self.action})"


class HostilePath:
    def __init__(self, action):
        self.action = action

    def __fspath__(self):
        _act(self.action)
        return _path

    def __repr__(self):
        return f"HostilePath(action={self.action})"


class HostileDel:
    """Acts when the last reference goes: inside the call that drops it
    (a Queue's tag, released when its request is reaped or the queue
    closed)."""

    def __init__(self, action):
        self.action = action

    def __del__(self):
        _act(self.action)

    def __repr__(self):
        return f"HostileDel(action={self.action})"


class HostileBuffer:
    """__buffer__ (PEP 688, Python 3.12+) acting before it hands out
    VICTIM. (On 3.11 no bytes-like object runs Python code when its buffer
    is taken: there, VICTIM itself is drawn beside hooks that resize it.)"""

    def __init__(self, action):
        self.action = action

    def __buffer__(self, flags):
        _act(self.action)
        return memoryview(VICTIM)

    def __release_buffer__(self, view):
        view.release()

    def __repr__(self):
        return f"HostileBuffer(action={self.action})"


def draw_hostile(fdp):
    action = fdp.ConsumeIntInRange(0, 5)
    _act.which = fdp.ConsumeIntInRange(0, 9)
    kind = fdp.ConsumeIntInRange(0, 8)
    if kind == 8:
        # A list the call walks (buffers, offsets) holding an item whose hook
        # clears that very list (action 1, half the time) or acts otherwise.
        if fdp.ConsumeBool():
            action = 1
        pick = (lambda: HostileBuffer(action) if sys.version_info >= (3, 12) else VICTIM,
                lambda: bytearray(16), lambda: VICTIM,
                lambda: HostileIndex(fdp.ConsumeIntInRange(0, 8192), action),
                lambda: fdp.ConsumeIntInRange(0, 16384))
        return [pick[fdp.ConsumeIntInRange(0, len(pick) - 1)]()
                for _ in range(fdp.ConsumeIntInRange(1, 4))]
    if kind == 0:
        return HostileIndex(INTS[fdp.ConsumeIntInRange(0, len(INTS) - 1)], action)
    if kind == 1:
        items = [fdp.ConsumeIntInRange(0, 16384) for _ in range(fdp.ConsumeIntInRange(0, 4))]
        return HostileSeq(items, action)
    if kind == 2:
        return HostilePath(action)
    if kind == 3:
        return HostileDel(action)
    if kind == 4:
        return HostileBuffer(action) if sys.version_info >= (3, 12) else VICTIM
    if kind == 5:
        # An array over the destination's own bytes: offsets/lengths that the
        # call's reads overwrite.
        import numpy as np
        n = fdp.ConsumeIntInRange(0, 16)
        start = fdp.ConsumeIntInRange(0, 64) * 8
        return np.frombuffer(VICTIM, dtype=np.int64, count=min(n, (len(VICTIM) - start) // 8),
                             offset=min(start, len(VICTIM)))
    if kind == 6:
        return TIMEOUTS[fdp.ConsumeIntInRange(0, len(TIMEOUTS) - 1)]
    return [VICTIM, HostileIndex(fdp.ConsumeIntInRange(0, 8192), action)]


def draw(fdp, depth=0):
    kind = fdp.ConsumeIntInRange(0, 14)
    if kind >= 11:
        return draw_hostile(fdp) if kind < 14 else VICTIM
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
        sysv=_sysv(), seg=seg,
        lock=fastio.Lock(seg, 0), sem=fastio.Semaphore(seg, 64, value=1),
        channel=fastio.Channel(4096), queue=fastio.Queue(8, "threads"))


def _sysv():
    seg = fastio.SysVSharedMemory(size=8192)
    seg.remove()  # IPC_RMID now: gone with this process however it ends
    return seg


OBJ = _objects()


def _refresh():
    """Remake what a hostile hook (or a fuzzed close) closed."""
    if any(getattr(o, "closed", False) for o in OBJ.values()):
        for o in OBJ.values():
            try:
                o.close()
            except EXPECTED:
                pass
        # A HostileDel released by those closes may have truncated it.
        os.ftruncate(FD, FD_SIZE)
        OBJ.update(_objects())

# Methods that can wait get timeout=0 (or blocking=False) appended.
WAITS = {"acquire": {"blocking": False}, "recv_bytes": {"timeout": 0},
         "send_bytes": {"timeout": 0}, "_recv": {"timeout": 0},
         "_recv_view": {"timeout": 0}, "wait": {"timeout": 0}, "recv": {"timeout": 0},
         "recv_view": {"timeout": 0}, "send": {"timeout": 0}, "_send_frame": {}}
SKIP = {"close", "remove", "__del__", "__init__", "lock", "unlock", "mark_consistent",
        "drain", "__exit__", "__enter__", "resize",
        # The Python layer's private set-up steps: they set the object's
        # attributes by design (Channel._setup(None, True) makes close()
        # fail); the C types' private methods stay fuzzed.
        "_setup", "_init", "_made", "_attach_id", "_from_path", "_decode", "_run_batch"}


# The timed waits use a Lock and a Semaphore of their own, in memory no
# fuzzed call writes: glibc aborts ("The futex facility returned an
# unexpected error code") when a timed wait meets a semaphore whose bytes
# a fuzzed seg.write scribbled over, which is not what these targets test.
_TSEG = fastio.mmap(-1, 4096)
_TIMED = {"lock": fastio.Lock(_TSEG, 0), "sem": fastio.Semaphore(_TSEG, 64, value=1)}


def _acquire_release(name):
    def call(t=0.0, *a):
        obj = _TIMED[name]
        # Only when it is free (a fuzzed acquire may hold it): then the timed
        # acquire returns at once, whatever the timeout.
        if not obj.acquire(False):
            return
        obj.release()
        if obj.acquire(True, t):
            obj.release()
    return call


def _send_recv(t=0.0, *a):
    ch = OBJ["channel"]
    # Empty it first (fuzzed sends may have filled it), so that neither
    # call below has to wait.
    for _ in range(10000):
        try:
            ch.recv_bytes(timeout=0)
        except EXPECTED:
            break
    ch.send_bytes(b"x", timeout=t)
    ch.recv_bytes(timeout=t)


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
        # Timeouts where the wait completes at once, so that inf, nan and
        # 1e300 reach the conversion and nothing waits for ever.
        ("queue.wait(timeout)", lambda t=0.0, *a: OBJ["queue"].wait(0, timeout=t)),
        ("lock.acquire(timeout)", _acquire_release("lock")),
        ("sem.acquire(timeout)", _acquire_release("sem")),
        ("channel.send_recv(timeout)", _send_recv),
        ("splice(timeout)", lambda t=0.0, *a: fastio.splice(FD, FD, 0, timeout=t)),
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
    # A hostile index is the number it returns.
    args = [a.value if isinstance(a, HostileIndex) else a for a in args]
    if name in TRANSFERS:
        # an int 0-2 (or a bool) may be taken as stdin/stdout/stderr
        return not any(isinstance(a, int) and 0 <= a <= 2 for a in args)
    if name == "pread_parallel" and len(args) > 3 and isinstance(args[3], int):
        return args[3] <= 64  # nthreads: 70000 threads is a fork bomb, not a finding
    if name == "shm_unlink" and args and isinstance(args[0], (str, bytes)):
        seg = os.fsdecode(args[0]).lstrip("/")
        return "\0" in seg or not os.path.lexists(os.path.join("/dev/shm", seg))
    if name == "sem.release" and args and isinstance(args[0], int):
        # release(n) is n sem_post calls (a POSIX semaphore has no "add n"):
        # 2**31-1 of them take ~20 s, the fuzzer's timeout, not a finding.
        # n's bounds and the GIL released meanwhile: tests/test_sync_hardening.py.
        return args[0] <= 1 << 20
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
    _refresh()
    if len(VICTIM) != 8192:
        try:
            VICTIM[:] = bytes(8192)
        except BufferError:
            pass
    name, target, args = decode(data)
    if name.startswith(("Queue()",)) and args and isinstance(args[0], int) and args[0] > 4096:
        return  # a deep ring is a legitimate large allocation, not a finding
    if name.endswith(("madvise", "advise")) and any(a in (100, 101) for a in args
                                                    if isinstance(a, int)):
        return  # MADV_HWPOISON / MADV_SOFT_OFFLINE: as root they poison real pages
    if not _harmless(name, args):
        return
    _CURRENT[:] = args
    r = None
    try:
        r = call(target, args)
    except EXPECTED:
        return
    except BaseException:
        print(f"fuzz_args: finding: {name} with args {args!r}", file=sys.stderr, flush=True)
        raise
    finally:
        # the data file may have been the output or truncated by a hook:
        # keep it its size
        os.ftruncate(FD, FD_SIZE)
        os.lseek(FD, 0, os.SEEK_SET)
        # Drop our references first: a HostileDel tag then acts inside
        # the reaping below, as it would in a program.
        _CURRENT.clear()
        del args
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
    # Paths on the command line are relative to where the fuzzer was
    # started, not to the deleted directory it now works in.
    def absolute(arg):
        if arg.startswith("-artifact_prefix="):
            return "-artifact_prefix=" + os.path.join(_START_CWD, arg.split("=", 1)[1])
        if arg.startswith("-") or not arg:
            return arg
        return os.path.join(_START_CWD, arg)
    sys.argv[1:] = [absolute(a) for a in sys.argv[1:]]
    if not any(a.startswith("-artifact_prefix=") for a in sys.argv):
        sys.argv.append(f"-artifact_prefix={_START_CWD}/")
    if sys.argv[1:2] == ["--describe"]:
        for path in sys.argv[2:]:
            if path.startswith("-"):
                continue
            with open(path, "rb") as f:
                name, _, args = decode(f.read())
            print(f"{path}: {name} with args {args!r}")
        return
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
