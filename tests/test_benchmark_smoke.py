"""The fan-out benchmark at its smoke size: only correctness is asserted (performance is read, not tested)."""

import subprocess
import sys

import pytest

from tests.processes import ROOT

pytestmark = pytest.mark.slow


def test_the_fanout_benchmark_smoke_run_loses_repeats_and_reorders_nothing() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.fanout", "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "every stream got every event once, in order" in result.stdout, result.stdout
