"""bench/gpu_check.py, the one-command GPU check of the study's path, runs end to end (here on a CPU with small
look-alikes; on a GPU with opt-350m's real shape) and prints its projection table."""
import subprocess
import sys

import pytest

from .conftest import ROOT, run_env


@pytest.mark.slow
def test_gpu_check_runs_and_projects_the_study(tmp_path):
    res = subprocess.run([sys.executable, "bench/gpu_check.py", "--shape", "tiny", "--sft-steps", "4", "--dpo-steps",
                          "2", "--keep", str(tmp_path / "check")], cwd=ROOT, env=run_env(), capture_output=True,
                         text=True, timeout=1200)
    assert res.returncode == 0, res.stderr[-3000:]
    table = res.stdout
    assert "| stage | measured | steps/s | tokens/s | peak GPU memory | projected for the study |" in table
    for row in ("| sft | ", "| dpo | ", "| sft_dpo | ", "| sample@base | ", "| score@base | "):
        assert row in table
    assert "| 3h02m |" in table  # the study's own SFT time, beside the projection
