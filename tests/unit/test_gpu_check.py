"""benchmarks/gpu_check.sh in its smoke mode (tiny sizes, the JAX backend on the CPU): every part runs and
reports, so the script is known to work before it goes to the GPU machine."""

import json
import os
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("jax")
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_check_smoke_mode_runs_every_part(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax_cache"),
           "PYTHON": os.environ.get("PYTHON", str(Path(os.sys.executable)))}
    res = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--smoke", "--work", str(tmp_path / "work")], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=1000)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.json", "gpu_check.log"]  # what comes back
    report = json.loads((out / "gpu_check.json").read_text())
    parts = {p["part"]: p for p in report["parts"]}
    assert report["smoke"] and report["seconds"] < report["budget_s"]
    assert report["runtime"]["backend"] == "jax" and report["versions"]["keras"]
    assert "bf16_tflops" in parts["peak"] or "skipped" in parts["peak"]  # no CUDA here: skipped, said why

    learn = parts["learn"]
    assert "error" not in learn, learn.get("error")
    assert learn["first_run"]["returncode"] == -9 and learn["second_run"]["resumed"]
    assert learn["resumed_from_epoch"] == 1 and learn["epochs_run"] == 3 and learn["backend"] == "jax"
    assert set(learn["test_recall"]) == {"circle", "square", "cross", "ring"} and isinstance(learn["learned"], bool)

    measured = 0
    for kind, precision in (("extract", "mixed_bfloat16"), ("train", "mixed_bfloat16"), ("train", "float32"),
                            ("extract", "float32")):
        p = parts.get(f"vgg16 32px {kind} {precision}")
        if p is None or "skipped" in p:  # allowed, with its reason, when the machine is too slow for the budget
            assert p is not None or any("pass" in name and "skipped" in q for name, q in parts.items())
            assert p is None or "s left" in p["skipped"]
            continue
        measured += 1
        assert p["images_per_s"] > 0 and p["tflops"] > 0 and 0 < p["fraction_of_bf16_peak"] < 1
        assert p["forward_gflops_per_image"] == pytest.approx(0.63, rel=0.05)  # VGG16 at 32 px
        assert p["compile_seconds"] >= 0 and (p.get("peak_gib") or p.get("peak_rss_gib"))
    assert measured >= 2, "pass 1 (bf16 extraction and training) fits the smoke budget"
    assert "images/s" in res.stdout and "total" in res.stdout
