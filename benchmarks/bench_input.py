"""Benchmark: images per second the training input pipeline delivers, against the seed's Sequence and the model.

    .venv/bin/python benchmarks/bench_input.py [--n 64 --steps 2 --threads 2 --experiments NAME,...]

For every CNN experiment of ``config/config.yaml`` (by default the seed's five: InceptionV3 at
1000 and 1530 px, ResNet101 at 1000 px, pre-trained or trained from scratch), at the experiment's
image size and batch size, in this process:

1. The same ``--n`` LOKI-like images (benchmarks/loki_like.py) are normalised once by lokiml
   (:func:`lokiml.store.normalise_shard`, the store that training reads) and written as the seed's
   prepared images (grey JPEGs of the same pixels at the experiment's size, saved with PIL's
   defaults as the seed's step 2 did).
2. Input pipelines, one thread each, whole epochs timed after a warm-up (best of two, the two
   pipelines alternating):

   * seed: the ``LokiImageSequence`` of the seed's training scripts (o2a-data/o2a-data-ml,
     example-scripts/classification_loki_deepLearning_*.py), reproduced as written:
     ``__getitem__`` reads every image of the batch with ``skimage.io.imread``, centre-crops it to
     the image shape, repeats the grey channel three times and applies the backbone's
     ``preprocess_input``. (The seed crops; it never resizes: its images were prepared at the
     experiment's size. ``fit_generator`` ran it with one worker thread.)
   * lokiml: :func:`lokiml.datasets.tf_dataset` over :class:`lokiml.datasets.ImageSource` (a
     shuffled order, batches gathered from the memory-mapped uint8 store by ``tf.numpy_function``,
     prefetch), with ``threads=1``; training itself now takes the same batches as a
     ``keras.utils.PyDataset`` (:func:`lokiml.datasets.make_batches`, any backend), compared with
     this one in benchmarks/bench_cpu_training.py. It delivers
     uint8 grey batches; the cast, the three channels and the backbone's preprocessing happen in
     the model's first layer, so their cost is in the model's rate below, not here.
   * tf.data floor: the same pipeline shape with nothing to read (one constant batch): the fixed
     cost of a batch, which bounds any tf.data pipeline, and what limits lokiml at batch size 1.

3. What the model consumes: the real Keras model of the experiment
   (:func:`lokiml.models.build_model`, weights=None: the cost, not the accuracy, is measured),
   TensorFlow configured as ``train_model`` configures it (:func:`lokiml.runtime.configure`
   with ``--threads``, the rule's 2 threads). A pre-trained experiment (frozen base, no
   augmentation) reads images only while its base features are computed once
   (:func:`lokiml.train.compute_features`: ``predict_on_batch`` on batches of one shape); its head then trains for every epoch on
   cached features and reads no image, so its consumption rate is that of the feature
   computation. An experiment trained from scratch consumes a batch per training step
   (``train_on_batch``: the step ``fit`` runs). One warm-up call (tracing), then ``--steps`` timed
   calls, stopping after the first one past ``--max-seconds``.

Rates are wall-clock images per second (the machine may be shared: ratios measured here, back to
back on the same images, are what count); the pipelines' rates per CPU-second of this process are
printed too. At these sizes a CPU needs seconds per image, so any reasonable pipeline keeps up
there: the ratio to the seed is what matters on a GPU, where the model consumes hundreds of
images per second.
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


# ----------------------------------------------------------------------------- the seed's Sequence

def _bounds(old_size, new_size):
    if new_size >= old_size:
        return (0, old_size)
    diff = old_size - new_size
    low = diff // 2 + diff % 2
    return (low, low + new_size)


def _crop_image(img, shape):
    left, right = _bounds(img.shape[0], shape[0])
    top, bottom = _bounds(img.shape[1], shape[1])
    img = img[left:right, top:bottom]
    return img[:, :, np.newaxis]


class LokiImageSequence:
    """The seed's Sequence (its keras.utils.Sequence base class left out: only __len__/__getitem__ are used)."""

    def __init__(self, X_set, y_set, batch_size, image_shape, preprocess_input):
        self._X = list(X_set)
        self._y = list(y_set)
        self._batch_size = batch_size
        self._image_shape = image_shape
        self._preprocess_input = preprocess_input

    def __len__(self):
        return int(np.ceil(len(self._X) / float(self._batch_size)))

    def __getitem__(self, idx):
        import skimage.io

        batch_X = self._X[idx * self._batch_size:(idx + 1) * self._batch_size]
        batch_y = self._y[idx * self._batch_size:(idx + 1) * self._batch_size]
        x = []
        for file_name in batch_X:
            z = skimage.io.imread(file_name)
            t = _crop_image(z, self._image_shape)
            d = t[:, :, 0]
            b = np.repeat(d[..., np.newaxis], 3, -1)
            x.append(b)
        x = self._preprocess_input(np.array(x))
        return (np.array(x), np.array(batch_y, dtype=np.int8))


def seed_preprocess(model: str):
    """The backbone's preprocess_input, as the seed imported it (inception_v3's, resnet's, ...)."""
    import keras

    from lokiml import models

    bb = models.get_backbone(model)
    if bb.mode == "none":
        return lambda x: x.astype("float32")
    return lambda x: keras.applications.imagenet_utils.preprocess_input(x, mode=bb.mode)


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

def time_seed(data: dict, size: int, batch_size: int, model: str) -> tuple[float, float, int]:
    """(wall s, CPU s, images) of one epoch of the seed's Sequence, after a warm-up epoch."""
    y = np.eye(N_CLASSES, dtype=np.float32)[data["labels"]]
    seq = LokiImageSequence(data["paths"], y, batch_size, (size, size), seed_preprocess(model))
    for i in range(min(2, len(seq))):
        seq[i]
    c0, t0 = time.process_time(), time.perf_counter()
    n = 0
    for i in range(len(seq)):
        x, _ = seq[i]
        n += len(x)
    assert x.shape[1:] == (size, size, 3) and x.dtype == np.float32
    return time.perf_counter() - t0, time.process_time() - c0, n


def time_lokiml(data: dict, batch_size: int, repeat: int, threads: int) -> tuple[float, float, int]:
    """(wall s, CPU s, images) of lokiml's training dataset over ``repeat`` x the items, after a warm-up pass.

    Batches are pulled inside a ``tf.function``, one call per batch, as Keras' ``fit`` pulls them
    (its train function calls ``next(iterator)``).
    """
    import tensorflow as tf

    from lokiml.datasets import ImageSource, tf_dataset
    from lokiml.store import Store

    store = Store(data["npys"], data["indexes"])
    src = ImageSource(store, data["ids"], data["labels"])
    rng = np.random.default_rng(0)

    @tf.function
    def pull(iterator):
        x, _ = next(iterator)
        return tf.shape(x)[0]

    def one_pass(k):
        order = np.concatenate([rng.permutation(len(src)) for _ in range(k)])
        iterator = iter(tf_dataset(src, order, batch_size, threads=threads))
        return sum(int(pull(iterator)) for _ in range(-(-len(order) // batch_size)))

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

    from lokiml import models
    from lokiml.datasets import ImageSource
    from lokiml.store import Store

    size, bs = int(p["image_size"]), int(p["batch_size"])
    store = Store(data["npys"], data["indexes"])
    src = ImageSource(store, data["ids"], data["labels"])
    model, base = models.build_model(p["model"], N_CLASSES, size, None, p["dropout"], p["seed"])
    batches = [src.fetch(np.arange(i * bs, (i + 1) * bs) % len(src)) for i in range(steps + 1)]
    if uses_cached_features(p):
        what = "features (once)"
        fmodel = models.feature_model(model)
        # compute_features' call: predict_on_batch on batches of one shape (one trace)
        fmodel.predict_on_batch(batches[0][0])  # warm-up: the trace
        call = lambda x, y: np.asarray(fmodel.predict_on_batch(x), dtype=np.float32)  # noqa: E731
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
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from lokiml import runtime, train

    with open(args.config, encoding="utf-8") as fh:
        experiments = yaml.safe_load(fh)["experiments"]
    names = args.experiments.split(",") if args.experiments else \
        [k for k, v in experiments.items() if v and v.get("kind", "cnn") == "cnn"]
    params = {k: train.experiment_params(experiments[k]) for k in names}
    rt = runtime.configure(args.threads, next(iter(params.values())))

    import skimage
    import tensorflow as tf

    print(f"{len(names)} experiments from {Path(args.config).name}; {args.n} LOKI-like images per size; "
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
              "alternating", flush=True)
        for key in sorted({(int(p["image_size"]), int(p["batch_size"]), p["model"]) for p in params.values()}):
            size, bs, model = key
            best = {"seed": [0.0, 0.0], "lokiml": [0.0, 0.0]}
            for _ in range(2):
                for name, (wall, cpu, n) in (("seed", time_seed(data[size], size, bs, model)),
                                             ("lokiml", time_lokiml(data[size], bs, args.repeat, threads=1))):
                    best[name] = [max(best[name][0], n / wall), max(best[name][1], n / cpu)]
            floor = time_floor(size, bs, max(50, args.repeat * args.n // bs))
            (lw, lc), (sw, sc) = best["lokiml"], best["seed"]
            pipes[key] = (lw, sw)
            print(f"  {model} {size} px, batch {bs:>2}: seed Sequence {sw:6.1f} ({sc:6.1f}), lokiml tf.data "
                  f"{lw:7.1f} ({lc:7.1f}): {lw / sw:5.1f}x faster ({lc / sc:5.1f}x per CPU-second); tf.data "
                  f"floor {floor:,.0f} batches/s = {floor * bs / sw:,.0f}x the seed", flush=True)

        rows = []
        if not args.no_model:
            print("\nwhat the model consumes", flush=True)
            for name, p in params.items():
                key = (int(p["image_size"]), int(p["batch_size"]), p["model"])
                wall, n, what = time_model(p, data[key[0]], args.steps, args.max_seconds)
                rate = n / wall
                lk, sd = pipes[key]
                rows.append((name, key, what, rate, lk, sd))
                print(f"  {name}: {what}, {n} images in {wall:.1f} s: {rate:.3f} images/s; lokiml's pipeline "
                      f"delivers {lk / rate:,.0f}x that, the seed's {sd / rate:,.0f}x", flush=True)

    print("\nsummary (images/s)")
    print(f"  {'experiment':<38s} {'px':>5s} {'batch':>5s}  {'model consumes':>22s}  {'lokiml':>8s}  {'seed':>7s}  "
          f"{'lokiml/seed':>11s}  pipeline faster than the model")
    for name, (size, bs, _), what, rate, lk, sd in rows:
        print(f"  {name:<38s} {size:>5d} {bs:>5d}  {rate:8.3f} {what:>13s}  {lk:8.1f}  {sd:7.1f}  {lk / sd:10.1f}x  "
              f"{'yes' if lk > rate else 'NO'} ({lk / rate:,.0f}x)")
    if not rows:
        for (size, bs, model), (lk, sd) in pipes.items():
            print(f"  {model} {size} px batch {bs}: lokiml {lk:.1f}, seed {sd:.1f}: {lk / sd:.1f}x")
    print(f"total {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
