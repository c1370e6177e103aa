"""Zero-copy transfer against its baselines, measured in one run.

1. A file to a loopback TCP socket: fastio.sendfile (each method) against
   os.sendfile in a Python loop (the stdlib's own way) and against a Python
   read/write loop with a 64 KiB buffer. A separate process drains the
   socket and acknowledges each transfer, so a run ends when the last byte
   has been read, not when it was queued.
2. A file copy on the root filesystem (a temporary directory; ext4 here)
   and on tmpfs (/dev/shm): fastio.copyfile (each method) against
   shutil.copyfile.

Rounds interleave the contenders, the order rotating each round after a
warm-up round (_common.run_rounds), so that drift in a shared, noisy machine
hits all of them alike; each figure is the median with its min-max, each
ratio the median of the per-round ratios.
The source file is read once before timing (page cache warm); copies are
written to the page cache (no fsync) and deleted after each run.

    python benchmarks/bench_transfer.py [--size-mib 256] [--rounds 5] [--json PATH]
"""
import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from _common import (Report, add_json_argument, cache_state, filesystem_of, machine_info,
                     make_file, median, mount_of, print_table, run_rounds, warm)
import fastio

READER = r"""
import socket, struct, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
buf = bytearray(1 << 20)
discard = sys.argv[2] == "discard"
hdr = bytearray(8)
while True:
    got = s.recv_into(hdr, 8, socket.MSG_WAITALL)
    if got < 8:
        break
    left = struct.unpack("<Q", hdr)[0]
    while left:
        if discard:  # TCP drops the bytes in the kernel: no copy out
            n = len(s.recv(min(left, len(buf)), socket.MSG_TRUNC))
        else:
            n = s.recv_into(buf, min(left, len(buf)))
        if not n:
            sys.exit("sender went away")
        left -= n
    s.sendall(b"k")
"""


def fs_type(path):
    """The filesystem type of the mount holding path, e.g. 'ext4'."""
    return mount_of(path)[2]


def make_warm_file(path, size):
    make_file(path, size)
    warm(path)


def gbps(size, seconds):
    return size / seconds / 1e9


REP = None  # the run's Report, made in main


def report(title, size, times, baselines, phase):
    for name, ts in times.items():
        REP.figure(f"{phase}: {name}", f"{phase}: {name}", "GB/s", [gbps(size, t) for t in ts])
    for b in baselines:
        for name in times:
            if name.startswith("fastio"):
                REP.ratio(f"{phase}: {name} / {b}", f"{phase}: {name} / {b}",
                          f"{phase}: {name}", f"{phase}: {b}")
    print(f"\n{title}")
    med = {k: median(v) for k, v in times.items()}
    columns = [("GB/s", lambda ts: gbps(size, median(ts)), ".2f"),
               ("min..max GB/s", lambda ts: f"{gbps(size, max(ts)):.2f}..{gbps(size, min(ts)):.2f}", "")]
    columns += [(f"vs {b}", lambda ts, b=b: med[b] / median(ts), ".2fx") for b in baselines]
    print_table(times, columns, first="method", indent="  ")
    return med


# ---------------------------------------------------------------- socket

def bench_socket(src, size, rounds, reader_mode):
    srv = socket.create_server(("127.0.0.1", 0))
    reader = subprocess.Popen([sys.executable, "-c", READER, str(srv.getsockname()[1]),
                               reader_mode])
    sock, _ = srv.accept()
    srv.close()
    fd = os.open(src, os.O_RDONLY)
    raw = open(src, "rb", buffering=0)

    def os_sendfile_loop():
        off = 0
        out = sock.fileno()
        while off < size:
            off += os.sendfile(out, fd, off, size - off)

    buf = bytearray(64 * 1024)
    view = memoryview(buf)

    def python_rw_loop():
        raw.seek(0)
        while True:
            n = raw.readinto(buf)
            if not n:
                break
            sock.sendall(view[:n])

    contenders = {
        "fastio.sendfile (auto)": lambda: fastio.sendfile(sock, fd),
        "fastio.sendfile splice": lambda: fastio.sendfile(sock, fd, method="splice"),
        "fastio.sendfile readwrite": lambda: fastio.sendfile(sock, fd, method="readwrite"),
        "os.sendfile loop": os_sendfile_loop,
        "socket.sendfile": lambda: sock.sendfile(raw, 0),
        "python read/write 64KiB": python_rw_loop,
    }
    header = size.to_bytes(8, "little")

    def once(fn):
        t0 = time.perf_counter()
        sock.sendall(header)
        fn()
        if sock.recv(1) != b"k":
            raise RuntimeError("reader lost")
        return time.perf_counter() - t0

    try:
        once(contenders["fastio.sendfile (auto)"])  # warm up the connection
        times = run_rounds(contenders, rounds, once)
    finally:
        sock.close()
        reader.wait(10)
        os.close(fd)
        raw.close()
    how = ("reader copies out with recv_into, 1 MiB" if reader_mode == "copy" else
           "reader discards in the kernel with recv(MSG_TRUNC)")
    return report(f"file -> loopback TCP socket, {size >> 20} MiB, {how}, median of {rounds}",
                  size, times, ["os.sendfile loop", "python read/write 64KiB"], "socket")


# ---------------------------------------------------------------- copy

def bench_copy(directory, size, rounds):
    kind = fs_type(directory)
    work = tempfile.mkdtemp(prefix="fastio-bench-", dir=directory)
    try:
        src = os.path.join(work, "src.bin")
        dst = os.path.join(work, "dst.bin")
        make_warm_file(src, size)
        print(f"\ncopy source on {filesystem_of(src)}; cache: {cache_state(src)}")
        contenders = {"fastio.copyfile (auto)": lambda: fastio.copyfile(src, dst)}
        for m in fastio.COPYFILE_METHODS:
            try:
                fastio.copyfile(src, dst, method=m)
            except OSError as e:
                print(f"  ({kind}: method {m!r} unavailable: {e})")
                continue
            finally:
                if os.path.exists(dst):
                    os.unlink(dst)
            contenders[f"fastio.copyfile {m}"] = (lambda m=m: fastio.copyfile(src, dst, method=m))
        contenders["shutil.copyfile"] = lambda: shutil.copyfile(src, dst)
        auto = fastio.copyfile(src, dst).method
        os.unlink(dst)

        def once(fn):
            t0 = time.perf_counter()
            fn()
            t = time.perf_counter() - t0
            os.unlink(dst)
            return t

        times = run_rounds(contenders, rounds, once)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report(f"copyfile on {kind} ({directory}), {size >> 20} MiB, auto chose "
                  f"{auto!r}, median of {rounds}", size, times, ["shutil.copyfile"],
                  f"copy on {kind}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dir", default=tempfile.gettempdir(),
                    help="directory on the disk filesystem (default: the temp dir)")
    ap.add_argument("--reader", choices=["copy", "discard"], default="copy",
                    help="how the draining process reads: copy the bytes out "
                         "(a real receiver) or let TCP discard them (MSG_TRUNC), "
                         "which leaves the sender's cost alone in the figure")
    add_json_argument(ap, "transfer")
    args = ap.parse_args()
    size = args.size_mib << 20
    machine_info()
    global REP
    REP = Report(__file__, args, args.dir)
    REP.set(params={"size": size, "rounds": args.rounds, "reader": args.reader},
            cache="sources read once before timing; copies to the page cache, no fsync")
    print("cache   : source files read once before timing (residency measured below); "
          "copies written to the page cache without fsync, deleted after each run")

    work = tempfile.mkdtemp(prefix="fastio-bench-", dir=args.dir)
    try:
        src = os.path.join(work, "src.bin")
        make_warm_file(src, size)
        print(f"socket source {src} on {filesystem_of(src)}; cache: {cache_state(src)}")
        sock = bench_socket(src, size, args.rounds, args.reader)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    disk = bench_copy(args.dir, size, args.rounds)
    shm = bench_copy("/dev/shm", size, args.rounds)

    print("\nsummary (goals in parentheses)")
    s = sock["fastio.sendfile (auto)"]
    print(f"  fastio.sendfile / os.sendfile loop:        {sock['os.sendfile loop'] / s:.2f}x  (>= 0.95)")
    print(f"  fastio.sendfile / python read/write 64KiB: {sock['python read/write 64KiB'] / s:.2f}x  (>= 1.5)")
    fastest = min(sock, key=sock.get)
    print(f"  fastest to loopback TCP: {fastest} "
          f"({gbps(size, sock[fastest]):.2f} GB/s vs sendfile {gbps(size, s):.2f} GB/s)")
    for label, med in (("disk", disk), ("tmpfs", shm)):
        a = med["fastio.copyfile (auto)"]
        print(f"  fastio.copyfile / shutil.copyfile on {label}: "
              f"{med['shutil.copyfile'] / a:.2f}x  (>= 1.0)")
    REP.finish()


if __name__ == "__main__":
    main()
