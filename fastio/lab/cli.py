"""python -m fastio: compare fastio with the stdlib and numpy on this machine.

Makes a temporary file (or uses --file), warms the page cache, runs every
lab method with its baseline and prints a table of GB/s and ratios, with
the machine, filesystem and cache state the figures depend on.
"""
import argparse
import os
import re
import signal
import sys
import tempfile

import numpy as np

from . import methods as _methods
from .runner import run

DEFAULT_SIZE = 256 << 20
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """parse_size(text)

    '256M', '8MiB', '1g', '4096' -> bytes (binary units). Raises
    argparse.ArgumentTypeError for anything else or a size below 1 byte.
    """
    m = re.fullmatch(r"\s*([+-]?\d+)\s*([kmgtKMGT]?)(?:i?[bB])?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(
            f"size must be a number of bytes with an optional K/M/G/T suffix, got {text!r}")
    n = int(m.group(1)) * _UNITS[m.group(2).lower()]
    if n < 1:
        raise argparse.ArgumentTypeError(f"size must be at least 1 byte, got {text!r}")
    return n


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return n


def _human(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} bytes"


def _prog() -> str:
    # The same CLI runs as `python -m fastio` and as the `fastio` script.
    argv0 = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if argv0 in ("", "__main__.py", "-c") or argv0.startswith("python"):
        return "python -m fastio"
    return argv0


def build_parser() -> argparse.ArgumentParser:
    names = ", ".join(_methods.METHODS)
    p = argparse.ArgumentParser(
        prog=_prog(),
        description=(
            "Measure fastio against its baselines on this machine: reading a file "
            "into a bytearray (f.readinto) vs into an aligned fastio buffer "
            "(fastio.empty + fastio.readinto_full), numpy.fromfile vs "
            "fastio.read_file, and a numpy.memmap scan (.sum()) vs a fastio.memmap "
            "scan. Every call opens, reads or maps, and closes the file. The page "
            "cache is warmed first and its state checked with mincore. Methods "
            "missing from this build are reported as unavailable, with the reason."),
        epilog=(f"methods: {names}. GB/s is 10^9 bytes per second at the median "
                "time; ratio is a method's GB/s over its baseline's (>1 is faster). "
                "Exit status: 0 success, 1 a method failed or the file could not be "
                "made, 2 bad options, 130 interrupted."),
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--size", type=parse_size, default=DEFAULT_SIZE, metavar="SIZE",
                     help="size of the temporary test file, in bytes or with a binary "
                          "suffix K, M, G, T (e.g. 8M, 1G); default 256M. The file is "
                          "created in --dir and removed at exit, even on error or Ctrl-C")
    src.add_argument("--file", metavar="PATH",
                     help="measure on this existing, non-empty file (all of it) instead "
                          "of a temporary one; it is only read, never changed or removed")
    p.add_argument("--dir", metavar="DIR", default=None,
                   help="directory for the temporary file (default: the system temporary "
                        "directory, $TMPDIR or /tmp); its filesystem is part of what is "
                        "measured")
    p.add_argument("--repeat", type=_positive_int, default=5, metavar="N",
                   help="timed runs per method, interleaved across methods; the median is "
                        "reported (default 5, after one untimed warm-up run each)")
    p.add_argument("--json", metavar="PATH",
                   help="also write the results (every timing, the machine, filesystem "
                        "and cache state) to PATH as JSON")
    return p


def _make_file(size: int, directory) -> str:
    fd, path = tempfile.mkstemp(prefix="fastio-lab-", suffix=".bin", dir=directory)
    try:
        # Random bytes, so no filesystem can store the file sparse or compressed.
        rng = np.random.default_rng(0x5EED)
        chunk = 8 << 20
        left = size
        while left:
            data = rng.bytes(min(chunk, left))
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            left -= len(data)
        # Written back now, not by writeback during the timed runs.
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)
    return path


def _describe(res) -> str:
    info = res.info
    f = info["file"]
    fs = f["filesystem"]
    c = info["cache"]
    mach = info["machine"]
    where = (f"{fs['type']} on {fs['device']} at {fs['mountpoint']}"
             if fs["type"] else "filesystem unknown")
    kind = "temporary" if info.get("temporary") else "given"
    if c["resident_fraction"] is None:
        cache = f"{c['state']}: {c['reason']}"
    else:
        cache = (f"{c['state']}: {c['resident_before']:.1%} of pages resident before the "
                 f"timed runs, {c['resident_after']:.1%} after ({c['verified_by']})")
    return "\n".join([
        f"file:    {f['path']} ({kind}, {_human(f['size'])}; {where})",
        f"cache:   {cache}",
        f"machine: {mach['system']} {mach['kernel']} {mach['arch']}, {mach['cpu']} "
        f"({mach['cpus']} CPUs); Python {mach['python']}, numpy {mach['numpy']}, "
        f"fastio {mach['fastio']}",
        f"runs:    median of {info['repeat']} timed runs per method "
        f"(+{info['warmup']} warm-up), interleaved; GB/s = 10^9 bytes/s",
    ])


def _on_sigterm(signum, frame):
    # Turn SIGTERM into SystemExit so that the finally clauses remove the file.
    sys.exit(128 + signum)


def main(argv=None) -> int:
    """main(argv=None)

    The command line; returns the exit status.
    """
    args = build_parser().parse_args(argv)
    old = signal.signal(signal.SIGTERM, _on_sigterm)
    path = None
    temporary = args.file is None
    try:
        if temporary:
            try:
                path = _make_file(args.size, args.dir)
            except OSError as e:
                print(f"{_prog()}: error: cannot make the test file: {e}",
                      file=sys.stderr)
                return 1
        else:
            path = args.file
            try:
                if not os.path.isfile(path) or os.path.getsize(path) == 0:
                    print(f"{_prog()}: error: --file {path!r} is not a non-empty "
                          "regular file", file=sys.stderr)
                    return 2
            except OSError as e:
                print(f"{_prog()}: error: --file: {e}", file=sys.stderr)
                return 2
        res = run(path, repeat=args.repeat, extra_info={"temporary": temporary})
        print(_describe(res))
        print()
        print(res.table())
        if args.json:
            res.to_json(args.json)
            print(f"\nresults written to {args.json}")
        return 0 if res.ok else 1
    except KeyboardInterrupt:
        print(f"\n{_prog()}: interrupted", file=sys.stderr)
        return 130
    finally:
        if temporary and path is not None:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        signal.signal(signal.SIGTERM, old)
