"""python -m fastio: the I/O lab's command line.

    python -m fastio [--size 256M] [--json PATH] [--plot PATH]   quick comparison
    python -m fastio run --method psync --pattern rand --bs 4k --depth 32 --cache direct
    python -m fastio sweep --method psync --bs 4k,64k,1M --depth 1
    python -m fastio list

Exit status: 0 success, 1 a method failed or the file could not be made,
2 bad options, 130 interrupted (SIGINT), 143 terminated (SIGTERM).
"""
import argparse
import os
import signal
import sys
from typing import List, Optional

from . import methods as _methods
from .runner import (CACHE_MODES, PATTERNS, describe_memory, parse_size as _parse_size, run,
                     sweep)

QUICK_SIZE = 256 << 20
COMMANDS = ("run", "sweep", "list", "shm")


def parse_size(text: str) -> int:
    """parse_size(text)

    '256M', '8MiB', '1g', '4096' -> bytes (binary units). Raises
    argparse.ArgumentTypeError for anything else or a size below 1 byte.
    """
    try:
        return _parse_size(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a number of bytes (>= 1) with an optional K/M/G/T suffix, "
            f"got {text!r}") from None


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return n


def _list_of(conv):
    def parse(text):
        return [conv(t) for t in text.split(",") if t.strip()] or conv("")
    return parse


def _method_name(text: str) -> str:
    if text not in _methods.METHODS:
        raise argparse.ArgumentTypeError(
            f"unknown method {text!r}; known: {', '.join(_methods.METHODS)}")
    return text


def _group_name(text: str) -> str:
    if text not in _methods.GROUPS:
        raise argparse.ArgumentTypeError(
            f"unknown group {text!r}; known: {', '.join(_methods.GROUPS)}")
    return text


def _prog() -> str:
    argv0 = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if argv0 in ("", "__main__.py", "-c") or argv0.startswith("python"):
        return "python -m fastio"
    return argv0


_EPILOG = ("Methods by I/O family: " + "; ".join(
    f"{g}: " + ", ".join(n for n, m in _methods.METHODS.items() if m.group == g)
    for g in _methods.GROUPS) + ". MB/s is 10^6 bytes per second; latencies are per "
    "request (measured in C where the method allows, see the JSON's latency_timer); ratio "
    "is a method's throughput over its baseline's (>1 faster); * marks the fastest of its "
    "family; each figure comes with the min-max of its repetitions ('!' above 1.5x). "
    "One unrecorded warm-up round, then --repeat rounds in a shuffled order; every method "
    "allocates recently freed memory (the header gives the cost of fresh memory). "
    "Ctrl-C or SIGTERM stop it within 2 s, its processes and temporary file removed. "
    "Exit status: 0 success, 1 a method failed or the file could not be made, "
    "2 bad options, 130 interrupted (SIGINT), 143 terminated (SIGTERM).")


def _common(p: argparse.ArgumentParser, *, size_default: int) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--size", type=parse_size, default=size_default, metavar="SIZE",
                     help="size of the temporary test file, bytes or with a binary suffix "
                          f"K, M, G, T (default {size_default >> 20}M); made in --dir, "
                          "removed at exit, even on error or Ctrl-C")
    src.add_argument("--file", metavar="PATH",
                     help="measure on this existing non-empty file instead (only read; "
                          "cache modes cold/direct evict its pages)")
    p.add_argument("--dir", metavar="DIR", default=None,
                   help="directory for the temporary file (default $TMPDIR or /tmp); its "
                        "filesystem is part of what is measured")
    p.add_argument("--repeat", type=_positive_int, default=3, metavar="N",
                   help="measured repetitions per method, after one unrecorded warm-up, "
                        "interleaved in a shuffled order; the table shows the median and the "
                        "min-max (default 3)")
    p.add_argument("--threads", type=_positive_int, default=1, metavar="N",
                   help="split each method's requests among N threads (fio's numjobs; "
                        "default 1)")
    p.add_argument("--cache", choices=CACHE_MODES, default="warm",
                   help="page cache before each run: warm (read first, checked 100%% "
                        "resident), cold (posix_fadvise DONTNEED, checked 0%%), direct "
                        "(evicted and O_DIRECT; methods without an O_DIRECT path are "
                        "skipped). Default warm")
    p.add_argument("--baseline", type=_method_name, metavar="METHOD", default=None,
                   help="compute every ratio against this method (default: each method's "
                        "own baseline)")
    p.add_argument("--json", metavar="PATH",
                   help="also write the results, fio-like JSON with every record, to PATH")
    p.add_argument("--plot", metavar="PATH",
                   help="also write a PNG plot to PATH (needs matplotlib: fastio[lab])")


def build_parser(command: Optional[str] = None) -> argparse.ArgumentParser:
    """build_parser(command=None)

    The parser of the quick comparison (command None) or of 'run',
    'sweep', 'list'.
    """
    prog = _prog()
    if command is None:
        p = argparse.ArgumentParser(
            prog=prog,
            description=(
                "The fastio I/O lab. Without a command: a quick comparison of every "
                "available method (read/write, mmap, aio backends, sendfile, shared memory, "
                "malloc/brk) "
                "on a temporary file, sequential 1 MiB requests, warm cache, and a table: "
                "throughput, IOPS, latency percentiles, CPU, page faults, ratio to each "
                "baseline. Commands: 'run' (fio-like options: --method, --pattern, --bs, "
                "--depth, --cache), 'sweep' (block sizes x depths), 'list' (methods and "
                "whether they can run here). '%(prog)s COMMAND --help' explains each."),
            epilog=_EPILOG)
        _common(p, size_default=QUICK_SIZE)
        p.add_argument("--bs", type=parse_size, default=1 << 20, metavar="SIZE",
                       help="request (block) size, default 1M")
        return p
    if command == "run":
        p = argparse.ArgumentParser(
            prog=f"{prog} run", epilog=_EPILOG,
            description="Run chosen methods with fio-like options and print the table.")
        p.add_argument("--method", type=_method_name, action="append", metavar="METHOD",
                       help="a method to run (repeatable; its baseline is added); default "
                            "every method of --group, or all")
        p.add_argument("--group", type=_group_name, action="append", metavar="ROW",
                       help=f"every method of an I/O family (repeatable): "
                            f"{', '.join(_methods.GROUPS)}")
        p.add_argument("--pattern", "--rw", choices=PATTERNS, default="seq",
                       help="request order: seq (in file order) or rand (each block once, "
                            "shuffled); default seq")
        p.add_argument("--bs", type=parse_size, default=1 << 20, metavar="SIZE",
                       help="request (block) size, e.g. 4k, 1M (default 1M)")
        p.add_argument("--depth", "--iodepth", type=_positive_int, default=1, metavar="N",
                       help="requests in flight for the aio methods (default 1); it does not "
                            "apply to the synchronous methods (one request at a time)")
        _common(p, size_default=QUICK_SIZE)
        return p
    if command == "sweep":
        p = argparse.ArgumentParser(
            prog=f"{prog} sweep", epilog=_EPILOG,
            description="Run methods over block sizes x depths, with a progress line.")
        p.add_argument("--method", type=_method_name, action="append", metavar="METHOD",
                       required=True, help="a method to sweep (repeatable)")
        p.add_argument("--pattern", "--rw", choices=PATTERNS, default="seq",
                       help="request order (default seq)")
        p.add_argument("--bs", type=_list_of(parse_size), default=[4096, 65536, 1 << 20],
                       metavar="LIST", help="comma-separated block sizes (default 4k,64k,1M)")
        p.add_argument("--depth", "--iodepth", type=_list_of(_positive_int), default=[1],
                       metavar="LIST", help="comma-separated depths (default 1); the "
                                            "synchronous methods run at the first only")
        _common(p, size_default=64 << 20)
        return p
    if command == "shm":  # fastio shm list|cleanup: fastio/lab/shm_cli.py
        from .shm_cli import build_parser as shm_parser
        return shm_parser(prog)
    if command == "list":
        return argparse.ArgumentParser(
            prog=f"{prog} list", epilog=_EPILOG,
            description="List every method: its I/O family, baseline, and whether it can "
                        "run here (with the reason when not).")
    raise ValueError(f"unknown command {command!r}")


def _human(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} bytes"


def describe(res) -> str:
    """describe(res)

    The header lines: file, filesystem, cache check, machine."""
    env = res.env
    f = env["file"]
    fs = f["filesystem"]
    mach = env["machine"]
    where = (f"{fs['type']} on {fs['device']} at {fs['mountpoint']}"
             if fs["type"] else "filesystem unknown")
    kind = "temporary" if f.get("temporary") else "given"
    fracs = [r["cache"]["resident_fraction"] for r in res.records
             if r["status"] == "ok" and r.get("cache", {}).get("resident_fraction") is not None]
    fails = sum(1 for r in res.records if r.get("cache", {}).get("ok") is False)
    modes = sorted({r["params"]["cache"] for r in res.records})
    cache = (f"{'/'.join(modes)}; mincore before each run found "
             f"{min(fracs):.1%}..{max(fracs):.1%} resident" if fracs else "/".join(modes))
    cache += f"; {fails} check(s) FAILED" if fails else "; every check passed"
    mem = mach.get("memory")
    ram = f", {mem / (1 << 30):.1f} GiB RAM" if mem else ""
    memory = env.get("memory")
    order = env.get("order")
    runs = (f"{env.get('warmup_rounds', 0)} warm-up round (not recorded) + "
            f"{env.get('repeat')} measured, each in a new shuffled order; nothing left "
            "running or open between calls (children, threads and descriptors checked)"
            if order else None)
    return "\n".join([
        f"file:    {f['path']} ({kind}, {_human(f['size'])}; {where})",
        f"cache:   {cache}"] + ([f"memory:  {describe_memory(memory)}"] if memory else []) +
        ([f"rounds:  {runs}"] if runs else []) + [
        f"machine: {mach['system']} {mach['kernel']} {mach['arch']}, {mach['cpu']} "
        f"({mach['cpus']} CPUs{ram}); Python {mach['python']}, numpy {mach['numpy']}",
    ])


class Terminated(BaseException):
    """SIGTERM, raised like KeyboardInterrupt so that every finally clause runs
    (children killed and reaped, the temporary file removed)."""


def _on_sigterm(signum, frame):
    raise Terminated(signum)


def _list() -> int:
    for g in _methods.GROUPS:
        print(f"[{g}]")
        for m in _methods.METHODS.values():
            if m.group != g:
                continue
            why = m.unavailable("warm")
            state = "available" if not why else f"unavailable: {why}"
            base = f" (vs {m.baseline})" if m.baseline else " (baseline)"
            print(f"  {m.name}{base}: {state}\n      {m.description}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """main(argv=None)

    The command line; returns the exit status.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "shm":  # 'fastio shm list|cleanup': fastio/lab/shm_cli.py
        from .shm_cli import main as shm_main
        return shm_main(argv[1:], _prog())
    command = argv[0] if argv and argv[0] in COMMANDS else None
    args = build_parser(command).parse_args(argv[1:] if command else argv)
    if command == "list":
        return _list()
    if args.file is not None:
        try:
            ok = os.path.isfile(args.file) and os.path.getsize(args.file) > 0
        except OSError:
            ok = False
        if not ok:
            print(f"{_prog()}: error: --file {args.file!r} is not a non-empty regular file",
                  file=sys.stderr)
            return 2
    old = signal.signal(signal.SIGTERM, _on_sigterm)
    common = dict(file=args.file, cache=args.cache, repeat=args.repeat, threads=args.threads,
                  directory=args.dir)
    if args.file is None:
        common["size"] = args.size
    try:
        if args.file is None and args.dir is not None and not os.path.isdir(args.dir):
            print(f"{_prog()}: error: cannot make the test file: --dir {args.dir!r} is not "
                  "a directory", file=sys.stderr)
            return 1
        try:
            if command == "sweep":
                res = sweep(args.method, block_size=args.bs, depth=args.depth,
                            pattern=args.pattern, progress=True, **common)
            elif command == "run":
                res = run(args.method, groups=args.group, pattern=args.pattern,
                          block_size=args.bs, depth=args.depth,
                          progress=True, **common)
            else:
                res = run(None, block_size=args.bs, progress=True, **common)
        except ValueError as e:
            print(f"{_prog()}: error: {e}", file=sys.stderr)
            return 2
        except OSError as e:
            print(f"{_prog()}: error: cannot make or read the test file: {e}",
                  file=sys.stderr)
            return 1
        print(describe(res))
        print()
        print(res.table(args.baseline))
        if args.json:
            res.to_json(args.json)
            print(f"\nresults written to {args.json}")
        if args.plot:
            try:
                res.plot("sweep" if command == "sweep" else "bar", baseline=args.baseline,
                         path=args.plot)
                print(f"plot written to {args.plot}")
            except ImportError as e:
                print(f"{_prog()}: error: {e}", file=sys.stderr)
                return 1
        return 0 if res.ok else 1
    except KeyboardInterrupt:
        print(f"\n{_prog()}: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print(f"\n{_prog()}: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, old)
