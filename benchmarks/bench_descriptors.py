"""Training time of the descriptor and deep-features experiments at 10 000 objects on 2 cores.

    .venv/bin/python benchmarks/bench_descriptors.py [--n 10000 --descriptors 25 --cnn-features 2048]

Synthetic, separable-but-noisy data of ``--n`` objects in 7 classes, split 60/20/20 like the
workflow; times the steps of the two experiment kinds with the library's own functions:

* descriptors: the default grid search (4 candidates fitted on train, chosen on valid) of each
  classifier on ``--descriptors`` columns (lokiml.descriptors.choose_params);
* deep_features: the PCA (50 components, fitted on train) of ``--cnn-features`` CNN features
  joined with the descriptors (lokiml.deep_features.make_reducer), then the same grid search.

No baseline: the issue asks for "seconds for 10 000 objects on 2 cores".
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))

GRIDS = {
    "random_forest": {"max_features": ["sqrt", 0.5], "min_samples_leaf": [1, 3]},
    "hist_gradient_boosting": {"learning_rate": [0.05, 0.1], "max_leaf_nodes": [15, 31]},
}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--descriptors", type=int, default=25)
    ap.add_argument("--cnn-features", type=int, default=2048)
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args(argv)

    from lokiml.deep_features import make_reducer
    from lokiml.descriptors import choose_params

    rng = np.random.default_rng(0)
    k = 7
    y = rng.integers(0, k, a.n)
    desc = rng.normal(0, 1, (k, a.descriptors))[y] + rng.normal(0, 1.5, (a.n, a.descriptors))
    cnn = np.maximum(rng.normal(0, 1, (k, a.cnn_features))[y] + rng.normal(0, 2.0, (a.n, a.cnn_features)), 0)
    n_tr, n_va = int(0.6 * a.n), int(0.2 * a.n)
    tr, va = slice(0, n_tr), slice(n_tr, n_tr + n_va)
    print(f"{a.n} objects ({n_tr} train, {n_va} valid), {k} classes, {a.jobs} jobs")

    for clf, grid in GRIDS.items():
        t = time.perf_counter()
        choose_params(desc[tr], y[tr], desc[va], y[va], clf, grid, k, seed=1, n_jobs=a.jobs)
        print(f"descriptors   {clf:24s} {a.descriptors} columns: grid of 4 in {time.perf_counter() - t:5.1f} s")

    x = np.hstack([cnn, desc]).astype(np.float32)
    t = time.perf_counter()
    reducer = make_reducer(a.cnn_features, a.descriptors, 50, n_tr, seed=1)
    x_tr = reducer.fit_transform(x[tr])
    x_va = reducer.transform(x[va])
    t_pca = time.perf_counter() - t
    print(f"deep_features PCA of {a.cnn_features} CNN features to 50 (fitted on train): {t_pca:5.1f} s")
    for clf, grid in GRIDS.items():
        t = time.perf_counter()
        choose_params(x_tr, y[tr], x_va, y[va], clf, grid, k, seed=1, n_jobs=a.jobs)
        print(f"deep_features {clf:24s} {x_tr.shape[1]} columns: grid of 4 in {time.perf_counter() - t:5.1f} s")


if __name__ == "__main__":
    main()
