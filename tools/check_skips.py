#!/usr/bin/env python3
"""What this machine must run: compare a pytest JUnit report's skips with
the kernel and with a checked-in expectation.

    python tools/check_skips.py JUNIT.xml                  # check (.ci/run does this)
    python tools/check_skips.py JUNIT.xml --write          # rewrite the expectation
    python tools/check_skips.py JUNIT.xml --expected FILE  # another machine's list

Two checks, both fatal:

1. A skip whose reason says "no FEATURE here (independent probe: ...)"
   (tests/probes.py's format) is probed again, by the same independent
   probe; if the kernel has the feature now, the skip hid it.
2. The skipped tests counted per reason (paths and addresses normalised)
   must equal the expectation file (.ci/expected-skips.txt by default): a
   new skip, a skip that went away, or a different count fails, with the
   difference printed. Update the file on purpose: run the suite as .ci/run
   does with --junitxml, run this script with --write, and say in the
   commit why the machine's skips changed.
"""
import argparse
import collections
import os
import re
import sys
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_EXPECTED = os.path.join(ROOT, ".ci", "expected-skips.txt")
PROBED = re.compile(r"^no (?P<feature>.+?) here \(independent probe: (?P<detail>.*)\)$", re.S)


def skips(junit):
    """[(test id, reason)] of every skipped test in the report."""
    root = ET.parse(junit).getroot()
    out = []
    for case in root.iter("testcase"):
        sk = case.find("skipped")
        if sk is None:
            continue
        reason = sk.get("message") or (sk.text or "")
        reason = re.sub(r"^Skipped: ", "", reason.strip())
        out.append((f"{case.get('classname')}::{case.get('name')}", reason))
    return out


def normalise(reason):
    """The reason with what differs between runs replaced: temporary paths,
    addresses, pids."""
    r = re.sub(r"0x[0-9a-f]+", "<hex>", reason)
    r = re.sub(r"(?<![\w.])(/[\w.+-]+)+/?", "<path>", r)  # absolute paths only
    r = re.sub(r"\s+", " ", r).strip()
    return r


def _existing(path):
    """The nearest existing directory at or above path (a test's tmp_path is
    gone by now; its filesystem is not)."""
    p = path
    while p and not os.path.isdir(p):
        p = os.path.dirname(p.rstrip("/")) or "/"
    return p or "/"


def reprobe(feature, detail):
    """Probe FEATURE again; None when the probes do not know it."""
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import probes
    if feature == "O_DIRECT":
        m = re.search(r" in (/\S+?):", detail)
        return probes.o_direct(_existing(m.group(1)) if m else "/tmp")
    if feature == "FICLONE reflink":
        m = re.search(r"from (/\S+) to (/\S+?):", detail)
        if m:
            return probes.ficlone(_existing(m.group(1)), _existing(m.group(2)))
    fn = probes.FEATURES.get(feature)
    return fn() if fn else None


def read_expected(path):
    want = collections.Counter()
    with open(path) as f:
        for line in f:
            if not line.strip() or line.startswith("#"):
                continue
            count, reason = line.rstrip("\n").split("\t", 1)
            want[reason] = int(count)
    return want


HEADER = """\
# Skipped tests expected on this kind of machine, counted per reason
# (tools/check_skips.py; .ci/run fails when the main run's skips differ).
#
# Machine: {machine}
#
# A skip for a missing kernel feature must say so in tests/probes.py's
# words ("no FEATURE here (independent probe: ...)"), and check_skips.py
# probes the feature again: such a skip is allowed only while the kernel
# really lacks it. The other reasons are design limits (a backend without
# registered files, tmpfs pages that cannot be evicted, ...).
#
# To update on purpose: run the suite as .ci/run does, with
#   cd tests && CI=true FASTIO_FUZZ_SECONDS=0 python -m pytest -q --junitxml=/tmp/j.xml
# then `python tools/check_skips.py /tmp/j.xml --write`, review the diff,
# and say in the commit message why this machine's skips changed.
#
# count<TAB>reason (paths and addresses normalised)
"""


def machine():
    u = os.uname()
    parts = [f"Linux {u.release} {u.machine}"]
    import tempfile
    tmp = os.path.realpath(tempfile.gettempdir())
    try:
        with open("/proc/self/mounts") as f:
            mounts = [line.split()[1:3] for line in f]
        best = max((m for m in mounts if tmp == m[0] or tmp.startswith(m[0].rstrip("/") + "/")),
                   key=lambda m: len(m[0]))
        parts.append(f"{tmp} on {best[1]}")
    except (OSError, ValueError):
        pass
    parts.append("root" if os.geteuid() == 0 else "not root")
    try:
        with open("/proc/sys/kernel/io_uring_disabled") as f:
            parts.append(f"io_uring_disabled={f.read().strip()}")
    except OSError:
        pass
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import probes
    parts.append(f"THP [{probes.thp_mode() or 'absent'}], HugePages_Free {probes.hugepages_free()}")
    return ", ".join(parts)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("junit")
    ap.add_argument("--expected", default=DEFAULT_EXPECTED)
    ap.add_argument("--write", action="store_true", help="rewrite the expectation file")
    args = ap.parse_args(argv)

    found = skips(args.junit)
    counts = collections.Counter(normalise(r) for _, r in found)
    if args.write:
        with open(args.expected, "w") as f:
            f.write(HEADER.format(machine=machine()))
            for reason, n in sorted(counts.items(), key=lambda kv: kv[0]):
                f.write(f"{n}\t{reason}\n")
        print(f"check_skips: wrote {args.expected}: {sum(counts.values())} skips, "
              f"{len(counts)} reasons")

    failures = []
    seen = set()
    for test, reason in found:
        m = PROBED.match(reason)
        if not m:
            continue
        key = (m["feature"], normalise(m["detail"]))
        if key in seen:
            continue
        seen.add(key)
        probe = reprobe(m["feature"], m["detail"])
        if probe is not None and probe.present:
            failures.append(f"{test} skipped for no {m['feature']}, but the kernel has it: "
                            f"{probe.detail}")

    if not args.write:
        want = read_expected(args.expected)
        for reason in sorted(set(want) | set(counts)):
            if want[reason] != counts[reason]:
                failures.append(f"skips expected {want[reason]}, got {counts[reason]}: {reason}")

    print(f"check_skips: {len(found)} skipped tests, {len(counts)} reasons, "
          f"{len(seen)} probed again")
    for f in failures:
        print(f"check_skips: {f}", file=sys.stderr)
    if failures:
        print(f"check_skips: failing ({len(failures)} problems); if the change is intended, "
              f"update {os.path.relpath(args.expected, ROOT)} as its header says",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
