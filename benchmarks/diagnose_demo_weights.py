"""How good are the demo's stand-in 'pre-trained' bases (lokiml/demo_weights.py)? Measured, not guessed.

Runs make_demo_weights' pretext pre-training of a backbone and, after chosen pretext epochs, judges the base
as the demo's frozen-base experiments use it: BatchNorm statistics calibrated on the demo's training
originals (precise BN, no labels), pooled features of the train/valid/test images, then

* ``logreg``: a logistic regression on standardised features (what the features can give a linear head),
* ``head``: the demo's own head (lokiml head_model: dropout 0.4 + softmax, RMSprop 1e-3, batch 32,
  ``--head-epochs`` epochs; the checkpoint of the lowest validation loss, as best.keras),

each as macro F1 on valid and test. Every epoch also prints the pretext accuracy on 120 held-out pretext
images (batch statistics: the moving ones are only set at the end). With ``--fine-tune LAYERS`` the base of
the last judged epoch is then fine-tuned (top LAYERS layers, BatchNorm frozen, as experiment key
``fine_tune``) with RMSprop at ``--fine-tune-lr``, and each epoch prints valid/test F1 and, on training
images, the accuracy in inference and in training mode (a gap would mean a train/inference mismatch).

Needs the data of a demo run (``results/data`` with ``split.tsv`` and the image store of ``--size``)::

    .venv/bin/python benchmarks/diagnose_demo_weights.py --data results/data --model inceptionv3 --size 96 \\
        --pretext-size 75 --epochs 6 --batch 16 --at 2,4,6

With ``--weights FILE`` (a stand-in written by rule ``make_demo_weights``, already calibrated) no pretext
runs: the file's base is judged as it is, by the logistic regression and by the demo's head on the raw
features, on each feature divided by its standard deviation over the training images (what rescaling the
base's last BatchNorm layers could do) and on standardised features (an affine map the base cannot apply)::

    .venv/bin/python benchmarks/diagnose_demo_weights.py --data results/data --model resnet101 --size 96 \\
        --weights resources/demo_weights/resnet101_seeded_random.weights.h5

Figures: README, "The demo's figures". One JSON line per judged epoch, also appended to ``--out``.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))


def load_parts(data: str, size: int):
    from lokiml.store import Store

    d = f"{data}/images/{size}px"
    store = Store(sorted(glob.glob(f"{d}/shard*.npy")), sorted(glob.glob(f"{d}/shard*.tsv")))
    split = pd.read_csv(f"{data}/split.tsv", sep="\t")
    classes = {c: i for i, c in enumerate(sorted(split["class_name"].unique()))}
    parts = {}
    for name in ("train", "valid", "test"):
        t = split[split["split"] == name]
        if name != "train":
            t = t[t["augmented"].astype(int) == 0]
        ids = t["item_id"].to_numpy()
        ok = store.ok(ids)
        parts[name] = (store.gather(ids[ok])[..., None], t["class_name"].map(classes).to_numpy()[ok])
    originals = split[(split["split"] == "train") & (split["augmented"].astype(int) == 0)]["item_id"].to_numpy()
    return parts, store.gather(originals[store.ok(originals)])[..., None], len(classes)


def macro_f1(y, pred) -> float:
    from sklearn.metrics import f1_score

    return round(float(f1_score(y, pred, average="macro")), 3)


def judge(model_name, base_weights, parts, calib, n_classes, size, head_epochs):
    """logreg and demo-head F1 of a base with ``base_weights`` (any size), calibrated on ``calib``."""
    from lokiml import bn, models

    full, base = models.build_model(model_name, n_classes, size, None, seed=1)
    base.set_weights(base_weights)
    prep = full.get_layer("preprocess")
    bn.precise_batchnorm(base, (prep(calib[i:i + 32]) for i in range(0, len(calib), 32)))
    base.trainable = False
    fm = models.feature_model(full)
    feats = {s: fm.predict(x, batch_size=64, verbose=0) for s, (x, _) in parts.items()}
    ys = {s: y for s, (_, y) in parts.items()}
    out = {"logreg": logreg_f1(feats, ys)}
    out["head"], out["head_best_epoch"], out["head_train_accuracy"] = head_f1(full, feats, ys, head_epochs)
    return out, full, base


def logreg_f1(feats, ys) -> dict:
    """A logistic regression on standardised features (what they can give a linear head): macro F1."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    sc = StandardScaler().fit(feats["train"])
    lr = LogisticRegression(max_iter=3000).fit(sc.transform(feats["train"]), ys["train"])
    return {s: macro_f1(ys[s], lr.predict(sc.transform(feats[s]))) for s in ("valid", "test")}


def head_f1(full, feats, ys, head_epochs):
    """``full``'s own head (the demo's: dropout 0.4 + softmax, RMSprop 1e-3, batch 32) trained on ``feats``, set
    to the checkpoint of the lowest validation loss, as best.keras: (macro F1 on valid and test, that
    checkpoint's epoch, training accuracy of the last epoch)."""
    import keras

    from lokiml import models

    head = models.head_model(full)
    models.compile_model(head, "rmsprop", 1e-3)
    best = [np.inf, None, 0]

    class Best(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if logs["val_loss"] < best[0]:
                best[:] = [logs["val_loss"], head.get_weights(), epoch + 1]

    hist = head.fit(feats["train"], ys["train"], batch_size=32, epochs=head_epochs, verbose=0, shuffle=True,
                    validation_data=(feats["valid"], ys["valid"]), callbacks=[Best()]).history
    head.set_weights(best[1])
    f1 = {s: macro_f1(ys[s], head.predict(feats[s], verbose=0).argmax(1)) for s in ("valid", "test")}
    return f1, best[2], round(float(hist["accuracy"][-1]), 3)


def judge_file(model_name, weights_path, parts, n_classes, size, head_epochs) -> dict:
    """A stand-in weights file as the frozen-base experiments use it (no calibration: the file is calibrated)."""
    from lokiml import models

    full, _ = models.build_model(model_name, n_classes, size, weights_path, seed=1)
    fm = models.feature_model(full)
    feats = {s: fm.predict(x, batch_size=64, verbose=0) for s, (x, _) in parts.items()}
    ys = {s: y for s, (_, y) in parts.items()}
    mean, sd = feats["train"].mean(0), feats["train"].std(0) + 1e-6

    def head(transform):  # a fresh head (same seed, same initial weights) on each form of the features
        fresh, _ = models.build_model(model_name, n_classes, size, None, seed=1)
        return head_f1(fresh, {k: transform(v) for k, v in feats.items()}, ys, head_epochs)[0]

    return {"weights": str(weights_path),
            "feature_mean": round(float(mean.mean()), 4), "feature_sd": round(float(sd.mean()), 4),
            "logreg": logreg_f1(feats, ys),
            "head_raw": head(lambda v: v),
            "head_scaled": head(lambda v: v / sd),
            "head_standardised": head(lambda v: (v - mean) / sd)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="results/data")
    ap.add_argument("--model", default="inceptionv3")
    ap.add_argument("--size", type=int, default=96, help="the demo experiment's image size")
    ap.add_argument("--pretext-size", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--n", type=int, default=40, help="pretext images per primitive and epoch")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--optimizer", default="adam")
    ap.add_argument("--schedule", default="cosine", choices=["cosine", "constant"])
    ap.add_argument("--at", default="", help="pretext epochs to judge, e.g. 2,4,6 (default: the last)")
    ap.add_argument("--head-epochs", type=int, default=60)
    ap.add_argument("--fine-tune", type=int, default=0, help="layers to fine-tune after the last judged epoch")
    ap.add_argument("--fine-tune-lr", type=float, default=1e-4)
    ap.add_argument("--fine-tune-epochs", type=int, default=3)
    ap.add_argument("--weights", default=None, help="judge this stand-in weights file as it is (no pretext)")
    ap.add_argument("--out", default="benchmarks/out/diagnose_demo_weights.jsonl")
    a = ap.parse_args(argv)
    import keras

    from lokiml import models
    from lokiml.demo_weights import make_demo_weights, pretext_images

    parts, calib, n_classes = load_parts(a.data, a.size)
    if a.weights:
        rec = judge_file(a.model, a.weights, parts, n_classes, a.size, a.head_epochs)
        rec.update(model=a.model, size=a.size)
        print(json.dumps(rec), flush=True)
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        with open(a.out, "a") as fh:
            fh.write(json.dumps(rec) + "\n")
        return
    at = {int(x) for x in a.at.split(",") if x} or {a.epochs}
    psize = a.pretext_size or a.size
    xv, yv = pretext_images(20, psize, 1001)
    t0 = time.process_time()
    last = {}

    def emit(rec):
        rec.update(model=a.model, size=a.size, pretext_size=psize, batch=a.batch, n=a.n, lr=a.lr,
                   optimizer=a.optimizer, schedule=a.schedule)
        print(json.dumps(rec), flush=True)
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        with open(a.out, "a") as fh:
            fh.write(json.dumps(rec) + "\n")

    def on_epoch(full, epoch):
        acc = float((np.asarray(full(xv, training=True)).argmax(1) == yv).mean())
        rec = {"epoch": epoch, "pretext_accuracy_batch_stats": round(acc, 3),
               "cpu_seconds": round(time.process_time() - t0, 1)}
        if epoch in at:
            rec.update(judge(a.model, models.get_base(full).get_weights(), parts, calib, n_classes, a.size,
                             a.head_epochs)[0])
            last["weights"] = models.get_base(full).get_weights()
        emit(rec)

    make_demo_weights(a.model, Path(a.out).with_suffix(".weights.h5"), calib[..., 0], n_per_class=a.n,
                      epochs=a.epochs, batch_size=a.batch, learning_rate=a.lr, pretext_size=psize,
                      on_epoch=on_epoch, optimizer=a.optimizer, schedule=a.schedule)
    if a.fine_tune and last:
        _, full, base = judge(a.model, last["weights"], parts, calib, n_classes, a.size, a.head_epochs)
        n_layers, _ = models.set_fine_tune_trainable(base, a.fine_tune)
        models.compile_model(full, "rmsprop", a.fine_tune_lr)
        xt, yt = parts["train"][0][:96], parts["train"][1][:96]
        for e in range(a.fine_tune_epochs):
            keras.utils.set_random_seed(e)
            full.fit(*parts["train"], batch_size=32, epochs=1, verbose=0, shuffle=True)
            emit({"fine_tune_epoch": e + 1, "layers": a.fine_tune, "with_weights": n_layers,
                  "fine_tune_lr": a.fine_tune_lr,
                  "f1": {s: macro_f1(parts[s][1], full.predict(parts[s][0], batch_size=32, verbose=0).argmax(1))
                         for s in ("valid", "test")},
                  "train_accuracy_inference": round(float((np.asarray(full(xt, training=False)).argmax(1) == yt)
                                                          .mean()), 3),
                  "train_accuracy_training_mode": round(float((np.asarray(full(xt, training=True)).argmax(1)
                                                               == yt).mean()), 3)})


if __name__ == "__main__":
    main()
