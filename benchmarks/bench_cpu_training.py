"""Benchmark: how much of the CPU lokiml's training uses: GFLOP/s of the default experiments' steps against
TensorFlow's own 3x3 convolution peak measured in the same process, and where the rest goes.

    .venv/bin/python benchmarks/bench_cpu_training.py                 # the demo's sizes (minutes)
    .venv/bin/python benchmarks/bench_cpu_training.py --full-size     # the seed's 1000-1530 px (long)
    .venv/bin/python benchmarks/bench_cpu_training.py --smoke         # seconds: the test runs it

The step that costs CPU time in each CNN experiment of config/config.yaml (the seed's five):

* trained from scratch (``weights: none``): a training step of the whole network
  (:func:`lokiml.models.build_model`, :func:`lokiml.models.compile_model`, ``train_on_batch``),
  3 x the forward FLOPs per image;
* pre-trained (frozen base, cached features): the one pass over the images that computes the base's
  features (``predict_on_batch`` as :func:`lokiml.train.compute_features` runs it), 1 x forward; its
  head then trains on the features in milliseconds.

FLOPs are counted from the architecture (benchmarks/model_flops.py). The reference is TensorFlow's
own rate on 3x3 convolutions of a few typical shapes (NHWC, float32, batch 32), the best of them,
measured in the same process with the same settings: a ratio of the two does not depend on how
loaded the machine is, as long as the load is steady.

Every setting runs in a process of its own (threads, op determinism and oneDNN can be set only once
per process), each measuring its own convolution peak:

* ``lokiml``: as rule train_model runs on a CPU: ``threads`` intra-op threads, op determinism on
  (exact, resumable results), oneDNN on (TensorFlow's default on x86), float32, no XLA;
* ``no determinism``: op determinism off (experiment key ``deterministic: false``);
* ``1 thread``: one intra-op thread (what a job gets when another job takes the second core);
* ``oneDNN off``: ``TF_ENABLE_ONEDNN_OPTS=0``;
* ``XLA``: ``jit_compile=True`` (needs op determinism off);
* ``bfloat16``: Keras mixed bfloat16, where the CPU computes in it (AVX512-BF16 or AMX), else skipped;
* ``NCHW``: the convolution peak in channels-first layout (the models themselves are channels-last).

For the first experiment of the ``lokiml`` setting, the forward pass is also split by layer: every
convolution of the model run alone at its own shapes, against the whole forward pass; the difference is
BatchNormalization, activations, pooling, concatenation and the framework's own cost.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "workflow" / "scripts"))
sys.path.insert(0, str(HERE))

N_CLASSES = 7
CONV_SHAPES = [(32, 56, 56, 64, 64), (32, 28, 28, 128, 128), (32, 14, 14, 256, 256)]  # N, H, W, Cin, Cout
SMOKE_CONV_SHAPES = [(8, 16, 16, 32, 32)]
SETTINGS = {
    "lokiml": {"deterministic": True, "env": {}},
    "no determinism": {"deterministic": False, "env": {}},
    "1 thread": {"deterministic": True, "env": {}, "threads": 1},
    "oneDNN off": {"deterministic": True, "env": {"TF_ENABLE_ONEDNN_OPTS": "0"}},
    "XLA": {"deterministic": False, "env": {}, "xla": True},
    "bfloat16": {"deterministic": True, "env": {}, "precision": "mixed_bfloat16"},
}


def cpu_flags() -> set:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def bf16_support() -> str | None:
    flags = cpu_flags()
    have = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    return ", ".join(have) if have else None


def _timed(fn, reps: int, min_seconds: float) -> float:
    """Seconds per call of ``fn`` (after one warm-up call): ``reps`` calls, more until ``min_seconds`` pass."""
    fn()
    n, t0 = 0, time.perf_counter()
    while n < reps or time.perf_counter() - t0 < min_seconds:
        fn()
        n += 1
    return (time.perf_counter() - t0) / n


def conv_peak(shapes, data_format: str = "NHWC", min_seconds: float = 1.0) -> dict:
    """GFLOP/s of tf.nn.conv2d (3x3, stride 1, SAME, float32) per shape; 'best' is the peak."""
    import tensorflow as tf

    rates = {}
    for n, h, w, cin, cout in shapes:
        shape = (n, h, w, cin) if data_format == "NHWC" else (n, cin, h, w)
        x = tf.random.normal(shape)
        k = tf.random.normal((3, 3, cin, cout))
        f = tf.function(lambda x, k: tf.nn.conv2d(x, k, 1, "SAME", data_format=data_format))
        try:
            dt = _timed(lambda: f(x, k).numpy(), 3, min_seconds)
        except Exception as exc:  # noqa: BLE001 - e.g. NCHW has no CPU kernel
            return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
        rates[f"{n}x{h}x{w}x{cin}->{cout}"] = round(2 * n * h * w * 9 * cin * cout / dt / 1e9, 2)
    return {"shapes": rates, "best": max(rates.values())}


def layer_split(model, x, min_seconds: float) -> dict:
    """The forward pass of ``model`` on ``x`` against its convolutions run one by one at their own shapes."""
    import keras
    import tensorflow as tf

    from model_flops import _layers, forward_flops

    whole = _timed(lambda: model.predict_on_batch(x), 2, min_seconds)
    conv_s, conv_flops, n = 0.0, 0, 0
    for layer in _layers(model):
        if not isinstance(layer, keras.layers.Conv2D):
            continue
        shape = (x.shape[0], *layer.input.shape[1:])
        xi = tf.random.normal(shape)
        f = tf.function(lambda t, layer=layer: layer(t))
        conv_s += _timed(lambda: f(xi).numpy(), 2, 0.0)
        kh, kw, cin, cout = layer.kernel.shape
        conv_flops += 2 * x.shape[0] * int(layer.output.shape[1]) * int(layer.output.shape[2]) * kh * kw * cin * cout
        n += 1
    total = forward_flops(model) * x.shape[0]
    return {"forward_seconds": round(whole, 3), "conv_seconds": round(conv_s, 3), "convolutions": n,
            "conv_share_of_flops": round(conv_flops / total, 3), "conv_share_of_time": round(conv_s / whole, 3),
            "conv_gflops_at_model_shapes": round(conv_flops / conv_s / 1e9, 2),
            "forward_gflops": round(total / whole / 1e9, 2)}


def probe(spec: dict) -> dict:
    """One setting, in this process: the convolution peak, then each experiment's step."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import numpy as np

    import keras
    from lokiml import models, runtime
    from model_flops import forward_flops

    rt = runtime.configure(spec["threads"], {"deterministic": spec["deterministic"], "xla": spec.get("xla", False),
                                             "mixed_precision": False})
    import tensorflow as tf

    # Op determinism (the lokiml setting) refuses unseeded random ops (the convolution peak's inputs):
    # seed Python, NumPy and the backend as training does.
    keras.utils.set_random_seed(0)
    out = {"setting": spec["name"], "runtime": rt.describe(), "tensorflow": tf.__version__,
           "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on)")}
    t0 = time.perf_counter()
    out["conv_peak"] = conv_peak(spec["conv_shapes"], min_seconds=spec["min_seconds"])
    if spec.get("nchw"):
        out["conv_peak_nchw"] = conv_peak(spec["conv_shapes"], "NCHW", min_seconds=spec["min_seconds"])
    peak = out["conv_peak"]["best"]
    precision = spec.get("precision", "float32")
    keras.mixed_precision.set_global_policy(precision)
    rows = []
    for k, e in enumerate(spec["experiments"]):
        size, bs = int(e["image_size"]), int(e["batch_size"])
        model, base = models.build_model(e["model"], N_CLASSES, size, None, 0.4, 1)
        fwd = forward_flops(model)
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, (bs, size, size, 1), dtype=np.uint8)
        y = rng.integers(0, N_CLASSES, bs).astype(np.int32)
        if e["pretrained"]:
            what, flops = "features (forward)", fwd
            fmodel = models.feature_model(model)
            fmodel.compile(jit_compile=rt.jit_compile)  # XLA for the forward pass too, in the XLA setting
            dt = _timed(lambda: fmodel.predict_on_batch(x), spec["reps"], spec["min_seconds"])
        else:
            what, flops = "train step", 3 * fwd
            models.compile_model(model, e["optimizer"], e["learning_rate"], jit_compile=rt.jit_compile)
            dt = _timed(lambda: model.train_on_batch(x, y), spec["reps"], spec["min_seconds"])
        gflops = flops * bs / dt / 1e9
        row = {"experiment": e["name"], "model": e["model"], "size": size, "batch": bs, "step": what,
               "images_per_s": round(bs / dt, 2), "gflops": round(gflops, 2),
               "of_conv_peak": round(gflops / peak, 3), "precision": precision}
        if k == 0 and spec.get("split"):
            row["layer_split"] = layer_split(models.feature_model(model), x, spec["min_seconds"])
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        del model, base
        keras.backend.clear_session()
    out["experiments"] = rows
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def experiments(args) -> list[dict]:
    import yaml

    from lokiml.train import experiment_params

    with open(args.config, encoding="utf-8") as fh:
        cfg = yaml.safe_load(fh)["experiments"]
    demo = {}
    if not args.full_size and not args.smoke:
        with open(ROOT / "config" / "demo.yaml", encoding="utf-8") as fh:
            demo = yaml.safe_load(fh).get("experiments") or {}
    out = []
    for name, e in cfg.items():
        if not e or e.get("kind", "cnn") != "cnn":
            continue
        p = experiment_params({**e, **{k: v for k, v in (demo.get(name) or {}).items()
                                        if k in ("image_size", "batch_size")}})
        if args.smoke:
            p["image_size"], p["batch_size"] = max(32, models_min(p["model"])), 2
        out.append({"name": name, "model": p["model"], "image_size": p["image_size"], "batch_size": p["batch_size"],
                    "pretrained": p["weights"] not in (None, "none"), "optimizer": p["optimizer"],
                    "learning_rate": p["learning_rate"]})
    if args.experiments:
        want = args.experiments.split(",")
        out = [e for e in out if e["name"] in want]
    elif args.smoke:  # one of each kind of step, the smallest
        out = [next(e for e in out if e["pretrained"] and e["model"] == "resnet101"),
               next(e for e in out if not e["pretrained"] and e["model"] == "resnet101")]
    return out


def factor_experiments(exps: list[dict]) -> list[dict]:
    """The experiments the settings other than lokiml measure: the first pre-trained and the first from scratch."""
    picked = [next((e for e in exps if e["pretrained"]), None), next((e for e in exps if not e["pretrained"]), None)]
    return [e for e in picked if e is not None]


def models_min(model: str) -> int:
    from lokiml.models import get_backbone

    return get_backbone(model).min_size


def run_setting(name: str, spec: dict, timeout: float) -> dict:
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2", **spec.pop("env")}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--probe", json.dumps({**spec, "name": name})]
    try:
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"setting": name, "error": f"over {timeout:.0f} s"}
    if res.returncode != 0:
        return {"setting": name, "error": res.stderr.strip().splitlines()[-1][:300] if res.stderr.strip() else "?"}
    return json.loads(res.stdout.strip().splitlines()[-1])


def load_average() -> str:
    try:
        return open("/proc/loadavg").read().split()[0]
    except OSError:
        return "?"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "config" / "config.yaml"))
    ap.add_argument("--experiments", help="comma-separated names (default: every CNN experiment of --config)")
    ap.add_argument("--full-size", action="store_true", help="the experiments' own sizes (default: the demo's)")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads (rule train_model's 2)")
    ap.add_argument("--settings", default=",".join(SETTINGS),
                    help=f"comma-separated, of: {', '.join(SETTINGS)} (default all)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, two settings: seconds")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--probe", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.probe:
        print(json.dumps(probe(json.loads(args.probe))), flush=True)
        return 0

    exps = experiments(args)
    names = ["lokiml", "no determinism"] if args.smoke else args.settings.split(",")
    bf16 = bf16_support()
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores, bf16: {bf16 or 'not supported'}; load average "
          f"{load_average()} at the start; {len(exps)} experiments at "
          f"{'tiny' if args.smoke else 'their own' if args.full_size else 'the demo'} sizes", flush=True)
    results = []
    for name in names:
        s = SETTINGS[name]
        if name == "bfloat16" and not bf16:
            results.append({"setting": name, "skipped": "this CPU has no AVX512-BF16 or AMX: TensorFlow emulates "
                                                        "bfloat16 there, slower than float32"})
            print(f"\n{name}: skipped ({results[-1]['skipped']})", flush=True)
            continue
        spec = {"threads": s.get("threads", args.threads), "deterministic": s["deterministic"], "env": dict(s["env"]),
                "xla": s.get("xla", False), "precision": s.get("precision", "float32"),
                "conv_shapes": SMOKE_CONV_SHAPES if args.smoke else CONV_SHAPES,
                "experiments": exps if name == "lokiml" else factor_experiments(exps),
                "reps": 1 if args.smoke else 3, "min_seconds": 0.0 if args.smoke else 2.0,
                "split": name == "lokiml", "nchw": name == "lokiml"}
        t0 = time.perf_counter()
        r = run_setting(name, spec, timeout=600 if args.smoke else 3600)
        r["load_average_after"] = load_average()
        results.append(r)
        if "error" in r:
            print(f"\n{name}: error: {r['error']}", flush=True)
            continue
        peak = r["conv_peak"]["best"]
        print(f"\n{name} ({time.perf_counter() - t0:.0f} s; load average {r['load_average_after']}): TensorFlow 3x3 "
              f"convolution peak {peak:.1f} GFLOP/s {r['conv_peak']['shapes']}", flush=True)
        if "conv_peak_nchw" in r:
            nchw = r["conv_peak_nchw"]
            text = nchw["error"] if "error" in nchw else f"peak {nchw['best']:.1f} GFLOP/s"
            print(f"  NCHW layout: {text}", flush=True)
        for row in r["experiments"]:
            print(f"  {row['experiment']:<38} {row['model']:<12} {row['size']:>4} px batch {row['batch']:>2} "
                  f"{row['step']:<18} {row['images_per_s']:>8.2f} images/s {row['gflops']:>7.1f} GFLOP/s "
                  f"= {100 * row['of_conv_peak']:5.1f} % of the peak", flush=True)
            if "layer_split" in row:
                ls = row["layer_split"]
                print(f"    forward pass split: its {ls['convolutions']} convolutions "
                      f"({100 * ls['conv_share_of_flops']:.0f} % of its FLOPs) alone take {100 * ls['conv_share_of_time']:.0f} % of its time, at "
                      f"{ls['conv_gflops_at_model_shapes']:.1f} GFLOP/s at the model's shapes; the whole forward pass "
                      f"{ls['forward_gflops']:.1f} GFLOP/s", flush=True)
    base = next((r for r in results if r.get("setting") == "lokiml" and "experiments" in r), None)
    if base:
        print("\nratios to the lokiml setting (same experiments, each setting's own process):", flush=True)
        ref = {row["experiment"]: row for row in base["experiments"]}
        for r in results:
            if r is base or "experiments" not in r:
                continue
            for row in r["experiments"]:
                b = ref[row["experiment"]]
                print(f"  {r['setting']:<15} {row['experiment']:<38} {row['images_per_s'] / b['images_per_s']:5.2f}x "
                      f"images/s; convolution peak {r['conv_peak']['best'] / base['conv_peak']['best']:5.2f}x",
                      flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    failed = [r["setting"] for r in results if "error" in r]
    if failed:  # a setting that broke is a broken benchmark, not a figure
        print(f"\nsettings that failed: {', '.join(failed)}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
