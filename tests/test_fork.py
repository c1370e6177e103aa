"""fork: mappings and segments behave as documented across os.fork, and a
child never uses its parent's Queue.

Each child runs one function, sends back repr() of its result (or of its
exception) through a pipe and leaves with os._exit (no pytest teardown, no
atexit in the child). A child that hangs is killed after CHILD_TIMEOUT and
the test fails.
"""
import os
import signal
import time

import pytest

import fastio

CHILD_TIMEOUT = 20.0


def in_child(fn):
    """Run fn() in a forked child: return ('ok', repr(result)) or
    ('raised', type name, message)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            os.close(r)
            try:
                out = ("ok", repr(fn()))
            except BaseException as e:  # noqa: BLE001  reported to the parent
                out = ("raised", type(e).__name__, str(e))
            os.write(w, repr(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    deadline = time.monotonic() + CHILD_TIMEOUT
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(r)
            pytest.fail("the child hung")
        time.sleep(0.005)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, (
        f"the child died: status {status:#x}")
    import ast
    return ast.literal_eval(data.decode())


def test_anonymous_shared_mapping_is_shared():
    with fastio.mmap(-1, 4096) as m:  # MAP_SHARED by default, like the stdlib
        def child():
            m[0:5] = b"child"
            return m[100]
        m[100] = 42
        assert in_child(child) == ("ok", "42")
        assert m[0:5] == b"child"


def test_anonymous_private_mapping_is_copy_on_write():
    with fastio.mmap(-1, 4096, flags=fastio.MAP_PRIVATE) as m:
        m[0:6] = b"parent"

        def child():
            assert m[0:6] == b"parent"  # inherited as it was
            m[0:5] = b"child"
            return bytes(m[0:5])
        assert in_child(child) == ("ok", repr(b"child"))
        assert m[0:6] == b"parent"  # the child wrote its own copy


def test_file_copy_on_write_mapping_is_private(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"original" + bytes(4088))
    with open(p, "rb") as f:
        m = fastio.mmap(f.fileno(), 0, access=fastio.ACCESS_COPY)
    try:
        def child():
            m[0:5] = b"child"
            return bytes(m[0:8])
        assert in_child(child) == ("ok", repr(b"childnal"))
        assert m[0:8] == b"original"
        assert p.read_bytes()[:8] == b"original"
    finally:
        m.close()


def test_file_shared_mapping_is_shared(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(bytes(4096))
    with open(p, "r+b") as f:
        m = fastio.mmap(f.fileno(), 0)
    try:
        def child():
            m[0:5] = b"child"
            m.flush()
            return True
        assert in_child(child) == ("ok", "True")
        assert m[0:5] == b"child"
        assert p.read_bytes()[:5] == b"child"
    finally:
        m.close()


def test_shared_memory_creator_stays_the_parent():
    s = fastio.SharedMemory(create=True, size=4096)
    path = f"/dev/shm/{s.name.lstrip('/')}"
    try:
        def child():
            s.buf[0] = 7
            s.close()  # a child's close must not unlink the parent's segment
            return os.path.exists(path)
        assert in_child(child) == ("ok", "True")
        assert os.path.exists(path)
        assert s.buf[0] == 7
    finally:
        s.close()
    assert not os.path.exists(path)  # the creator's close unlinks


def test_sysv_creator_stays_the_parent():
    s = fastio.SysVSharedMemory(size=4096)
    shmid = s.id
    try:
        def child():
            memoryview(s)[0] = 9
            s.close()  # detaches; must not IPC_RMID the parent's segment
            return fastio._core.sysv_stat(shmid)[0]
        assert in_child(child) == ("ok", "4096")
        assert memoryview(s)[0] == 9
        assert s.stat().size == 4096
    finally:
        s.close()


def test_anonymous_channel_crosses_fork():
    """Documented: an anonymous Channel is inherited by fork children."""
    with fastio.Channel(4096) as ch:
        def child():
            ch.send_bytes(b"from the child")
            return True
        assert in_child(child) == ("ok", "True")
        assert ch.recv_bytes(timeout=5) == b"from the child"


@pytest.mark.parametrize("backend", [
    name for name, info in fastio.backends().items() if info.available])
def test_queue_refuses_a_forked_child(tmp_path, backend):
    p = tmp_path / "q.bin"
    p.write_bytes(os.urandom(8192))
    fd = os.open(p, os.O_RDONLY)
    q = fastio.Queue(8, backend=backend)
    try:
        def child():
            buf = bytearray(4096)
            q.read(fd, buf, 0)
            q.submit()
            return q.wait(1, timeout=2.0)
        out = in_child(child)
        assert out[0] == "raised", f"the child used the parent's Queue: {out}"
        assert out[1] in ("RuntimeError", "ValueError", "OSError"), out
        assert out[1] == "RuntimeError" and "fork" in out[2], out

        def child_closes():
            q.close()  # must not touch the parent's ring, context or threads
            return q.closed
        assert in_child(child_closes) == ("ok", "True")
        # The parent's queue still works after the child closed its copy.
        buf = bytearray(4096)
        q.read(fd, buf, 0)
        q.submit()
        (c,) = q.wait(1, timeout=5.0)
        assert bytes(buf) == p.read_bytes()[:4096]
    finally:
        q.close()
        os.close(fd)


def _mapped(addr):
    """Is addr inside a mapping of this process?"""
    with open("/proc/self/maps") as f:
        for line in f:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if lo <= addr < hi:
                return True
    return False


@pytest.mark.parametrize("backend", [
    name for name, info in fastio.backends().items() if info.available])
def test_forked_child_releases_what_the_parents_requests_pin(tmp_path, backend):
    """A child's copy of a Queue pins the buffers of the requests the parent
    had in flight at fork time. Closing the Queue in the child releases them
    (the kernel writes the parent's completions into the parent's memory)
    and drops the child's copies of the ring fd and mappings, without a
    system call on the parent's ring: the child's mmap then really unmaps,
    and the parent reaps its request normally afterwards."""
    import numpy as np
    from conftest import count_fds, fork, join
    m = fastio.mmap(-1, 8192)
    addr = np.frombuffer(m, np.uint8).ctypes.data
    mv = memoryview(m)[100:116]
    pipe = backend in ("io_uring", "posix_aio")  # a read that stays in flight
    if pipe:
        fd, w = os.pipe()
    else:
        # linux_aio runs a pipe read inside io_submit, and pread on a pipe
        # is ESPIPE for the threads backend: a file read submitted and not
        # reaped pins its buffer just the same.
        p = tmp_path / "f.bin"
        p.write_bytes(b"f" * 16)
        fd, w = os.open(p, os.O_RDONLY), None
    q = fastio.Queue(4, backend)
    q.read(fd, mv, 0, tag="t")
    q.submit()
    assert q.in_flight == 1

    def child():
        fds = count_fds()
        q.close()
        assert q.closed
        if backend == "io_uring":
            assert count_fds() == fds - 1, "the child's copy of the ring fd stayed open"
        else:
            assert count_fds() <= fds
        mv.release()  # BufferError if the queue still pinned it
        m.close()
        assert m.closed
        assert not _mapped(addr), "the mapping stayed: still pinned in the child"

    pid = fork(child)
    assert join(pid) == 0
    # The parent's request is untouched by the child's close.
    if pipe:
        assert q.wait(0, timeout=0) == []
        os.write(w, b"p" * 16)
    assert q.wait(1, timeout=10.0) == [("t", 16)]
    assert bytes(m[100:116]) == (b"p" if pipe else b"f") * 16
    q.close()
    mv.release()
    m.close()
    assert not _mapped(addr)
    os.close(fd)
    if w is not None:
        os.close(w)


@pytest.mark.parametrize("backend", [
    name for name in ("io_uring", "posix_aio") if fastio.backends()[name].available])
def test_fork_while_a_thread_waits_in_the_queue(backend):
    """fork() while another thread is blocked inside the Queue (GIL
    released): in the child that thread does not exist, so close() must not
    wait for it nor leave the close to it; it releases the child's pins at
    once. The parent's waiter gets its completion normally."""
    import threading
    from conftest import fork, join
    buf = fastio.Buffer(16)
    fd, w = os.pipe()
    q = fastio.Queue(4, backend)
    q.read(fd, buf, 0, tag="t")
    got = []
    t = threading.Thread(target=lambda: got.append(q.wait(1, timeout=20.0)), daemon=True)
    t.start()
    time.sleep(0.2)  # most often inside wait() by now

    def child():
        q.close()
        assert q.closed
        assert buf.exports == 0, "still pinned in the child"
        buf.close()

    pid = fork(child)
    assert join(pid) == 0
    os.write(w, b"p" * 16)
    t.join(CHILD_TIMEOUT)
    assert not t.is_alive()
    assert got == [[("t", 16)]]
    assert bytes(buf) == b"p" * 16
    q.close()
    assert buf.exports == 0
    os.close(fd)
    os.close(w)
