"""The scheduling model of benchmarks/bench_demo_parallel.py on small DAGs whose makespan is known by hand."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_demo_parallel as b  # noqa: E402


def job(i, rule, cpu, inputs=(), outputs=(), threads=1):
    return b.Job(i, rule, list(inputs), list(outputs), threads=threads, cpu=cpu, wall=cpu, measured_threads=1)


@pytest.fixture
def dag():
    """prepare -> two trainings (60 s of work each) -> report."""
    jobs = [job(1, "prepare", 10, outputs=["data"]),
            job(2, "train_model", 60, inputs=["data"], outputs=["a"], threads=4),
            job(3, "train_model", 60, inputs=["data"], outputs=["b"], threads=4),
            job(4, "report", 5, inputs=["a", "b"])]
    return jobs, b.dependencies(jobs)


def test_dependencies_follow_files_and_folders():
    jobs = [job(1, "export", 1, outputs=["resources/demo_export"]),
            job(2, "read", 1, inputs=["resources/demo_export/images/x.png", "config.yaml"], outputs=["t.tsv"])]
    assert b.dependencies(jobs) == {1: set(), 2: {1}}


def test_gpu_slot_serialises_model_jobs_and_cores_bound_the_rest(dag):
    jobs, deps = dag
    # one GPU slot: the trainings run one after the other, each on 4 threads (p = 1: 15 s each)
    assert b.simulate(jobs, deps, cores=8, model_threads=4, gpu_slots=1, p=1.0) == pytest.approx(10 + 15 + 15 + 5)
    # no GPU slot: side by side
    assert b.simulate(jobs, deps, cores=8, model_threads=4, gpu_slots=None, p=1.0) == pytest.approx(10 + 15 + 5)
    # 4 cores: 4 threads each, so still one at a time
    assert b.simulate(jobs, deps, cores=4, model_threads=4, gpu_slots=None, p=1.0) == pytest.approx(10 + 30 + 5)
    # p = 0: threads give nothing
    assert b.simulate(jobs, deps, cores=8, model_threads=4, gpu_slots=None, p=0.0) == pytest.approx(10 + 60 + 5)
    # threads are capped at the cores: 2 cores, one training at a time on 2 threads
    assert b.simulate(jobs, deps, cores=2, model_threads=4, gpu_slots=None, p=1.0) == pytest.approx(10 + 60 + 5)


def test_dry_run_listing_is_parsed():
    text = """
[Tue Dec  1 01:36:00 2026]
rule train_model:
    input: results/data/split.tsv, results/features/x/base.npy
    output: results/experiments/a/model.keras
    log: logs/train_model/a.log
    jobid: 12
    benchmark: benchmarks/out/train_model/a.tsv
    wildcards: experiment=a
    threads: 4
    resources: tmpdir=/tmp, gpu=0, runtime=1440, mem_mb=16000
Shell command: None

[Tue Dec  1 01:36:00 2026]
localrule all:
    input: results/experiments/a/model.keras
    jobid: 0
"""
    jobs = b.parse_dry_run(text)
    assert [(j.jobid, j.rule) for j in jobs] == [(12, "train_model"), (0, "all")]
    t = jobs[0]
    assert t.threads == 4 and t.resources["gpu"] == 0 and t.benchmark == "benchmarks/out/train_model/a.tsv"
    assert t.inputs == ["results/data/split.tsv", "results/features/x/base.npy"] and t.wildcards == "experiment=a"
