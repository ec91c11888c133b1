"""scripts/gpu_check.sh, where it can run here: without a CUDA device it says so in one line
and exits 2 (the device checks themselves need a GPU)."""

import subprocess
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device runs the real checks")
def test_without_cuda_the_gpu_check_says_so_and_exits_2():
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh")], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "gpu_check: no CUDA device (torch.cuda.is_available() is False): nothing to check here"
    ]
