"""Benchmark: images per second the training input pipeline delivers, against the seed's Sequence and the model.

    .venv/bin/python benchmarks/bench_input.py [--n 64 --steps 2 --threads 2 --experiments NAME,...]
    .venv/bin/python benchmarks/bench_input.py --smoke      # tiny sizes, seconds (run by the tests)

For every CNN experiment of ``config/config.yaml`` (by default the seed's five: InceptionV3 at
1000 and 1530 px, ResNet101 at 1000 px, pre-trained or trained from scratch), at the experiment's
image size and batch size, in this process:

1. The same ``--n`` LOKI-like images (benchmarks/loki_like.py) are normalised once by lokiml
   (:func:`lokiml.store.normalise_shard`, the store that training reads) and written as the seed's
   prepared images (grey JPEGs of the same pixels at the experiment's size, saved with PIL's
   defaults as the seed's step 2 did).
2. Input pipelines, one thread each, whole epochs timed after a warm-up (best of two, the
   pipelines alternating), each in two forms that do the same work on both sides:

   * seed: the ``LokiImageSequence`` of the seed's training scripts (benchmarks/seed_baseline.py,
     reproduced as written): ``skimage.io.imread`` of every image of the batch, centre crop to the
     image shape (the seed never resizes: its images were prepared at the experiment's size;
     ``fit_generator`` ran it with one worker thread), then the grey channel repeated three times
     and the backbone's ``preprocess_input`` on the float32 batch.
   * lokiml: :func:`lokiml.datasets.tf_dataset` over :class:`lokiml.datasets.ImageSource`, the same batches
     ``train_model`` takes every epoch (as a PyDataset on other backends) (a shuffled order, batches gathered from the
     memory-mapped uint8 store by ``tf.numpy_function``, prefetch), with ``threads=1``. It delivers
     uint8 grey batches: the cast, the three channels and the preprocessing are the model's first
     layer (:class:`lokiml.models.GreyToBackboneInput`).

   **uint8 grey** (what a GPU run feeds the device, whose first layer then runs on the GPU): the
   seed's Sequence stopped after its crop, against lokiml's pipeline. **float32, 3 channels,
   preprocessed** (the backbone's input, all on the CPU, as a CPU run does it): the seed's Sequence
   as written, against lokiml's pipeline followed by its first layer in the same ``tf.function``.
   The earlier form of this benchmark set the seed's float32 batches against lokiml's uint8 ones,
   which left the conversion out on lokiml's side only.
   * tf.data floor: the same pipeline shape with nothing to read (one constant batch): the fixed
     cost of a batch, which bounds any tf.data pipeline, and what limits lokiml at batch size 1.

3. What the model consumes: the real Keras model of the experiment
   (:func:`lokiml.models.build_model`, weights=None: the cost, not the accuracy, is measured),
   TensorFlow configured as ``train_model`` configures it (:func:`lokiml.runtime.configure`
   with ``--threads``, the rule's 2 threads). A pre-trained experiment (frozen base, no
   augmentation) reads images only while its base features are computed once
   (:func:`lokiml.train.compute_features`' ``tf.function``); its head then trains for every epoch on
   cached features and reads no image, so its consumption rate is that of the feature
   computation. An experiment trained from scratch consumes a batch per training step
   (``train_on_batch``: the step ``fit`` runs). One warm-up call (tracing), then ``--steps`` timed
   calls, stopping after the first one past ``--max-seconds``. From these, the whole step on a CPU
   (pipeline + model, one after the other): seed = its Sequence + the model without the first
   layer; lokiml = its pipeline + the model with it.

Rates are wall-clock images per second (the machine may be shared: ratios measured here, back to
back on the same images, are what count); the pipelines' rates per CPU-second of this process are
printed too. At these sizes a CPU needs seconds per image, so any reasonable pipeline keeps up
there; the pipeline's rate matters on a GPU, where the model consumes hundreds of images per
second.
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "workflow" / "scripts"))
sys.path.insert(0, str(HERE))

N_CLASSES = 7


# ----------------------------------------------------------------------------- data

def make_data(root: Path, size: int, n: int, seed: int) -> dict:
    """The lokiml store and the seed's prepared JPEGs of the same ``n`` images at ``size`` px."""
    import loki_like
    from PIL import Image

    from lokiml.store import NormParams, normalise_shard

    src = loki_like.write_images(root / "src", n, seed=seed)
    items = pd.DataFrame({"item_id": [p.stem for p in src], "image_ref": [p.name for p in src],
                          "flip": 0, "angle": 0.0, "dx": 0.0, "dy": 0.0})
    store_dir = root / f"store_{size}"
    store_dir.mkdir(parents=True, exist_ok=True)
    npy, tsv = store_dir / "shard0.npy", store_dir / "shard0.tsv"
    index = normalise_shard(items, lambda ref: (root / "src" / ref).read_bytes(), NormParams(size=size), npy, tsv,
                            threads=2)
    assert (index["status"] == "ok").all()
    arr = np.load(npy, mmap_mode="r")
    jpeg_dir = root / f"seed_{size}"
    jpeg_dir.mkdir(exist_ok=True)
    paths = []
    for i, item_id in enumerate(index["item_id"]):
        path = jpeg_dir / f"{item_id}.jpg"
        Image.fromarray(np.asarray(arr[i])).save(path)  # the seed's step 2: background.save(path), PIL defaults
        paths.append(path)
    labels = np.arange(len(paths)) % N_CLASSES
    return {"npys": [str(npy)], "indexes": [str(tsv)], "ids": list(index["item_id"]), "paths": paths,
            "labels": labels}


# ----------------------------------------------------------------------------- pipelines

def time_seed(data: dict, size: int, batch_size: int, model: str, full: bool) -> tuple[float, float, int]:
    """(wall s, CPU s, images) of one epoch of the seed's Sequence, after a warm-up: ``full`` as written
    (float32, 3 channels, preprocessed), else stopped after the crop (uint8 grey)."""
    from seed_baseline import LokiImageSequence, seed_preprocess

    y = np.eye(N_CLASSES, dtype=np.float32)[data["labels"]]
    seq = LokiImageSequence(data["paths"], y, batch_size, (size, size), seed_preprocess(model), full)
    for i in range(min(2, len(seq))):
        seq[i]
    c0, t0 = time.process_time(), time.perf_counter()
    n = 0
    for i in range(len(seq)):
        x, _ = seq[i]
        n += len(x)
    want = ((size, size, 3), np.float32) if full else ((size, size, 1), np.uint8)
    assert (x.shape[1:], x.dtype) == want, (x.shape, x.dtype)
    return time.perf_counter() - t0, time.process_time() - c0, n


def time_lokiml(data: dict, batch_size: int, repeat: int, threads: int, model: str | None = None
                ) -> tuple[float, float, int]:
    """(wall s, CPU s, images) of lokiml's training dataset over ``repeat`` x the items, after a warm-up pass.

    Batches are pulled inside a ``tf.function``, one call per batch, as Keras' ``fit`` pulls them
    (its train function calls ``next(iterator)``). With ``model``, the batch then goes through that
    backbone's first layer (:class:`lokiml.models.GreyToBackboneInput`) in the same function, whose
    float32 three-channel output is returned as a tensor, as the first layer hands it to the base.
    """
    import tensorflow as tf

    from lokiml import models
    from lokiml.store import Store
    from lokiml.datasets import ImageSource, tf_dataset

    store = Store(data["npys"], data["indexes"])
    src = ImageSource(store, data["ids"], data["labels"])
    rng = np.random.default_rng(0)
    first = models.GreyToBackboneInput(models.get_backbone(model).mode) if model else None

    @tf.function
    def pull(iterator):
        x, _ = next(iterator)
        return first(x) if first is not None else x

    def one_pass(k):
        order = np.concatenate([rng.permutation(len(src)) for _ in range(k)])
        iterator = iter(tf_dataset(src, order, batch_size, threads=threads))
        return sum(int(pull(iterator).shape[0]) for _ in range(-(-len(order) // batch_size)))

    one_pass(1)
    c0, t0 = time.process_time(), time.perf_counter()
    n = one_pass(repeat)
    return time.perf_counter() - t0, time.process_time() - c0, n


def time_floor(size: int, batch_size: int, n_batches: int) -> float:
    """Batches/s of a tf.data pipeline of the same shape that reads nothing (one constant batch, pulled the
    same way): the fixed cost per batch, which bounds any pipeline built on tf.data, lokiml's included."""
    import tensorflow as tf

    x = tf.zeros((batch_size, size, size, 1), tf.uint8)
    y = tf.zeros((batch_size,), tf.int32)
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    ds = tf.data.Dataset.range(n_batches).map(lambda b: (x, y), num_parallel_calls=tf.data.AUTOTUNE,
                                              deterministic=True).with_options(options).prefetch(tf.data.AUTOTUNE)

    @tf.function
    def pull(iterator):
        batch, _ = next(iterator)
        return tf.shape(batch)[0]

    best = 0.0
    for _ in range(2):
        iterator = iter(ds)
        t0 = time.perf_counter()
        for _ in range(n_batches):
            pull(iterator)
        best = max(best, n_batches / (time.perf_counter() - t0))
    return best


# ----------------------------------------------------------------------------- the model

def uses_cached_features(p: dict) -> bool:
    """As lokiml.train decides: a frozen pre-trained base, no augmentation, cache_features true or auto."""
    return p["weights"] not in (None, "none") and not p["augment"] and p["cache_features"] in (True, "auto")


def time_model(p: dict, data: dict, steps: int, max_seconds: float) -> tuple[float, int, str]:
    """(wall s, images) the experiment's model takes for ``steps`` batches, after one warm-up call."""
    import keras
    import tensorflow as tf

    from lokiml import models
    from lokiml.store import Store
    from lokiml.datasets import ImageSource

    size, bs = int(p["image_size"]), int(p["batch_size"])
    store = Store(data["npys"], data["indexes"])
    src = ImageSource(store, data["ids"], data["labels"])
    model, base = models.build_model(p["model"], N_CLASSES, size, None, p["dropout"], p["seed"])
    batches = [src.fetch(np.arange(i * bs, (i + 1) * bs) % len(src)) for i in range(steps + 1)]
    if uses_cached_features(p):
        what = "features (once)"
        fmodel = models.feature_model(model)
        # compute_features' function: one trace for all batch sizes
        step = tf.function(lambda x: tf.cast(fmodel(x, training=False), tf.float32),
                           input_signature=[tf.TensorSpec((None, size, size, 1), tf.uint8)])
        step(batches[0][0][:1])  # warm-up on one image: the trace is the same for any batch size
        call = lambda x, y: step(x).numpy()  # noqa: E731
    else:
        frozen = p["weights"] not in (None, "none")
        if frozen:
            base.trainable = False
        what = "train step (frozen base)" if frozen else "train step"
        models.compile_model(model, p["optimizer"], p["learning_rate"])
        call = model.train_on_batch
        call(*batches[0])
    t0 = time.perf_counter()
    n = 0
    for x, y in batches[1:]:
        call(x, y)
        n += len(x)
        if time.perf_counter() - t0 > max_seconds:
            break
    wall = time.perf_counter() - t0
    del model, base, call, batches
    keras.backend.clear_session()
    gc.collect()
    return wall, n, what


# ----------------------------------------------------------------------------- main

SMOKE_EXPERIMENTS = {  # tiny stand-ins for --smoke: one of each kind
    "smoke_pretrained": {"model": "mobilenetv2", "weights": "imagenet", "image_size": 32, "batch_size": 4},
    "smoke_selftrained": {"model": "mobilenetv2", "weights": "none", "image_size": 32, "batch_size": 4},
}
SMOKE = ["--n", "8", "--repeat", "1", "--steps", "1"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "config" / "config.yaml"))
    ap.add_argument("--experiments", help="comma-separated names (default: every CNN experiment of --config)")
    ap.add_argument("--n", type=int, default=64, help="images per image size (default 64)")
    ap.add_argument("--repeat", type=int, default=10, help="lokiml pipeline: epochs over the n images (default 10)")
    ap.add_argument("--threads", type=int, default=2, help="TensorFlow threads for the model (train_model's 2)")
    ap.add_argument("--steps", type=int, default=2, help="timed model calls after the warm-up (default 2)")
    ap.add_argument("--max-seconds", type=float, default=45.0,
                    help="stop timing a model after the first call past this (default 45)")
    ap.add_argument("--no-model", action="store_true", help="pipelines only")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", help="keep the data here (default: a temporary folder)")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny sizes, seconds: two 32 px MobileNetV2 experiments, " + " ".join(SMOKE))
    args = ap.parse_args(argv)
    if args.smoke:
        args = ap.parse_args([*SMOKE, *(argv if argv is not None else sys.argv[1:])])
    logging.basicConfig(level=logging.WARNING)

    from lokiml import runtime, train

    if args.smoke:
        experiments, source = SMOKE_EXPERIMENTS, "--smoke"
    else:
        with open(args.config, encoding="utf-8") as fh:
            experiments, source = yaml.safe_load(fh)["experiments"], Path(args.config).name
    names = args.experiments.split(",") if args.experiments else \
        [k for k, v in experiments.items() if v and v.get("kind", "cnn") == "cnn"]
    params = {k: train.experiment_params(experiments[k]) for k in names}
    rt = runtime.configure(args.threads, next(iter(params.values())))

    import skimage
    import tensorflow as tf

    print(f"{len(names)} experiments from {source}; {args.n} LOKI-like images per size; "
          f"tensorflow {tf.__version__}, scikit-image {skimage.__version__}; model on {rt.threads} threads "
          f"({'GPU' if rt.gpus else 'CPU'}), pipelines on 1 thread", flush=True)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.workdir or tmp)
        data = {}
        for size in sorted({int(p["image_size"]) for p in params.values()}):
            t0 = time.perf_counter()
            data[size] = make_data(root, size, args.n, args.seed)
            print(f"data at {size} px: {time.perf_counter() - t0:.1f} s", flush=True)

        pipes = {}
        print("\ninput pipelines: images/s delivered, wall clock (per CPU-second), best of 2 epochs each, "
              "alternating; the same work on both sides", flush=True)
        for key in sorted({(int(p["image_size"]), int(p["batch_size"]), p["model"]) for p in params.values()}):
            size, bs, model = key
            runs = {
                "seed uint8": lambda: time_seed(data[size], size, bs, model, full=False),
                "lokiml uint8": lambda: time_lokiml(data[size], bs, args.repeat, threads=1),
                "seed float32": lambda: time_seed(data[size], size, bs, model, full=True),
                "lokiml float32": lambda: time_lokiml(data[size], bs, args.repeat, threads=1, model=model),
            }
            best = {k: [0.0, 0.0] for k in runs}
            for _ in range(2):
                for name, run in runs.items():
                    wall, cpu, n = run()
                    best[name] = [max(best[name][0], n / wall), max(best[name][1], n / cpu)]
            floor = time_floor(size, bs, max(50, args.repeat * args.n // bs))
            pipes[key] = {k: v[0] for k, v in best.items()}
            print(f"  {model} {size} px, batch {bs:>2}:", flush=True)
            for form in ("uint8", "float32"):
                (sw, sc), (lw, lc) = best[f"seed {form}"], best[f"lokiml {form}"]
                what = ("uint8 grey (a GPU run: the first layer on the GPU)" if form == "uint8" else
                        "float32, 3 channels, preprocessed (a CPU run: the first layer on the CPU)")
                print(f"    {what:<76s} seed {sw:7.1f} ({sc:7.1f}), lokiml {lw:7.1f} ({lc:7.1f}): "
                      f"{lw / sw:5.2f}x ({lc / sc:5.2f}x per CPU-second)", flush=True)
            print(f"    tf.data floor {floor:,.0f} batches/s = {floor * bs:,.0f} images/s", flush=True)

        rows = []
        if not args.no_model:
            print("\nwhat the model consumes (lokiml's model, with its first layer)", flush=True)
            for name, p in params.items():
                key = (int(p["image_size"]), int(p["batch_size"]), p["model"])
                wall, n, what = time_model(p, data[key[0]], args.steps, args.max_seconds)
                rate = n / wall
                rows.append((name, key, what, rate, pipes[key]))
                print(f"  {name}: {what}, {n} images in {wall:.1f} s: {rate:.3f} images/s", flush=True)

    print("\nsummary (images/s; ratios lokiml / seed for the same work)")
    print(f"  {'experiment':<38s} {'px':>5s} {'batch':>5s}  {'uint8 grey':>18s}  {'float32 3-channel':>18s}  "
          f"{'model consumes':>24s}  whole CPU step")
    for name, (size, bs, _), what, rate, pp in rows:
        # one image through the pipeline, then the model, one after the other (no overlap assumed)
        first = 1 / pp["lokiml float32"] - 1 / pp["lokiml uint8"]  # the first layer's cost per image on the CPU
        seed_step = 1 / pp["seed float32"] + 1 / rate - first
        lokiml_step = 1 / pp["lokiml uint8"] + 1 / rate
        print(f"  {name:<38s} {size:>5d} {bs:>5d}  {pp['lokiml uint8'] / pp['seed uint8']:17.2f}x  "
              f"{pp['lokiml float32'] / pp['seed float32']:17.2f}x  {rate:9.3f} {what:>14s}  "
              f"{seed_step / lokiml_step:5.3f}x")
    if not rows:
        for (size, bs, model), pp in pipes.items():
            print(f"  {model} {size} px batch {bs}: uint8 {pp['lokiml uint8'] / pp['seed uint8']:.2f}x, "
                  f"float32 {pp['lokiml float32'] / pp['seed float32']:.2f}x")
    print(f"total {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
