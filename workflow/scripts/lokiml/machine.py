"""What the machine that runs Snakemake offers its jobs: GPUs, without importing a deep-learning library.

Read at DAG-build time (``workflow/rules/common.smk``), so it must be instant and never fail: it looks
at ``CUDA_VISIBLE_DEVICES``, the NVIDIA driver's ``/proc/driver/nvidia/gpus`` and, where neither
says anything, ``nvidia-smi -L`` (with a short timeout).

The count decides whether the model jobs of a local run (workstation profile) hold a ``gpu`` slot:
with GPUs, each model job takes the one slot (``resources: gpu=1`` of the profile), so two jobs
never share a GPU; without GPUs they take none and run side by side, as many as the cores allow.
On a cluster the profile asks for the GPUs explicitly (profiles/slurm: ``set-resources``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

#: Values of CUDA_VISIBLE_DEVICES that hide every GPU (SLURM writes NoDevFiles when it gave none).
HIDDEN = ("", "-1", "none", "nodevfiles", "void")
PROC_GPUS = Path("/proc/driver/nvidia/gpus")


def local_gpu_count(environ=None, proc_gpus: Path = PROC_GPUS, smi: str | None = "nvidia-smi") -> int:
    """Number of NVIDIA GPUs a job started here could use (0 when unknown or none).

    ``CUDA_VISIBLE_DEVICES`` set: 0 when it hides every GPU, else the number of devices it names,
    at most the driver's count where the driver says. Otherwise the driver's count
    (``/proc/driver/nvidia/gpus``), else ``nvidia-smi -L``'s.
    """
    environ = os.environ if environ is None else environ
    driver = _driver_count(proc_gpus, smi)
    cvd = environ.get("CUDA_VISIBLE_DEVICES")
    if cvd is not None:
        if cvd.strip().lower() in HIDDEN:
            return 0
        named = len([d for d in cvd.split(",") if d.strip()])
        return min(named, driver) if driver else 0
    return driver


def _driver_count(proc_gpus: Path, smi: str | None) -> int:
    try:
        if proc_gpus.is_dir():
            return sum(1 for p in proc_gpus.iterdir() if p.is_dir())
    except OSError:
        pass
    exe = shutil.which(smi) if smi else None
    if not exe:
        return 0
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return 0
    if out.returncode != 0:
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))
