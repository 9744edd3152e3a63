"""The demo's wall time on 2 cores, measured, and on more cores, modelled from its measured jobs.

    .venv/bin/python benchmarks/bench_demo_parallel.py                 # runs the demo on 2 cores first (minutes)
    .venv/bin/python benchmarks/bench_demo_parallel.py --from DIR      # a finished demo run (make run) in DIR
    .venv/bin/python benchmarks/bench_demo_parallel.py --smoke         # no run: the demo's DAG, made-up times

1. The demo (``config/demo.yaml``, profile ``profiles/workstation``) runs in a copy of the project on
   ``--cores`` cores (default 2), from scratch; its wall time is measured (Snakemake's start-up
   included), with the machine's load average before and after.
2. A dry run of the same workflow (``-n --forceall``) lists every job: rule, inputs, outputs,
   threads, resources and benchmark file. A job depends on the jobs whose outputs it reads.
3. Each job's measured wall time and CPU time come from its Snakemake benchmark file, or, for the
   small rules without one, from the "job finished" line of its log (wall time, one thread).
4. A model of a job on ``t`` threads: its CPU time ``W`` (the work, in core-seconds, which a busy
   machine changes far less than wall time) split by Amdahl's law, ``W ((1 - p) + p / t)``, with ``p``
   the parallel fraction. Three values of ``p`` are printed: 1 (every thread fully used: the lower
   bound), 0 (threads give nothing: only jobs side by side help, the upper bound), and ``p``
   calibrated here (``--p`` to give it): training steps of the demo's InceptionV3 at 96 px on 1 and on
   2 threads, alternating in child processes (on a busy machine each thread still gets its share of
   the CPU, so the ratio holds better than the times). Each job's own CPU time / wall time gives its
   ``p`` too, printed for the model jobs, but only on a quiet machine.
5. A simulation of the scheduler on ``C`` cores: jobs start in Snakemake's order as soon as their
   inputs exist and enough cores (and GPU slots) are free, each taking ``min(threads, C)`` cores. Two
   profiles are compared: the old one (every model job holds the one ``gpu`` slot, so model jobs run
   one at a time on 2 threads, as profiles/workstation did before) and the current one (on a machine
   without GPUs model jobs ask for no GPU slot and run side by side, ``--model-threads`` threads each,
   as ``threads:`` of the rules or the profile's ``set-threads`` give them).

The model is checked against the measurement: the 2-core simulation should come near the measured
wall time on a quiet machine (the difference is Snakemake's own overhead: job start-up, the DAG, the
local rules in its own process). More cores were not available where this was written (a 2-core CI
machine); the figures for more cores are this model's, not measurements. The job logs' forward-pass
lines (lokiml/base_features.py) are summed too: how often stored images went through which network.
"""

from __future__ import annotations

import argparse
import heapq
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
COPY = ["config", "workflow", "profiles"]  # workflow/Snakefile: the catalog layout (issue 18)
MODEL_RULES = {"train_model", "evaluate_model", "extract_deep_features", "predict_images", "compute_base_features"}
SMOKE_SECONDS = {"train_model": 60.0, "evaluate_model": 15.0, "normalise_images": 4.0, "read_export": 3.0,
                 "extract_deep_features": 10.0, "compute_base_features": 20.0}  # --smoke: made-up CPU seconds


@dataclass
class Job:
    jobid: int
    rule: str
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    benchmark: str | None = None
    threads: int = 1
    resources: dict = field(default_factory=dict)
    wildcards: str = ""
    wall: float = 0.0       # measured
    cpu: float = 0.0        # measured work, core-seconds
    measured_threads: int = 1

    @property
    def name(self) -> str:
        return f"{self.rule}[{self.wildcards}]" if self.wildcards else self.rule


def _split_paths(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def parse_dry_run(text: str) -> list[Job]:
    """Jobs of a ``snakemake -n`` listing (rule, jobid, input, output, log, benchmark, threads, resources)."""
    jobs, cur = [], None
    for line in text.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):$", line.strip())
        if m:
            cur = Job(-1, m.group(1))
            jobs.append(cur)
            continue
        if cur is None:
            continue
        m = re.match(r"^\s+(input|output|log|benchmark|jobid|threads|resources|wildcards): (.*)$", line)
        if not m:
            if not line.strip() or not line.startswith(" "):
                cur = None if not line.startswith(" ") and line.strip() else cur
            continue
        key, value = m.groups()
        if key == "input":
            cur.inputs = _split_paths(value)
        elif key == "output":
            cur.outputs = _split_paths(value)
        elif key == "log":
            cur.log = _split_paths(value)
        elif key == "benchmark":
            cur.benchmark = value.strip()
        elif key == "jobid":
            cur.jobid = int(value)
        elif key == "threads":
            cur.threads = int(value)
        elif key == "wildcards":
            cur.wildcards = value.strip()
        elif key == "resources":
            for part in _split_paths(value):
                k, _, v = part.partition("=")
                try:
                    cur.resources[k] = float(v)
                except ValueError:
                    cur.resources[k] = v
    return [j for j in jobs if j.jobid >= 0]


def dependencies(jobs: list[Job]) -> dict[int, set[int]]:
    """jobid -> jobids whose outputs it reads (an input inside an output folder counts too)."""
    producer = {}
    for j in jobs:
        for out in j.outputs:
            producer[out.rstrip("/")] = j.jobid
    deps = {}
    for j in jobs:
        d = set()
        for inp in j.inputs:
            p = inp.rstrip("/")
            while p:
                if p in producer and producer[p] != j.jobid:
                    d.add(producer[p])
                    break
                p = os.path.dirname(p)
        deps[j.jobid] = d
    return deps


def measure(jobs: list[Job], wd: Path, cores: int) -> list[str]:
    """Fill each job's measured wall and CPU time from its benchmark file or log; returns the jobs without either."""
    missing = []
    for j in jobs:
        j.measured_threads = max(1, min(j.threads, cores))
        bench = wd / j.benchmark if j.benchmark else None
        if bench is not None and bench.exists():
            row = pd.read_csv(bench, sep="\t").iloc[-1]
            j.wall, j.cpu = float(row["s"]), float(row["cpu_time"])
            continue
        secs = None
        for log in j.log:
            path = wd / log
            if path.exists():
                for line in path.read_text(errors="replace").splitlines():
                    if "job finished:" in line:
                        secs = float(line.split("job finished: ")[1].split(" s")[0])
        if secs is None:
            if j.rule != "all":
                missing.append(j.name)
            secs = 0.0
        j.wall = j.cpu = secs
    return missing


def forward_passes(wd: Path) -> dict[str, list[tuple[str, int]]]:
    """network -> [(job log, images)] from the jobs' "forward passes: N images through ..." lines."""
    out: dict[str, list[tuple[str, int]]] = {}
    for log in sorted((wd / "logs").rglob("*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if "forward passes: " in line:
                n, network = line.split("forward passes: ")[1].split(" images through ")
                out.setdefault(network.strip(), []).append((str(log.relative_to(wd / "logs")), int(n)))
    return out


def parallel_fraction(j: Job) -> float:
    """Amdahl's p from the job's own run: utilisation u = cpu / wall on t threads, u = 1 / ((1 - p) + p / t)."""
    t = j.measured_threads
    if t <= 1 or j.wall <= 0 or j.cpu <= 0:
        return 0.0
    u = j.cpu / j.wall
    return min(1.0, max(0.0, (1 - 1 / u) / (1 - 1 / t)))


def duration(j: Job, threads: int, p: float | None) -> float:
    """Modelled wall time of ``j`` on ``threads`` threads: its work split by Amdahl's law with parallel
    fraction ``p`` (None: the job's own, from its CPU and wall time)."""
    if p is None:
        p = parallel_fraction(j)
    work = j.cpu if j.cpu > 0 else j.wall
    return work * ((1 - p) + p / max(1, threads))


def simulate(jobs: list[Job], deps: dict[int, set[int]], cores: int, model_threads: int, gpu_slots: int | None,
             p: float | None) -> float:
    """Makespan of a greedy list schedule in Snakemake's job order on ``cores`` cores.

    ``gpu_slots``: None (no GPU limit: model jobs side by side) or the number of GPU slots that
    every model job holds one of. Model jobs run on ``model_threads`` threads, the others on their
    rule's threads, each capped at ``cores``.
    """
    by_id = {j.jobid: j for j in jobs}
    order = sorted(by_id)  # Snakemake's job ids follow the DAG (a stable, duration-blind order)
    remaining = {i: set(deps[i]) for i in order}
    done: set[int] = set()
    running: list[tuple[float, int]] = []
    free_cores, free_gpu, now = cores, gpu_slots, 0.0
    started: set[int] = set()

    def threads_of(j: Job) -> int:
        return max(1, min(cores, model_threads if j.rule in MODEL_RULES else j.threads))

    while len(done) < len(order):
        for i in order:
            if i in started or remaining[i] - done:
                continue
            j = by_id[i]
            t = threads_of(j)
            needs_gpu = gpu_slots is not None and j.rule in MODEL_RULES
            if t > free_cores or (needs_gpu and free_gpu < 1):
                continue
            free_cores -= t
            if needs_gpu:
                free_gpu -= 1
            started.add(i)
            heapq.heappush(running, (now + duration(j, t, p), i))
        if not running:
            raise RuntimeError("no job can start: a cycle or a job needing more than the machine")
        now, i = heapq.heappop(running)
        done.add(i)
        j = by_id[i]
        free_cores += threads_of(j)
        if gpu_slots is not None and j.rule in MODEL_RULES:
            free_gpu += 1
    return now


def step_seconds(threads: int, steps: int) -> float:
    """Seconds per training step of a demo-sized model job on ``threads`` TensorFlow threads (run in a
    child process: TensorFlow's thread pools are set once per process)."""
    import numpy as np

    sys.path.insert(0, str(ROOT / "workflow" / "scripts"))
    from lokiml import models
    from lokiml.runtime import configure

    configure(threads, {"mixed_precision": False})
    model, _ = models.build_model("inceptionv3", 7, 96)  # the demo's InceptionV3 at 96 px, batch 32
    models.compile_model(model, "rmsprop", 0.001)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (32, 96, 96, 1), dtype=np.uint8)
    y = rng.integers(0, 7, 32)
    model.train_on_batch(x, y)  # tracing
    t0 = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return (time.perf_counter() - t0) / steps


def calibrate(max_threads: int, steps: int, rounds: int = 2) -> float:
    """Amdahl's p of a model job from training steps on 1 and ``max_threads`` threads, alternating in
    child processes; the best time of each. Under load each thread gets its share of the CPU, so the
    ratio holds better than the absolute times."""
    best = {1: float("inf"), max_threads: float("inf")}
    for _ in range(rounds):
        for t in best:
            out = subprocess.run([sys.executable, __file__, "--step-time", str(t), "--steps", str(steps)],
                                 capture_output=True, text=True)
            if out.returncode:
                sys.exit(f"calibration failed:\n{out.stderr[-3000:]}")
            best[t] = min(best[t], float(out.stdout.strip().splitlines()[-1]))
    speedup = best[1] / best[max_threads]
    p = (1 - 1 / speedup) / (1 - 1 / max_threads)
    print(f"calibration: a training step of InceptionV3 at 96 px, batch 32: {best[1]:.2f} s on 1 thread, "
          f"{best[max_threads]:.2f} s on {max_threads}: {speedup:.2f}x, parallel fraction p = {min(1, max(0, p)):.2f}")
    return min(1.0, max(0.0, p))


def snakemake(wd: Path, *args: str, cores: int) -> subprocess.CompletedProcess:
    stub = wd / ".stub-bin"  # SLURM's scontrol probe of the executor plugin, where SLURM is installed but idle
    stub.mkdir(exist_ok=True)
    (stub / "scontrol").write_text("#!/bin/sh\nexit 1\n")
    (stub / "scontrol").chmod(0o755)
    env = {**os.environ, "PATH": f"{stub}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run([sys.executable, "-m", "snakemake", "--workflow-profile", "profiles/workstation",
                           "--cores", str(cores), *args, "--configfile", "config/demo.yaml"],
                          cwd=wd, capture_output=True, text=True, env=env)


def copy_project(dest: Path) -> Path:
    for item in COPY:
        src = ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dest / item)
    return dest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--from", dest="source", type=Path, help="a finished demo run (a project folder after make run)")
    ap.add_argument("--cores", type=int, default=2, help="cores of the measured run (default 2)")
    ap.add_argument("--model-cores", default="2,4,8,16,32", help="cores to model (default 2,4,8,16,32)")
    ap.add_argument("--model-threads", default="2,4,8", help="threads per model job to model (default 2,4,8)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary project copy of the run")
    ap.add_argument("--p", type=float, help="parallel fraction of the model jobs (default: calibrated here, from "
                    "training steps on 1 and 2 threads)")
    ap.add_argument("--steps", type=int, default=3, help="training steps per calibration run (default 3)")
    ap.add_argument("--smoke", action="store_true", help="no run: the demo's DAG with made-up job times (seconds)")
    ap.add_argument("--step-time", type=int, help=argparse.SUPPRESS)  # child: seconds per step on N threads
    args = ap.parse_args(argv)
    if args.step_time:
        print(step_seconds(args.step_time, args.steps))
        return 0

    tmp = None
    measured = None
    if args.source:
        wd = args.source.resolve()
    else:
        tmp = Path(tempfile.mkdtemp(prefix="bench_demo_parallel_"))
        wd = copy_project(tmp)
        if not args.smoke:
            load0 = os.getloadavg()[0]
            t0 = time.perf_counter()
            res = snakemake(wd, cores=args.cores)
            measured = time.perf_counter() - t0
            if res.returncode:
                sys.exit(f"the demo failed in {wd}:\n{(res.stdout + res.stderr)[-4000:]}")
            print(f"demo on {args.cores} cores (measured, from scratch, Snakemake's start-up included): "
                  f"{measured:.0f} s; load average {load0:.1f} before, {os.getloadavg()[0]:.1f} after "
                  f"({os.cpu_count()} CPUs){'' if max(load0, os.getloadavg()[0]) < 1.5 * args.cores else ': a busy machine, rerun it on a quiet one'}")

    # threads as the rules (and the profile) give them: a dry run on --cores N caps them at N
    dry = snakemake(wd, "-n", "--forceall", "--nolock", cores=max(args.cores, 64))
    if dry.returncode:
        sys.exit(f"dry run failed in {wd}:\n{(dry.stdout + dry.stderr)[-4000:]}")
    jobs = parse_dry_run(dry.stdout + dry.stderr)
    deps = dependencies(jobs)
    if args.smoke:
        for j in jobs:
            j.cpu = SMOKE_SECONDS.get(j.rule, 1.0)
            j.wall = j.cpu / (1.6 if j.threads > 1 else 1.0)
            j.measured_threads = min(j.threads, args.cores)
        print(f"smoke run: the demo's DAG ({len(jobs)} jobs), made-up job times")
    else:
        missing = measure(jobs, wd, args.cores)
        if missing:
            print(f"no time found for {len(missing)} job(s), counted as 0 s: {', '.join(missing[:8])}")
        passes = forward_passes(wd)
        print(f"forward passes of stored images, from the job logs: {sum(n for v in passes.values() for _, n in v)} "
              f"through {len(passes)} networks")
        for network, where in sorted(passes.items()):
            print(f"  {sum(n for _, n in where):6d} through {network}: "
                  + ", ".join(f"{n} in {log}" for log, n in where))
    if tmp is not None and not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)

    model_jobs = [j for j in jobs if j.rule in MODEL_RULES]
    print(f"{len(jobs)} jobs, {len(model_jobs)} model jobs; work {sum(j.cpu for j in jobs):.0f} CPU-s, of which "
          f"model jobs {sum(j.cpu for j in model_jobs):.0f}; sum of measured wall times {sum(j.wall for j in jobs):.0f} s")
    ps = [parallel_fraction(j) for j in model_jobs if j.measured_threads > 1]
    if ps:
        print(f"parallel fraction of the model jobs from their own CPU/wall time on {args.cores} threads: median "
              f"{sorted(ps)[len(ps) // 2]:.2f} (min {min(ps):.2f}, max {max(ps):.2f}; near 0 on a busy machine)")
    if args.p is not None:
        p = args.p
    elif args.smoke:
        p = 0.75  # made up, like the job times
    else:
        p = calibrate(2, args.steps)
    old = simulate(jobs, deps, args.cores, 2, 1, p)
    print(f"model check, {args.cores} cores, old profile, p = {p:.2f}: {old:.0f} s"
          + (f" vs {measured:.0f} s measured ({measured / old:.2f}x: Snakemake's own overhead, and the load)"
             if measured else ""))

    cores = [int(c) for c in args.model_cores.split(",")]
    threads = [int(t) for t in args.model_threads.split(",")]
    print(f"\nmodelled wall time of the demo (s), without Snakemake's overhead; every job's work as measured, "
          f"spread over its threads with p = 1 / {p:.2f} / 0")
    print(f"  {'profile':<52s}" + "".join(f"{f'{c} cores':>22s}" for c in cores))
    rows = [("old: one model job at a time (gpu=1), 2 threads", 2, 1)]
    rows += [(f"now, no GPU: model jobs side by side, {t} threads", t, None) for t in threads]
    for label, t, gpu in rows:
        cells = []
        for c in cores:
            lo, mid, hi = (simulate(jobs, deps, c, t, gpu, q) for q in (1.0, p, 0.0))
            cells.append(f"{lo:6.0f} /{mid:6.0f} /{hi:6.0f}")
        print(f"  {label:<52s}" + "".join(f"{cell:>22s}" for cell in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
