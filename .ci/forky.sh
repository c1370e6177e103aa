#!/usr/bin/env bash
# fastio on CPython 3.14 and 3.15, from Debian forky's packages in a chroot
# (docs/index.md, "Which interpreter runs what in CI").
#
# No package for this machine's Debian (bookworm) ships 3.14 or 3.15, and
# their source packages are not downloadable here; forky's binary packages
# are. debootstrap (with its own `sid` script, which serves for forky) makes
# a minimal forky root with both interpreters, gcc and each one's test
# package (libpython3.x-testsuite: Lib/test/test_mmap.py, which
# tests/test_mmap_stdlib.py runs against fastio). Measured here: 47 s.
#
#     bash .ci/forky.sh 3.15              # the whole suite on 3.15
#     bash .ci/forky.sh --smoke 3.14      # the smoke subset (below) on 3.14
#     bash .ci/forky.sh 3.14 3.15         # several, one after the other
#     bash .ci/forky.sh --wheels 3.14 3.15   # cp314/cp315 manylinux_2_28
#         wheels: .ci/build-wheels.sh --smoke run inside the root, the
#         wheels copied to $WHEEL_DIR (default wheelhouse/)
#
# As root, with network to the Debian mirror and PyPI. The root goes to
# $FORKY_ROOT (default /opt/forky) and is reused when it is there and
# complete (the marker file below); the packages a reused root lacks are
# installed into it. For each run: the root is made a mount point (as `/` is
# on any system: `unshare --propagation private` in the disk-full tests and
# the lab's filesystem lookup in /proc/mounts need that), /proc, /dev and
# /sys are bound into it and unmounted at exit, the host's CA bundle is
# copied in (pip inside reaches the package index only then), the working
# tree is copied to a scratch directory inside the root (nothing is
# installed into the host's site-packages), and each interpreter gets a
# fresh venv there with fastio, its test extras and numpy (the newest
# release with a wheel for it: binaries only). Every step fails loudly.
#
# The smoke subset: the tests marked smoke (a few per C file, the valgrind
# subset) plus the whole of tests/test_mmap.py and tests/test_mmap_stdlib.py,
# since what differs between CPython versions is mostly mmap's behaviour.
set -euo pipefail

cd "$(dirname "$0")/.."
root=${FORKY_ROOT:-/opt/forky}
marker="$root/.fastio-forky-root"
smoke=0
wheels=0
while [ $# -gt 0 ]; do
    case $1 in
        --smoke) smoke=1 ;;
        --wheels) wheels=1 ;;
        -*) echo "forky.sh: unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
    shift
done
[ $# -gt 0 ] || { echo "usage: forky.sh [--smoke | --wheels] VERSION..." >&2; exit 2; }
start=$SECONDS
say() { printf '\n=== forky: %s (%ds)\n' "$*" $((SECONDS - start)); }

packages() {
    local v out=(gcc libc6-dev)
    for v in "$@"; do
        out+=("python$v-dev" "python$v-venv" "libpython$v-testsuite")
    done
    echo "${out[*]}"
}

# Whether anything is mounted at or below the root: it must then never be
# removed (/dev is bound into it while a run is under way).
mounted_below() {
    awk -v r="$root" '$5 == r || index($5, r "/") == 1 {found = 1} END {exit !found}' \
        /proc/self/mountinfo
}

# ------------------------------------------------------------ the root
if [ ! -e "$marker" ]; then
    say "make the forky root in $root (debootstrap)"
    if [ -e "$root" ]; then
        # An unfinished debootstrap (no marker): start again, unless
        # something is mounted there (then a person must look).
        if mounted_below; then
            echo "forky.sh: $root is unfinished and has mounts below it: not removing it" >&2
            exit 1
        fi
        rm -rf "$root"
    fi
    if ! command -v debootstrap >/dev/null; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q debootstrap || { apt-get update -q && apt-get install -y -q debootstrap; }
    fi
    # The Debian mirror this machine's apt already uses, so none is written
    # here: the first URI ending in /debian (not debian-security, nor a
    # third party's repository listed beside it).
    mirror=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
        awk '$1 == "URIs:" { for (i = 2; i <= NF; i++) if ($i ~ /\/debian\/?$/) { print $i; exit } }' || true)
    if [ -z "$mirror" ]; then
        mirror=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^http.*\/debian\/?$/) { print $i; exit } }' \
            /etc/apt/sources.list 2>/dev/null || true)
    fi
    [ -n "$mirror" ] || { echo "forky.sh: no Debian mirror found in /etc/apt" >&2; exit 1; }
    include=$(packages 3.14 3.15)
    debootstrap --variant=minbase --include="${include// /,}" forky "$root" "$mirror" \
        /usr/share/debootstrap/scripts/sid
    touch "$marker"
fi

# ------------------------------------------------------------ mounts
mounted=()
cleanup() {
    local i
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
        umount -R "${mounted[i]}" 2>/dev/null || umount -R -l "${mounted[i]}" || true
    done
    if [ -n "${scratch:-}" ] && [ -d "$scratch" ]; then
        rm -rf "$scratch"
    fi
}
trap cleanup EXIT
if ! mountpoint -q "$root"; then
    mount --bind "$root" "$root"
    mounted+=("$root")
fi
for d in proc dev sys; do
    if ! mountpoint -q "$root/$d"; then
        case $d in
            proc) mount -t proc proc "$root/proc" ;;
            *) mount --rbind "/$d" "$root/$d" && mount --make-rslave "$root/$d" ;;
        esac
        mounted+=("$root/$d")
    fi
done
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
cp /etc/resolv.conf "$root/etc/resolv.conf"

# A clean environment inside, with what pip, the tests and CI need.
inroot() {
    local keep=() var
    for var in CI FASTIO_FUZZ_SECONDS http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
        if [ -n "${!var:-}" ]; then keep+=("$var=${!var}"); fi
    done
    env -i PATH=/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin HOME=/root \
        LANG=C.UTF-8 SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
        PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 "${keep[@]}" \
        chroot "$root" "$@"
}

missing=()
for v in "$@"; do
    for f in "/usr/bin/python$v" "/usr/lib/python$v/venv/__init__.py" \
            "/usr/lib/python$v/test/test_mmap.py" "/usr/include/python$v/Python.h"; do
        if [ ! -e "$root$f" ]; then missing+=("$v"); break; fi
    done
done
if [ ${#missing[@]} -gt 0 ]; then
    say "install into the reused root: $(packages "${missing[@]}")"
    # shellcheck disable=SC2046  # one word per package
    inroot sh -c "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(packages "${missing[@]}")"
fi

# ------------------------------------------------------------ build and test
scratch=$(mktemp -d "$root/tmp/fastio-ci.XXXXXX")
inside=${scratch#"$root"}
say "copy the working tree to $scratch"
tar -c --exclude=.git --exclude=build --exclude=dist --exclude=wheelhouse \
    --exclude='*.egg-info' --exclude=__pycache__ --exclude='*.so' \
    --exclude=.pytest_cache --exclude=.hypothesis . | tar -x -C "$scratch"

# pytest in the venv, from tests/ (as .ci/run), its JUnit report copied to
# $FORKY_JUNIT_DIR when set (.ci/run counts the tests run from it).
run_pytest_in() {
    local v=$1 name=$2; shift 2
    local xml="$inside/junit-$name.xml" rc=0
    # The venv's bin first on PATH, as .ci/run's venv steps; a hung test is
    # interrupted after 20 minutes with its stack printed.
    inroot sh -c "cd $inside/tests && PATH=$inside/venv$v/bin:\$PATH timeout -s INT -k 60 1200 \
        python -m pytest -q -p no:cacheprovider --junitxml=$xml $*" || rc=$?
    if [ "$rc" -eq 5 ]; then
        echo "forky: $name: pytest collected no tests (exit 5): failing" >&2
        exit 1
    elif [ "$rc" -ne 0 ]; then
        echo "forky: $name: pytest failed (exit $rc)" >&2
        exit "$rc"
    fi
    if [ -n "${FORKY_JUNIT_DIR:-}" ]; then
        cp "$root$xml" "$FORKY_JUNIT_DIR/junit-forky-$name.xml"
    fi
}

if [ "$wheels" -eq 1 ]; then
    # build-wheels.sh inside the root, with a venv of each of forky's
    # interpreters (Debian's have no pip of their own; a venv has); its
    # tools venv is made by the first of them (the root has no python3).
    say "wheels for CPython $* (.ci/build-wheels.sh --smoke inside the root)"
    pys=()
    for v in "$@"; do
        inroot "python$v" -m venv "$inside/wheelpy$v"
        pys+=("$inside/wheelpy$v/bin/python")
    done
    inroot sh -c "cd $inside && WHEEL_DIR=$inside/wheelhouse WHEEL_TOOLS_PYTHON=${pys[0]} \
        bash .ci/build-wheels.sh --smoke ${pys[*]}"
    out=${WHEEL_DIR:-$PWD/wheelhouse}
    mkdir -p "$out"
    cp "$scratch"/wheelhouse/*.whl "$out/"
    say "done: $(cd "$scratch/wheelhouse" && ls ./*.whl | tr '\n' ' ')-> $out"
    exit 0
fi

for v in "$@"; do
    say "CPython $v: venv, fastio and its test extras"
    inroot "python$v" -VV
    venv="$inside/venv$v"
    inroot "python$v" -m venv "$venv"
    # numpy and every other dependency from a wheel: the newest release
    # that has one for this interpreter (no compiling numpy for 40 minutes).
    inroot sh -c "cd $inside && $venv/bin/python -m pip install -q --only-binary=:all: \
        '.[test]' setuptools && rm -rf build"
    inroot "$venv/bin/python" -c 'import numpy, sys; print("forky: numpy", numpy.__version__, "on", sys.version.split()[0])'
    if [ "$smoke" -eq 1 ]; then
        say "tests on CPython $v: smoke subset"
        smoke_files=$(cd tests && grep -l 'pytest\.mark\.smoke' test_*.py | grep -v -x test_mmap.py | tr '\n' ' ')
        run_pytest_in "$v" "$v-smoke" -m smoke "$smoke_files"
        say "tests on CPython $v: test_mmap.py, test_mmap_stdlib.py"
        run_pytest_in "$v" "$v-mmap" test_mmap.py test_mmap_stdlib.py
    else
        say "tests on CPython $v: the whole suite"
        run_pytest_in "$v" "$v"
    fi
done
say "done"
