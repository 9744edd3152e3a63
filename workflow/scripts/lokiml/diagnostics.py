"""Warnings a user needs to notice a CNN that did not learn.

Training accuracy can rise while the model that is saved and evaluated predicts one class for every image
(BatchNorm statistics that lag behind the weights, a learning rate too large, too few steps). Three signs
give it away, and each one becomes a warning in the training log, in ``train_info.json`` (``warnings``) and
in the experiment's summary (section "Warnings"):

* the best epoch (lowest validation loss) is the first of several: nothing after it helped;
* the validation accuracy stayed at chance level: never above the share of the largest validation class
  (what always predicting that class scores) by more than ``max(0.05, 0.5 / n_classes)``;
* more than 80 % of the predictions of a split fall in one class (where that class holds less than 80 %
  of the split's true labels).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Share of the predictions in one class above which a model is said to collapse to it.
ONE_CLASS_SHARE = 0.8


def chance_level(labels, n_classes: int) -> float:
    """Accuracy of always predicting the most frequent class of ``labels`` (1 / n_classes when balanced)."""
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size == 0:
        return 1.0 / max(1, int(n_classes))
    return float(np.bincount(labels, minlength=int(n_classes)).max() / labels.size)


def chance_margin(n_classes: int) -> float:
    return max(0.05, 0.5 / max(1, int(n_classes)))


def training_warnings(history: Sequence[dict], valid_labels, n_classes: int, best_epoch) -> list[str]:
    """Warnings about a training history (rows with ``epoch``, ``val_accuracy``); see the module docstring."""
    out = []
    epochs = [int(r["epoch"]) for r in history]
    if best_epoch is not None and len(epochs) >= 3 and int(best_epoch) == min(epochs):
        out.append(f"the best epoch (lowest validation loss) is the first one, of {len(epochs)} run: the later "
                   "epochs made validation worse. The model saved as best.keras has barely trained; check the "
                   "training curves (a learning rate too high, BatchNorm statistics, too few images)")
    accs = [float(r["val_accuracy"]) for r in history if np.isfinite(float(r.get("val_accuracy", np.nan)))]
    if accs:
        chance = chance_level(valid_labels, n_classes)
        if max(accs) <= chance + chance_margin(n_classes):
            out.append(f"validation accuracy stayed at chance level: at most {max(accs):.3f} over {len(accs)} "
                       f"epoch(s), where always predicting the largest class scores {chance:.3f}. The model has "
                       "not learned to tell the classes apart")
    return out


def prediction_warnings(y_pred, y_true, classes: Sequence[str], split: str) -> list[str]:
    """A warning when more than 80 % of ``y_pred`` fall in one class (that is not as large in ``y_true``)."""
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_pred.size == 0:
        return []
    n = len(classes)
    counts = np.bincount(y_pred, minlength=n)
    top = int(counts.argmax())
    share = counts[top] / y_pred.size
    true_share = float(np.mean(np.asarray(y_true) == top)) if len(y_true) else 0.0
    if share > ONE_CLASS_SHARE and true_share <= ONE_CLASS_SHARE:
        return [f"{split}: {share:.0%} of the predictions are {classes[top]!r} (which is {true_share:.0%} of the "
                f"{split} objects): the model predicts nearly one class for everything"]
    return []


def confusion_warnings(cm, classes: Sequence[str], split: str) -> list[str]:
    """:func:`prediction_warnings` from a confusion matrix (rows: true class, columns: predicted class)."""
    cm = np.asarray(cm, dtype=np.int64)
    n = len(classes)
    y_true = np.repeat(np.arange(n), cm.sum(axis=1))
    y_pred = np.repeat(np.arange(n), cm.sum(axis=0))
    return prediction_warnings(y_pred, y_true, classes, split)
