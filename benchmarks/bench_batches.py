"""Benchmark: images/s that ``Model.fit`` gets through from lokiml's two input pipelines, per Keras backend.

    .venv/bin/python benchmarks/bench_batches.py [--n 64 --epochs 3 --backends tensorflow,jax]

Training reads batches from the memory-mapped uint8 store as a ``keras.utils.PyDataset``
(:func:`lokiml.datasets.make_batches`, any backend); :func:`lokiml.datasets.tf_dataset` builds the very
same batches with tf.data (TensorFlow only). Both feed ``fit`` with a model that costs next to nothing
(the uint8 input cast to float and averaged, then a Dense layer), so what is timed is the pipeline and
``fit``'s own cost per batch, at the default experiments' sizes and batch sizes (1000 px batch 1 and 4,
1530 px batch 16) and at 299 px batch 32. Whole epochs after a warm-up epoch; best of ``--epochs``.
Each backend runs in a process of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "workflow" / "scripts"))

CASES = [(1000, 1), (1000, 4), (1530, 16), (299, 32)]


def measure(n: int, epochs: int, cases) -> list[dict]:
    import numpy as np
    import pandas as pd

    import keras
    from lokiml import runtime
    from lokiml.datasets import GreyLevels, ImageSource, make_batches
    from lokiml.store import Store

    runtime.configure(2, {})
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size, bs in cases:
            rng = np.random.default_rng(0)
            root = Path(tmp) / str(size)
            root.mkdir()
            np.save(root / "s.npy", rng.integers(0, 256, (n, size, size), dtype=np.uint8))
            ids = [f"i{i}" for i in range(n)]
            pd.DataFrame({"item_id": ids, "row": range(n), "status": "ok"}).to_csv(root / "s.tsv", sep="\t",
                                                                                index=False)
            src = ImageSource(Store([root / "s.npy"], [root / "s.tsv"]), ids, rng.integers(0, 3, n))
            inputs = keras.Input((size, size, 1), dtype="uint8")
            x = keras.layers.GlobalAveragePooling2D()(GreyLevels("float32")(inputs))
            model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
            model.compile("sgd", "sparse_categorical_crossentropy")
            pipes = ["pydataset"] + (["tf.data"] if keras.config.backend() == "tensorflow" else [])
            for pipe in pipes:
                best = 0.0
                for e in range(epochs + 1):
                    order = rng.permutation(n)
                    t0 = time.perf_counter()
                    model.fit(make_batches(src, order, bs, threads=1, pipeline=pipe, drop_remainder=True), epochs=1,
                              verbose=0, shuffle=False)
                    if e:  # the first epoch traces and compiles
                        best = max(best, (n // bs * bs) / (time.perf_counter() - t0))
                rows.append({"backend": keras.config.backend(), "pipeline": pipe, "size": size, "batch": bs,
                             "images_per_s": round(best, 1)})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=64, help="images per size (default 64)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--backends", default="tensorflow,jax")
    ap.add_argument("--smoke", action="store_true", help="64 px only")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    cases = [(64, 4), (128, 32)] if args.smoke else CASES
    if args.child:
        print(json.dumps(measure(args.n, args.epochs, cases)))
        return 0
    rows = []
    for backend in args.backends.split(","):
        cmd = [sys.executable, __file__, "--child", backend, "--n", str(args.n), "--epochs", str(args.epochs)]
        cmd += ["--smoke"] if args.smoke else []
        res = subprocess.run(cmd, env={**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"},
                             capture_output=True, text=True)
        if res.returncode != 0:
            print(f"{backend}: failed: {res.stderr.strip().splitlines()[-1] if res.stderr.strip() else '?'}")
            continue
        rows += json.loads(res.stdout.strip().splitlines()[-1])
    print(f"{'backend':<11} {'pipeline':<10} {'px':>5} {'batch':>5} {'images/s':>9}")
    for r in rows:
        print(f"{r['backend']:<11} {r['pipeline']:<10} {r['size']:>5} {r['batch']:>5} {r['images_per_s']:>9.1f}")
    tf_rows = {(r["size"], r["batch"], r["pipeline"]): r["images_per_s"] for r in rows if r["backend"] == "tensorflow"}
    for size, bs in cases:
        if (size, bs, "tf.data") in tf_rows:
            print(f"TensorFlow {size} px batch {bs}: PyDataset / tf.data = "
                  f"{tf_rows[(size, bs, 'pydataset')] / tf_rows[(size, bs, 'tf.data')]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
