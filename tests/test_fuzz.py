"""Run the atheris fuzz target (fuzz/fuzz_args.py) for a short while: any
crash, hang or unexpected exception in fastio's argument parsing fails the
test with libFuzzer's report and the call each finding makes.
FASTIO_FUZZ_SECONDS sets the length (default 20; 0 skips: CI runs the target
for 60 s in its own step of .ci/run); longer runs:
python fuzz/fuzz_args.py -max_total_time=N.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fastio

pytest.importorskip("atheris", reason="atheris is not installed (pip install atheris)")

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def test_fuzz_argument_parsing(tmp_path):
    seconds = int(os.environ.get("FASTIO_FUZZ_SECONDS", "20"))
    if seconds <= 0:
        pytest.skip("FASTIO_FUZZ_SECONDS=0: the fuzz target runs in its own step "
                    "(.ci/run runs it for 60 s)")
    # The child must import the fastio this test imported (the installed
    # package in CI, whose directory has the built extension), not the
    # source tree next to fuzz/.
    env = dict(os.environ, PYTHONPATH=str(Path(fastio.__file__).resolve().parent.parent))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "fuzz" / "fuzz_args.py"), f"-max_total_time={seconds}",
         "-timeout=10", "-rss_limit_mb=2048", f"-artifact_prefix={tmp_path}/",
         str(tmp_path)],
        capture_output=True, text=True, timeout=seconds + 120, env=env)
    report = proc.stderr[-6000:]
    for finding in sorted(tmp_path.glob("*-*")):  # crash-, timeout-, oom-, leak-
        if finding.is_file():
            described = subprocess.run(
                [sys.executable, str(ROOT / "fuzz" / "fuzz_args.py"), "--describe",
                 str(finding)], capture_output=True, text=True, timeout=120, env=env)
            report += "\n" + described.stdout
    assert proc.returncode == 0, f"the fuzzer found something:\n{report}"
    assert "Done" in proc.stderr, report
