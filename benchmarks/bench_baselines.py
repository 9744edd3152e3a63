"""lokiml's descriptor baselines against plain scikit-learn defaults, on real EcoTaxa data, on the same folds.

    .venv/bin/python benchmarks/bench_baselines.py [--repeats 2] [--folds 5] [--only zooscan_validated,...]

For each data set and feature set: repeated stratified 5-fold cross-validation over every object
(``lokiml.estimates.fold_plan``, the folds of rule ``estimate_descriptors``). On every fold, the same
training objects and the same test objects for

* **lokiml** (``random_forest`` and ``hist_gradient_boosting``): the workflow's procedure, exactly as
  ``lokiml.descriptors.descriptor_learner`` runs it for the rule: the default grid chosen on a
  validation part (the split's 0.2 / 0.8 of the training objects, per class), then refitted on all of
  them (``refit: true``); columns by the workflow's column rule (metadata left out);
* **scikit-learn defaults** ``RandomForestClassifier()`` and ``HistGradientBoostingClassifier()``
  (``random_state`` fixed), fitted on the same training objects and columns.

Printed: macro F1 (scikit-learn's ``f1_score(average="macro")`` per fold, as ``cross_val_score(scoring=
"f1_macro")``), mean ± sd over the folds, and lokiml minus defaults, paired by fold (mean ± standard
error). Data sets (``../shared/data/ecotaxa``, skipped when absent):

* ``zooscan_validated``: the ZooScan export 13539, validated objects of the classes with at least 10
  (fiber, artefact, badfocus: 305 objects);
* ``zooscan_all``: the same export, every status (validated, predicted, dubious) as label, the 6 classes
  with at least 10 objects (421 objects; predicted labels are not ground truth: a harder, noisier set);
* ``tara_zooscan``: an older Tara Oceans ZooScan export without images (``ecotaxar/export.tsv``): the
  3 classes with at least 10 objects (97 objects);
* ``zooscan_validated_no_metadata_rule``: ``zooscan_validated`` with every numeric ``object_*`` column
  (the column rule of before: positions, depths and dates kept), to show what the metadata rule changes.

Feature sets on the ZooScan images: ``export`` (ZooProcess's own ``object_*`` descriptors), ``morpho``
(measured on the images by ``lokiml.morphometrics`` with the workflow's defaults), ``both``.
"""

from __future__ import annotations

import argparse
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow" / "scripts"))
DATA = ROOT.parent / "shared" / "data" / "ecotaxa"
ZOOSCAN = DATA / "zooscan_export_13539" / "export_13539_20240728_0803.zip"
TARA = DATA / "ecotaxar" / "export.tsv"


def labelled(table: pd.DataFrame, statuses, min_objects: int = 10) -> pd.DataFrame:
    """Rows with one of ``statuses``, the class = the category's deepest name, classes of >= min_objects."""
    df = table[table["object_annotation_status"].isin(statuses)].copy()
    df["class_name"] = df["object_annotation_category"].str.split("<").str[0].str.strip()
    counts = df["class_name"].value_counts()
    keep = sorted(counts[counts >= min_objects].index)
    return df[df["class_name"].isin(keep)].reset_index(drop=True)


def zooscan(statuses, morpho_params):
    from lokiml.ecotaxa import parse_table
    from lokiml.morphometrics import measure_items

    with zipfile.ZipFile(ZOOSCAN) as z:
        table = parse_table(z.read("0/ecotaxa_0.tsv"), str(ZOOSCAN)).df
        df = labelled(table, statuses)
        items = pd.DataFrame({"object_id": df["object_id"], "image_ref": "0/" + df["img_file_name"]})
        t0 = time.perf_counter()
        morpho = measure_items(items, z.read, morpho_params, threads=1)
        seconds = time.perf_counter() - t0
    df = df.join(morpho.drop(columns=["object_id"]))
    return df, seconds / max(len(df), 1)


def tara():
    from lokiml.ecotaxa import parse_table

    table = parse_table(TARA.read_bytes(), str(TARA)).df
    return labelled(table, ["validated"])


def columns_for(df: pd.DataFrame, features: str, metadata_rule: bool = True) -> list[str]:
    from lokiml import columns as cols
    from lokiml.descriptors import feature_sources

    if metadata_rule:
        table = cols.select_columns(df, sources=feature_sources(features))
        return cols.used_columns(table)
    # the rule of before: every numeric object_* column but the annotation and the id
    out = []
    for c in df.columns:
        if c.startswith("object_") and not c.startswith("object_annotation") and c != "object_id":
            nums, _ = cols.to_numbers(df[c])
            if np.isfinite(nums).mean() > 0.5 and len(np.unique(nums[np.isfinite(nums)])) > 1:
                out.append(c)
    return out


def defaults_learner(name: str, x: np.ndarray, y: np.ndarray, n_classes: int, seed: int):
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from threadpoolctl import threadpool_limits

    from lokiml.descriptors import full_probabilities

    def learn(train, valid, pool):
        model = (RandomForestClassifier(random_state=seed, n_jobs=1) if name == "random_forest"
                 else HistGradientBoostingClassifier(random_state=seed))
        with threadpool_limits(limits=1):  # as lokiml on small tables (descriptors.openmp_threads): same footing
            model.fit(x[pool], y[pool])
        return (lambda test: full_probabilities(model, x[test], n_classes)), {}

    return learn


def compare(name: str, df: pd.DataFrame, feature_cols: list[str], folds: int, repeats: int, seed: int = 1):
    from lokiml import columns as cols
    from lokiml.descriptors import descriptor_learner, experiment_settings
    from lokiml.estimates import fold_plan, run_estimate

    classes = sorted(df["class_name"].unique())
    y = df["class_name"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    x = cols.feature_matrix(df, feature_cols)
    plan = fold_plan(y, folds, repeats, seed)
    print(f"\n{name}: {len(y)} objects, {len(classes)} classes "
          f"({', '.join(f'{c} {int((y == i).sum())}' for i, c in enumerate(classes))}), {len(feature_cols)} columns, "
          f"{len(plan)} folds")
    results = {}
    for clf in ("random_forest", "hist_gradient_boosting"):
        t0 = time.perf_counter()
        settings = experiment_settings({"classifier": clf, "seed": seed})
        lok = run_estimate(y, len(classes), plan, descriptor_learner(x, y, settings, len(classes), 1), 0.25, seed)
        t1 = time.perf_counter()
        ref = run_estimate(y, len(classes), plan, defaults_learner(clf, x, y, len(classes), seed), 0.25, seed)
        t2 = time.perf_counter()
        a, b = lok.table["macro_f1"].to_numpy(), ref.table["macro_f1"].to_numpy()
        diff = a - b
        se = diff.std(ddof=1) / np.sqrt(len(diff))
        results[clf] = (a.mean(), b.mean())
        print(f"  {clf:24s} lokiml {a.mean():.3f} ± {a.std(ddof=1):.3f}   defaults {b.mean():.3f} ± "
              f"{b.std(ddof=1):.3f}   difference {diff.mean():+.3f} ± {se:.3f} (se)   "
              f"[{t1 - t0:.0f} s vs {t2 - t1:.0f} s]")
    return results


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--only", default="", help="comma-separated data set names")
    a = ap.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING)
    from lokiml.morphometrics import MorphoParams

    only = set(filter(None, a.only.split(",")))
    want = lambda n: not only or n in only  # noqa: E731
    if not DATA.is_dir():
        print(f"{DATA} not found: nothing to measure")
        return
    # ZooScan vignettes carry a 1 mm scale bar and its label in their bottom 17 rows (0.14 of the height
    # at the median, up to 0.43): no single bottom_crop fraction cuts it from all of them. It does not
    # need to be: the bar and its label are components of their own, never the largest of these 437
    # images, so the object measured is the organism; the workflow's defaults are used.
    params = MorphoParams(threshold=245, polarity="dark", bottom_crop=0.0)
    if want("zooscan_validated") or want("zooscan_validated_no_metadata_rule"):
        df, per_image = zooscan(["validated"], params)
        print(f"morphometrics: {1000 * per_image:.1f} ms per image (1 thread, no cache)")
        if want("zooscan_validated"):
            for feats in ("export", "morphometrics", "both"):
                compare(f"zooscan_validated, features {feats}", df, columns_for(df, feats), a.folds, a.repeats)
        if want("zooscan_validated_no_metadata_rule"):
            compare("zooscan_validated, every numeric object_* column (no metadata rule)", df,
                    columns_for(df, "export", metadata_rule=False), a.folds, a.repeats)
    if want("zooscan_all"):
        df, _ = zooscan(["validated", "predicted", "dubious"], params)
        for feats in ("export", "morphometrics", "both"):
            compare(f"zooscan_all, features {feats}", df, columns_for(df, feats), a.folds, a.repeats)
    if want("tara_zooscan"):
        df = tara()
        compare("tara_zooscan (no images), features export", df, columns_for(df, "export"), a.folds, a.repeats)


if __name__ == "__main__":
    main()
