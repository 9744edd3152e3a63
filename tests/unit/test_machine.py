"""lokiml.machine: the GPUs a local job could use, told without a deep-learning library."""

import pytest

from lokiml.machine import local_gpu_count


@pytest.fixture
def driver(tmp_path):
    """A stand-in for /proc/driver/nvidia/gpus with two GPUs."""
    d = tmp_path / "gpus"
    for bus in ("0000:01:00.0", "0000:02:00.0"):
        (d / bus).mkdir(parents=True)
    return d


def test_no_driver_no_gpus(tmp_path):
    assert local_gpu_count({}, tmp_path / "missing", smi=None) == 0
    assert local_gpu_count({"CUDA_VISIBLE_DEVICES": "0,1"}, tmp_path / "missing", smi=None) == 0


def test_driver_count(driver):
    assert local_gpu_count({}, driver, smi=None) == 2


@pytest.mark.parametrize("cvd, expected", [("", 0), ("-1", 0), ("NoDevFiles", 0), ("0", 1), ("1", 1), ("0,1", 2),
                                           ("0,1,2,3", 2)])
def test_cuda_visible_devices(driver, cvd, expected):
    assert local_gpu_count({"CUDA_VISIBLE_DEVICES": cvd}, driver, smi=None) == expected


def test_nvidia_smi_when_the_driver_has_no_proc_entry(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: A100 (UUID: a)'\necho 'GPU 1: A100 (UUID: b)'\necho 'GPU 2: A100 (UUID: c)'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    assert local_gpu_count({}, tmp_path / "missing") == 3
    failing = bin_dir / "broken-smi"
    failing.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    failing.chmod(0o755)
    assert local_gpu_count({}, tmp_path / "missing", smi="broken-smi") == 0
