"""Time to accuracy on CPU: validation macro F1 against wall time, for the CPU recipe and the seed's settings.

In one process, one after the other, on the same normalised images and split, trains

* ``recipe``: the experiment ``cpu_recipe`` of config/cpu_recipe.yaml (a compact backbone from scratch,
  AdamW, warm-up + cosine, label smoothing, class weights, on-the-fly augmentation, precise BN);
* ``seed``: the seed's self-trained InceptionV3 (``inceptionv3_selftrained_rmsprop_1000`` of
  config/config.yaml: RMSprop 1e-3, batch 4, constant rate), shrunk to the same image size, with this
  project's BatchNorm handling (precise BN);
* ``seed_keras_bn`` (unless ``--no-control``): the same with Keras' moving statistics (``batchnorm.precise:
  false``), i.e. how the seed's recipe trained before issue 13;

each for at most ``--minutes`` of training (checked after every epoch), and after every epoch measures the
macro F1 of the model on the validation images in inference mode (the measuring time is not counted). It
prints one row per epoch and a summary: best validation macro F1, the wall time to reach 0.5 / 0.7 / 0.9,
and the recipe's time to the seed's best F1 as a ratio. With ``--demo`` it first makes the demo's data
(Snakemake, config/demo.yaml) in a scratch folder.

    nice -n 10 .venv/bin/python benchmarks/bench_time_to_accuracy.py --data DIR/results/data --size 96 --minutes 6
    .venv/bin/python benchmarks/bench_time_to_accuracy.py --smoke     # synthetic shapes, one epoch (the tests)

``--data``: a folder with ``split.tsv`` and ``images/{size}px/shard*.npy`` as the workflow writes them.
Results: benchmarks/out/time_to_accuracy.tsv (and .svg); figures in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow" / "scripts"))

THRESHOLDS = (0.5, 0.7, 0.9)


class _Budget(Exception):
    pass


def macro_f1(y, pred, n):
    f1 = []
    for c in range(n):
        tp = np.sum((pred == c) & (y == c))
        fp = np.sum((pred == c) & (y != c))
        fn = np.sum((pred != c) & (y == c))
        f1.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return float(np.mean(f1))


def configs(size: int, epochs: int, control: bool) -> dict:
    import yaml

    recipe = yaml.safe_load((ROOT / "config" / "cpu_recipe.yaml").read_text())["experiments"]["cpu_recipe"]
    seed = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["experiments"][
        "inceptionv3_selftrained_rmsprop_1000"]
    out = {"recipe": {**recipe, "image_size": size, "epochs": epochs},
           "seed": {**seed, "image_size": size, "epochs": epochs}}
    if control:
        out["seed_keras_bn"] = {**copy.deepcopy(out["seed"]), "batchnorm": {"precise": False}}
    for p in out.values():
        p["early_stopping"] = None
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, help="results/data of a workflow run (required unless --smoke)")
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--minutes", type=float, default=5.0, help="training budget per configuration")
    ap.add_argument("--epochs", type=int, default=60, help="planned epochs (the schedule's length)")
    ap.add_argument("--only", nargs="*", default=None, help="names of configurations to run")
    ap.add_argument("--no-control", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "time_to_accuracy.tsv")
    ap.add_argument("--smoke", action="store_true", help="36 synthetic 32 px images of 3 shapes in a temporary "
                    "folder, the recipe only (the seed's InceptionV3 needs 75 px and minutes), one epoch: that it "
                    "still runs")
    args = ap.parse_args(argv)
    if args.smoke:
        with tempfile.TemporaryDirectory(prefix="tta_smoke_") as tmp:
            sys.path.insert(0, str(ROOT / "benchmarks"))
            from bench_cached_features import make_store

            data = Path(tmp) / "data"
            (data / "images" / "32px").mkdir(parents=True)
            make_store(data / "images" / "32px", 36, 32)
            (data / "images" / "32px" / "split.tsv").rename(data / "split.tsv")
            return main(["--data", str(data), "--size", "32", "--minutes", "0", "--epochs", "2", "--no-control",
                         "--only", "recipe", "--out", str(Path(tmp) / "tta.tsv")])
    if args.data is None:
        ap.error("--data is required (or --smoke)")

    import pandas as pd

    from lokiml import train
    from lokiml.io import read_tsv
    from lokiml.store import Store

    split = read_tsv(args.data / "split.tsv")
    classes = sorted(split["class_name"].unique())
    folder = args.data / "images" / f"{args.size}px"
    npys = sorted(str(p) for p in folder.glob("shard*.npy"))
    indexes = [p[:-4] + ".tsv" for p in npys]
    store = Store(npys, indexes)
    valid = split[(split["split"] == "valid") & (split["augmented"].astype(int) == 0)]
    ids = valid["item_id"].to_numpy()
    ok = store.ok(ids)
    xv = store.gather(ids[ok])[..., None]
    yv = valid["class_name"].map({c: i for i, c in enumerate(classes)}).to_numpy()[ok]
    n_train = int((split["split"] == "train").sum())
    print(f"# {len(classes)} classes, {n_train} training images, {len(yv)} validation objects, {args.size} px, "
          f"budget {args.minutes} min per configuration, {args.threads} threads", flush=True)
    rows = []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    runs = configs(args.size, args.epochs, not args.no_control)
    for name, params in runs.items():
        if args.only and name not in args.only:
            continue
        clock = {"start": time.monotonic(), "measuring": 0.0}

        def on_epoch(model, row, name=name, clock=clock):
            t = time.monotonic()
            wall = t - clock["start"] - clock["measuring"]
            pred = np.asarray(model.predict(xv, batch_size=64, verbose=0)).argmax(1)
            f1 = macro_f1(yv, pred, len(classes))
            rows.append({"config": name, "epoch": row["epoch"], "wall_s": round(wall, 1),
                         "val_accuracy": round(row["val_accuracy"], 4), "val_macro_f1": round(f1, 4),
                         "top_share": round(np.bincount(pred, minlength=len(classes)).max() / len(pred), 3)})
            print("\t".join(str(v) for v in rows[-1].values()), flush=True)
            # written after every epoch, so that a run stopped by a time limit keeps what it measured
            pd.DataFrame(rows).to_csv(args.out, sep="\t", index=False)
            clock["measuring"] += time.monotonic() - t
            if wall > args.minutes * 60:
                raise _Budget

        with tempfile.TemporaryDirectory(prefix="tta_") as tmp:
            out = {k: str(Path(tmp) / f"{k}.out") for k in ("out_model", "out_best", "out_classes", "out_history",
                                                             "out_summary", "out_info")}
            try:
                train.train_experiment(str(args.data / "split.tsv"), npys, indexes, classes,
                                       state_dir=Path(tmp) / "state", params=params, threads=args.threads,
                                       on_epoch=on_epoch, **out)
            except _Budget:
                pass
    table = pd.DataFrame(rows)
    table.to_csv(args.out, sep="\t", index=False)
    print("\nconfig\tepochs\tbest_val_macro_f1\t" + "\t".join(f"time_to_{t}" for t in THRESHOLDS))
    best = {}
    for name, g in table.groupby("config", sort=False):
        best[name] = g["val_macro_f1"].max()
        times = [g.loc[g["val_macro_f1"] >= t, "wall_s"].min() for t in THRESHOLDS]
        print(f"{name}\t{len(g)}\t{best[name]:.3f}\t" + "\t".join("-" if np.isnan(t) else f"{t:.0f} s" for t in times))
    if "recipe" in best and "seed" in best:
        g = table[table["config"] == "recipe"]
        reach = g.loc[g["val_macro_f1"] >= best["seed"], "wall_s"].min()
        seed_t = table[(table["config"] == "seed") & (table["val_macro_f1"] >= best["seed"])]["wall_s"].min()
        if np.isfinite(reach):
            print(f"recipe reaches the seed's best validation macro F1 ({best['seed']:.3f}) in {reach:.0f} s, "
                  f"the seed in {seed_t:.0f} s: ratio {seed_t / max(reach, 1e-9):.2f}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for name, g in table.groupby("config", sort=False):
            ax.plot(g["wall_s"] / 60, g["val_macro_f1"], marker="o", markersize=3, label=name)
        ax.set_xlabel("training wall time (min, 2 CPU cores, shared machine)")
        ax.set_ylabel("validation macro F1")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.out.with_suffix(".svg"))
    except Exception as exc:  # noqa: BLE001 - the figure is a convenience
        print(f"no figure: {exc}")


if __name__ == "__main__":
    main()
