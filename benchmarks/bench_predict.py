"""Benchmark: classifying new LOKI-sized images, lokiml's predict job against the seed's batched predict.

    .venv/bin/python benchmarks/bench_predict.py [--n 128 --size 299 --model inceptionv3 --batch 32]
    .venv/bin/python benchmarks/bench_predict.py --smoke      # tiny sizes, seconds (run by the tests)

Writes ``--n`` LOKI-like JPEGs (benchmarks/loki_like.py: 300-1500 px sides, three equal channels),
builds one untrained classifier (:func:`lokiml.models.build_model`; the cost, not the accuracy, is
measured) and the seed's form of the same classifier (:func:`seed_baseline.seed_classifier`: the same
layer objects, so the same weights, on float32 three-channel input), and classifies the same images
both ways, in this process, with the same TensorFlow threads and the same batch size:

* seed: the seed never predicted new images; its evaluation (and so what a user of it would do)
  prepares the images first and then runs ``predict_generator`` over its ``LokiImageSequence``. Here:
  (1) preparation at its cheapest (:func:`seed_baseline.prepare_cheapest`: crop at 245, each crop on
  its own white square, PIL's resize, one JPEG each, one thread; the seed's step 2 as written is
  slower, see bench_normalise.py), (2) the Sequence (``skimage.io.imread``, crop, three channels,
  ``preprocess_input``) batch by batch into ``predict_on_batch`` -- batched, as the seed's
  ``predict_generator`` was.
* lokiml: :func:`lokiml.predict.predict_images`, what rule ``predict_images`` runs: images decoded
  and normalised in memory by a pool of ``--threads`` threads, chunk by chunk, while the model
  predicts the previous chunk with ``predict_on_batch``; the cast to float, the three channels and
  the preprocessing happen in the model's first layer.

Printed per step (preparation per core; the model part in wall time) and for the whole run (wall
time). The model's work is the same on both sides (checked: both forms give the same probabilities
on the same batch), so for a model of realistic size the whole-run ratio is near 1: prediction is
bounded by the network, not by the code around it.
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "workflow" / "scripts"))
sys.path.insert(0, str(HERE))

N_CLASSES = 7
SMOKE = ["--n", "6", "--size", "32", "--model", "mobilenetv2", "--batch", "4", "--min-side", "120",
         "--max-side", "240"]


def seed_predict(seed_model, prepared, size: int, batch: int, preprocess) -> tuple[np.ndarray, float]:
    """The seed's Sequence into predict_on_batch, batch by batch; (probabilities, wall s)."""
    from seed_baseline import LokiImageSequence

    seq = LokiImageSequence(prepared, np.zeros(len(prepared)), batch, (size, size), preprocess)
    t0 = time.perf_counter()
    out = [np.asarray(seed_model.predict_on_batch(seq[i][0])) for i in range(len(seq))]
    return np.concatenate(out), time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=128, help="images (default 128)")
    ap.add_argument("--size", type=int, default=299, help="the classifier's image size in px (default 299)")
    ap.add_argument("--model", default="inceptionv3")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--min-side", type=int, default=300, help="smallest side of the LOKI-like images (px)")
    ap.add_argument("--max-side", type=int, default=1500, help="largest side of the LOKI-like images (px)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, seconds: " + " ".join(SMOKE))
    args = ap.parse_args(argv)
    if args.smoke:
        args = ap.parse_args([*SMOKE, *(argv if argv is not None else sys.argv[1:])])
    logging.basicConfig(level=logging.WARNING)

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(2 if args.threads >= 2 else 1)
    import loki_like
    from seed_baseline import prepare_cheapest, seed_classifier, seed_preprocess

    from lokiml import models
    from lokiml.predict import predict_images
    from lokiml.store import NormParams, normalise_item

    with tempfile.TemporaryDirectory(prefix="bench_predict_") as tmp:
        root = Path(tmp)
        paths = loki_like.write_images(root / "new", args.n, seed=1, min_side=args.min_side, max_side=args.max_side)
        refs = [p.name for p in paths]
        n = len(refs)
        read = lambda ref: (root / "new" / ref).read_bytes()  # noqa: E731
        model, _ = models.build_model(args.model, N_CLASSES, args.size)
        seed_model = seed_classifier(model)
        preprocess = seed_preprocess(args.model)
        params = NormParams(size=args.size)

        # the same work: both forms of the classifier give the same probabilities on the same images
        x = np.stack([normalise_item(read(r), r, params) for r in refs[:2]])[..., None]
        same = np.abs(np.asarray(model.predict_on_batch(x))
                      - np.asarray(seed_model.predict_on_batch(preprocess(np.repeat(x, 3, -1))))).max()
        assert same < 1e-4, f"the two forms of the classifier differ by {same}"

        # warm-up, not timed: every batch shape of the timed runs is traced here
        for k in sorted({min(args.batch, n), n % args.batch} - {0}):
            warm = prepare_cheapest(paths[:k], root / f"warm{k}", args.size)
            seed_predict(seed_model, warm, args.size, args.batch, preprocess)
            predict_images(model, refs[:k], read, params, N_CLASSES, batch_size=args.batch, threads=args.threads)

        # seed: preparation (one thread) + its Sequence into the batched model
        c0, t0 = time.process_time(), time.perf_counter()
        prepared = prepare_cheapest(paths, root / "prepared", args.size)
        seed_prep_cpu, seed_prep_wall = time.process_time() - c0, time.perf_counter() - t0
        seed_probs, seed_model_wall = seed_predict(seed_model, prepared, args.size, args.batch, preprocess)
        seed_wall = seed_prep_wall + seed_model_wall

        # lokiml: the predict job's function, whole
        t0 = time.perf_counter()
        probs, errors = predict_images(model, refs, read, params, N_CLASSES, batch_size=args.batch,
                                       threads=args.threads)
        lokiml_wall = time.perf_counter() - t0
        assert not any(errors) and np.isfinite(probs).all() and len(probs) == len(seed_probs)

        # lokiml, step by step: its preparation on one thread, then the model on the prepared arrays
        c0 = time.process_time()
        arrays = np.stack([normalise_item(read(r), r, params) for r in refs])[..., None]
        lokiml_prep_cpu = time.process_time() - c0
        t0 = time.perf_counter()
        for b in range(0, len(arrays), args.batch):
            model.predict_on_batch(arrays[b:b + args.batch])
        lokiml_model_wall = time.perf_counter() - t0

    print(f"{n} LOKI-like JPEGs ({args.min_side}-{args.max_side} px sides), {args.model} at {args.size} px, "
          f"batch {args.batch}, {args.threads} TensorFlow threads, tensorflow {tf.__version__}")
    print(f"{'':<52s}{'seed':>12s}{'lokiml':>12s}   lokiml faster")
    rows = [
        ("prepare images, per core (images/CPU-s)", n / seed_prep_cpu, n / lokiml_prep_cpu),
        ("predict the prepared images, batched, wall (images/s)", n / seed_model_wall, n / lokiml_model_wall),
        ("whole run, wall (images/s)", n / seed_wall, n / lokiml_wall),
    ]
    for name, s, k in rows:
        print(f"  {name:<50s}{s:12.1f}{k:12.1f}   {k / s:5.2f}x")
    print(f"  (the seed reads its prepared JPEGs back and preprocesses them in NumPy, {seed_model_wall / seed_wall:.0%} "
          "of its whole run; lokiml predicts from memory, the same preprocessing in its model's first layer)")
    print(f"ratio (whole run, wall): {seed_wall / lokiml_wall:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
