"""The sbatch line of a GPU job for each GPU recipe of profiles/slurm (README: On a SLURM cluster).

No SLURM here: a stand-in `sbatch` first on PATH writes its arguments to a file and fails, so Snakemake
stops after the first submission. The train_model job of a copy of the shared tiny run is forced, so it
is the one submitted. Each variant edits the profile as its comment says a user would.
"""

import os
import shlex
import shutil
import subprocess
import sys

import pytest
import yaml

from project_copy import local_env
from test_workflow import shared_tiny_run

pytestmark = pytest.mark.workflow

FAKES = {
    # records every call; fails, so that nothing waits for a job that was never queued
    "sbatch": '#!/bin/sh\nprintf "%s\\n" "$*" >> "$SBATCH_CALLS"\necho "sbatch: error: stand-in" >&2\nexit 1\n',
    # the plugin checks the account with sacctmgr (then sshare) before it submits
    "sacctmgr": "#!/bin/sh\necho acc\n",
    "sshare": "#!/bin/sh\necho acc\n",
    "sinfo": "#!/bin/sh\nexit 0\n",
    "squeue": "#!/bin/sh\nexit 0\n",
    "sacct": "#!/bin/sh\nexit 0\n",
}


@pytest.fixture(scope="module")
def cluster(project_root, tmp_path_factory):
    wd = shared_tiny_run(project_root, tmp_path_factory)
    copy = tmp_path_factory.mktemp("slurm") / "wd"
    shutil.copytree(wd, copy, symlinks=True)
    bin_dir = copy / "fake-bin"
    bin_dir.mkdir()
    for name, text in FAKES.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return copy, bin_dir


def submit(cluster, edit=None):
    """The sbatch arguments of train_model with profiles/slurm, after `edit(profile_dict)`."""
    wd, bin_dir = cluster
    profile = yaml.safe_load((wd / "profiles" / "slurm" / "config.yaml").read_text())
    if edit:
        edit(profile)
    variant = wd / "profiles" / "slurm-variant"
    variant.mkdir(exist_ok=True)
    (variant / "config.yaml").write_text(yaml.safe_dump(profile))
    calls = wd / "sbatch_calls.txt"
    calls.unlink(missing_ok=True)
    env = local_env(SBATCH_CALLS=str(calls))
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    cmd = [sys.executable, "-m", "snakemake", "--workflow-profile", str(variant),
           "--default-resources", "slurm_account=acc", "slurm_partition=cpu",
           "--retries", "0", "--forcerun", "train_model", "results/experiments/tiny/model.keras",
           "--configfile", "config/config.yaml", "tiny.yaml"]
    res = subprocess.run(cmd, cwd=wd, capture_output=True, text=True, timeout=300, env=env)
    assert calls.exists(), f"sbatch was never called:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    first = calls.read_text().splitlines()[0]
    assert "rule_train_model" in first, first
    args = shlex.split(first)
    return [a for a in args if not a.startswith("--wrap")], res


def option(args, name):
    """The values of `--name=value` / `--name value` in an sbatch argument list."""
    out = []
    for i, a in enumerate(args):
        if a.startswith(f"--{name}="):
            out.append(a.split("=", 1)[1])
        elif a == f"--{name}" and i + 1 < len(args):
            out.append(args[i + 1])
    return out


def test_shipped_profile_asks_for_one_gpu(cluster):
    args, _ = submit(cluster)
    assert option(args, "gpus") == ["1"], args
    assert option(args, "gres") == []
    assert option(args, "cpus-per-gpu") == ["8"]
    assert option(args, "account") == ["acc"] or "-A acc" in " ".join(args) or "--account acc" in " ".join(args)


def test_gres_replaces_gpus(cluster):
    args, _ = submit(cluster, lambda p: p["set-resources"]["train_model"].update(gres="gpu:1"))
    assert option(args, "gres") == ["gpu:1"], args
    assert option(args, "gpus") == [], "the GPU is asked for twice"


def test_gres_with_a_gpu_type(cluster):
    args, _ = submit(cluster, lambda p: p["set-resources"]["train_model"].update(gres="gpu:a100:1"))
    assert option(args, "gres") == ["gpu:a100:1"] and option(args, "gpus") == [], args


def test_gpu_model_and_partition(cluster):
    def edit(p):
        p["set-resources"]["train_model"].update(gpu_model="a100", slurm_partition="gpu")

    args, _ = submit(cluster, edit)
    assert option(args, "gpus") == ["a100:1"] and option(args, "gres") == [], args
    joined = " ".join(args)
    assert "-p gpu" in joined or "--partition gpu" in joined or "--partition=gpu" in joined, joined


def test_two_gpus(cluster):
    args, _ = submit(cluster, lambda p: p["set-resources"]["train_model"].update(gpu=2))
    assert option(args, "gpus") == ["2"] and option(args, "gres") == [], args
