"""Build fastio._core: every csrc/*.c file, C11, hidden symbols.

FASTIO_SANITIZE=1 builds with AddressSanitizer and UndefinedBehaviorSanitizer
(run the tests with LD_PRELOAD set to libasan, as .ci/run does).
"""
import os
from glob import glob

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

setup(
    ext_modules=[
        Extension(
            "fastio._core",
            sources=sorted(glob("csrc/*.c")),
            depends=sorted(glob("csrc/*.h")),
            define_macros=[("_GNU_SOURCE", "1")],
            extra_compile_args=extra_compile,
            extra_link_args=extra_link,
        )
    ],
)
