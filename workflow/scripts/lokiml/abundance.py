"""Abundances per sample: counts per class, raw and corrected, against the true counts.

*Classify and count* (the raw count) adds up each object's most probable class. Its error does not
average out: a class that takes 5 % of a common class's objects by mistake is over-counted in every
sample rich in that common class. *Adjusted classify and count* (Forman 2008; Gonzalez et al. 2017 for
plankton) corrects with the classifier's confusion rates measured on the validation split,
``R[i, j] = P(predicted j | true i)``: the counts predicted in a sample are ``q = R^T x`` for the true
counts ``x``, solved here for ``x >= 0`` by non-negative least squares (scipy) and rescaled to the
sample's number of objects. The rates are per true class, so they hold whatever the class proportions
of the sample, which is why the balanced validation split can estimate them.

:func:`abundance_table` compares both with the true counts on the test samples; :func:`mae_per_class`
gives the mean absolute error per class over the samples.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

ABUNDANCE_COLUMNS = ["sample", "class_name", "true", "predicted", "adjusted", "trusted"]


def confusion_rates(truth: np.ndarray, pred: np.ndarray, n_classes: int, weight=None) -> np.ndarray:
    """``R[i, j]``: share of the (weighted) objects of true class ``i`` predicted as ``j``; a class with no
    object gets the identity row (no correction for it)."""
    cm = np.zeros((n_classes, n_classes), dtype=np.float64)
    w = np.ones(len(truth)) if weight is None else np.asarray(weight, dtype=float)
    known = np.asarray(truth) >= 0
    np.add.at(cm, (np.asarray(truth)[known], np.asarray(pred)[known]), w[known])
    rates = np.eye(n_classes)
    totals = cm.sum(axis=1)
    rates[totals > 0] = cm[totals > 0] / totals[totals > 0, None]
    return rates


def adjusted_counts(predicted: np.ndarray, rates: np.ndarray) -> np.ndarray:
    """Adjusted classify and count: per row of ``predicted`` (counts per predicted class), the true counts
    ``x >= 0`` that best explain it through ``rates`` (``predicted ~ rates^T x``), rescaled to the row's total."""
    from scipy.optimize import nnls

    predicted = np.atleast_2d(np.asarray(predicted, dtype=np.float64))
    out = np.zeros_like(predicted)
    a = rates.T
    for i, q in enumerate(predicted):
        total = q.sum()
        if total <= 0:
            continue
        x, _ = nnls(a, q)
        s = x.sum()
        out[i] = x * (total / s) if s > 0 else q
    return out


def count_matrix(samples: np.ndarray, labels: np.ndarray, sample_names, n_classes: int) -> np.ndarray:
    """Objects per (sample, class): rows in the order of ``sample_names``; labels < 0 are not counted."""
    index = {s: i for i, s in enumerate(sample_names)}
    out = np.zeros((len(sample_names), n_classes), dtype=np.float64)
    ok = np.asarray(labels) >= 0
    rows = np.array([index[s] for s in np.asarray(samples)[ok]], dtype=int)
    np.add.at(out, (rows, np.asarray(labels)[ok]), 1)
    return out


def abundance_table(samples, truth, pred, trusted, rates: np.ndarray, classes) -> pd.DataFrame:
    """One row per (sample, class): true, predicted (classify and count), adjusted (with ``rates``) and
    trusted (objects predicted as the class and trusted) counts of the given objects.

    ``truth`` < 0 (an object of no configured class) is not a true count of any class, but its
    prediction is counted: unknowns inflate the raw and the adjusted counts as they would in a sample.
    """
    samples = np.asarray(samples, dtype=object)
    names = sorted(set(samples.tolist()))
    n = len(classes)
    true = count_matrix(samples, np.asarray(truth), names, n)
    predicted = count_matrix(samples, np.asarray(pred), names, n)
    trusted_counts = count_matrix(samples, np.where(trusted, pred, -1), names, n)
    adjusted = adjusted_counts(predicted, rates) if len(names) else predicted
    rows = []
    for i, s in enumerate(names):
        for c, name in enumerate(classes):
            rows.append({"sample": s, "class_name": name, "true": int(true[i, c]), "predicted": int(predicted[i, c]),
                         "adjusted": float(adjusted[i, c]), "trusted": int(trusted_counts[i, c])})
    return pd.DataFrame(rows, columns=ABUNDANCE_COLUMNS)


def mae_per_class(table: pd.DataFrame, classes) -> pd.DataFrame:
    """Per class: samples, true objects in all, mean true count per sample, and the mean absolute error of
    the predicted and adjusted counts over the samples; then a row ``all classes`` (mean over the classes)."""
    rows = []
    for c in classes:
        t = table[table["class_name"] == c]
        rows.append({"class_name": c, "samples": int(len(t)), "true_total": int(t["true"].sum()),
                     "true_mean": float(t["true"].mean()) if len(t) else float("nan"),
                     "mae_predicted": float((t["predicted"] - t["true"]).abs().mean()) if len(t) else float("nan"),
                     "mae_adjusted": float((t["adjusted"] - t["true"]).abs().mean()) if len(t) else float("nan")})
    out = pd.DataFrame(rows, columns=["class_name", "samples", "true_total", "true_mean", "mae_predicted",
                                      "mae_adjusted"])
    if len(out):
        out.loc[len(out)] = {"class_name": "all classes", "samples": int(out["samples"].max()),
                             "true_total": int(out["true_total"].sum()), "true_mean": float(out["true_mean"].mean()),
                             "mae_predicted": float(out["mae_predicted"].mean()),
                             "mae_adjusted": float(out["mae_adjusted"].mean())}
    return out


def plot_abundance(table: pd.DataFrame, mae: pd.DataFrame, path, title: str = "", by: str = "sample") -> None:
    """Left: MAE per class, raw and adjusted counts. Right: estimated against true count per (sample, class)."""
    from .evaluate import FIGURE_STYLE, pyplot, save_figure

    plt = pyplot()
    per_class = mae[mae["class_name"] != "all classes"]
    n = len(per_class)
    with plt.rc_context(FIGURE_STYLE):
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12.0, max(4.0, 0.35 * n + 2.0)),
                                      gridspec_kw={"width_ratios": [1.1, 1.0]})
        y = np.arange(n)[::-1]
        h = 0.38
        ax.barh(y + h / 2, per_class["mae_predicted"], height=h, color="#dd8452", label="classify and count")
        ax.barh(y - h / 2, per_class["mae_adjusted"], height=h, color="#4c72b0",
                label="adjusted (validation confusion rates)")
        ax.set_yticks(y)
        ax.set_yticklabels(per_class["class_name"], fontsize=float(np.clip(12 - 0.08 * n, 7, 10)))
        ax.set_xlabel(f"mean absolute error per {by} (objects)")
        ax.legend(loc="lower right", frameon=False, fontsize=9)
        ax.set_title("error of the counts per class")
        if len(table):
            top = float(max(table["true"].max(), table["predicted"].max(), table["adjusted"].max(), 1))
            ax2.plot([0, top], [0, top], color="grey", linestyle="--", linewidth=1, label="estimate = truth")
            ax2.scatter(table["true"], table["predicted"], s=14, color="#dd8452", alpha=0.7,
                        label="classify and count")
            ax2.scatter(table["true"], table["adjusted"], s=14, color="#4c72b0", alpha=0.7, marker="s",
                        label="adjusted")
            ax2.set_xlim(-0.02 * top, top * 1.05)
            ax2.set_ylim(-0.02 * top, top * 1.05)
        ax2.set_xlabel(f"true objects of a class in a {by}")
        ax2.set_ylabel("estimated objects")
        ax2.set_title(f"every ({by}, class): estimate against truth")
        ax2.legend(loc="upper left", frameon=False, fontsize=9)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        save_figure(fig, path)
