"""GPU check: lokiml's own training and feature extraction on a GPU with the JAX backend, within a time budget.

Run by ``benchmarks/gpu_check.sh`` (which installs the carried wheels and sets the environment):

    KERAS_BACKEND=jax PYTHONPATH=workflow/scripts python3 benchmarks/gpu_check.py --out DIR [--budget 430]
    ... --smoke      tiny sizes and models, on whatever device there is (a CPU here: tests/unit/test_gpu_check.py)

Parts, each in a process of its own (its GPU memory and its peak are its own), each bounded by its
share of the budget; what does not fit is skipped and recorded, with the reason:

1. ``peak``: a bfloat16 matrix product through torch (8192 x 8192 x 8192, mean of 10 after 3
   warm-ups): the GPU's dense bf16 rate as it is on this machine (about 790 TFLOP/s on an H200).
2. ``learn``: one short resumable training that learns: :func:`lokiml.train.train_experiment`
   (InceptionV3 from scratch at 96 px on synthetic shapes of 4 classes, 400 per class, 15 epochs,
   default mixed precision, asking for 1 GPU so the device check runs), killed by SIGKILL after epoch 5
   (lokiml's test hook,
   as a scheduler kills a job), resumed, then its best checkpoint is checked on held-out images:
   accuracy and the recall of every class (a model that predicts one class fails).
3. One process per (model, image size) and pass: InceptionV3 and ResNet101 at 299 and 1000 px.
   Pass 1, what training on a GPU runs (bfloat16 mixed precision, the default there): cached-feature
   extraction (lokiml.train.compute_features' loop: :func:`lokiml.datasets.predict_padded` over an
   :class:`lokiml.datasets.ImageSource` of a uint8 store), then training steps of the whole network
   (built by :func:`lokiml.models.build_model` from scratch, compiled by
   :func:`lokiml.models.compile_model` with XLA, fitted with ``Model.fit`` on
   :func:`lokiml.datasets.make_batches`, as train.py does); pass 2: the training steps in float32;
   pass 3: the extraction in float32. Each pass shares what the earlier ones left of the budget. Each is timed in steady state, after a warm-up call that
   compiles (its seconds are recorded); images/s; TFLOP/s from the architecture's FLOPs
   (benchmarks/model_flops.py; a training step = 3 x forward); the fraction of the measured bf16 peak;
   the process's peak GPU memory after the part (a running maximum: in pass 1 the extraction, which
   needs less, runs first, so each is the part's own peak).

Writes ``gpu_check.json`` (every figure, every skip and its reason, machine and versions) to
``--out`` after every part, and a summary table to stdout (with the end of each worker's log;
the workers' files stay in ``--work``). A compile that outlives its part's share
is killed with its process and recorded as such: the whole never overruns ``--budget``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "workflow" / "scripts"))
sys.path.insert(0, str(HERE))

NOMINAL_BF16_PEAK = 790e12  # H200, dense bf16 (measured here with torch: 769-798 TFLOP/s)
N_CLASSES = 7
CLASSES = ["circle", "square", "cross", "ring"]

FULL = {
    "models": ["inceptionv3", "resnet101"],
    "sizes": [299, 1000],
    "train_batch": {299: 64, 1000: 16},
    "extract_batch": {299: 128, 1000: 32},
    "store_images": {299: 256, 1000: 96},
    "steady_seconds": 4.0,
    "learn": {"model": "inceptionv3", "image_size": 96, "batch_size": 32, "epochs": 15, "kill_after": 5,
              "per_class": (400, 80, 80)},
    # First guesses of a part's cost (compile + timing), refined by what the earlier parts took.
    "estimate": {"extract": {299: 25, 1000: 45}, "train": {299: 45, 1000: 80}},
    "caps": {"peak": 45, "learn": 180},
}
SMOKE = {
    "models": ["vgg16"],  # the backbone JAX compiles fastest on a CPU (vgg16 55 s, mobilenetv2 168 s, loaded machine)
    "sizes": [32],
    "train_batch": {32: 8},
    "extract_batch": {32: 16},
    "store_images": {32: 32},
    "steady_seconds": 0.5,
    "learn": {"model": "vgg16", "image_size": 32, "batch_size": 8, "epochs": 3, "kill_after": 1,
              "per_class": (8, 4, 4)},
    "estimate": {"extract": {32: 5}, "train": {32: 10}},
    "caps": {"peak": 30, "learn": 400},
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ----------------------------------------------------------------------------------------- workers

def _emit(path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, default=str) + "\n")


def _gpu_memory() -> dict:
    import jax

    dev = jax.local_devices()[0]
    stats = dev.memory_stats() if hasattr(dev, "memory_stats") else None
    out = {"device": f"{dev.platform}: {getattr(dev, 'device_kind', '')}"}
    if stats:
        out["peak_gib"] = round(stats.get("peak_bytes_in_use", 0) / 2**30, 2)
        out["limit_gib"] = round(stats.get("bytes_limit", 0) / 2**30, 1)
    else:  # a CPU: no device statistics; the process's resident peak instead
        from lokiml.logs import peak_rss_mb

        out["peak_rss_gib"] = round(peak_rss_mb() / 1024, 2)
    return out


def worker_peak(spec: dict, results: str) -> None:
    _emit(results, {"event": "start", "part": "peak"})
    try:
        import torch
    except ImportError:
        _emit(results, {"event": "done", "part": "peak", "skipped": "torch is not installed"})
        return
    if not torch.cuda.is_available():
        _emit(results, {"event": "done", "part": "peak", "skipped": "torch sees no CUDA device"})
        return
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    _emit(results, {"event": "done", "part": "peak", "bf16_tflops": round(2 * n**3 * 10 / dt / 1e12, 1),
                    "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__})


def shape_image(kind: int, size: int, rng):
    """A dark circle, square, cross or ring at a random place and size on a light, noisy background."""
    import numpy as np

    img = np.full((size, size), 255.0)
    yy, xx = np.mgrid[:size, :size]
    cy, cx = size / 2 + rng.uniform(-size / 8, size / 8, 2)
    r = size * rng.uniform(0.2, 0.32)
    d2 = (yy - cy) ** 2 + (xx - cx) ** 2
    if kind == 0:
        mask = d2 < r**2
    elif kind == 1:
        mask = (abs(yy - cy) < r) & (abs(xx - cx) < r)
    elif kind == 2:
        mask = ((abs(yy - cy) < r / 4) & (abs(xx - cx) < r)) | ((abs(xx - cx) < r / 4) & (abs(yy - cy) < r))
    else:
        mask = (d2 < r**2) & (d2 > (0.6 * r) ** 2)
    img[mask] = rng.integers(20, 90)
    return np.clip(img + rng.integers(-12, 12, img.shape), 0, 255).astype(np.uint8)


def make_store(root: Path, images, ids) -> tuple[list, list]:
    """One shard of lokiml's image store (npy + index) holding ``images`` under ``ids``."""
    import numpy as np
    import pandas as pd

    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "shard0.npy", np.stack(images))
    pd.DataFrame({"item_id": ids, "row": range(len(ids)), "status": "ok"}).to_csv(root / "shard0.tsv", sep="\t",
                                                                                index=False)
    return [str(root / "shard0.npy")], [str(root / "shard0.tsv")]


LEARN_DRIVER = """
import json, sys
sys.path.insert(0, {scripts!r})
from lokiml.logs import setup_logging
setup_logging()
from lokiml.train import train_experiment
train_experiment(**json.loads(sys.argv[1]))
"""


def worker_learn(spec: dict, results: str) -> None:
    import numpy as np
    import pandas as pd

    cfg, smoke, work = spec["learn"], spec["smoke"], Path(spec["work"]) / "learn"
    _emit(results, {"event": "start", "part": "learn"})
    rng = np.random.default_rng(0)
    rows, images = [], []
    for k, cls in enumerate(CLASSES):
        for part, n in zip(("train", "valid", "test"), cfg["per_class"]):
            for i in range(n):
                item = f"{cls}_{part}_{i:04d}"
                rows.append({"item_id": item, "object_id": item, "class_name": cls, "image_ref": f"{item}.png",
                             "augmented": 0, "flip": 0, "angle": 0, "dx": 0, "dy": 0, "split": part})
                images.append(shape_image(k, cfg["image_size"], rng))
    split = pd.DataFrame(rows).sort_values("item_id")
    work.mkdir(parents=True, exist_ok=True)
    split.to_csv(work / "split.tsv", sep="\t", index=False)
    npys, indexes = make_store(work / "store", images, [r["item_id"] for r in rows])
    out = {name: str(work / "out" / f) for name, f in (
        ("out_model", "model.keras"), ("out_best", "best.keras"), ("out_classes", "classes.txt"),
        ("out_history", "history.tsv"), ("out_summary", "summary.txt"), ("out_info", "train_info.json"))}
    params = {"model": cfg["model"], "weights": "none", "image_size": cfg["image_size"],
              "batch_size": cfg["batch_size"], "epochs": cfg["epochs"], "optimizer": "adam",
              "learning_rate": 0.001, "early_stopping": None, "seed": 1}
    kwargs = {"split_path": str(work / "split.tsv"), "store_npys": npys, "store_indexes": indexes,
              "classes": CLASSES, **out, "state_dir": str(work / "state"), "params": params,
              "threads": os.cpu_count() or 1, "gpu_request": 0 if smoke else 1}
    cmd = [sys.executable, "-c", LEARN_DRIVER.format(scripts=str(ROOT / "workflow" / "scripts")), json.dumps(kwargs)]
    env = {**os.environ, "LOKIML_TEST_KILL_AFTER_EPOCH": str(cfg["kill_after"])}
    t0 = time.perf_counter()
    first = subprocess.run(cmd, env=env, capture_output=True, text=True)
    t_first = time.perf_counter() - t0
    (work / "first.log").write_text(first.stdout + first.stderr)
    record = {"event": "done", "part": "learn", "params": params, "items": {p: n * len(CLASSES) for p, n in zip(
        ("train", "valid", "test"), cfg["per_class"])}, "killed_after_epoch": cfg["kill_after"],
        "first_run": {"returncode": first.returncode, "seconds": round(t_first, 1)}}
    if first.returncode != -signal.SIGKILL:
        record["error"] = f"the first run should die by SIGKILL after epoch {cfg['kill_after']}: " \
                          f"exit {first.returncode}: {(first.stdout + first.stderr)[-1500:]}"
        _emit(results, record)
        return
    env.pop("LOKIML_TEST_KILL_AFTER_EPOCH")
    t0 = time.perf_counter()
    second = subprocess.run(cmd, env=env, capture_output=True, text=True)
    record["second_run"] = {"returncode": second.returncode, "seconds": round(time.perf_counter() - t0, 1),
                            "resumed": f"resuming from epoch {cfg['kill_after']}" in second.stderr}
    (work / "second.log").write_text(second.stdout + second.stderr)
    if second.returncode != 0:
        record["error"] = f"the resumed run failed: {(second.stdout + second.stderr)[-1500:]}"
        _emit(results, record)
        return
    info = json.loads(Path(out["out_info"]).read_text())
    history = pd.read_csv(out["out_history"], sep="\t")
    # The best checkpoint on the held-out images, as evaluation predicts them.
    import keras

    from lokiml.evaluate import load_classifier
    from lokiml.store import Store

    model = load_classifier(out["out_best"])
    test = split[split["split"] == "test"]
    x = Store(npys, indexes).gather(test["item_id"])[..., None]
    pred = np.asarray(model.predict(x, batch_size=cfg["batch_size"], verbose=0)).argmax(axis=1)
    truth = test["class_name"].map({c: i for i, c in enumerate(CLASSES)}).to_numpy()
    recall = {c: round(float((pred[truth == i] == i).mean()), 3) for i, c in enumerate(CLASSES)}
    acc = float((pred == truth).mean())
    record.update({
        "resumed_from_epoch": info["resumed_from_epoch"], "epochs_run": info["epochs_run"],
        "device": info["device"], "precision": info["precision"], "backend": info["backend"],
        "xla": info["runtime"]["xla"], "best_epoch": info["best_epoch"],
        "history": history.drop(columns=["phase"]).round(4).to_dict(orient="list"),
        "test_accuracy": round(acc, 3), "test_recall": recall, "keras": keras.__version__,
        "learned": bool(acc >= 0.8 and min(recall.values()) >= 0.5),
    })
    _emit(results, record)


def _sig(x: float, digits: int = 4) -> float:
    """``x`` to ``digits`` significant digits (a CPU's TFLOP/s are small numbers)."""
    return float(f"{x:.{digits}g}")


class RepeatedSource:
    """An image source seen as ``n`` items: item i is item i mod len(source) (more steps than images)."""

    def __init__(self, source, n: int):
        self.source, self.n = source, int(n)
        self.dtype, self.item_shape, self.labels = source.dtype, source.item_shape, None

    def __len__(self) -> int:
        return self.n

    def fetch(self, pos):
        import numpy as np

        return self.source.fetch(np.asarray(pos) % len(self.source))


def worker_group(spec: dict, results: str) -> None:
    """Feature extraction and training steps of one (model, size) in bf16 and fp32; see the module docstring."""
    import numpy as np

    import keras
    from lokiml import models, runtime
    from lokiml.datasets import ImageSource, make_batches, predict_padded
    from lokiml.store import Store
    from model_flops import forward_flops

    model_name, size, smoke = spec["model"], int(spec["size"]), spec["smoke"]
    deadline, est = float(spec["deadline"]), spec["estimate"]
    peak = float(spec.get("peak_flops") or NOMINAL_BF16_PEAK)
    try:
        rt = runtime.configure(os.cpu_count() or 1, {"mixed_precision": False}, gpu_request=0 if smoke else 1,
                               what="gpu_check")
    except runtime.DeviceError as exc:
        _emit(results, {"event": "done", "part": f"{model_name} {size}px", "error": str(exc)})
        return
    _emit(results, {"event": "runtime", "runtime": rt.describe(), "versions": rt.versions()})
    rng = np.random.default_rng(0)
    n_img = spec["store_images"]
    npys, indexes = make_store(Path(spec["work"]) / f"store_{size}",
                               [rng.integers(0, 256, (size, size), dtype=np.uint8) for _ in range(n_img)],
                               [f"i{i:05d}" for i in range(n_img)])
    store = Store(npys, indexes)
    src = ImageSource(store, [f"i{i:05d}" for i in range(n_img)], rng.integers(0, N_CLASSES, n_img))
    steady = float(spec["steady_seconds"])
    scale, cost = 1.0, {}  # measured / first-guess cost of the parts so far; seconds a part of each kind took

    for kind, policy in spec["parts"]:
        part = f"{model_name} {size}px {kind} {policy}"
        need = cost.get(kind, est[kind] * scale)
        left = deadline - time.time()
        if left < need:
            _emit(results, {"event": "done", "part": part, "skipped": f"needs about {need:.0f} s, {left:.0f} s left"})
            continue
        _emit(results, {"event": "start", "part": part})
        t_part = time.time()
        keras.mixed_precision.set_global_policy(policy)
        model, base = models.build_model(model_name, N_CLASSES, size, None, 0.4, 1)
        fwd = forward_flops(model)
        rec = {"event": "done", "part": part, "model": model_name, "size": size, "kind": kind, "precision": policy,
               "forward_gflops_per_image": round(fwd / 1e9, 2)}
        if kind == "extract":
            bs = int(spec["extract_batch"])
            fmodel = models.feature_model(model)
            t0 = time.perf_counter()
            for _ in predict_padded(fmodel, RepeatedSource(src, bs), bs):  # the compile
                pass
            rec["compile_seconds"] = round(time.perf_counter() - t0, 1)
            n_items, t0 = bs, time.perf_counter()
            for _ in predict_padded(fmodel, RepeatedSource(src, bs), bs):  # one batch: the rate's first guess
                pass
            per_batch = max(time.perf_counter() - t0, 1e-4)
            n_batches = int(min(400, max(3, steady / per_batch)))
            n_items = n_batches * bs
            t0 = time.perf_counter()
            for _ in predict_padded(fmodel, RepeatedSource(src, n_items), bs):
                pass
            dt = time.perf_counter() - t0
            flops = fwd
            del fmodel
        else:
            bs = int(spec["train_batch"])
            models.compile_model(model, "rmsprop", 0.001, jit_compile=rt.jit_compile)
            many = RepeatedSource(src, 10**7)

            def fit(n_batches):
                order = np.arange(n_batches * bs)
                t = time.perf_counter()
                model.fit(make_batches(many, order, bs, drop_remainder=True), epochs=1, verbose=0, shuffle=False)
                return time.perf_counter() - t

            rec["compile_seconds"] = round(fit(2), 1)
            per_batch = max(fit(3) / 3, 1e-4)
            n_batches = int(min(400, max(5, steady / per_batch)))
            dt = fit(n_batches)
            n_items = n_batches * bs
            flops = 3 * fwd
            rec["xla"] = bool(model.jit_compile)
        rate = n_items / dt
        rec.update({"batch_size": bs, "images": n_items, "seconds": round(dt, 2), "images_per_s": _sig(rate),
                    "tflops": _sig(rate * flops / 1e12), "fraction_of_bf16_peak": _sig(rate * flops / peak),
                    "part_seconds": round(time.time() - t_part, 1), **_gpu_memory()})
        _emit(results, rec)
        spent = time.time() - t_part
        cost[kind] = 1.1 * spent
        scale = max(scale, spent / est[kind])
        del model, base
        keras.backend.clear_session()
        gc.collect()


# ----------------------------------------------------------------------------------------- driver

def _run_worker(kind: str, spec: dict, results: Path, seconds: float) -> tuple[list, str | None]:
    """Run one worker within ``seconds``; its records, and why it ended early (if it did)."""
    results.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--spec", json.dumps(spec),
           "--results", str(results)]
    why = None
    log_path = results.with_suffix(".log")
    with open(log_path, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=max(1.0, seconds))
            if rc != 0:
                why = f"the worker exited with {rc}: " + log_path.read_text()[-1500:]
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            why = f"killed at the end of its {seconds:.0f} s share of the budget"
    records = []
    if results.exists():
        records = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    return records, why


def _machine() -> dict:
    import importlib.metadata as md

    def version(name):
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return None

    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                          "--format=csv,noheader"], capture_output=True, text=True) \
        if subprocess.run(["which", "nvidia-smi"], capture_output=True).returncode == 0 else None
    return {"host": platform.node(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "nvidia_smi": smi.stdout.strip() if smi is not None and smi.returncode == 0 else None,
            "versions": {n: version(n) for n in ("jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda12-plugin", "keras",
                                                 "torch", "numpy")},
            "env": {k: os.environ.get(k) for k in ("KERAS_BACKEND", "CUDA_VISIBLE_DEVICES", "XLA_FLAGS",
                                                   "JAX_COMPILATION_CACHE_DIR")}}


def _summary(report: dict) -> str:
    lines = ["", "part                                            images/s   TFLOP/s  of peak  compile s  peak GiB"]
    for p in report["parts"]:
        if "images_per_s" in p:
            mem = p.get("peak_gib", p.get("peak_rss_gib"))
            lines.append(f"{p['part']:<46} {p['images_per_s']:>10.1f} {p['tflops']:>9.3g} "
                         f"{100 * p['fraction_of_bf16_peak']:>7.3g}% {p.get('compile_seconds', 0):>9.1f} "
                         f"{mem if mem is not None else '-':>9}")
        elif p.get("part") == "peak":
            lines.append(f"{'peak (torch bf16 matmul)':<46} {p.get('bf16_tflops', '-'):>20} "
                         f"{p.get('skipped', '')}")
        elif p.get("part") == "learn" and "killed" not in p:
            lines.append(f"learn: learned={p.get('learned')} test accuracy {p.get('test_accuracy')} recall "
                         f"{p.get('test_recall')} resumed from epoch {p.get('resumed_from_epoch')} "
                         f"({p.get('device')}, {p.get('precision')}) {p.get('error', '')[:300]}")
        else:
            lines.append(f"{p.get('part', '?'):<46} {p.get('skipped') or p.get('error') or p.get('killed')}")
    lines.append(f"total {report['seconds']:.0f} s of a {report['budget_s']:.0f} s budget")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "benchmarks" / "out" / "gpu_check"))
    ap.add_argument("--budget", type=float, default=None, help="seconds for everything (default 430; smoke 840)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes and models, any device (CI)")
    ap.add_argument("--work", default="/tmp/lokiml_gpu_check", help="temporary data")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    ap.add_argument("--results", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        spec = json.loads(args.spec)
        {"peak": worker_peak, "learn": worker_learn, "group": worker_group}[args.worker](spec, args.results)
        return 0

    t_start = time.time()
    cfg = SMOKE if args.smoke else FULL
    budget = args.budget or (840.0 if args.smoke else 430.0)
    deadline = t_start + budget
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    report = {"smoke": args.smoke, "budget_s": budget, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
              "machine": _machine(), "config": {k: v for k, v in cfg.items() if k != "caps"}, "parts": [],
              "seconds": 0.0}

    def save():
        report["seconds"] = round(time.time() - t_start, 1)
        tmp = out / ".gpu_check.json.tmp"
        tmp.write_text(json.dumps(report, indent=1, default=str))
        os.replace(tmp, out / "gpu_check.json")

    log(f"gpu_check: {'smoke mode, ' if args.smoke else ''}budget {budget:.0f} s; machine {report['machine']}")
    groups = [(m, s) for s in cfg["sizes"] for m in cfg["models"]]
    base_spec = {"smoke": args.smoke, "work": str(work)}
    # Passes over the (model, size) groups, most wanted first: what training on a GPU runs (bf16 mixed
    # precision: feature extraction of the frozen bases, training steps of the whole network), then float32
    # training steps, then float32 extraction, each with what the earlier passes left of the budget.
    passes = [[("extract", "mixed_bfloat16"), ("train", "mixed_bfloat16")], [("train", "float32")],
              [("extract", "float32")]]
    plan = [("peak", {}), ("learn", {"learn": cfg["learn"]})] + [
        ("group", {"model": m, "size": s, "parts": parts, "pass": k + 1})
        for k, parts in enumerate(passes) for m, s in groups]
    peak_flops = None
    for i, (kind, extra) in enumerate(plan):
        left = deadline - time.time()
        if kind == "group":  # an equal share of what is left among the groups of this pass
            same_pass = sum(1 for k, e in plan[i + 1:] if k == "group" and e["pass"] == extra["pass"])
            share = left / (same_pass + 1)
        else:
            share = min(cfg["caps"][kind], left)
        name = kind if kind != "group" else f"{extra['model']} {extra['size']}px (pass {extra['pass']})"
        if share < 5:
            report["parts"].append({"part": name, "skipped": f"{left:.0f} s of the budget left"})
            save()
            continue
        spec = {**base_spec, **extra, "deadline": time.time() + share - 3, "peak_flops": peak_flops}
        if kind == "group":
            s = extra["size"]
            spec.update({"train_batch": cfg["train_batch"][s], "extract_batch": cfg["extract_batch"][s],
                         "store_images": cfg["store_images"][s], "steady_seconds": cfg["steady_seconds"],
                         "estimate": {k: v[s] for k, v in cfg["estimate"].items()}})
        log(f"{name}: up to {share:.0f} s")
        records, why = _run_worker(kind, spec, work / f"worker_{i}_{kind}.jsonl", share)
        tail = (work / f"worker_{i}_{kind}.log").read_text(errors="replace").splitlines()[-40:]
        print("    | " + "\n    | ".join(tail), flush=True)  # the worker's own log, for the record
        started = [r["part"] for r in records if r.get("event") == "start"]
        done = [r for r in records if r.get("event") == "done"]
        for r in records:
            if r.get("event") == "runtime":
                report.setdefault("runtime", r["runtime"])
                report.setdefault("versions", r["versions"])
        for r in done:
            r.pop("event")
            report["parts"].append(r)
            if r.get("part") == "peak" and r.get("bf16_tflops"):
                peak_flops = r["bf16_tflops"] * 1e12
                report["bf16_peak_tflops"] = r["bf16_tflops"]
            log(f"  {json.dumps(r, default=str)[:600]}")
        unfinished = [p for p in started if p not in {r.get("part") for r in done}]
        if why:
            for p in unfinished or [name]:
                report["parts"].append({"part": p, "killed": why})
            log(f"  {name}: {why[:600]}")
        save()
    report["bf16_peak_used_tflops"] = round((peak_flops or NOMINAL_BF16_PEAK) / 1e12, 1)
    report["bf16_peak_source"] = "measured (torch bf16 matmul)" if peak_flops else "nominal H200 figure"
    save()
    print(_summary(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
