"""asyncio: fastio.aio.read/write/fsync and Queue.wait_async.

Completions reach the loop through the queue's eventfd (loop.add_reader):
the tests check results against os.pread, that many reads share one queue
(no thread per request), that errors and cancellation behave, and that
nothing (fd, thread) is left once the loop is gone.
"""
import asyncio
import errno
import gc
import os

import pytest

import fastio
from fastio import aio

import probes
from conftest import LeakCheck

PROBED = fastio.backends()


@pytest.fixture
def blob(tmp_path):
    data = os.urandom(1 << 20)
    p = tmp_path / "blob.bin"
    p.write_bytes(data)
    fd = os.open(p, os.O_RDWR)
    yield fd, data
    os.close(fd)


def threads_now():
    return len(os.listdir("/proc/self/task"))


def test_read_many_concurrently(blob):
    fd, data = blob

    async def main():
        bufs = [bytearray(1000) for _ in range(500)]
        counts = await asyncio.gather(*(aio.read(fd, b, i * 1000) for i, b in enumerate(bufs)))
        assert counts == [1000] * 500
        assert b"".join(bufs) == data[:500_000]
        # one queue for the loop, whatever the number of requests
        assert len(aio._loop_queues) >= 1
        lq = aio._loop_queues[asyncio.get_running_loop()]
        assert lq.q.depth == aio.ASYNC_DEPTH and lq.q.in_flight == 0

    asyncio.run(main())


def test_write_fsync_and_errors(blob, tmp_path):
    fd, data = blob

    async def main():
        assert await aio.write(fd, b"abcdef", 10) == 6
        assert await aio.fsync(fd) is None  # as os.fsync
        buf = bytearray(6)
        assert await aio.read(fd, buf, 10) == 6 and bytes(buf) == b"abcdef"
        assert await aio.read(fd, bytearray(10), len(data) + 10) == 0  # past EOF
        with pytest.raises(OSError) as ei:
            await aio.read(1 << 30, bytearray(10), 0)  # never an open fd
        assert ei.value.errno == errno.EBADF

    asyncio.run(main())


def test_cancelled_read_keeps_buffer_pinned_until_completion(blob):
    fd, data = blob

    async def main():
        buf = fastio.Buffer(1 << 16)
        task = asyncio.ensure_future(aio.read(fd, buf, 0))
        await asyncio.sleep(0)  # submitted
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        lq = aio._loop_queues[asyncio.get_running_loop()]
        # the request finishes on its own; then its export is released
        for _ in range(200):
            if lq.q.in_flight == 0 and buf.exports == 0:
                break
            await asyncio.sleep(0.01)
        assert buf.exports == 0
        assert await aio.read(fd, bytearray(4), 0) == 4  # the queue still works

    asyncio.run(main())


@pytest.mark.parametrize("backend", aio.BACKENDS)
def test_wait_async(backend, blob):
    if not PROBED[backend].available:
        probes.fail_or_skip(backend, probes.backend(backend), PROBED[backend].reason)
    fd, data = blob

    async def main():
        with fastio.Queue(16, backend) as q:
            bufs = [bytearray(4096) for _ in range(40)]
            for i, b in enumerate(bufs):
                q.read(fd, b, i * 4096, tag=i)
            got = []
            while len(got) < 40:
                got += await q.wait_async(min_complete=min(5, 40 - len(got)))
            assert sorted(got) == [(i, 4096) for i in range(40)]
            assert b"".join(bufs) == data[:40 * 4096]
            assert await q.wait_async() == []  # nothing in flight

    asyncio.run(main())


def test_nothing_left_after_the_loop():
    with fastio.Queue(4, "threads") as q:  # glibc's stack cache warmed
        q.fsync(0)
    lc = LeakCheck()
    before = threads_now()

    async def main():
        fd = os.open(os.devnull, os.O_RDONLY)
        try:
            assert await aio.read(fd, bytearray(4), 0) == 0
        finally:
            os.close(fd)

    asyncio.run(main())
    gc.collect()
    assert not aio._loop_queues  # the loop's queue went with the loop
    lc.check()
    assert threads_now() <= before
