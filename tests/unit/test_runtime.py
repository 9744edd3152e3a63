"""lokiml.runtime: what a machine offers, and a job that asks for a GPU it cannot see stops at once."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lokiml import runtime
from lokiml.errors import LokimlError

SCRIPTS = Path(__file__).resolve().parents[2] / "workflow" / "scripts"


def seen(**kw):
    base = {"backend": "tensorflow", "backend_version": "2.21.0", "build": "CPU only", "built_with_cuda": False,
            "gpus": [], "compute_capability": [], "cuda_visible_devices": None, "scheduler_job": "SLURM_JOB_ID=7",
            "nvidia_smi": {"found": True, "gpus": ["NVIDIA H200 (143771 MiB)"], "driver": "580.1", "error": None}}
    return {**base, **kw}


def test_a_gpu_job_without_a_gpu_stops_and_says_why():
    with pytest.raises(runtime.DeviceError) as err:
        runtime.check_gpu(seen(), 1, what="rule train_model")
    msg = str(err.value)
    assert isinstance(err.value, LokimlError)
    assert "rule train_model asked for 1 GPU(s)" in msg and "SLURM_JOB_ID=7" in msg
    assert "CPU-only build" in msg and "tensorflow[and-cuda]==2.21.0" in msg
    assert "cpu_fallback: true" in msg and "--resources gpu=0" in msg

    hidden = seen(cuda_visible_devices="", built_with_cuda=True, build="CUDA 12.5")
    msg = str(pytest.raises(runtime.DeviceError, runtime.check_gpu, hidden, 1).value)
    assert "CUDA_VISIBLE_DEVICES='' hides every GPU" in msg and "scheduler gave this job no GPU" in msg
    assert "CPU-only" not in msg

    mismatch = seen(built_with_cuda=True, build="CUDA 12.5", scheduler_job=None)
    msg = str(pytest.raises(runtime.DeviceError, runtime.check_gpu, mismatch, 2).value)
    assert "nvidia-smi lists 1 GPU(s) (NVIDIA H200 (143771 MiB); driver 580.1) but tensorflow sees none" in msg

    no_driver = seen(nvidia_smi={"found": False, "gpus": [], "driver": None, "error": "nvidia-smi not found"})
    msg = str(pytest.raises(runtime.DeviceError, runtime.check_gpu, no_driver, 1).value)
    assert "no NVIDIA GPU on this machine: nvidia-smi not found" in msg

    jax = seen(backend="jax", backend_version="0.10.2")
    assert "jax[cuda12]==0.10.2" in str(pytest.raises(runtime.DeviceError, runtime.check_gpu, jax, 1).value)


def test_when_a_gpu_job_may_run_on_the_cpu(caplog):
    assert runtime.check_gpu(seen(), 0) is None  # asked for none
    assert runtime.check_gpu(seen(gpus=["NVIDIA H200"]), 1) is None  # has one
    with caplog.at_level("WARNING", logger="lokiml.runtime"):
        assert runtime.check_gpu(seen(), 1, cpu_fallback=True) == "device.cpu_fallback"
    assert "runs on the CPU (device.cpu_fallback: true)" in caplog.text and "CPU-only build" in caplog.text
    # The workstation profile's gpu resource on a machine without any NVIDIA driver, outside a scheduler: a lock.
    laptop = seen(scheduler_job=None, nvidia_smi={"found": False, "gpus": [], "driver": None, "error": "not found"})
    assert runtime.check_gpu(laptop, 1) == "no GPU on this machine"
    with pytest.raises(runtime.DeviceError):  # ... but not where CUDA_VISIBLE_DEVICES says GPUs were meant
        runtime.check_gpu({**laptop, "cuda_visible_devices": "0"}, 1)


def test_precision_choices():
    h100 = {"compute_capability": ["9.0"]}
    v100 = {"compute_capability": ["7.0"]}
    assert runtime.choose_precision("auto", False, {}) == "float32"
    assert runtime.choose_precision("auto", True, h100) == "mixed_bfloat16"
    assert runtime.choose_precision("auto", True, v100) == "mixed_float16"
    assert runtime.choose_precision(True, False, {}) == "mixed_bfloat16"
    assert runtime.choose_precision(False, True, h100) == "float32"
    assert runtime.choose_precision("float16", True, h100) == "mixed_float16"
    assert runtime.choose_precision("bfloat16", True, v100) == "mixed_bfloat16"


def test_job_settings_read_the_gpu_resource_and_the_config():
    class Smk:
        resources = {"gpu": 1, "mem_mb": 100}
        config = {"device": {"cpu_fallback": True}}
        rule = "train_model"

    assert runtime.job_settings(Smk()) == {"gpu_request": 1, "cpu_fallback": True, "what": "rule train_model"}

    class Bare:
        resources = {}
        config = {}

    assert runtime.job_settings(Bare()) == {"gpu_request": 0, "cpu_fallback": False, "what": "rule job"}


def _cli(*args, **env):
    return subprocess.run([sys.executable, "-m", "lokiml.runtime", *args], cwd=SCRIPTS, capture_output=True,
                          text=True, timeout=300, env={**os.environ, **env})


def test_the_cli_says_what_this_machine_offers():
    out = _cli("--json")
    assert out.returncode == 0, out.stderr[-2000:]
    info = json.loads(out.stdout)
    assert info["backend"] in runtime.BACKENDS and info["runtime"]["device"] == ("GPU" if info["gpus"] else "CPU")
    assert info["runtime"]["precision"] in ("float32", "mixed_bfloat16", "mixed_float16")
    text = _cli()
    assert text.returncode == 0 and "Keras backend" in text.stdout and "CUDA_VISIBLE_DEVICES" in text.stdout


def test_the_cli_and_a_training_job_refuse_a_missing_gpu(tmp_path):
    """Inside a (pretended) SLURM job that asked for a GPU, with every GPU hidden: exit 1 / DeviceError at once."""
    out = _cli("--require-gpu", SLURM_JOB_ID="42", CUDA_VISIBLE_DEVICES="")
    assert out.returncode == 1
    assert "CUDA_VISIBLE_DEVICES='' hides every GPU" in out.stderr and "SLURM_JOB_ID=42" in out.stderr

    driver = ("import sys; sys.path.insert(0, %r)\n"
              "from lokiml.train import train_experiment\n"
              "train_experiment('missing.tsv', [], [], ['a', 'b'], *['o'] * 6, state_dir='s', params={}, "
              "gpu_request=1)\n" % str(SCRIPTS))
    res = subprocess.run([sys.executable, "-c", driver], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "SLURM_JOB_ID": "42", "CUDA_VISIBLE_DEVICES": ""})
    assert res.returncode == 1
    assert "DeviceError: training asked for 1 GPU(s)" in res.stderr
    assert "missing.tsv" not in res.stderr  # stopped before reading any input
