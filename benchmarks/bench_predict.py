"""Benchmark: images per second of lokiml's batched prediction against the seed's per-image loop.

    .venv/bin/python benchmarks/bench_predict.py [--n 300 --size 96 --model mobilenetv2 --batch 64]

Writes the synthetic demo export (lokiml.demo) into a temporary folder, builds one untrained
classifier (lokiml.models.build_model; a seeded random base: the cost, not the accuracy, is
measured) and classifies the same ``--n`` images of the export twice, in this process:

* seed: the approach of the seed's prediction scripts, one image at a time in a Python loop:
  read the file with PIL, convert to grey, resize to the training resolution, ``model.predict``
  on a batch of one;
* lokiml: :func:`lokiml.predict.predict_images`: images read and normalised (crop to the object,
  pad to a square, resize: exactly as for training) by a thread pool, chunk by chunk, while the
  model predicts the previous chunk in batches of ``--batch`` with ``predict_on_batch``.

Both are warmed up on a few images first (graph tracing is not counted). lokiml does more work
per image (the normalisation that training used), and is still faster: the per-call overhead of
``model.predict`` dominates the seed's loop.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))


def seed_loop(model, paths, size):
    from PIL import Image

    out = []
    for p in paths:
        img = Image.open(p).convert("L").resize((size, size))
        x = np.asarray(img, dtype=np.uint8)[None, ..., None]
        out.append(model.predict(x, verbose=0)[0])
    return np.array(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--model", default="mobilenetv2")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    from lokiml import demo, models
    from lokiml.predict import Input, predict_images
    from lokiml.store import NormParams

    with tempfile.TemporaryDirectory() as tmp:
        export = Path(tmp) / "export"
        demo.make_demo_export(export, seed=1, scale=max(1.0, args.n / 400))
        src = Input(export)
        refs = list(src.items["img_file_name"][src.items["outcome"] == "todo"])[: args.n]
        if len(refs) < args.n:
            print(f"only {len(refs)} images in the demo export")
        model, _ = models.build_model(args.model, 7, args.size)
        params = NormParams(size=args.size)

        # warm-up (tracing), not timed
        seed_loop(model, [export / r for r in refs[:3]], args.size)
        predict_images(model, refs[:args.batch], src.read, params, 7, batch_size=args.batch, threads=args.threads)

        t0 = time.perf_counter()
        seed_loop(model, [export / r for r in refs], args.size)
        t_seed = time.perf_counter() - t0

        t0 = time.perf_counter()
        probs, errors = predict_images(model, refs, src.read, params, 7, batch_size=args.batch,
                                       threads=args.threads)
        t_lokiml = time.perf_counter() - t0
        assert not any(errors) and np.isfinite(probs).all()
        src.close()

    n = len(refs)
    print(f"{n} images, {args.model} at {args.size} px, {args.threads} threads, tensorflow {tf.__version__}")
    print(f"seed (per-image PIL + model.predict): {n / t_seed:8.1f} images/s  ({t_seed:.1f} s)")
    print(f"lokiml (batched, threaded decoding):  {n / t_lokiml:8.1f} images/s  ({t_lokiml:.1f} s)")
    print(f"ratio: {t_seed / t_lokiml:.1f}x")


if __name__ == "__main__":
    main()
