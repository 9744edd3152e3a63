"""Benchmark: an epoch of head training on cached features against an epoch of the full frozen network.

    .venv/bin/python benchmarks/bench_cached_features.py [--size 299 --n 200 --model inceptionv3]
    .venv/bin/python benchmarks/bench_cached_features.py --smoke    # tiny sizes, seconds (run by the tests)

Builds a store of synthetic grey images (3 classes of shapes) and a weights file for the
frozen base (a seeded random initialisation: the cost, not the accuracy, is measured), then
runs lokiml.train.train_experiment twice in this process, with the same data and parameters:
once with ``cache_features: true`` and once with ``cache_features: false``. Both train for 2
epochs; the times compared are those of the second epoch (the first one also traces the
training functions). The one-off feature computation is printed separately.

The seed trains its frozen-base experiments the second way (the whole network every epoch, for
up to 110 epochs at 1000 px, 150 at 1530 px). So two ratios are printed: per epoch (head epoch on
cached features vs full frozen epoch), and for a whole training of ``--seed-epochs`` epochs, where
lokiml pays the one-off feature computation once: first full epoch + full epoch x (E - 1) vs
features + first head epoch + head epoch x (E - 1), the first epochs as measured, with their
tracing. The whole run's ratio is bounded by E x full epoch / features, so it is much smaller than
the per-epoch one. The full epoch runs lokiml's own input pipeline, faster than the seed's Sequence:
the seed's side is, if anything, flattered.

Expect the per-epoch ratio to grow with image size, model size and the number of items: the head
epoch costs a few milliseconds plus Keras' fixed per-epoch overhead, the full epoch a forward pass
of the base over every image.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))

CLASSES = ["circle", "square", "cross"]
SMOKE = ["--size", "32", "--n", "24", "--model", "mobilenetv2", "--batch-size", "8"]


def synthetic_image(kind: int, size: int, rng) -> np.ndarray:
    """A dark circle, square or cross at a random place and size on a light, noisy background."""
    yy, xx = np.mgrid[:size, :size]
    cy, cx = size / 2 + rng.uniform(-size / 8, size / 8, 2)
    r = size * rng.uniform(0.15, 0.3)
    if kind == 0:
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2
    elif kind == 1:
        mask = (abs(yy - cy) < r) & (abs(xx - cx) < r)
    else:
        mask = ((abs(yy - cy) < r / 4) & (abs(xx - cx) < r)) | ((abs(xx - cx) < r / 4) & (abs(yy - cy) < r))
    img = np.where(mask, rng.integers(20, 90), 245).astype(np.int16)
    return np.clip(img + rng.integers(-8, 8, (size, size)), 0, 255).astype(np.uint8)


def make_store(root: Path, n: int, size: int, seed: int = 0) -> dict:
    """A split table (80 % train, 20 % valid) and a one-shard image store in lokiml.store's format."""
    rng = np.random.default_rng(seed)
    ids = [f"item{i:06d}" for i in range(n)]
    kinds = np.arange(n) % len(CLASSES)
    parts = np.where(rng.random(n) < 0.8, "train", "valid")
    parts[:len(CLASSES)], parts[len(CLASSES):2 * len(CLASSES)] = "train", "valid"
    arr = np.lib.format.open_memmap(root / "shard0.npy", mode="w+", dtype=np.uint8, shape=(n, size, size))
    for i in range(n):
        arr[i] = synthetic_image(int(kinds[i]), size, rng)
    arr.flush()
    del arr
    pd.DataFrame({"item_id": ids, "row": np.arange(n), "status": "ok"}).to_csv(root / "shard0.tsv", sep="\t",
                                                                              index=False)
    pd.DataFrame({"item_id": ids, "object_id": ids, "class_name": [CLASSES[k] for k in kinds],
                  "image_ref": [f"{i}.png" for i in ids], "augmented": 0, "flip": 0, "angle": 0, "dx": 0, "dy": 0,
                  "split": parts}).to_csv(root / "split.tsv", sep="\t", index=False)
    return {"split_path": str(root / "split.tsv"), "store_npys": [str(root / "shard0.npy")],
            "store_indexes": [str(root / "shard0.tsv")], "classes": CLASSES}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=299, help="image side in px (default 299)")
    ap.add_argument("--n", type=int, default=200, help="number of items, 80%% train / 20%% valid (default 200)")
    ap.add_argument("--model", default="inceptionv3", help="backbone (default inceptionv3)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", help="keep the store and outputs here (default: a temporary folder)")
    ap.add_argument("--seed-epochs", type=int, default=110,
                    help="epochs of a whole training, for the whole-run ratio (default 110, the seed's 1000 px runs)")
    ap.add_argument("--verbose", action="store_true", help="show the training log")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, seconds: " + " ".join(SMOKE))
    args = ap.parse_args(argv)
    if args.smoke:
        args = ap.parse_args([*SMOKE, *(argv if argv is not None else sys.argv[1:])])

    from lokiml.logs import setup_logging

    setup_logging(logging.INFO if args.verbose else logging.WARNING)
    import tensorflow as tf

    # Thread pools can only be set before TensorFlow's first op (the weights file below is one).
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(2 if args.threads >= 2 else 1)
    from lokiml import models
    from lokiml.train import train_experiment

    with tempfile.TemporaryDirectory(prefix="bench_cached_features_") as tmp:
        root = Path(args.workdir or tmp)
        root.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        data = make_store(root, args.n, args.size)
        weights = models.save_seeded_base_weights(args.model, root / f"{args.model}_seeded.weights.h5", seed=1)
        setup_s = time.monotonic() - t0
        params = {"model": args.model, "image_size": args.size, "batch_size": args.batch_size, "epochs": 2,
                  "early_stopping": None}
        results = {}
        for label, cache in (("cached", True), ("full", False)):
            out = root / label
            info = train_experiment(
                **data, out_model=out / "model.keras", out_best=out / "best.keras", out_classes=out / "classes.txt",
                out_history=out / "history.tsv", out_summary=out / "summary.txt", out_info=out / "info.json",
                state_dir=out / "state", params={**params, "cache_features": cache}, weights_path=weights,
                threads=args.threads)
            assert info["cached_features"] is cache
            results[label] = info

    c, f = results["cached"], results["full"]
    head_epoch, full_epoch = c["seconds_per_epoch"][1], f["seconds_per_epoch"][1]
    print(f"model {args.model}, {args.size} px, {c['items']['train']} train + {c['items']['valid']} valid items, "
          f"batch {args.batch_size}, {args.threads} threads (store and weights made in {setup_s:.1f} s)")
    print(f"feature computation (one-off, train + valid): {c['feature_seconds']:.2f} s")
    print(f"head epoch on cached features:  {head_epoch:.3f} s   (first epoch, with tracing: "
          f"{c['seconds_per_epoch'][0]:.3f} s)")
    print(f"full frozen network epoch:      {full_epoch:.3f} s   (first epoch, with tracing: "
          f"{f['seconds_per_epoch'][0]:.3f} s)")
    print(f"ratio per epoch, full / cached: {full_epoch / head_epoch:.0f}x (target >= 100x)")
    e = args.seed_epochs

    def whole(epochs: int) -> tuple[float, float]:
        """Seconds of a training of ``epochs`` epochs: the first epoch as measured (tracing included), the
        others at the second epoch's time; the cached run adds its one-off feature computation."""
        full = f["seconds_per_epoch"][0] + (epochs - 1) * full_epoch
        cached = c["feature_seconds"] + c["seconds_per_epoch"][0] + (epochs - 1) * head_epoch
        return full, cached

    (whole_full, whole_cached), one, ten = whole(e), whole(1), whole(10)
    print(f"whole training of {e} epochs (first epochs with tracing, the one-off features counted): full network "
          f"{whole_full:.1f} s, features + head {whole_cached:.1f} s: {whole_full / whole_cached:.1f}x "
          f"(1 epoch: {one[0] / one[1]:.2f}x, 10 epochs: {ten[0] / ten[1]:.1f}x)")
    print(f"measured runs of 2 epochs (with tracing and model saving): cached {c['seconds_total']:.1f} s, "
          f"full {f['seconds_total']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
