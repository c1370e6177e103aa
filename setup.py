"""Build fastio._core: every csrc/*.c file, C11, hidden symbols.

FASTIO_SANITIZE=1 builds with AddressSanitizer and UndefinedBehaviorSanitizer
(run the tests with LD_PRELOAD set to libasan, as .ci/run does).
"""
import os
from glob import glob

import setuptools
from setuptools import Extension, setup

extra_compile = ["-std=c11", "-fvisibility=hidden", "-Wall", "-Wextra",
                 "-Wno-unused-parameter", "-Wno-missing-field-initializers"]
extra_link = ["-pthread"]
if os.environ.get("FASTIO_SANITIZE") == "1":
    san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer",
           "-fno-sanitize-recover=undefined"]
    extra_compile += san + ["-O1", "-g"]
    extra_link += san
else:
    extra_compile += ["-O2"]

# The license (pyproject.toml lists it as dynamic): an SPDX expression
# (PEP 639, Metadata 2.4) where setuptools knows it (77+), the older free
# text field otherwise; LICENSE goes into the sdist and the wheel either way.
if int(setuptools.__version__.split(".")[0]) >= 77:
    license_kw = {"license_expression": "MIT"}
else:
    license_kw = {"license": "MIT"}

setup(
    license_files=["LICENSE"],
    **license_kw,
    ext_modules=[
        Extension(
            "fastio._core",
            sources=sorted(glob("csrc/*.c")),
            depends=sorted(glob("csrc/*.h")),
            define_macros=[("_GNU_SOURCE", "1")],
            extra_compile_args=extra_compile,
            extra_link_args=extra_link,
            # dlsym (heap_info looks mallinfo2 up at run time): in libdl
            # before glibc 2.34, which a manylinux_2_28 wheel must link.
            libraries=["dl"],
        )
    ],
)
