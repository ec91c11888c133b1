"""scripts/gpu_check.sh, where it can run here: without a CUDA device it says so in one line
and exits 2 (the device checks themselves need a GPU); so do the GPU parts of
benchmarks/kernels.py."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device runs the real checks")
def test_without_cuda_the_gpu_check_says_so_and_exits_2():
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "gpu_check: no CUDA device (torch.cuda.is_available() is False): nothing to check here"
    ]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device runs the real parts")
@pytest.mark.parametrize("part", ["gpu", "profile"])
def test_without_cuda_the_gpu_parts_of_the_kernel_benchmark_skip_in_one_line(part, tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "kernels.py"), part],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OUT": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines() == [
        f"== {part}: skipped: no CUDA device (torch.cuda.is_available() is False) =="
    ]
    assert list(tmp_path.iterdir()) == []  # no figures written for a part that did not run
