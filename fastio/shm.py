"""Shared memory: POSIX (shm_open), System V (shmget/shmat), memfd, and numpy arrays shared across processes.

The C types in fastio._core own the system calls and the lifetime of the
mappings; this module owns the policy:

- names: generated with ``secrets`` (unguessable, 29 characters: within
  every platform's limit), validated when given;
- ownership: the creating object unlinks (POSIX) or removes (System V) its
  segment when it is closed or collected, or at interpreter exit, unless
  ``persist=True``; attachers never do unless asked; a forked child that
  inherits a creator's object never does (the creator's pid is checked);
- a killed creator: a watchdog process (one per creating process) unlinks
  the POSIX segments it still owned when its pipe from the creator reads
  end of file (see _watchdog_fd);
- the registry behind ``shm_segments()`` and ``cleanup_orphans()``: one
  small file per segment fastio created, in a private per-user directory
  (see ``registry_dir()``), holding the creator's pid and start time and the
  segment's inode (POSIX) or key and creation time (System V), so that a
  record can never be mistaken for a later segment of the same name or id.
"""
import collections
import errno
import hashlib
import json
import os
import secrets
import socket
import stat as _stat
import sys
import tempfile
import threading
import weakref

import numpy as np

from . import _core
from .arrays import as_ndarray

__all__ = [
    "SharedMemory", "memfd", "send_fds", "recv_fds",
    "SysVSharedMemory", "sysv_segments", "ftok", "IPC_PRIVATE",
    "SharedArray", "shared_array",
    "shm_segments", "cleanup_orphans", "registry_dir",
    "F_SEAL_SEAL", "F_SEAL_SHRINK", "F_SEAL_GROW", "F_SEAL_WRITE",
    "F_SEAL_FUTURE_WRITE",
]

F_SEAL_SEAL = _core.F_SEAL_SEAL
F_SEAL_SHRINK = _core.F_SEAL_SHRINK
F_SEAL_GROW = _core.F_SEAL_GROW
F_SEAL_WRITE = _core.F_SEAL_WRITE
F_SEAL_FUTURE_WRITE = _core.F_SEAL_FUTURE_WRITE

_SHM_DIR = "/dev/shm"
# NAME_MAX for the one path component of a shm name (without its '/').
_NAME_MAX = 255
_NAME_PREFIX = "fio_"


# ------------------------------------------------------------------ #
# Processes: alive, and the same process as when recorded

def _proc_start(pid):
    """The start time of pid (clock ticks since boot, /proc/pid/stat field
    22), or None if there is no such process. pid + start time names one
    process for ever: a reused pid has another start time."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return None
    # The command name (field 2) may hold spaces and ')': split after the last ')'.
    fields = data[data.rfind(b")") + 2:].split()
    return int(fields[19])


_MY_START = None


def _my_start():
    global _MY_START
    if _MY_START is None or _MY_START[0] != os.getpid():
        _MY_START = (os.getpid(), _proc_start(os.getpid()))
    return _MY_START[1]


def _alive(pid, start):
    now = _proc_start(pid)
    return now is not None and (start is None or now == start)


# ------------------------------------------------------------------ #
# The registry: one file per segment fastio created

def _registry_candidates():
    """Where records may live, in the order every process of this user
    tries them (so that all of them agree on one)."""
    path = os.environ.get("FASTIO_SHM_REGISTRY")
    if path:
        return [path]
    out = []
    run = os.environ.get("XDG_RUNTIME_DIR")
    if run and os.path.isdir(run):
        out.append(os.path.join(run, "fastio-shm"))
    # A predictable name in a directory everyone can write to: another
    # user may have made it first (to deny us). Refused then, and the
    # next candidate, which no one else can create, is used.
    out.append(os.path.join(tempfile.gettempdir(), f"fastio-shm-{os.getuid()}"))
    cache = os.environ.get("XDG_CACHE_HOME")
    if not cache or not os.path.isabs(cache):
        cache = os.path.join(os.path.expanduser("~"), ".cache")
    if os.path.isabs(cache):
        out.append(os.path.join(cache, "fastio-shm"))
    return out


def _acceptable(path, create):
    """path if it is a directory of this user that no one else can write
    to (made mode 0700 if create), else None."""
    if create:
        try:
            os.makedirs(os.path.dirname(path) or ".", 0o700, exist_ok=True)
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except OSError:
            return None
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if (not _stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid()
            or st.st_mode & 0o022):
        return None
    return path


def registry_dir():
    """registry_dir()

    The directory of fastio's segment records: $FASTIO_SHM_REGISTRY if set,
    else $XDG_RUNTIME_DIR/fastio-shm, else <tempdir>/fastio-shm-<uid>, and
    when that one belongs to someone else (anyone can create that name
    first), $XDG_CACHE_HOME/fastio-shm (~/.cache/fastio-shm). Created mode
    0700; a directory of another user, or one that others can write to, is
    never used (no one can plant records). PermissionError when no
    candidate is usable; creating a segment then still works, without a
    record (a RuntimeWarning says so once).
    """
    tried = _registry_candidates()
    for path in tried:
        if _acceptable(path, create=True):
            return path
    raise PermissionError(
        errno.EACCES,
        "no usable shm registry: each candidate is missing, not a directory of "
        "this user, or writable by others: " + ", ".join(tried), tried[0])


_WARNED = set()  # what _warn_once said in this process


def _warn_once(key, message):
    """A RuntimeWarning, once per process for each key (tests reset _WARNED)."""
    if key not in _WARNED:
        _WARNED.add(key)
        import warnings
        warnings.warn(message, RuntimeWarning, stacklevel=5)


def _registry_or_none():
    """registry_dir(), or None (with one warning per process) when there is
    none: a segment is better created without a record than not at all."""
    try:
        return registry_dir()
    except PermissionError as e:
        _warn_once("registry", f"fastio: {e.strerror}; shared memory segments are created "
                   "without a record (shm_segments() and cleanup_orphans() will not see "
                   "them)")
        return None


def _record_path(kind, ident):
    # A name may be 255 bytes: the record is named by its hash (the name is
    # inside the record). None when there is no usable registry.
    d = _registry_or_none()
    if d is None:
        return None
    digest = hashlib.sha256(str(ident).encode("utf-8", "surrogateescape")).hexdigest()
    return os.path.join(d, f"{kind}-{digest[:32]}")


def _write_record(kind, ident, **fields):
    fields.update(kind=kind, pid=os.getpid(), start=_my_start())
    path = _record_path(kind, ident)
    if path is None:
        return None
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, json.dumps(fields).encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)  # readers see a whole record or none
    return path


def _remove_record(path):
    if path is not None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _remove_pending_record(path):
    """Remove a pending record of ours, and nothing else: a process that
    raced us for the same name and won may have replaced it by its own."""
    if path is None:
        return
    try:
        with open(path, "rb") as f:
            rec = json.loads(f.read())
    except (OSError, ValueError):
        return
    if rec.get("pid") == os.getpid() and rec.get("ino") is None:
        _remove_record(path)


def _read_records():
    # Every usable candidate, not only the first: records written while an
    # earlier candidate was refused (planted, then removed) stay visible.
    dirs = []
    for d in _registry_candidates():
        if _acceptable(d, create=False) and d not in dirs:
            dirs.append(d)
    if not dirs:
        registry_dir()  # raises, saying why
    for d in dirs:
        yield from _read_dir(d)


def _read_dir(d):
    for entry in os.listdir(d):
        if entry.endswith(".tmp"):
            continue
        path = os.path.join(d, entry)
        try:
            with open(path, "rb") as f:
                rec = json.loads(f.read())
        except (OSError, ValueError):
            continue
        if _record_ok(rec):
            yield path, rec


def _is_int(v, lo, hi):
    return type(v) is int and lo <= v <= hi


def _record_ok(rec):
    """Whether a record has the fields and types _write_record writes.

    The folder is the user's own, but a record cut short by a full disk or
    edited by hand must not reach shm_unlink / sysv_remove (whose id
    argument is range-checked in C and would raise OverflowError, which
    cleanup_orphans does not expect) or crash a listing with a KeyError: such
    a record is passed over, as an unreadable one is.
    """
    if not isinstance(rec, dict):
        return False
    common = ("start" in rec and _is_int(rec.get("pid"), 1, 1 << 31)
              and isinstance(rec.get("persist"), bool)
              and _is_int(rec.get("size"), 0, 1 << 63))
    if not common:
        return False
    if rec.get("kind") == "posix":
        return (isinstance(rec.get("name"), str)
                and (rec.get("ino") is None or _is_int(rec.get("ino"), 0, 1 << 64)))
    if rec.get("kind") == "sysv":
        return (_is_int(rec.get("id"), 0, (1 << 31) - 1) and _is_int(rec.get("key"), 0, (1 << 32) - 1)
                and isinstance(rec.get("ctime"), (int, float)))
    return False


ShmSegment = collections.namedtuple(
    "ShmSegment", "kind name pid alive persist size")
ShmSegment.__doc__ = """A segment fastio created: kind ('posix' or 'sysv'), name
(the POSIX name, or the System V id), the creator's pid, whether that
process is still alive, whether it was created with persist=True, and its
size in bytes."""


def _record_current(rec):
    """Whether the segment a record describes still exists (the same one)."""
    if rec["kind"] == "posix":
        try:
            st = os.stat(os.path.join(_SHM_DIR, rec["name"]))
        except FileNotFoundError:
            return False
        # ino None: pending, the creator was between its record and its
        # create (or died there): the name is what we know.
        return rec["ino"] is None or st.st_ino == rec["ino"]
    seg = _sysv_rows().get(rec["id"])
    return seg is not None and seg.key == rec["key"] and seg.ctime == rec["ctime"]


def shm_segments():
    """shm_segments()

    The segments fastio created (on this machine, by this user) that still
    exist, as ShmSegment records: kind, name, creator pid, whether the
    creator is alive, persist, size. Records of segments that are gone
    (unlinked by someone else, or by a reboot) are pruned on the way.
    """
    out = []
    for path, rec in _read_records():
        if not _record_current(rec):
            _remove_record(path)
            continue
        name = rec["name"] if rec["kind"] == "posix" else rec["id"]
        out.append(ShmSegment(rec["kind"], name, rec["pid"],
                              _alive(rec["pid"], rec["start"]),
                              rec["persist"], rec["size"]))
    return out


def cleanup_orphans(*, dry_run=False):
    """cleanup_orphans(*, dry_run=False)

    Unlink (POSIX) or remove (System V) every segment fastio created with
    persist=False whose creator is dead (killed before it could clean up:
    the kernel cannot know). Returns the ShmSegment records removed; with
    dry_run=True removes nothing and returns what it would remove.
    """
    removed = []
    for path, rec in _read_records():
        if not _record_current(rec):
            if not dry_run:
                _remove_record(path)
            continue
        if rec["persist"] or _alive(rec["pid"], rec["start"]):
            continue
        if (rec["kind"] == "posix" and rec["ino"] is None
                and not rec["name"].startswith(_NAME_PREFIX)):
            # A creator that died between its record and its create of a
            # name of the caller's choosing: the segment of that name may be
            # someone else's (their create won). Listed, never removed.
            # (A generated name cannot be anyone else's.)
            continue
        name = rec["name"] if rec["kind"] == "posix" else rec["id"]
        if dry_run:
            removed.append(ShmSegment(rec["kind"], name, rec["pid"], False,
                                      False, rec["size"]))
            continue
        try:
            if rec["kind"] == "posix":
                _core.shm_unlink("/" + name)
            else:
                _core.sysv_remove(name)
        except OSError as e:
            # Gone meanwhile (another cleanup_orphans won the race).
            if e.errno not in (errno.ENOENT, errno.EINVAL, errno.EIDRM):
                raise
        else:
            removed.append(ShmSegment(rec["kind"], name, rec["pid"], False,
                                      False, rec["size"]))
        _remove_record(path)
    return removed


# ------------------------------------------------------------------ #
# Ownership: what runs when a creator is closed, collected or exits

def _release(kind, ident, pid, record):
    """Unlink/remove a segment and forget its record. The finalizer of
    creators; it never runs in another process than the creator (a forked
    child inherits the creator's objects and its finalizers)."""
    if os.getpid() != pid:
        return
    if kind == "posix":
        _watch("-", ident)
    try:
        if kind == "posix":
            _core.shm_unlink("/" + ident)
        else:
            _core.sysv_remove(ident)
    except (FileNotFoundError, OSError):
        # Gone already (someone unlinked it, or cleanup_orphans did): the
        # wanted state. EINVAL/EIDRM for a removed System V id.
        pass
    _remove_record(record)


# ------------------------------------------------------------------ #
# The watchdog: unlinks a killed creator's POSIX segments
#
# A POSIX segment is a name in /dev/shm: the kernel keeps it until someone
# unlinks it, even after every process that used it is gone. A creator
# unlinks in close(), its finalizer or at exit, but SIGKILL (the OOM killer,
# a CI timeout) runs none of those. So the first creating object of a
# process starts a small watchdog process (the interpreter itself, run with
# -I -S, in a session of its own so that Ctrl-C does not reach it) and keeps
# the write end of a pipe to it. It is told each segment the process owns
# ("+") and each it released ("-"); when the pipe reads end of file (the
# creator and every child forked from it are gone, however they died), it
# unlinks what is still listed, if the name still names the same inode, and
# removes the record. Mappings stay valid: workers that attached keep their
# memory, and the kernel frees it when the last one goes.
#
# Why not another mechanism: a memfd or an IPC_RMID-marked System V segment
# is freed by the kernel itself, but neither can be attached by name, which
# is what SharedMemory(name) promises (the stdlib's interface); unlinking
# right after the create would do the same. SharedArray(backend='memfd' or
# 'sysv') uses those. The stdlib's resource tracker is a watchdog too, but
# it also tracks attachers (and unlinks segments they did not create) and
# warns at exit; this one knows only what its process created, persist=False.

_WATCHDOG_SCRIPT = r"""
import json, os
segs = {}
buf = b""
while True:
    try:
        chunk = os.read(0, 65536)
    except InterruptedError:
        continue
    if not chunk:
        break
    buf += chunk
    *lines, buf = buf.split(b"\n")
    for line in lines:
        try:
            op, name, ino, record, pid = json.loads(line)
        except ValueError:
            continue
        if op == "+":
            segs[name] = (ino, record, pid)
        else:
            segs.pop(name, None)
# End of file: the creator and its forked children are gone, or the creator
# closed its descriptor (os.closerange) and lives on. Unlink only once each
# creator has exited: wait for a live one (pidfd; a zombie reads as exited).
for pid in {p for _, _, p in segs.values()}:
    try:
        pfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pfd = None
    if pfd is not None:
        import select
        while True:
            try:
                select.select([pfd], [], [])
                break
            except InterruptedError:
                continue
        os.close(pfd)
    else:   # no pidfd_open (Linux < 5.3): poll, once a second
        import time
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            except OSError:
                pass
            time.sleep(1)
for name, (ino, record, pid) in segs.items():
    try:
        path = os.path.join("/dev/shm", name)
        if os.stat(path).st_ino == ino:
            os.unlink(path)
    except OSError:
        pass
    if record:
        try:
            with open(record, "rb") as f:
                mine = json.loads(f.read()).get("pid") == pid
        except (OSError, ValueError):
            mine = False
        if mine:
            try:
                os.unlink(record)
            except OSError:
                pass
"""

_watchdog = None  # (pid it watches, write end of its pipe, watchdog pid, pipe inode)
# The segments this process told its watchdog it owns ({name: (ino, record)}):
# sent again to a new watchdog when the old one is gone (killed) or cut off
# (the program closed its pipe).
_owned = {}
# One watchdog per process even when threads create their first segments
# at once; and whole lines in the pipe (a record path may pass PIPE_BUF).
_watchdog_lock = threading.RLock()


def _new_watchdog_lock():
    # A fork while another thread held it would leave the child's copy
    # locked for ever. The child owns none of the parent's segments.
    global _watchdog_lock, _owned
    _watchdog_lock = threading.RLock()
    _owned = {}


os.register_at_fork(after_in_child=_new_watchdog_lock)


def _watchdog_fd(start=True):
    """The write end of this process's watchdog pipe, starting the watchdog
    on first use if start (and again in a forked child: the parent's
    watches the parent's segments). None if there is none or it cannot be
    started (a warning says so)."""
    with _watchdog_lock:
        return _watchdog_fd_locked(start)


def _watchdog_fd_locked(start):
    global _watchdog
    if _watchdog is not None and _watchdog[0] == os.getpid():
        fd = _watchdog[1]
        if fd is None:
            return None
        # Someone may have closed our descriptor (os.closerange) and the
        # number now names another file: never write lines into that.
        try:
            st = os.fstat(fd)
            if _stat.S_ISFIFO(st.st_mode) and st.st_ino == _watchdog[3]:
                return fd
        except OSError:
            pass
    if not start:
        return None
    if _watchdog is not None and _watchdog[0] == os.getpid():
        _forget_watchdog()
    _watchdog = (os.getpid(), None, None, None)
    r, w = os.pipe()  # both close-on-exec: exec'd children do not hold it
    try:
        if not sys.executable:
            raise OSError(errno.ENOENT, "sys.executable is empty")
        pid = os.posix_spawn(sys.executable,
                             [sys.executable, "-I", "-S", "-c", _WATCHDOG_SCRIPT],
                             os.environ, file_actions=[(os.POSIX_SPAWN_DUP2, r, 0)],
                             setsid=True)
    except OSError as e:
        os.close(w)
        _warn_once("watchdog", f"fastio: cannot start the shm watchdog ({e}); a POSIX "
                   "segment whose creator is killed stays in /dev/shm (cleanup_orphans() "
                   "removes it)")
        return None
    finally:
        os.close(r)
    # The watchdog is never waited for: it exits when this process (and
    # its forked children) are gone, and init reaps it then.
    _watchdog = (os.getpid(), w, pid, os.fstat(w).st_ino)
    # A new watchdog after a lost one: it learns what this process still owns.
    for name, (ino, record) in _owned.items():
        if not _send(w, "+", name, ino, record):
            break
    return w


def _forget_watchdog():
    """The old watchdog is unusable (its pipe closed by the program, or it
    was killed): close our end if it is still ours, and reap it if it
    exited (it is our child; a live one that read end of file waits for
    this process to exit before it unlinks anything)."""
    global _watchdog
    _, fd, pid, ino = _watchdog
    _watchdog = None
    if fd is not None:
        try:
            if os.fstat(fd).st_ino == ino:
                os.close(fd)
        except OSError:
            pass
    if pid is not None:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


def _send(fd, op, name, ino, record):
    line = (json.dumps([op, name, ino, record, os.getpid()]) + "\n").encode()
    try:
        os.write(fd, line)  # a pipe: all of it (blocking), or EPIPE
        return True
    except OSError:
        return False        # the watchdog is gone (killed)


def _watch(op, name, ino=None, record=None):
    """Tell this process's watchdog that it owns ("+") or released ("-")
    the POSIX segment name; a watchdog found gone is replaced (when this
    process still owns segments) and told all of them."""
    with _watchdog_lock:
        if op == "+":
            _owned[name] = (ino, record)
        else:
            _owned.pop(name, None)
        # never started for a release of nothing left
        fd = _watchdog_fd_locked(start=op == "+" or bool(_owned))
        if fd is None or _send(fd, op, name, ino, record):
            return
        _forget_watchdog()      # EPIPE: killed. A new one gets _owned.
        if _owned:
            _watchdog_fd_locked(start=True)


def _check_name(name):
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got name={name!r}")
    bare = name[1:] if name.startswith("/") else name
    if not bare:
        raise ValueError(f"name must not be empty, got name={name!r}")
    if "/" in bare:
        raise ValueError(f"name must not contain '/' (after a leading one), got name={name!r}")
    if "\0" in bare:
        raise ValueError(f"name must not contain NUL, got name={name!r}")
    if len(os.fsencode(bare)) > _NAME_MAX:
        raise ValueError(
            f"name is {len(os.fsencode(bare))} bytes; the limit is {_NAME_MAX}: "
            f"name={name[:40]!r}...")
    if bare in (".", ".."):
        raise ValueError(f"name={name!r} is not a valid shm name")
    return bare


def _check_size(size, what="size"):
    if isinstance(size, bool) or not isinstance(size, int):
        raise TypeError(f"{what} must be an int, got {what}={size!r}")
    if size <= 0:
        raise ValueError(f"creating a segment needs {what} > 0, got {what}={size}")
    if size > sys.maxsize:
        raise OverflowError(f"{what}={size} is too large")


def _generated_name():
    # 96 random bits; "/fio_" + 24 hex digits is 29 bytes, below even
    # macOS's 31 (PSHMNAMLEN), far below Linux's NAME_MAX.
    return _NAME_PREFIX + secrets.token_hex(12)


# ------------------------------------------------------------------ #
# POSIX shared memory and memfd

class SharedMemory(_core.SharedMemory):
    """SharedMemory(name=None, create=False, size=0, *, track=True, mode=0o600, persist=False, readonly=False, populate=False, hugepages=False)

    A POSIX shared memory segment: a superset of
    ``multiprocessing.shared_memory.SharedMemory`` (name, size, buf, close,
    unlink) without its resource tracker.

    create=True makes a new segment exclusively (O_CREAT|O_EXCL: never an
    attach to one someone planted), with exactly ``mode`` and ``size``
    bytes, named ``name`` or an unguessable generated name. The creator
    owns it: it is unlinked when the object is closed or collected, or at
    exit, unless persist=True. An attacher (create=False) maps the
    segment's real size and never unlinks unless it calls unlink().
    unlink() is idempotent. close() is safe while numpy arrays or
    memoryviews use the memory. track=False (the stdlib's keyword) is
    persist=True. See docs/shm.md and docs/dropin.md.
    """

    # __dict__: users (and the stdlib's users) may hang attributes on it.
    __slots__ = ("_name", "_owner", "_persist", "_finalizer", "_kind",
                 "_unlinked", "_pid", "_record", "__dict__")

    def __new__(cls, name=None, create=False, size=0, *, track=True, mode=0o600,
                persist=False, readonly=False, populate=False, hugepages=False):
        # track: the stdlib's keyword (3.13). track=False there means "never
        # unlinked for me, I unlink it myself": persist=True here.
        if not track:
            persist = True
        if isinstance(mode, bool) or not isinstance(mode, int):
            raise TypeError(f"mode must be an int, got mode of type {type(mode).__name__}")
        if not 0 <= mode <= 0o7777:
            raise ValueError(f"mode must be an int within 0o7777, got mode={mode!r}")
        if not create:
            if name is None:
                raise ValueError("name is needed to attach (create=False): got name=None")
            bare = _check_name(name)
            self = super().__new__(cls, "/" + bare, readonly=readonly,
                                   populate=populate, hugepages=hugepages)
            self._init(bare, "posix", owner=False, persist=persist)
            return self
        _check_size(size)
        names = [_check_name(name)] if name is not None else (
            _generated_name() for _ in range(16))
        for bare in names:
            # The record first, marked pending (no inode yet): a creator
            # killed between the create and the record cannot leave a
            # segment that no record names.
            # A record already there is another segment's of the same name
            # (then our create fails) or stale (then _init replaces it).
            record = None
            path = _record_path("posix", bare)
            if path is not None and not os.path.exists(path):
                record = _write_record("posix", bare, name=bare, ino=None,
                                       persist=persist, size=size)
            try:
                self = super().__new__(cls, "/" + bare, size, create=True, mode=mode,
                                       readonly=readonly, populate=populate,
                                       hugepages=hugepages)
                break
            except FileExistsError:
                # Someone else's segment: never leave a record naming it.
                _remove_pending_record(record)
                if name is not None:
                    raise
                # A generated name taken (2**-96: only if someone guessed it).
            except BaseException:
                _remove_pending_record(record)
                raise
        else:
            raise FileExistsError(errno.EEXIST, "no free generated shm name")
        try:
            self._init(bare, "posix", owner=True, persist=persist)
        except BaseException:
            self.close()
            _core.shm_unlink("/" + bare)
            _remove_record(_record_path("posix", bare))
            raise
        return self

    def _init(self, name, kind, owner, persist):
        self._name = name
        self._kind = kind
        self._owner = owner
        self._persist = persist
        self._unlinked = False
        self._pid = os.getpid()
        self._record = None
        self._finalizer = None
        if owner and kind == "posix":
            ino = os.fstat(self.fileno()).st_ino
            self._record = _write_record("posix", name, name=name, ino=ino,
                                         persist=persist, size=self.size)
            if not persist:
                self._finalizer = weakref.finalize(
                    self, _release, "posix", name, self._pid, self._record)
                _watch("+", name, ino, self._record)

    @classmethod
    def from_fd(cls, fd, *, readonly=False, populate=False, hugepages=False):
        """from_fd(fd, *, readonly=False, populate=False, hugepages=False)

        Attach to a segment given by a file descriptor (a memfd received
        over a UNIX socket, a POSIX shm fd). The descriptor is duplicated:
        the caller still owns ``fd``. The segment's real size is mapped.
        """
        self = _core.SharedMemory.__new__(cls, fd, readonly=readonly,
                                          populate=populate, hugepages=hugepages)
        self._init(None, "fd", owner=False, persist=True)
        return self

    # -- the stdlib's interface -------------------------------------

    @property
    def name(self):
        """The segment's name, without the leading '/' (as the stdlib's);
        the memfd's label for a memfd; None for a segment attached by fd."""
        return self._name

    @property
    def buf(self):
        """A memoryview of the whole segment (a new one at each access: it
        holds a buffer export, which close() does not have to revoke)."""
        return memoryview(self)

    def close(self):
        """close(self)

        Close this process's access (fd and mapping; the mapping stays until
        the last numpy array or memoryview over it goes). A creator without
        persist=True also unlinks the segment. Idempotent.
        """
        super().close()
        if self._finalizer is not None:
            self._finalizer()

    def unlink(self):
        """unlink(self)

        Remove the segment's name (shm_unlink): no one can attach any more;
        mappings stay valid. Idempotent: a second call does nothing. An
        attacher may call it (as with the stdlib); no one does implicitly.
        Nothing to do for a memfd.
        """
        if self._kind != "posix" or self._unlinked:
            return
        self._unlinked = True
        if self._finalizer is not None:
            self._finalizer()
            return
        try:
            _core.shm_unlink("/" + self._name)
        except FileNotFoundError:
            pass
        _remove_record(self._record or _record_path("posix", self._name))

    def __enter__(self):
        if self.closed:
            raise ValueError("operation on a closed SharedMemory")
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"{type(self).__name__}({self._name!r}, size={self.size})"

    def __reduce__(self):
        return (_attach, (self._handle(),))

    # -- extras --------------------------------------------------------

    @property
    def owner(self):
        """True for the object that created the segment."""
        return self._owner

    @property
    def persist(self):
        return self._persist

    def asarray(self, dtype="u1", shape=None, offset=0, order="C"):
        """asarray(self, dtype='u1', shape=None, offset=0, order='C')

        A numpy array over the segment, without a copy. It holds a buffer
        export: close() is safe while it lives. ValueError if it does not fit.
        """
        return as_ndarray(self, dtype, shape, offset, order)

    def _handle(self):
        """What another process needs to attach to this segment."""
        if self.closed:
            raise ValueError("operation on a closed SharedMemory")
        if self._kind == "posix":
            return ("posix", self._name, self.readonly)
        # A memfd has no name: another process of the same user reopens it
        # through /proc/<pid>/fd/<fd> while this object keeps it open.
        fd = self.fileno()
        return ("fd", os.getpid(), fd, self.readonly, os.fstat(fd).st_ino)


SharedMemory.__module__ = "fastio"


def _attach(handle):
    kind = handle[0]
    if kind == "posix":
        return SharedMemory(handle[1], readonly=handle[2])
    if kind == "fd":
        _, pid, fd, readonly, ino = handle
        if pid == os.getpid():
            own = os.dup(fd)
        else:
            flags = (os.O_RDONLY if readonly else os.O_RDWR) | os.O_CLOEXEC
            own = os.open(f"/proc/{pid}/fd/{fd}", flags)
        try:
            if os.fstat(own).st_ino != ino:
                # The creator closed it and the number now names another file.
                raise FileNotFoundError(
                    errno.ENOENT, "the memfd segment is gone from its creator",
                    f"/proc/{pid}/fd/{fd}")
            return SharedMemory.from_fd(own, readonly=readonly)
        finally:
            os.close(own)
    if kind == "sysv":
        return SysVSharedMemory._attach_id(handle[1], readonly=handle[2])
    raise ValueError(f"unknown segment handle {handle!r}")


def memfd(size, name="fastio", *, seal=True, hugepages=False):
    """memfd(size, name='fastio', *, seal=True, hugepages=False)

    An anonymous shared segment (memfd_create) as a SharedMemory: no name
    in /dev/shm, gone when the last descriptor and mapping go. Pass its
    fileno() to another process (send_fds over a UNIX socket, or
    multiprocessing's fd passing) and attach there with
    SharedMemory.from_fd(fd).

    seal=True adds F_SEAL_SHRINK | F_SEAL_GROW, so that no peer can shrink
    the segment under a mapping (which would SIGBUS); an int gives the
    F_SEAL_* flags to add (F_SEAL_WRITE makes the segment read-only from
    the start: to freeze contents after filling them, call
    add_seals(F_SEAL_FUTURE_WRITE)); False adds none. hugepages asks
    MFD_HUGETLB (reserved huge pages, vm.nr_hugepages) and falls back to
    transparent huge page advice when there are none.
    """
    _check_size(size)
    if seal is True:
        seals = F_SEAL_SHRINK | F_SEAL_GROW
    elif seal is False or seal is None:
        seals = 0
    elif isinstance(seal, int):
        seals = seal
    else:
        raise TypeError(f"seal must be a bool or F_SEAL_* flags, got seal={seal!r}")
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got name={name!r}")
    if len(os.fsencode(name)) > 249:  # the kernel's limit: 249 bytes
        raise ValueError(f"name is too long (limit 249 bytes): name={name[:40]!r}...")
    readonly = bool(seals & F_SEAL_WRITE)
    fd = None
    if hugepages:
        try:
            fd = _core.memfd_create(name, size, seals, hugetlb=True)
            try:
                seg = SharedMemory.from_fd(fd, readonly=readonly)
            except OSError:
                os.close(fd)
                fd = None
        except OSError:
            fd = None
    if fd is None:
        fd = _core.memfd_create(name, size, seals)
        try:
            seg = SharedMemory.from_fd(fd, readonly=readonly, hugepages=hugepages)
        except BaseException:
            os.close(fd)
            raise
    os.close(fd)
    seg._name = name
    seg._kind = "memfd"
    seg._owner = True
    return seg


def send_fds(sock, fds, data=b"F"):
    """send_fds(sock, fds, data=b'F')

    Send file descriptors (SCM_RIGHTS) over a connected UNIX socket, with
    some bytes of data (at least one: a message without data may not be
    delivered). The receiver gets its own descriptors to the same files.
    """
    fds = [f.fileno() if hasattr(f, "fileno") else f for f in fds]
    return socket.send_fds(sock, [data], fds)


def recv_fds(sock, maxfds, bufsize=1):
    """recv_fds(sock, maxfds, bufsize=1)

    Receive up to maxfds descriptors sent with send_fds; returns
    (data, [fd, ...]). The descriptors are close-on-exec; the caller owns
    them (close them, or attach with SharedMemory.from_fd and close).
    """
    data, fds, _flags, _addr = socket.recv_fds(
        sock, bufsize, maxfds, socket.MSG_CMSG_CLOEXEC)
    return data, fds


# ------------------------------------------------------------------ #
# System V shared memory

IPC_PRIVATE = _core.IPC_PRIVATE
ftok = _core.ftok

SysVStat = collections.namedtuple(
    "SysVStat", "size nattch cpid lpid atime dtime ctime mode uid gid cuid cgid "
                "key removed locked")
SysVStat.__doc__ = """shmid_ds of a System V segment: size in bytes, number of
attaches, creator and last shmat/shmdt pids, last attach/detach/change
times (seconds since the epoch, 0 for never), permission bits, owner and
creator uid/gid, key (0: IPC_PRIVATE), and whether it is marked for removal
(SHM_DEST) or locked in RAM (SHM_LOCKED)."""

_SHM_DEST = 0o1000
_SHM_LOCKED = 0o2000


def _stat_record(t):
    size, nattch, cpid, lpid, atime, dtime, ctime, mode, uid, gid, cuid, cgid, key = t
    return SysVStat(size, nattch, cpid, lpid, atime, dtime, ctime, mode & 0o777,
                    uid, gid, cuid, cgid, key,
                    bool(mode & _SHM_DEST), bool(mode & _SHM_LOCKED))


class SysVSharedMemory(_core.SysVSharedMemory):
    """SysVSharedMemory(key=None, size=0, *, create=False, mode=0o600, hugepages=False, readonly=False, proj_id=None, persist=False, populate=False)

    One attach (shmat) of a System V shared memory segment.

    key None means IPC_PRIVATE (always a new segment: create is implied);
    an int is used as is; a path (str or os.PathLike) goes through
    ftok(path, proj_id). create=True uses IPC_CREAT|IPC_EXCL with ``mode``
    (an existing key fails with FileExistsError); otherwise the existing
    segment is attached at its real size (ValueError if it is smaller than
    a size you pass). The creator owns the segment: it is removed
    (IPC_RMID) when the object is closed or collected, or at exit, unless
    persist=True. close() detaches (shmdt), safely with live numpy views.
    """

    __slots__ = ("_owner", "_persist", "_finalizer", "_removed", "_pid", "_record",
                 "__dict__")

    def __new__(cls, key=None, size=0, *, create=False, mode=0o600, hugepages=False,
                readonly=False, proj_id=None, persist=False, populate=False):
        if isinstance(mode, bool) or not isinstance(mode, int):
            raise TypeError(f"mode must be an int, got mode of type {type(mode).__name__}")
        if not 0 <= mode <= 0o777:
            raise ValueError(f"mode must be an int within 0o777, got mode={mode!r}")
        if key is None or (type(key) is int and key == IPC_PRIVATE):
            # IPC_PRIVATE always makes a new segment: it is ours to own.
            key, create = IPC_PRIVATE, True
        elif isinstance(key, (str, bytes, os.PathLike)):
            if proj_id is None:
                raise ValueError(f"a path key needs proj_id (ftok), got key={key!r}")
            if isinstance(proj_id, str) and len(proj_id) == 1:
                proj_id = ord(proj_id)
            key = ftok(key, proj_id)
        elif isinstance(key, bool) or not isinstance(key, int):
            raise TypeError(f"key must be None, an int or a path, got key={key!r}")
        if create:
            _check_size(size)
        elif isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"size must be an int >= 0 to attach, got size={size!r}")
        self = super().__new__(cls, key, size, create=create, mode=mode,
                               hugepages=hugepages, readonly=readonly)
        try:
            self._setup(owner=create, persist=persist)
            if populate:
                self.populate()
        except BaseException:
            super().close()
            if create:
                self.remove()
            raise
        return self

    @classmethod
    def _attach_id(cls, shmid, readonly=False):
        self = _core.SysVSharedMemory.__new__(cls, shmid, by_id=True, readonly=readonly)
        self._setup(owner=False, persist=True)
        return self

    def _setup(self, owner, persist):
        self._owner = owner
        self._persist = persist
        self._removed = False
        self._pid = os.getpid()
        self._record = None
        self._finalizer = None
        if owner:
            st = _stat_record(_core.sysv_stat(self.id))
            self._record = _write_record("sysv", self.id, id=self.id, key=st.key,
                                         ctime=st.ctime, persist=persist,
                                         size=self.size)
            if not persist:
                self._finalizer = weakref.finalize(
                    self, _release, "sysv", self.id, self._pid, self._record)

    @property
    def owner(self):
        """True for the object that created the segment."""
        return self._owner

    @property
    def persist(self):
        return self._persist

    @property
    def buf(self):
        """A memoryview of the whole segment (a new one at each access)."""
        return memoryview(self)

    def close(self):
        """close(self)

        Detach (shmdt; the memory stays until the last numpy array or
        memoryview over it goes). A creator without persist=True also
        removes the segment (IPC_RMID: destroyed at the last detach of any
        process). Idempotent.
        """
        super().close()
        if self._finalizer is not None:
            self._finalizer()

    def remove(self):
        """remove(self)

        shmctl(IPC_RMID): the segment is destroyed when the last process
        detaches, and its key is free at once. Idempotent.
        """
        if self._removed:
            return
        self._removed = True
        if self._finalizer is not None:
            self._finalizer()
            return
        try:
            super().remove()
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.EIDRM):
                raise
        _remove_record(self._record)

    def stat(self):
        """stat(self)

        The segment's shmid_ds (shmctl IPC_STAT) as a SysVStat record.
        """
        return _stat_record(super().stat())

    def asarray(self, dtype="u1", shape=None, offset=0, order="C"):
        """asarray(self, dtype='u1', shape=None, offset=0, order='C')

        A numpy array over the segment, without a copy; it holds a buffer
        export, so close() is safe while it lives.
        """
        return as_ndarray(self, dtype, shape, offset, order)

    def _handle(self):
        if self.closed:
            raise ValueError("operation on a closed (detached) SysVSharedMemory")
        return ("sysv", self.id, self.readonly)

    def __reduce__(self):
        return (_attach, (self._handle(),))

    def __enter__(self):
        if self.closed:
            raise ValueError("operation on a closed (detached) SysVSharedMemory")
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"{type(self).__name__}(key={self.key:#x}, id={self.id}, size={self.size})"


SysVSharedMemory.__module__ = "fastio"

SysVSegment = collections.namedtuple(
    "SysVSegment", "key id mode size cpid lpid nattch uid gid cuid cgid "
                   "atime dtime ctime rss swap")
SysVSegment.__doc__ = """A row of /proc/sysvipc/shm: key, id, permission bits,
size, creator and last pids, attaches, owner/creator uid and gid, last
attach/detach/change times, resident and swapped bytes."""


def _sysv_rows():
    rows = {}
    try:
        with open("/proc/sysvipc/shm") as f:
            header = f.readline().split()
            for line in f:
                v = dict(zip(header, line.split()))
                if not v:
                    continue
                rec = SysVSegment(
                    int(v["key"]) & 0xFFFFFFFF,  # printed signed; keys are unsigned here
                    int(v["shmid"]), int(v["perms"], 8) & 0o777,
                    int(v["size"]), int(v["cpid"]), int(v["lpid"]), int(v["nattch"]),
                    int(v["uid"]), int(v["gid"]), int(v["cuid"]), int(v["cgid"]),
                    int(v["atime"]), int(v["dtime"]), int(v["ctime"]),
                    int(v.get("rss", 0)), int(v.get("swap", 0)))
                rows[rec.id] = rec
    except FileNotFoundError:
        pass
    return rows


def sysv_segments():
    """sysv_segments()

    The System V segments visible in /proc/sysvipc/shm (this IPC
    namespace), as SysVSegment records.
    """
    return list(_sysv_rows().values())


# ------------------------------------------------------------------ #
# numpy arrays shared across processes

_attached = weakref.WeakValueDictionary()


def _segment_for(handle):
    """This process's attach of a segment, shared by every array that a
    pickle brought here (one mapping per segment, not one per array)."""
    seg = _attached.get(handle)
    if seg is None or seg.closed:
        seg = _attach(handle)
        _attached[handle] = seg
    return seg


def _byte_bounds(a):
    try:
        from numpy.lib.array_utils import byte_bounds
    except ImportError:  # numpy < 2
        byte_bounds = np.byte_bounds
    return byte_bounds(a)


def _rebuild(handle, dtype, shape, strides, offset):
    seg = _segment_for(handle)
    root = as_ndarray(seg)
    arr = np.ndarray(shape, dtype, buffer=root, offset=offset, strides=strides)
    arr = arr.view(SharedArray)
    arr._segment = seg
    return arr


class SharedArray(np.ndarray):
    """SharedArray(shape, dtype=float64, *, backend='posix', order='C')

    An ndarray on a shared memory segment that pickles by reference: the
    pickle holds the segment's handle (POSIX name, memfd via its creator's
    /proc/<pid>/fd, or System V id) with dtype, shape, strides and offset,
    so that passing it to multiprocessing or concurrent.futures workers
    copies nothing, and every process sees the others' writes. Views and
    slices of it pickle the same way; results of computations (a + 1) are
    new memory and pickle by value.

    The segment lives as long as the creating process holds the array or a
    view of it (then it is unlinked/removed); a worker attaches when it
    unpickles and may keep its arrays after that. Starts zeroed.
    """

    def __new__(cls, shape, dtype=np.float64, *, backend="posix", order="C"):
        return shared_array(shape, dtype, backend=backend, order=order)

    def __array_finalize__(self, obj):
        # A view inherits the segment; an array with memory of its own (a
        # ufunc's output, a copy) does not. (Where the view's bytes are is
        # checked when it is pickled: numpy may set a view's strides after
        # this runs, as for .T.)
        self._segment = getattr(obj, "_segment", None) if self.base is not None else None

    @property
    def segment(self):
        """The segment under the array (None for memory of its own)."""
        seg = getattr(self, "_segment", None)
        return seg if seg is not None and _inside(self, seg) else None

    def __reduce__(self):
        seg = self.segment
        if seg is None:
            return np.asarray(self).__reduce__()
        # The offset of element [0, 0, ...] from the segment's start.
        first = self.__array_interface__["data"][0]
        return (_rebuild, (seg._handle(), self.dtype, self.shape, self.strides,
                           first - seg._address))

    def __reduce_ex__(self, protocol):
        return self.__reduce__()


SharedArray.__module__ = "fastio"


def _inside(arr, seg):
    if seg.closed:
        return False
    lo, hi = _byte_bounds(arr)
    base = seg._address
    return base <= lo and hi <= base + seg.size


_BACKENDS = ("posix", "memfd", "sysv")


def shared_array(shape, dtype=np.float64, *, backend="posix", order="C"):
    """shared_array(shape, dtype=float64, *, backend='posix', order='C')

    A zeroed SharedArray of ``shape`` and ``dtype`` on a new segment:
    backend 'posix' (a SharedMemory with a generated name, unlinked when
    the array goes), 'memfd' (no name anywhere: workers reopen it through
    /proc/<creator pid>/fd, so they must run as the same user on the same
    machine), or 'sysv' (an IPC_PRIVATE segment marked for removal at once:
    Linux lets processes attach by id until the last detach, so it can
    never outlive its users, even if its creator is killed).
    """
    dtype = np.dtype(dtype)
    if dtype.hasobject:
        raise ValueError(f"dtype={dtype} holds Python objects; it cannot be shared")
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape),)
    shape = tuple(int(s) for s in shape)
    if any(s < 0 for s in shape):
        raise ValueError(f"shape={shape} has a negative dimension")
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got backend={backend!r}")
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    size = max(nbytes, 1)  # a segment cannot be empty
    if backend == "posix":
        seg = SharedMemory(create=True, size=size)
    elif backend == "memfd":
        seg = memfd(size, "fastio-array")
    else:
        seg = SysVSharedMemory(None, size, create=True, persist=True)
        # Removed at once, see above: persist=True only keeps the object
        # from removing it a second time.
        seg.remove()
    arr = as_ndarray(seg, dtype, shape, 0, order).view(SharedArray)
    arr._segment = seg
    return arr
