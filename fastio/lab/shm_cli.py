"""fastio shm: the command-line face of fastio.shm_segments() and
fastio.cleanup_orphans().

    fastio shm list [--json]          what fastio created and still exists
    fastio shm cleanup [--dry-run]    remove the orphans (creator dead, not persist)

Exit status: 0 success, 1 the registry cannot be read or a removal failed,
2 bad options.
"""
import argparse
import json
import os
import pwd
import sys
from typing import List, Optional


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _rows(segments) -> List[dict]:
    user = _user(os.getuid())
    return [dict(kind=s.kind, name=str(s.name), user=user, pid=s.pid,
                 state="alive" if s.alive else "orphaned", persist=bool(s.persist),
                 size=s.size) for s in segments]


def _table(rows: List[dict]) -> str:
    head = dict(kind="KIND", name="NAME", user="USER", pid="PID", state="STATE",
                persist="PERSIST", size="SIZE")
    cells = [head] + [dict(r, persist="yes" if r["persist"] else "no") for r in rows]
    cols = list(head)
    width = {c: max(len(str(r[c])) for r in cells) for c in cols}
    return "\n".join("  ".join(str(r[c]).ljust(width[c]) for c in cols).rstrip()
                     for r in cells)


def build_parser(prog: str = "fastio") -> argparse.ArgumentParser:
    """build_parser(prog='fastio')

    The parser of 'fastio shm'."""
    p = argparse.ArgumentParser(
        prog=f"{prog} shm",
        description="The shared memory segments fastio created (as this user, on this "
                    "machine; see fastio.registry_dir()): list them, or remove the "
                    "orphans, whose creating process died without removing them and "
                    "that were not created with persist=True.")
    sub = p.add_subparsers(dest="action", required=True, metavar="{list,cleanup}")
    ls = sub.add_parser("list", help="every segment: kind, name, user, creator pid, "
                                     "alive or orphaned, persist, size")
    ls.add_argument("--json", action="store_true", help="one JSON list instead of a table")
    cl = sub.add_parser("cleanup", help="unlink/remove the orphaned segments only")
    cl.add_argument("--dry-run", "-n", action="store_true",
                    help="print what would be removed, remove nothing")
    return p


def main(argv: Optional[List[str]] = None, prog: str = "fastio") -> int:
    """main(argv=None, prog='fastio')

    'fastio shm ...'; returns the exit status."""
    args = build_parser(prog).parse_args(sys.argv[1:] if argv is None else argv)
    import fastio
    try:
        if args.action == "list":
            rows = _rows(fastio.shm_segments())
            if args.json:
                print(json.dumps(rows, indent=1))
            elif rows:
                print(_table(rows))
            else:
                print("no segments")
            return 0
        rows = _rows(fastio.cleanup_orphans(dry_run=args.dry_run))
    except OSError as e:
        print(f"{prog} shm: error: {e}", file=sys.stderr)
        return 1
    verb = "would remove" if args.dry_run else "removed"
    for r in rows:
        print(f"{verb} {r['kind']} {r['name']} ({r['size']} bytes, creator pid {r['pid']} "
              "dead)")
    if not rows:
        print("no orphans")
    return 0
