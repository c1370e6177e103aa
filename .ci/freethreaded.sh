#!/usr/bin/env bash
# fastio on a free-threaded CPython 3.13 ("3.13t"): build the interpreter from
# Debian trixie's python3.13 source package, make a venv of it, install
# fastio there and run the test suite with the GIL off (docs/freethreading.md).
#
# fastio declares Py_MOD_GIL_NOT_USED, so the GIL stays off after `import
# fastio`: the suite runs with PYTHON_GIL unset, and the script fails if the
# GIL is on after the import or at the end of the run (tests/conftest.py's
# session check, FASTIO_ASSERT_GIL_OFF=1). Building CPython takes 3 to 5
# minutes on 2 cores (3 min 9 s measured with the downloads), since neither
# Debian (bookworm, trixie, unstable) nor PyPI ships a free-threaded
# interpreter that would be quicker to get. By hand, as root, from a clone of
# the repository:
#
#     bash .ci/freethreaded.sh            # build (once), install, full suite
#     bash .ci/freethreaded.sh --smoke    # the thread suites and a quick subset
#     FT_PYTHON_GIL=1 bash .ci/freethreaded.sh   # the suite with the GIL
#         forced on, for comparison (the GIL-off check is then skipped)
#
# The interpreter goes to $FT_PREFIX (default /opt/python3.13t) and is reused
# when already there; the venv to $FT_VENV (default /opt/python3.13t-venv).
# The system's apt configuration and Python are left untouched: apt runs
# with a private configuration (its own sources and lists in a temporary
# directory), and `apt-get source -d` only downloads. Every step fails loudly
# (set -e): an unreachable mirror or registry is an error, never a pass.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
prefix=${FT_PREFIX:-/opt/python3.13t}
venv=${FT_VENV:-/opt/python3.13t-venv}
smoke=0
[ "${1:-}" = "--smoke" ] && smoke=1
start=$SECONDS
say() { printf '\n=== %s (%ds)\n' "$*" $((SECONDS - start)); }

work=$(mktemp -d)
chmod 755 "$work"  # apt's _apt user downloads into it
trap 'rm -rf "$work"' EXIT

if [ ! -x "$prefix/bin/python3.13t" ]; then
    say "build dependencies (Debian packages)"
    deps="gcc make xz-utils libssl-dev zlib1g-dev libffi-dev libbz2-dev liblzma-dev
          libsqlite3-dev libreadline-dev uuid-dev libncurses-dev"
    # shellcheck disable=SC2086
    if ! dpkg -s $deps >/dev/null 2>&1; then
        apt-get update
        # shellcheck disable=SC2086
        apt-get install -y --no-install-recommends $deps
    fi

    say "CPython 3.13 source from Debian trixie"
    # The mirror this machine's apt already uses, so none is hard-coded here.
    uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    if [ -z "$uri" ]; then
        uri=$(awk '$1 == "deb" && $2 ~ /^http/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    fi
    [ -n "$uri" ] || { echo "freethreaded.sh: no Debian mirror found in /etc/apt" >&2; exit 1; }
    mkdir -p "$work/apt/etc" "$work/apt/lists/partial" "$work/apt/cache/archives/partial"
    cat > "$work/apt/etc/trixie.sources" <<EOF
Types: deb-src
URIs: $uri
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    cat > "$work/apt/apt.conf" <<EOF
Dir::Etc::SourceList "/dev/null";
Dir::Etc::SourceParts "$work/apt/etc";
Dir::State::Lists "$work/apt/lists";
Dir::Cache "$work/apt/cache";
EOF
    export APT_CONFIG="$work/apt/apt.conf"
    apt-get update
    (cd "$work" && apt-get source -d python3.13)
    unset APT_CONFIG
    tarball=$(ls "$work"/python3.13_3.13.*.orig.tar.xz)
    tar -C "$work" -xf "$tarball"
    src=$(ls -d "$work"/Python-3.13.*)

    say "configure --disable-gil, make, install into $prefix"
    (cd "$src" && ./configure -q --disable-gil --prefix="$prefix" &&
        make -s -j"$(nproc)" >"$work/make.log" 2>&1 && make -s install >"$work/install.log" 2>&1) ||
        { tail -40 "$work/make.log" "$work/install.log" 2>/dev/null; exit 1; }
fi
"$prefix/bin/python3.13t" -c '
import sys, sysconfig
assert sysconfig.get_config_var("Py_GIL_DISABLED"), "not a free-threaded build"
assert not sys._is_gil_enabled(), "the GIL is on at start"
print("free-threaded:", sys.version)'

say "venv $venv and the test dependencies"
[ -x "$venv/bin/python" ] || "$prefix/bin/python3.13t" -m venv "$venv"
# numpy 2.5 has no cp313t wheels (pip would try to build it from source):
# 2.4 has. --only-binary: the newest hypothesis sdist needs a Rust toolchain
# that downloads crates; its newest wheel is pure Python.
"$venv/bin/pip" install -q --only-binary=:all: "numpy>=1.22,<2.5" pytest hypothesis
if [ "$smoke" = 0 ]; then
    # The rest of the test extras (the lab's plots and notebook); psutil and
    # debugpy build from source here, which needs only gcc and the headers.
    "$venv/bin/pip" install -q --prefer-binary "matplotlib>=3.5" "pandas>=1.5" "nbclient>=0.7" \
        "nbformat>=5" "ipykernel>=6"
fi

say "install fastio into the venv"
rm -rf build
"$venv/bin/pip" install -q --no-deps .
rm -rf build

say "tests"
# From tests/, as README.md's command (the installed fastio, not the source
# tree). The venv's bin first on PATH: test_cli runs the `fastio` script.
args=(-q -p no:cacheprovider)
if [ "$smoke" = 1 ]; then
    # Every file that uses one object from several threads, then a quick
    # subset of the rest.
    args+=(test_freethreading.py test_threads.py test_queue_hardening.py
           test_sync_hardening.py test_channel.py test_package.py test_mmap.py
           test_rw.py test_memory.py test_shm.py test_sync.py)
fi
env_gil=(-u PYTHON_GIL)
if [ -n "${FT_PYTHON_GIL:-}" ]; then
    env_gil=(PYTHON_GIL="$FT_PYTHON_GIL")
else
    # The GIL stays off after the import (and conftest.py checks it again
    # when the session ends).
    (cd "$root/tests" && env -u PYTHON_GIL "$venv/bin/python" -W error -c '
import sys, fastio
assert not sys._is_gil_enabled(), "import fastio turned the GIL on"
print("GIL off after import fastio:", fastio._core.__file__)')
    env_gil+=(FASTIO_ASSERT_GIL_OFF=1)
fi
# A hang fails with pytest's stack after 20 minutes (as .ci/run's runs).
(cd "$root/tests" && env "${env_gil[@]}" PATH="$venv/bin:$PATH" \
    timeout -s INT -k 60 1200 "$venv/bin/python" -m pytest "${args[@]}")
say "done"
