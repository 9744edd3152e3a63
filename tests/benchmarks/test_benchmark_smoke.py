"""Every benchmark runs in its smoke mode (tiny sizes, seconds), so that none can break unnoticed.

The full runs (minutes to hours, on LOKI-sized images) stay out of CI: `make bench` or each script
by hand, figures in benchmarks/README.md. Here each ``benchmarks/bench_*.py`` runs with ``--smoke``
in a child process and must finish, print its comparison (a ratio such as ``1.23x``) and leave no
error. A new benchmark without a ``--smoke`` mode fails here.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from project_copy import local_env

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

BENCHMARKS = sorted((ROOT / "benchmarks").glob("bench_*.py"))
# what each smoke run must print, besides finishing: its comparison or its figures
EXPECTED = {
    "bench_batches.py": [r"PyDataset / tf.data = [\d.]+"],
    "bench_cpu_training.py": [r"^lokiml .*TensorFlow 3x3 convolution peak", r"% of the peak"],
    "bench_decisions.py": [r"the rule: [\d.]+ s = [\d.]+ x reading its inputs"],
    "bench_baselines.py": [r"lokiml [\d.]+ ± .*defaults [\d.]+ ± .*difference"],
    "bench_time_to_accuracy.py": [r"best_val_macro_f1", r"^recipe\t1\t"],
    "bench_cached_features.py": [r"ratio per epoch, full / cached: \d+x", r"whole training of \d+ epochs.*: [\d.]+x"],
    "bench_demo_parallel.py": [r"2 cores", r"\d+ cores"],
    "bench_descriptors.py": [r"plain scikit-learn .*: [\d.]+x"],
    "bench_input.py": [r"uint8 grey.*: +[\d.]+x", r"float32, 3 channels.*: +[\d.]+x", r"whole CPU step"],
    "bench_normalise.py": [r"seed \(step 2 \+ skimage scaling step\).*faster", r"lokiml normalise_shard"],
    "bench_predict.py": [r"ratio \(whole run, wall\): [\d.]+x", r"prepare images.*[\d.]+x"],
    "bench_predict_memory.py": [r"peak RSS at \d+ images vs \d+"],
    "bench_scale.py": [r"read_export: [\d.]+ s", r"data update \(\+1 %\): rerun"],
    "bench_split.py": [r"existing objects"],
}


def test_every_benchmark_has_expectations():
    assert BENCHMARKS, "no benchmarks found"
    missing = sorted({b.name for b in BENCHMARKS} - set(EXPECTED))
    assert not missing, f"add the smoke-run expectations of {missing} to EXPECTED"


@pytest.mark.parametrize("script", BENCHMARKS, ids=[b.name for b in BENCHMARKS])
def test_smoke_mode_runs(script, tmp_path):
    if script.name == "bench_baselines.py" and not (ROOT.parent / "shared" / "data" / "ecotaxa").is_dir() \
            and os.environ.get("CI", "").lower() != "true":
        pytest.skip("bench_baselines measures on ../shared/data/ecotaxa, not found (a fresh clone without it)")
    # OMP_NUM_THREADS=1: scikit-learn's gradient boosting spins OpenMP threads, which on a shared CI
    # machine turns a second into minutes; TensorFlow's threads are set by the benchmarks themselves.
    env = local_env(OMP_NUM_THREADS="1", TMPDIR=str(tmp_path))
    res = subprocess.run([sys.executable, str(script), "--smoke"], cwd=ROOT, capture_output=True, text=True,
                         timeout=900, env=env)
    out = res.stdout + res.stderr
    assert res.returncode == 0, f"{script.name} --smoke failed ({res.returncode}):\n{out[-6000:]}"
    for pattern in EXPECTED.get(script.name, []):
        assert re.search(pattern, res.stdout, re.M), f"{script.name} --smoke printed no line matching {pattern!r}:\n" \
                                               f"{res.stdout[-4000:]}"
    assert "Traceback" not in out, out[-4000:]
