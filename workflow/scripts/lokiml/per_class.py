"""Per-class F1 of every experiment side by side: one figure and one table (rule compare_classes).

The leaderboard gives one number per experiment; a biologist also wants to know which classes each
model gets right: a model can win on macro F1 and still miss the one rare class that matters. The
figure is a heat map, classes down, experiments across in the leaderboard's order (best validation
macro F1 first), each cell the F1 of the class on the test split, with the validation F1 in the table.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError
from .gallery import STYLE, pyplot, wrap
from .io import read_tsv, write_tsv

log = logging.getLogger(__name__)


def per_class_table(experiments, reports: dict, classes) -> pd.DataFrame:
    """Classes x experiments: F1 from each experiment's classification_report.tsv (``reports[experiment]``)."""
    out = pd.DataFrame(index=pd.Index(list(classes), name="class_name"))
    for name in experiments:
        table = read_tsv(reports[name])
        if "class_name" not in table.columns or "f1" not in table.columns:
            raise InputError(str(reports[name]), "not a classification report (needs columns class_name and f1)")
        f1 = pd.to_numeric(table.set_index("class_name")["f1"], errors="coerce")
        out[name] = [f1.get(c, np.nan) for c in classes]
    return out


def order_by_validation(experiments, valid_metrics) -> list[str]:
    """Experiments by validation macro F1, best first (ties by name): the leaderboard's order."""
    scores = {}
    for name, path in zip(experiments, valid_metrics, strict=True):
        scores[name] = float(json.loads(Path(path).read_text(encoding="utf-8"))["macro_f1"])
    return sorted(experiments, key=lambda n: (-scores[n], n))


def plot_per_class(test: pd.DataFrame, path, title: str = "") -> None:
    from .evaluate import save_figure

    plt = pyplot()
    n_cls, n_exp = test.shape
    values = test.to_numpy(dtype=float)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(max(5.0, 1.0 * n_exp + 3.0), max(2.5, 0.42 * n_cls + 2.2)))
        im = ax.imshow(np.ma.masked_invalid(values), cmap="RdYlGn", vmin=0.0, vmax=1.0, aspect="auto")
        ax.set_xticks(np.arange(n_exp))
        ax.set_xticklabels([wrap(e, 22, 3) for e in test.columns], fontsize=8, rotation=30, ha="right",
                           rotation_mode="anchor")
        ax.set_yticks(np.arange(n_cls))
        ax.set_yticklabels([wrap(c, 28, 2) for c in test.index], fontsize=9)
        size = float(np.clip(11 - 0.12 * max(n_cls, n_exp), 6, 10))
        for i in range(n_cls):
            for j in range(n_exp):
                v = values[i, j]
                ax.text(j, i, "–" if not np.isfinite(v) else f"{v:.2f}", ha="center", va="center", fontsize=size,
                        color="black")
        for spine in ax.spines.values():
            spine.set_visible(False)
        cbar = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
        cbar.set_label("F1 on the test split")
        if title:
            ax.set_title(title, fontsize=11)
        save_figure(fig, path)


def compare_classes(experiments, test_reports, valid_reports, valid_metrics, classes, out_figure, out_tsv) -> pd.DataFrame:
    """Rule compare_classes: the per-class F1 of every experiment, test and validation split."""
    order = order_by_validation(list(experiments), list(valid_metrics))
    test = per_class_table(order, dict(zip(experiments, test_reports, strict=True)), classes)
    valid = per_class_table(order, dict(zip(experiments, valid_reports, strict=True)), classes)
    long = pd.concat(
        [test.reset_index().melt(id_vars="class_name", var_name="experiment", value_name="test_f1"),
         valid.reset_index().melt(id_vars="class_name", var_name="experiment", value_name="valid_f1")[["valid_f1"]]],
        axis=1)
    long["experiment_rank"] = long["experiment"].map({e: i + 1 for i, e in enumerate(order)})
    write_tsv(out_tsv, long[["class_name", "experiment", "experiment_rank", "test_f1", "valid_f1"]],
              float_format="%.4f")
    plot_per_class(test, out_figure, title="F1 per class on the test split; experiments by validation macro F1, "
                                           "best first")
    log.info("per-class F1 of %d experiments and %d classes", len(order), len(classes))
    return test
