"""Why does a CNN trained from scratch score at chance in inference mode? Measure each candidate cause.

Trains one backbone from scratch (or a head on a frozen base) on a normalised image store, epoch by
epoch, with plain ``model.fit`` and the seed's recipe (RMSprop, softmax + cross-entropy), and after every
epoch measures, on the validation images:

* ``val_infer``: accuracy in inference mode (moving BatchNorm statistics), what evaluation sees;
* ``val_batch``: accuracy with every BatchNorm layer normalising by the batch's own statistics (dropout
  off): the same weights without the moving statistics;
* ``val_precise``: accuracy in inference mode after the moving statistics were re-estimated on the
  training images (precise BN: the mean of per-batch statistics, weights unchanged);
* ``train_infer``: accuracy on the training images (not augmented) in inference mode: if it is at chance
  too, the network did not overfit, its inference-mode path is broken;
* ``top_share``: share of the validation predictions (inference mode) in the most predicted class;
* ``bn_lag``: median over BatchNorm layers of |moving mean - precise mean| / sqrt(precise variance):
  how far the moving statistics lag behind the ones the current weights produce.

Every measurement restores the weights and statistics it touched, so training goes on unchanged.

    nice -n 10 .venv/bin/python benchmarks/diagnose_training.py --data results/data --size 96 --epochs 8

(``--data`` holds ``split.tsv`` and ``images/{size}px/``, as written by the workflow.)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))


def load(data: Path, size: int, limit_train: int | None = None):
    from lokiml.io import read_tsv
    from lokiml.store import Store

    split = read_tsv(data / "split.tsv")
    folder = data / "images" / f"{size}px"
    npys = sorted(folder.glob("shard*.npy"))
    store = Store(npys, [p.with_suffix(".tsv") for p in npys])
    classes = sorted(split["class_name"].unique())
    index = {c: i for i, c in enumerate(classes)}
    out = {}
    for part in ("train", "valid", "test"):
        rows = split[split["split"] == part]
        ids = rows["item_id"].to_numpy()
        ok = store.ok(ids)
        out[part] = (store.gather(ids[ok])[..., None], rows["class_name"].map(index).to_numpy()[ok])
    return out, classes


def bn_layers(model):
    import keras

    out = []

    def walk(m):
        for layer in m.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                out.append(layer)
            if hasattr(layer, "layers"):
                walk(layer)

    walk(model)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("results/data"))
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--model", default="inceptionv3")
    ap.add_argument("--weights", default=None, help="weights file of the base (frozen); default: from scratch")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--optimizer", default="rmsprop")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--momentum", type=float, default=None, help="BatchNorm momentum (default: Keras' 0.99)")
    ap.add_argument("--precise-train", action="store_true",
                    help="also train with precise BN before each epoch's end (the fix under test)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras

    from lokiml import models
    from lokiml.bn import precise_batchnorm

    data, classes = load(args.data, args.size)
    (xt, yt), (xv, yv) = data["train"], data["valid"]
    print(f"# {args.model} {args.size}px, weights {args.weights or 'none'}, {len(classes)} classes, "
          f"train {len(xt)}, valid {len(xv)}, batch {args.batch}, {args.optimizer} {args.lr}, "
          f"BN momentum {args.momentum or 0.99}, chance {1 / len(classes):.3f}", flush=True)
    model, base = models.build_model(args.model, len(classes), args.size, args.weights, 0.4, args.seed)
    bns = bn_layers(base)
    if args.momentum is not None:
        for layer in bns:
            layer.momentum = args.momentum
    models.compile_model(model, args.optimizer, args.lr)
    preprocess = model.get_layer("preprocess")
    pool, dense = model.get_layer("avg_pool"), model.get_layer("predictions")

    def predict_batch_stats(x):
        saved = [[keras.ops.convert_to_numpy(v) for v in (b.moving_mean, b.moving_variance)] for b in bns]
        out = []
        for i in range(0, len(x), args.batch):
            h = base(preprocess(keras.ops.convert_to_tensor(x[i:i + args.batch])), training=True)
            out.append(keras.ops.convert_to_numpy(dense(pool(h))))
        for b, (m, v) in zip(bns, saved):
            b.moving_mean.assign(m)
            b.moving_variance.assign(v)
        return np.concatenate(out)

    def acc(p, y):
        return float((p.argmax(1) == y).mean())

    print("epoch\tseconds\tloss\ttrain_acc\tval_infer\tval_batch\tval_precise\ttrain_infer\ttop_share\tbn_lag",
          flush=True)
    for epoch in range(1, args.epochs + 1):
        t0 = time.monotonic()
        h = model.fit(xt, yt, batch_size=args.batch, epochs=1, verbose=0, shuffle=True).history
        sec = time.monotonic() - t0
        p_inf = model.predict(xv, batch_size=64, verbose=0)
        p_tr = model.predict(xt, batch_size=64, verbose=0)
        p_bat = predict_batch_stats(xv) if bns and base.trainable else p_inf
        if bns and base.trainable:
            saved = [[keras.ops.convert_to_numpy(v) for v in (b.moving_mean, b.moving_variance)] for b in bns]
            precise_batchnorm(base, lambda: (preprocess(keras.ops.convert_to_tensor(xt[i:i + args.batch]))
                                             for i in range(0, len(xt), args.batch)))
            lag = np.median([
                np.mean(np.abs(m - keras.ops.convert_to_numpy(b.moving_mean))
                        / np.sqrt(keras.ops.convert_to_numpy(b.moving_variance) + 1e-3))
                for b, (m, _) in zip(bns, saved)])
            p_pre = model.predict(xv, batch_size=64, verbose=0)
            if not args.precise_train:
                for b, (m, v) in zip(bns, saved):
                    b.moving_mean.assign(m)
                    b.moving_variance.assign(v)
        else:
            p_pre, lag = p_inf, 0.0
        top = np.bincount(p_inf.argmax(1), minlength=len(classes)).max() / len(p_inf)
        print(f"{epoch}\t{sec:.1f}\t{h['loss'][-1]:.3f}\t{h['accuracy'][-1]:.3f}\t{acc(p_inf, yv):.3f}\t"
              f"{acc(p_bat, yv):.3f}\t{acc(p_pre, yv):.3f}\t{acc(p_tr, yt):.3f}\t{top:.2f}\t{lag:.2f}", flush=True)


if __name__ == "__main__":
    main()
