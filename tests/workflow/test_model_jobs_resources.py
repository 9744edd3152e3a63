"""Threads and GPU slots of the model jobs, as a dry run of the workstation profile shows them.

Threads come from the rules' `threads:` (lokiml's MODEL_THREADS), changeable per rule with
`set-threads`; a machine without GPUs gives model jobs no `gpu` slot, so they run side by side; a
machine with GPUs (here a stand-in nvidia-smi) gives each one the profile's single slot.
"""

import subprocess
import sys

import pytest
from project_copy import local_env, make_copy

pytestmark = pytest.mark.workflow

MODEL_RULES = ("train_model", "evaluate_model", "extract_deep_features")


def dry_run_jobs(wd, *extra, env=None):
    """{rule: [(threads, {resource: value})...]} of a dry run with the workstation profile."""
    res = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--workflow-profile", "profiles/workstation",
                          *extra, "--configfile", "config/config.yaml", "config/demo.yaml"],
                         cwd=wd, capture_output=True, text=True, env=env or local_env(), timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    jobs, rule, threads = {}, None, 1
    for line in (res.stdout + res.stderr).splitlines():
        s = line.strip()
        if s.startswith(("rule ", "localrule ")) and s.endswith(":"):
            rule, threads = s.split()[1][:-1], 1
        elif rule and s.startswith("threads:"):
            threads = int(s.split()[1])
        elif rule and s.startswith("resources:"):
            res_ = dict(p.strip().split("=", 1) for p in s[len("resources:"):].split(","))
            jobs.setdefault(rule, []).append((threads, res_))
            rule = None
    return jobs


@pytest.fixture(scope="module")
def wd(project_root, tmp_path_factory):
    return make_copy(project_root, tmp_path_factory.mktemp("resources"))


def test_cpu_only_model_jobs_hold_no_gpu_slot_and_use_the_rule_threads(wd):
    jobs = dry_run_jobs(wd, "--cores", "16")
    for rule in MODEL_RULES:
        assert jobs.get(rule), f"no {rule} job in the demo's dry run"
        for threads, res in jobs[rule]:
            assert res["gpu"] == "0", (rule, res)
            assert threads == 4, (rule, threads)
    # capped at --cores, as before on 2 cores
    assert {t for t, _ in dry_run_jobs(wd, "--cores", "2")["train_model"]} == {2}


def test_threads_can_be_set_per_rule(wd):
    jobs = dry_run_jobs(wd, "--cores", "16", "--set-threads", "train_model=3", "evaluate_model=6")
    assert {t for t, _ in jobs["train_model"]} == {3}
    assert {t for t, _ in jobs["evaluate_model"]} == {6}


def test_with_gpus_every_model_job_holds_the_gpu_slot(wd, tmp_path):
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: Stand-in GPU (UUID: GPU-0)'\n")
    smi.chmod(0o755)
    env = local_env()
    env["PATH"] = f"{tmp_path}:{env['PATH']}"
    env.pop("CUDA_VISIBLE_DEVICES", None)
    jobs = dry_run_jobs(wd, "--cores", "16", env=env)
    for rule in MODEL_RULES:
        assert all(res["gpu"] == "1" for _, res in jobs[rule]), (rule, jobs[rule])
    assert all(res.get("gpu", "0") == "0" for _, res in jobs["normalise_images"])
    # --resources gpu=0 sends them to the CPU (Snakemake caps the request at what is offered)
    jobs = dry_run_jobs(wd, "--cores", "16", "--resources", "gpu=0", env=env)
    assert all(res["gpu"] == "0" for _, res in jobs["train_model"])
