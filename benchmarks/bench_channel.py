"""fastio.Channel between two processes, against multiprocessing.Queue and an
os.pipe ping-pong.

    python benchmarks/bench_channel.py [--arrays 400] [--trips 20000] [--rounds 5]
        [--json PATH]

1. Throughput: a forked child sends 1 MiB float64 arrays; the parent receives
   them (Channel.recv: one copy in, one copy out; Channel.recv_view: one copy
   in, none out) against multiprocessing.Queue (pickles through a pipe).
   Goal: Channel >= 5x the Queue's arrays/s.
2. Round trip: the parent sends an 8-byte message, a forked child echoes it
   back, over two Channels against two os.pipe()s (os.write/os.read).
   Goal: Channel round trip no slower than the pipe's (ratio >= 1.0).
Contenders run in rotating rounds after a warm-up round (_common.run_rounds);
medians with their min-max are printed, and each ratio is the median of the
per-round ratios against the baseline measured in the same round.
"""
import argparse
import multiprocessing
import os
import statistics
import time

import numpy as np

from _common import Report, add_json_argument, machine_info, run_rounds
import fastio

MiB = 1 << 20


def fork(fn, *args):
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            fn(*args)
        except BaseException:
            import traceback
            traceback.print_exc()
            code = 1
        os._exit(code)
    return pid


def join(pid):
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"child {pid} failed")


# ---------------------------------------------------------------- throughput

def channel_throughput(n, view):
    arr = np.random.default_rng(1).random(MiB // 8)
    ch = fastio.Channel(8 * MiB + 4096)

    def producer():
        for _ in range(n):
            ch.send(arr)
        ch.close()

    pid = fork(producer)
    first = ch.recv()  # the first message: the child is up and running
    t0 = time.perf_counter()
    got = 1
    total = 0.0
    if view:
        while True:
            try:
                a = ch.recv_view()
            except EOFError:
                break
            total += a[0]  # touch the data: a view must be usable
            got += 1
    else:
        for a in ch:
            total += a[0]
            got += 1
    dt = time.perf_counter() - t0
    join(pid)
    ch.close()
    assert got == n and first[0] == arr[0]
    return (n - 1) / dt


def queue_throughput(n):
    arr = np.random.default_rng(1).random(MiB // 8)
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue(maxsize=8)

    def producer():
        for _ in range(n):
            q.put(arr)
        q.put(None)
        q.close()
        q.join_thread()

    pid = fork(producer)
    first = q.get()
    t0 = time.perf_counter()
    got = 1
    total = 0.0
    while True:
        a = q.get()
        if a is None:
            break
        total += a[0]
        got += 1
    dt = time.perf_counter() - t0
    join(pid)
    q.close()
    assert got == n and first[0] == arr[0]
    return (n - 1) / dt


# ---------------------------------------------------------------- round trip

def channel_round_trip(trips):
    ping = fastio.Channel(4096)
    pong = fastio.Channel(4096)

    def echo():
        while True:
            try:
                m = ping.recv_bytes()
            except EOFError:
                break
            pong.send_bytes(m)
        pong.close()

    pid = fork(echo)
    msg = b"12345678"
    for _ in range(100):  # warm up
        ping.send_bytes(msg)
        pong.recv_bytes()
    t0 = time.perf_counter()
    for _ in range(trips):
        ping.send_bytes(msg)
        pong.recv_bytes()
    dt = time.perf_counter() - t0
    ping.close()
    join(pid)
    pong.close()
    return dt / trips


def pipe_round_trip(trips):
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()

    def echo():
        os.close(w1)
        os.close(r2)
        while True:
            m = os.read(r1, 8)
            if not m:
                break
            os.write(w2, m)

    pid = fork(echo)
    os.close(r1)
    os.close(w2)
    msg = b"12345678"
    for _ in range(100):
        os.write(w1, msg)
        os.read(r2, 8)
    t0 = time.perf_counter()
    for _ in range(trips):
        os.write(w1, msg)
        os.read(r2, 8)
    dt = time.perf_counter() - t0
    os.close(w1)
    join(pid)
    os.close(r2)
    return dt / trips


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arrays", type=int, default=400)
    ap.add_argument("--trips", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=5)
    add_json_argument(ap, "channel")
    args = ap.parse_args()
    machine_info()
    rep = Report(__file__, args)
    rep.set(params={"arrays": args.arrays, "array_bytes": MiB, "trips": args.trips,
                    "rounds": args.rounds}, cache="not applicable (memory only)")

    thr = run_rounds({"Channel.recv": lambda: channel_throughput(args.arrays, view=False),
                      "Channel.recv_view": lambda: channel_throughput(args.arrays, view=True),
                      "mp.Queue": lambda: queue_throughput(args.arrays)},
                     args.rounds, lambda fn: fn())
    print(f"\n1 MiB float64 arrays, child -> parent, {args.arrays} per round, "
          f"{args.rounds} rounds (median / best arrays/s, GiB/s):")
    base = statistics.median(thr["mp.Queue"])
    for name, xs in thr.items():
        med = statistics.median(xs)
        print(f"  {name:18s} {med:9.0f} /s  best {max(xs):9.0f} /s  "
              f"{med * MiB / (1 << 30):6.2f} GiB/s  ratio vs mp.Queue {med / base:5.2f}x")
    ratio_thr = statistics.median(thr["Channel.recv"]) / base
    print(f"  goal Channel >= 5x mp.Queue: {ratio_thr:.2f}x (recv, copy out), "
          f"{statistics.median(thr['Channel.recv_view']) / base:.2f}x (recv_view)  "
          f"-> {'met' if ratio_thr >= 5 else 'NOT met'}")

    rt = run_rounds({"Channel": lambda: channel_round_trip(args.trips),
                     "os.pipe": lambda: pipe_round_trip(args.trips)},
                    args.rounds, lambda fn: fn())
    print(f"\n8-byte round trip, parent <-> forked child, {args.trips} trips per round "
          f"(median / best, us):")
    for name, xs in rt.items():
        print(f"  {name:18s} {statistics.median(xs) * 1e6:8.2f} us  "
              f"best {min(xs) * 1e6:8.2f} us")
    ratio_rt = statistics.median(rt["os.pipe"]) / statistics.median(rt["Channel"])
    print(f"  goal Channel no slower than a pipe: pipe/Channel = {ratio_rt:.2f}x  "
          f"-> {'met' if ratio_rt >= 1.0 else 'NOT met'}")
    for name, xs in thr.items():
        rep.figure(f"arrays: {name}", f"1 MiB arrays received: {name}", "arrays/s", xs)
    for name, xs in rt.items():
        rep.figure(f"rtt: {name}", f"8-byte round trip: {name}", "us",
                   [x * 1e6 for x in xs], higher_is_better=False)
    rep.ratio("recv", "Channel.recv / mp.Queue (arrays/s)", "arrays: Channel.recv",
              "arrays: mp.Queue")
    rep.ratio("recv_view", "Channel.recv_view / mp.Queue (arrays/s)",
              "arrays: Channel.recv_view", "arrays: mp.Queue")
    rep.ratio("rtt", "Channel round trip vs os.pipe (time)", "rtt: Channel", "rtt: os.pipe")
    rep.finish()


if __name__ == "__main__":
    main()
