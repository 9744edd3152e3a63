"""Training time of the descriptor and deep-features experiments at 10 000 objects on 2 cores.

    .venv/bin/python benchmarks/bench_descriptors.py [--n 10000 --descriptors 25 --cnn-features 2048]
    .venv/bin/python benchmarks/bench_descriptors.py --smoke      # tiny sizes, seconds (run by the tests)

Synthetic, separable-but-noisy data of ``--n`` objects in 7 classes, split 60/20/20 like the
workflow; times the steps of the two experiment kinds with the library's own functions:

* descriptors: the default grid search (4 candidates fitted on train, chosen on valid) of each
  classifier on ``--descriptors`` columns (lokiml.descriptors.choose_params);
* deep_features: the PCA (50 components, fitted on train) of ``--cnn-features`` CNN features
  joined with the descriptors (lokiml.deep_features.make_reducer), then the same grid search.

Baseline: the same fits written the plain scikit-learn way, as the seed's notebook
(classification_loki_imageDescriptor_sklean) did its search: for each candidate of the same grid,
the same estimator with the same settings and ``n_jobs``, ``fit`` on train, ``predict_proba`` and
macro F1 on valid. Same work on both sides, so the ratio says what lokiml's wrapper costs or saves
(it runs gradient boosting on one OpenMP thread for small tables, lokiml.descriptors.openmp_threads).
A ``GridSearchCV`` with 5-fold cross-validation would fit 5 times as much and is not compared.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))

SMOKE = ["--n", "200", "--descriptors", "6", "--cnn-features", "32", "--jobs", "1", "--small-grid", "--rounds", "1"]
SMALL_GRIDS = {  # --small-grid: two candidates of few trees or iterations each (smoke runs)
    "random_forest": {"n_estimators": [10], "max_features": ["sqrt", 0.5]},
    "hist_gradient_boosting": {"max_iter": [10], "learning_rate": [0.05, 0.1]},
}


def plain_search(x_tr, y_tr, x_va, y_va, classifier: str, grid: dict, n_classes: int, jobs: int) -> float:
    """The baseline: every candidate fitted and scored with scikit-learn directly; returns the best macro F1."""
    from sklearn.metrics import f1_score

    from lokiml.descriptors import grid_candidates, make_classifier

    best = -1.0
    for cand in grid_candidates(grid):
        model = make_classifier(classifier, cand, seed=1, n_jobs=jobs)  # the same estimator and settings
        model.fit(x_tr, y_tr)
        pred = model.predict_proba(x_va).argmax(axis=1)
        best = max(best, float(f1_score(y_va, model.classes_[pred], labels=list(range(n_classes)),
                                        average="macro", zero_division=0)))
    return best


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--descriptors", type=int, default=25)
    ap.add_argument("--cnn-features", type=int, default=2048)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds, best time of each side (default 2)")
    ap.add_argument("--small-grid", action="store_true", help="two small candidates per classifier instead of the "
                    "default grids")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, seconds: " + " ".join(SMOKE))
    a = ap.parse_args(argv)
    if a.smoke:
        a = ap.parse_args([*SMOKE, *(argv if argv is not None else sys.argv[1:])])

    from lokiml.deep_features import make_reducer
    from lokiml.descriptors import DEFAULT_GRIDS, choose_params

    grids = SMALL_GRIDS if a.small_grid else DEFAULT_GRIDS

    rng = np.random.default_rng(0)
    k = 7
    y = rng.integers(0, k, a.n)
    desc = rng.normal(0, 1, (k, a.descriptors))[y] + rng.normal(0, 1.5, (a.n, a.descriptors))
    cnn = np.maximum(rng.normal(0, 1, (k, a.cnn_features))[y] + rng.normal(0, 2.0, (a.n, a.cnn_features)), 0)
    n_tr, n_va = int(0.6 * a.n), int(0.2 * a.n)
    tr, va = slice(0, n_tr), slice(n_tr, n_tr + n_va)
    print(f"{a.n} objects ({n_tr} train, {n_va} valid), {k} classes, {a.jobs} jobs; baseline: the same fits with "
          "scikit-learn directly")

    def compare(what: str, x_tr, x_va, clf: str, grid: dict) -> None:
        one = {key: values[:1] for key, values in grid.items()}  # warm-up of both paths (imports), not timed
        choose_params(x_tr[:100], y[tr][:100], x_va[:30], y[va][:30], clf, one, k, seed=1, n_jobs=a.jobs)
        plain_search(x_tr[:100], y[tr][:100], x_va[:30], y[va][:30], clf, one, k, a.jobs)
        t_lokiml = t_plain = float("inf")
        for _ in range(a.rounds):  # alternating, best of each: the machine's load changes between them
            t = time.perf_counter()
            _, _, table, _ = choose_params(x_tr, y[tr], x_va, y[va], clf, grid, k, seed=1, n_jobs=a.jobs)
            t_lokiml = min(t_lokiml, time.perf_counter() - t)
            t = time.perf_counter()
            f1 = plain_search(x_tr, y[tr], x_va, y[va], clf, grid, k, a.jobs)
            t_plain = min(t_plain, time.perf_counter() - t)
        n = len(table)
        print(f"{what:<14s}{clf:24s} {x_tr.shape[1]:>4d} columns: grid of {n} in {t_lokiml:5.1f} s "
              f"({t_lokiml / n:.2f} s per fit); plain scikit-learn {t_plain:5.1f} s: {t_plain / t_lokiml:.2f}x "
              f"(best valid macro F1 {table['valid_macro_f1'].max():.3f} vs {f1:.3f})")

    for clf, grid in grids.items():
        compare("descriptors", desc[tr], desc[va], clf, grid)

    x = np.hstack([cnn, desc]).astype(np.float32)
    t = time.perf_counter()
    pca = min(50, a.cnn_features // 2)  # EcoTaxa's 50 components (fewer for the smoke run's few features)
    reducer = make_reducer(a.cnn_features, a.descriptors, pca, n_tr, seed=1)
    x_tr = reducer.fit_transform(x[tr])
    x_va = reducer.transform(x[va])
    t_pca = time.perf_counter() - t
    print(f"deep_features PCA of {a.cnn_features} CNN features to {min(pca, n_tr)} (fitted on train): {t_pca:5.1f} s")
    for clf, grid in grids.items():
        compare("deep_features", x_tr, x_va, clf, grid)


if __name__ == "__main__":
    main()
