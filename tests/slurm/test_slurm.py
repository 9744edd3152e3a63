"""The workflow on a real SLURM cluster, through the Snakemake SLURM executor plugin.

tests/slurm/start-slurm.sh installs SLURM with apt and starts a one-node cluster on this
machine (accounting in MariaDB, one fake GPU), so this needs root on Debian or Ubuntu. It
is skipped, with the reason, where that is not possible, except under CI (CI=true), where
it must run and fails instead.

The tiny workflow runs in a copy of the project through profiles/slurm-test. The checks:
the heavy rules ran as SLURM jobs (sacct) with the resources the profile asks for, the
small rules ran locally, the results are those of a local run, and a training job that
SLURM kills resumes from its last completed epoch in Snakemake's retry.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time

import pandas as pd
import pytest
from project_copy import make_copy

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

HERE = os.path.dirname(os.path.abspath(__file__))
SLURM_RULES = {"read_export", "normalise_images", "train_model", "evaluate_model"}  # must be SLURM jobs
LOCAL_RULES = {"make_demo_export", "balance_classes", "split_dataset", "summarise_data", "make_demo_weights",
               "plot_data_summary", "make_leaderboard", "all"}  # small: must run inside Snakemake
GPU_RULES = {"train_model", "evaluate_model", "predict_images", "compute_base_features"}
RUN_SECONDS = 900  # one workflow run; Snakemake ignores SIGTERM while it polls SLURM, hence timeout -k
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL",
                "DEADLINE", "PREEMPTED"}


def unavailable(reason):
    """Skip, or fail under CI, where the SLURM test must run."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true, so the SLURM test must run, but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def cluster():
    """A running one-node SLURM cluster; stopped at the end unless it was running before."""
    if not sys.platform.startswith("linux") or not shutil.which("apt-get"):
        unavailable("the SLURM test needs Debian or Ubuntu (it installs SLURM with apt-get)")
    if os.geteuid() != 0:
        unavailable("the SLURM test needs root (it installs SLURM with apt-get and starts its daemons)")
    started = os.path.join(os.environ.get("LOKIML_SLURM_STATE", "/run/lokiml-slurm"), "started")
    was_running = os.path.exists(started) and os.path.getsize(started) > 0
    try:
        res = subprocess.run(["bash", os.path.join(HERE, "start-slurm.sh")], capture_output=True, text=True,
                             timeout=1200)
        failure = None if res.returncode == 0 else (res.stdout + res.stderr)[-3000:]
    except subprocess.TimeoutExpired:
        failure = "it did not finish in 1200 s"
    if failure:
        subprocess.run(["bash", os.path.join(HERE, "stop-slurm.sh")])
        unavailable(f"the SLURM test cluster could not be installed or started (tests/slurm/start-slurm.sh):\n"
                    f"{failure}")
    yield
    if not was_running:
        subprocess.run(["bash", os.path.join(HERE, "stop-slurm.sh")], timeout=120)




def snakemake_cmd(*args, configfiles=("tiny.yaml",)):
    """Snakemake with the tiny config; targets go first in args (--configfile takes all words after it)."""
    cmd = ["timeout", "-k", "30", str(RUN_SECONDS), sys.executable, "-m", "snakemake", *args,
           "--configfile", "config/config.yaml", *configfiles]
    return cmd, dict(os.environ, PYTHONHASHSEED="0")


def run_id_of(log_text):
    m = re.search(r"SLURM run ID: (\S+)", log_text)
    return m.group(1) if m else None


def job_stats(log_text):
    """Rule -> number of jobs, from the 'Job stats' table Snakemake prints first."""
    table = log_text.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m[0]: int(m[1]) for m in re.findall(r"^(\w+)\s+(\d+)\s*$", table, re.MULTILINE)}


def slurm_logs(wd):
    """The SLURM job logs of a run (tails), for failure messages."""
    out = []
    for root, _, files in os.walk(wd / ".snakemake" / "slurm_logs"):
        for f in sorted(files):
            with open(os.path.join(root, f), errors="replace") as fh:
                out.append(f"--- {os.path.join(root, f)}\n{fh.read()[-1500:]}")
    return "\n".join(out)


def check_run(wd, returncode, log_text):
    if returncode != 0:
        run_id = run_id_of(log_text)
        if run_id:  # leave no job of a failed run in the queue
            subprocess.run(["scancel", "--name", run_id])
        raise AssertionError(f"snakemake failed ({returncode}) in {wd}:\n{log_text[-6000:]}\n{slurm_logs(wd)}")


def sacct(run_id, expect_jobs, wait=60):
    """This run's SLURM jobs, once slurmdbd has recorded them all in a final state (it lags a little)."""
    cols = ["JobID", "JobName", "Account", "Partition", "Timelimit", "State", "AllocTRES", "ReqTRES", "Comment",
            "Elapsed"]
    cmd = ["sacct", "-X", "--duplicates", "--parsable2", "--noheader", "--starttime", "now-2days",
           "--name", run_id, "--format", ",".join(cols)]
    deadline = time.monotonic() + wait
    while True:
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        table = pd.DataFrame([line.split("|") for line in out.splitlines() if line.strip()], columns=cols)
        table["state"] = table["State"].str.split().str[0]  # "CANCELLED by 0" -> CANCELLED
        table["rule"] = table["Comment"].str.extract(r"^rule_(.+?)(?:_wildcards_.*)?$", expand=False)
        if (len(table) >= expect_jobs and table["state"].isin(FINAL_STATES).all()) or time.monotonic() > deadline:
            return table, "|".join(cols) + "\n" + out


def tres(field):
    """'billing=2,cpu=2,gres/gpu=1,mem=4000M,node=1' -> dict."""
    return dict(item.split("=", 1) for item in field.split(",") if "=" in item)


@pytest.fixture(scope="module")
def local_run(project_root, tmp_path_factory):
    """The tiny workflow, run locally, to compare with."""
    wd = make_copy(project_root, tmp_path_factory.mktemp("local"))
    cmd, env = snakemake_cmd("--cores", "2")
    res = subprocess.run(cmd, cwd=wd, capture_output=True, text=True, env=env, timeout=RUN_SECONDS + 60)
    check_run(wd, res.returncode, res.stdout + res.stderr)
    return wd


@pytest.fixture(scope="module")
def slurm_run(cluster, project_root, tmp_path_factory):
    """The tiny workflow, run through SLURM: (work dir, Snakemake's log, sacct table of its jobs)."""
    wd = make_copy(project_root, tmp_path_factory.mktemp("slurm"))
    start = time.monotonic()
    cmd, env = snakemake_cmd("--workflow-profile", "profiles/slurm-test")
    res = subprocess.run(cmd, cwd=wd, capture_output=True, text=True, env=env, timeout=RUN_SECONDS + 60)
    log_text = res.stdout + res.stderr
    (wd / "snakemake.log").write_text(log_text)
    check_run(wd, res.returncode, log_text)
    print(f"\ntiny workflow on SLURM: {time.monotonic() - start:.0f} s")
    run_id = run_id_of(log_text)
    assert run_id, "no 'SLURM run ID' in Snakemake's log: did it use the SLURM executor?"
    stats = job_stats(log_text)
    local = {rule for rule in stats if f"localrule {rule}:" in log_text}
    table, raw = sacct(run_id, expect_jobs=sum(n for rule, n in stats.items() if rule not in local))
    print(raw)
    return wd, log_text, stats, local, table


def test_cluster_profile_gives_the_gpu_rules_a_gpu(project_root, tmp_path):
    """profiles/slurm (for real clusters) is valid and asks for a GPU; needs no cluster."""
    wd = make_copy(project_root, tmp_path)
    cmd, env = snakemake_cmd("--workflow-profile", "profiles/slurm", "--dry-run")
    res = subprocess.run(cmd, cwd=wd, capture_output=True, text=True, env=env, timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    for rule in GPU_RULES & set(job_stats(out)):
        resources = re.search(r"resources: (.*)", out[out.index(f"rule {rule}:"):]).group(1)
        assert "gpu=1" in resources and "cpus_per_gpu=" in resources and "runtime=" in resources, resources


def test_heavy_rules_ran_as_slurm_jobs_and_small_rules_locally(slurm_run):
    wd, log_text, stats, local, table = slurm_run
    assert (table["state"] == "COMPLETED").all(), f"not every SLURM job COMPLETED:\n{table}"
    submitted = {rule: n for rule, n in stats.items() if rule not in local}  # every other job: one SLURM job
    assert table["rule"].value_counts().to_dict() == submitted, f"SLURM jobs per rule, expected {submitted}:\n{table}"
    assert {"read_export", "normalise_images", "train_model"} <= set(submitted), stats
    assert SLURM_RULES & set(stats) <= set(submitted), (stats, local)
    assert LOCAL_RULES & set(stats) <= local, (stats, local)
    assert (table["Account"] == "lokiml").all() and (table["Partition"] == "debug").all(), table


def test_gpu_rules_got_a_gpu_and_their_cpus_and_memory(slurm_run):
    table = slurm_run[-1]
    gpu_jobs = table[table["rule"].isin(GPU_RULES)]
    assert len(gpu_jobs) >= 1, table
    for _, job in gpu_jobs.iterrows():  # profiles/slurm-test: gpu 1, cpus_per_gpu 2, mem_mb 4000
        req, alloc = tres(job["ReqTRES"]), tres(job["AllocTRES"])
        assert req.get("gres/gpu") == "1" and alloc.get("gres/gpu") == "1", job.to_dict()
        assert alloc.get("cpu") == "2", job.to_dict()  # --cpus-per-gpu is resolved at allocation: ReqTRES says 1
        assert req.get("mem") == "4000M" and alloc.get("mem") == "4000M", job.to_dict()
        # what was asked for (finished jobs stay in slurmctld for MinJobAge = 1 h): --gpus=1 --cpus-per-gpu=2
        asked = subprocess.run(["scontrol", "show", "job", "-o", job["JobID"]], capture_output=True, text=True,
                               check=True).stdout.split()
        assert "TresPerJob=gres:gpu:1" in asked and "CpusPerTres=gres:gpu:2" in asked, asked
    train = table[table["rule"] == "train_model"].iloc[0]
    assert train["Timelimit"] == "00:20:00", train.to_dict()
    for _, job in table[table["rule"] == "normalise_images"].iterrows():  # set-threads 1, mem_mb 1000, no GPU
        req, alloc = tres(job["ReqTRES"]), tres(job["AllocTRES"])
        assert req.get("cpu") == "1" and req.get("mem") == "1000M", job.to_dict()
        assert "gres/gpu" not in alloc, job.to_dict()


@pytest.mark.parametrize("path", [
    "results/data/objects.tsv", "results/data/ledger.tsv", "results/data/balanced.tsv", "results/data/split.tsv",
    "results/data/summary.tsv", "results/data/images/48px/shard0.npy", "results/data/images/48px/shard0.tsv",
    "results/data/images/48px/shard1.npy", "results/data/images/48px/shard1.tsv",
    "results/experiments/tiny/classes.txt"])
def test_same_results_as_a_local_run(slurm_run, local_run, path):
    assert (slurm_run[0] / path).read_bytes() == (local_run / path).read_bytes(), path


def test_same_training_as_a_local_run(slurm_run, local_run):
    """Training on CPU is deterministic: the same history (the seconds per epoch aside)."""
    path = "results/experiments/tiny/history.tsv"
    on_slurm, local = pd.read_csv(slurm_run[0] / path, sep="\t"), pd.read_csv(local_run / path, sep="\t")
    assert list(on_slurm.columns) == list(local.columns) and len(on_slurm) == len(local) > 0, (on_slurm, local)
    pd.testing.assert_frame_equal(on_slurm.drop(columns=["seconds"]), local.drop(columns=["seconds"]),
                                  check_exact=False, rtol=1e-5, atol=1e-6)


def test_training_killed_by_slurm_resumes_from_its_last_epoch(slurm_run, tmp_path):
    """SLURM kills the training step after its first epoch; Snakemake's retry goes on from the saved epoch.

    The kill is `scancel --signal=KILL <job>.0` (the job then ends FAILED, as after the OOM killer or a
    crash; a time limit ends it TIMEOUT, which takes the same path). A plain `scancel <job>` would not
    do: its sacct state "CANCELLED by <uid>" is not recognised by snakemake-executor-plugin-slurm 2.8.0,
    which then waits for the job forever.
    """
    wd = tmp_path / "killed"
    shutil.copytree(slurm_run[0], wd, symlinks=True)  # the data stage is done: only training reruns
    shutil.rmtree(wd / ".snakemake" / "slurm_logs")
    state = wd / "resources" / "train_state" / "tiny"
    epochs = 6  # trained from scratch, so every epoch runs the network: seconds each, and the kill lands mid-way
    (wd / "longer.yaml").write_text(f"experiments:\n  tiny:\n    weights: none\n    epochs: {epochs}\n")
    cmd, env = snakemake_cmd("results/experiments/tiny/model.keras", "--workflow-profile", "profiles/slurm-test",
                             configfiles=("tiny.yaml", "longer.yaml"))
    killed = None
    with open(wd / "snakemake.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=wd, stdout=log, stderr=subprocess.STDOUT, env=env)
        while proc.poll() is None:
            time.sleep(0.2)
            if killed or not (state / "state.json").exists():
                continue
            running = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i|%k"], capture_output=True,
                                     text=True, check=True).stdout.split()
            jobs = [j.split("|")[0] for j in running if j.endswith("|rule_train_model_wildcards_tiny")]
            if jobs:  # the job step (srun) in which Snakemake runs the training script
                killed = f"{jobs[0]}.0"
                subprocess.run(["scancel", "--signal=KILL", killed], check=True)
        proc.wait()
    log_text = (wd / "snakemake.log").read_text()
    check_run(wd, proc.returncode, log_text)
    assert killed, f"the training job was never caught running after its first epoch:\n{log_text[-3000:]}"
    table, raw = sacct(run_id_of(log_text), expect_jobs=2)
    print(raw)
    assert table["rule"].tolist() == ["train_model", "train_model"], raw
    assert table["state"].tolist() == ["FAILED", "COMPLETED"], raw
    train_log = (wd / "logs" / "train_model" / "tiny.log").read_text()
    resumed = re.findall(r"resuming from epoch (\d+)", train_log)
    assert len(resumed) == 1 and 1 <= int(resumed[0]) < epochs, train_log[-4000:]
    history = pd.read_csv(wd / "results" / "experiments" / "tiny" / "history.tsv", sep="\t")
    assert history["epoch"].tolist() == list(range(1, epochs + 1)), history  # every epoch, once
    info = json.loads((wd / "results" / "experiments" / "tiny" / "train_info.json").read_text())
    assert info["resumed_from_epoch"] == int(resumed[0]), info
