"""Evaluation of trained experiments: predictions, metrics, confusion matrices, calibration, figures.

One call per rule:

* :func:`evaluate_experiment` (rule ``evaluate_model``): predicts the validation
  and the test split with the experiment's **best checkpoint** (``best.keras``,
  the epoch with the lowest ``val_loss``). The seed meant the same when it
  reloaded ``best_model.h5`` before predicting, but its ModelCheckpoint lacked
  ``save_best_only=True``, so that file held the last epoch. It writes, per split,
  the predictions, a classification report, confusion matrices (counts and row
  percentages), metrics, a reliability diagram and a gallery of the most
  confident mistakes; per experiment, the training curves and a summary like
  the seed's README.txt.
* :func:`leaderboard` (rule ``make_leaderboard``): one row per experiment.
* :func:`plot_data_summary` (rule ``plot_data_summary``): figures of the data
  preparation (objects per class before and after balancing, dropped rows by
  reason, split sizes) and the summary table as HTML.

Only original objects are evaluated by default: augmented copies are flipped,
rotated and shifted images of objects that are already in the split, not new
objects, so counting them would weight some objects several times and inflate
the apparent sample size.

Everything is written atomically and with stable formatting (fixed float
formats, sorted rows, figures without dates and with a fixed SVG hash salt),
so that an unchanged result is byte-identical and does not trigger reruns
downstream. Probabilities come out of the model in batches read from the image
store, so memory does not grow with the number of objects (except for the
probabilities themselves, n x classes floats).

Not part of the training code: changing anything here or in the evaluation
rules never makes Snakemake retrain a model.
"""

from __future__ import annotations

import html
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .base_features import BaseFeatures, head_probabilities, log_forward_passes
from .errors import InputError
from .io import atomic_path, read_tsv, save_npy, write_json, write_text, write_tsv
from .logs import Progress
from .store import batches_ahead

log = logging.getLogger(__name__)

SPLITS = ("valid", "test")
TOP_K = 3
ECE_BINS = 15
FLOAT_FORMAT = "%.6f"
SVG_HASH_SALT = "lokiml"
# What a split's outputs are called; the rule names its outputs f"{split}_{key}".
SPLIT_OUTPUTS = ("predictions", "metrics", "report", "report_html", "confusion_counts", "confusion_normalised",
                 "confusion_counts_fig", "confusion_normalised_fig", "reliability", "mistakes", "probabilities")
#: Of SPLIT_OUTPUTS, those a caller may leave out (written only when asked for).
OPTIONAL_SPLIT_OUTPUTS = ("probabilities",)


def split_paths(outputs: dict, split: str) -> dict:
    """The paths of one split's outputs (keys: SPLIT_OUTPUTS) from a rule's outputs ``{split}_{key}``."""
    return {key: outputs[f"{split}_{key}"] for key in SPLIT_OUTPUTS
            if key not in OPTIONAL_SPLIT_OUTPUTS or f"{split}_{key}" in outputs}
MISTAKES_SHOWN = 30


# --------------------------------------------------------------------------------------------
# Metrics (pure functions of integer labels and probability rows)
# --------------------------------------------------------------------------------------------

def top_k_classes(probs: np.ndarray, k: int = TOP_K) -> np.ndarray:
    """Indices of the ``k`` most probable classes per row, most probable first.

    Ties are broken by class index (lower first), the same way in the
    predictions table and in :func:`top_k_accuracy`.
    """
    k = min(k, probs.shape[1])
    return np.argsort(-probs, axis=1, kind="stable")[:, :k]


def top_k_accuracy(y_true: np.ndarray, probs: np.ndarray, k: int = TOP_K) -> float:
    """Share of rows whose true class is among the ``k`` most probable ones."""
    if len(y_true) == 0:
        return float("nan")
    return float((top_k_classes(probs, k) == np.asarray(y_true)[:, None]).any(axis=1).mean())


def calibration_bins(y_true: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> pd.DataFrame:
    """Confidence (top probability) against accuracy in ``bins`` equal-width bins over [0, 1].

    Bin ``i`` holds confidences in (i/bins, (i+1)/bins]; the first bin also holds 0.
    """
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(y_true)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.searchsorted(edges[1:-1], conf, side="left"), 0, bins - 1)
    rows = []
    for b in range(bins):
        sel = idx == b
        n = int(sel.sum())
        rows.append({
            "bin": b, "lower": edges[b], "upper": edges[b + 1], "n": n,
            "confidence": float(conf[sel].mean()) if n else float("nan"),
            "accuracy": float(correct[sel].mean()) if n else float("nan"),
        })
    return pd.DataFrame(rows)


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE: sum over bins of (objects in bin / all objects) x |accuracy - mean confidence| (Guo et al. 2017)."""
    table = calibration_bins(y_true, probs, bins)
    n = table["n"].sum()
    if n == 0:
        return float("nan")
    used = table[table["n"] > 0]
    return float((used["n"] / n * (used["accuracy"] - used["confidence"]).abs()).sum())


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Mean recall over the classes that occur in ``y_true`` (classes absent from the split are left out)."""
    recalls = [np.mean(y_pred[y_true == c] == c) for c in range(n_classes) if np.any(y_true == c)]
    return float(np.mean(recalls)) if recalls else float("nan")


def _as_distribution(probs: np.ndarray) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    return p / p.sum(axis=1, keepdims=True)


def compute_metrics(y_true: np.ndarray, probs: np.ndarray, classes, bins: int = ECE_BINS, k: int = TOP_K) -> dict:
    """Accuracy, balanced accuracy, macro F1, top-k accuracy, log loss, ECE and counts.

    Macro F1 averages over **all** configured classes (a class absent from the
    split counts with F1 = 0, as in the classification report); log loss uses
    all classes as labels, so it is defined even when a class is absent.
    """
    from sklearn.metrics import f1_score, log_loss

    y_true = np.asarray(y_true, dtype=int)
    n_classes = len(classes)
    labels = list(range(n_classes))
    y_pred = probs.argmax(axis=1)
    p = _as_distribution(probs)
    return {
        "n_objects": int(len(y_true)),
        "n_classes": n_classes,
        "classes_absent": [classes[c] for c in labels if not np.any(y_true == c)],
        "accuracy": float(np.mean(y_pred == y_true)),
        "balanced_accuracy": balanced_accuracy(y_true, y_pred, n_classes),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
        f"top{min(k, n_classes)}_accuracy": top_k_accuracy(y_true, probs, k),
        "log_loss": float(log_loss(y_true, p, labels=labels)),
        "ece": expected_calibration_error(y_true, probs, bins),
        "ece_bins": bins,
    }


def classification_table(y_true: np.ndarray, y_pred: np.ndarray, classes) -> pd.DataFrame:
    """Precision, recall, F1 and support per class (in class order), then macro and weighted averages."""
    from sklearn.metrics import precision_recall_fscore_support

    labels = list(range(len(classes)))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    rows = [{"class_name": c, "precision": p[i], "recall": r[i], "f1": f[i], "support": int(s[i])}
            for i, c in enumerate(classes)]
    for avg in ("macro", "weighted"):
        pa, ra, fa, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average=avg, zero_division=0)
        rows.append({"class_name": f"{avg} avg", "precision": pa, "recall": ra, "f1": fa, "support": int(s.sum())})
    return pd.DataFrame(rows, columns=["class_name", "precision", "recall", "f1", "support"])


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Rows: true class; columns: predicted class."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)), 1)
    return cm


def normalise_rows(cm: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (the share of a true class predicted as each class); empty rows are NaN."""
    totals = cm.sum(axis=1, keepdims=True).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, cm / np.where(totals > 0, totals, 1), np.nan)


def predictions_table(item_ids, object_ids, y_true, probs, classes, k: int = TOP_K) -> pd.DataFrame:
    """One row per object: true and predicted class, the predicted class' probability and the top-k."""
    classes = np.asarray(list(classes), dtype=object)
    top = top_k_classes(probs, k)
    rows = np.arange(len(probs))
    table = pd.DataFrame({
        "item_id": list(item_ids),
        "object_id": list(object_ids),
        "true_class": classes[np.asarray(y_true, dtype=int)],
        "predicted_class": classes[top[:, 0]],
        "probability": probs[rows, top[:, 0]].astype(np.float64),
        "correct": (top[:, 0] == np.asarray(y_true)).astype(int),
    })
    for j in range(top.shape[1]):
        table[f"top{j + 1}_class"] = classes[top[:, j]]
        table[f"top{j + 1}_prob"] = probs[rows, top[:, j]].astype(np.float64)
    return table


# --------------------------------------------------------------------------------------------
# Prediction
# --------------------------------------------------------------------------------------------

def load_classifier(path):
    """Load a saved Keras model; lokiml.models is imported first so that its custom layers are known."""
    import importlib

    import keras

    try:
        importlib.import_module(f"{__package__}.models")  # registers lokiml's custom layers with Keras
    except ModuleNotFoundError as exc:
        if exc.name != f"{__package__}.models":
            raise
        log.warning("lokiml.models is not available: loading %s without lokiml's custom layers", path)
    log.info("loading %s", path)
    return keras.saving.load_model(path, compile=False)


def predict_probabilities(model, store, item_ids, batch_size: int = 32, n_classes: int | None = None,
                          source: str = "model") -> np.ndarray:
    """Class probabilities for ``item_ids``, read from ``store`` and predicted ``batch_size`` at a time.

    The next batch is read from the store while the model predicts the current
    one. The model must end in a softmax (rows summing to 1): a model that
    returns logits would give wrong probabilities, log loss and calibration.
    """
    item_ids = list(item_ids)
    n = len(item_ids)
    out = None
    progress = Progress(n, "predict", log)
    for start, x in batches_ahead(store, item_ids, batch_size):
        p = check_probabilities(model.predict_on_batch(x[..., None]), n_classes, source)
        if out is None:
            out = np.empty((n, p.shape[1]), dtype=np.float32)
        out[start:start + len(p)] = p
        progress.update(len(p))
    log_forward_passes(n, f"the model {source}")
    if out is None:
        out = np.empty((0, n_classes or 0), dtype=np.float32)
    return out


def check_probabilities(p, n_classes: int | None, source: str = "model") -> np.ndarray:
    """``p`` as float32 (n, n_classes), checked to be one probability per class per row (a softmax output)."""
    p = np.asarray(p, dtype=np.float32)
    if p.ndim != 2 or (n_classes is not None and p.shape[1] != n_classes):
        raise InputError(source, f"the model returns shape {p.shape[1:]} per image, "
                                 f"expected ({n_classes},): one probability per class",
                         hint="classes.txt and the model do not belong together; retrain the experiment")
    sums = p.sum(axis=1)
    if np.any(np.abs(sums - 1.0) > 1e-3) or np.any(p < 0):
        raise InputError(source, f"the model's outputs are not probabilities (row sums {sums.min():.3g} "
                                 f"to {sums.max():.3g})",
                         hint="the classifier must end in a softmax layer")
    return p


# --------------------------------------------------------------------------------------------
# Figures and HTML (stable bytes)
# --------------------------------------------------------------------------------------------

def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


_RC = {
    "svg.hashsalt": SVG_HASH_SALT,
    "svg.fonttype": "path",
    "font.family": "DejaVu Sans",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "legend.fontsize": 10,
}


#: The style of every figure of lokiml, and the pyplot module set to a file backend: public names for the
#: other figure-making modules (lokiml.decision_report, lokiml.abundance).
FIGURE_STYLE = _RC
pyplot = _pyplot


def _below(fig, ax, inches: float = 0.75) -> float:
    """The axes-fraction y that lies ``inches`` below the axes: room for tick labels and the axis label."""
    return -inches / (ax.get_position().height * fig.get_figheight())


def save_figure(fig, path, dpi: int = 150) -> None:
    """Save ``fig`` atomically as SVG, PNG, JPEG or PDF, without dates, so that the same figure gives the same bytes."""
    plt = _pyplot()
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    metadata = {"svg": {"Date": None}, "png": {"Software": None},
                "pdf": {"CreationDate": None, "ModDate": None}}.get(fmt, {})
    extra = {"pil_kwargs": {"quality": 85}} if fmt in ("jpg", "jpeg") else {"metadata": metadata}
    try:
        with plt.rc_context({"svg.hashsalt": SVG_HASH_SALT}), atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight", **extra)
    finally:
        plt.close(fig)


def _font_sizes(n_classes: int) -> tuple[float, float]:
    """(tick label size, cell value size) for a confusion matrix of ``n_classes``."""
    ticks = float(np.clip(15.0 - 0.15 * n_classes, 7.0, 12.0))
    cells = float(np.clip(14.0 - 0.2 * n_classes, 6.0, 11.0))
    return ticks, cells


def plot_confusion(cm: np.ndarray, classes, path, normalised: bool = False, title: str = "") -> None:
    """A confusion matrix readable at 20+ classes: names on both axes, values in the cells.

    Counts are shown as integers, row-normalised values as percentages of the
    true class (each row sums to 100 %); cells with 0 are left blank so that
    the errors stand out. The figure grows with the number of classes and the
    fonts shrink (down to a readable minimum).
    """
    plt = _pyplot()
    n = len(classes)
    ticks, cells = _font_sizes(n)
    side = max(5.0, 0.42 * n + 2.5)
    values = cm * 100.0 if normalised else cm.astype(float)
    with plt.rc_context(_RC):
        fig, ax = plt.subplots(figsize=(side + 1.2, side))
        vmax = 100.0 if normalised else max(1.0, float(np.nanmax(values)) if values.size else 1.0)
        im = ax.imshow(np.nan_to_num(values, nan=0.0), cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest")
        for i in range(n):
            for j in range(n):
                v = values[i, j]
                if not np.isfinite(v) or v == 0:
                    continue
                text = f"{v:.0f}" if normalised else f"{int(v)}"
                if normalised and 0 < v < 0.5:
                    text = "<1"
                colour = "white" if v > 0.6 * vmax else "black"
                weight = "bold" if i == j else "normal"
                ax.text(j, i, text, ha="center", va="center", fontsize=cells, color=colour, fontweight=weight)
        ax.set_xticks(range(n))
        ax.set_yticks(range(n))
        ax.set_xticklabels(classes, rotation=45 if n <= 12 else 90, ha="right" if n <= 12 else "center",
                           rotation_mode="anchor" if n <= 12 else "default", fontsize=ticks)
        ax.set_yticklabels(classes, fontsize=ticks)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_xticks(np.arange(-0.5, n, 1), minor=True)
        ax.set_yticks(np.arange(-0.5, n, 1), minor=True)
        ax.grid(which="minor", color="#dddddd", linewidth=0.5)
        ax.tick_params(which="minor", length=0)
        for s in ax.spines.values():
            s.set_visible(False)
        cbar = fig.colorbar(im, ax=ax, fraction=0.035, pad=0.02)
        cbar.set_label("% of the true class" if normalised else "objects")
        if title:
            ax.set_title(title)
        save_figure(fig, path)


def plot_reliability(bins: pd.DataFrame, path, title: str = "") -> None:
    """Reliability diagram: accuracy against mean confidence per bin, with the number of objects per bin below."""
    plt = _pyplot()
    with plt.rc_context(_RC):
        fig, (ax, axn) = plt.subplots(2, 1, figsize=(6.0, 7.0), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1], "hspace": 0.08})
        width = float(bins["upper"].iloc[0] - bins["lower"].iloc[0])
        centres = ((bins["lower"] + bins["upper"]) / 2).to_numpy()
        used = bins["n"].to_numpy() > 0
        acc = bins["accuracy"].to_numpy()
        conf = bins["confidence"].to_numpy()
        ax.bar(centres[used], acc[used], width=width * 0.95, color="#4c72b0", edgecolor="white",
               label="accuracy of the objects in the bin")
        ax.plot(centres[used], conf[used], "o", color="#c44e52", markersize=5,
                label="their mean confidence (above the bar: over-confident)")
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("accuracy")
        ax.legend(loc="upper left", frameon=False)
        if title:
            ax.set_title(title)
        axn.bar(centres, bins["n"].to_numpy(), width=width * 0.95, color="#999999")
        axn.set_ylabel("objects")
        axn.set_xlabel("confidence (probability of the predicted class)")
        save_figure(fig, path)


def plot_mistakes(mistakes: pd.DataFrame | None, images: np.ndarray | None, path, title: str = "",
                  columns: int = 6) -> None:
    """A gallery of misclassified objects (normalised images as the model saw them), true and predicted class.

    Each tile's caption has at most five lines (object id, true class, predicted class, each shortened or
    wrapped to the tile's width), and the rows are spaced for five lines, so captions never overlap.
    """
    from .gallery import shorten, wrap

    plt = _pyplot()
    n = 0 if mistakes is None else len(mistakes)
    with plt.rc_context(_RC):
        if n == 0:
            fig, ax = plt.subplots(figsize=(6.0, 1.2))
            ax.axis("off")
            ax.text(0.5, 0.5, "no mistakes in this split", ha="center", va="center", fontsize=12)
        else:
            cols = min(columns, n)
            rows = math.ceil(n / cols)
            tile, text = 1.6, 0.75  # inches: the image, and five caption lines of 7 pt under it
            fig, axes = plt.subplots(rows, cols, figsize=(1.75 * cols, (tile + text) * rows + 0.6), squeeze=False)
            for ax in axes.ravel():
                ax.axis("off")
            for ax, (_, r), img in zip(axes.ravel(), mistakes.iterrows(),
                                       images if images is not None else [None] * n):
                if img is not None:
                    ax.imshow(img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
                else:
                    ax.text(0.5, 0.5, "no image", ha="center", va="center", fontsize=8, color="#777777")
                caption = "\n".join([shorten(r["object_id"], 24), wrap(f"true: {r['true_class']}", 24),
                                     wrap(f"predicted: {r['predicted_class']} ({r['probability']:.2f})", 24)])
                ax.text(0.5, -0.03, caption, transform=ax.transAxes, ha="center", va="top", fontsize=7,
                        linespacing=1.15)
            fig.subplots_adjust(wspace=0.12, hspace=text / tile + 0.08, top=1 - 0.6 / fig.get_figheight())
        if title:
            fig.suptitle(title, fontsize=11)
        save_figure(fig, path, dpi=100)


def _epoch_axis(history: pd.DataFrame) -> np.ndarray:
    """Epoch numbers over all phases: the epoch column when it keeps rising, else a running count."""
    if "epoch" in history.columns:
        e = pd.to_numeric(history["epoch"], errors="coerce").to_numpy()
        if np.all(np.isfinite(e)) and np.all(np.diff(e) > 0):
            return e + 1 if len(e) and e.min() == 0 else e
    return np.arange(1, len(history) + 1, dtype=float)


def plot_training_curves(history: pd.DataFrame, path, title: str = "", best_epoch=None) -> None:
    """Accuracy and loss per epoch, training and validation; phase boundaries and the best epoch marked."""
    plt = _pyplot()
    x = _epoch_axis(history)
    phases = history["phase"].astype(str).to_numpy() if "phase" in history.columns else np.array([""] * len(x))
    with plt.rc_context(_RC):
        fig, axes = plt.subplots(1, 2, figsize=(10.0, 4.2))
        for ax, metric, label in ((axes[0], "accuracy", "accuracy"), (axes[1], "loss", "loss")):
            for col, name, style in ((metric, "training", "-"), (f"val_{metric}", "validation", "-")):
                if col in history.columns:
                    y = pd.to_numeric(history[col], errors="coerce").to_numpy()
                    ax.plot(x, y, style, marker="o", markersize=3, label=name,
                            color="#4c72b0" if name == "training" else "#dd8452")
            starts = [k for k in range(1, len(phases)) if phases[k] != phases[k - 1]]
            for k in starts:
                ax.axvline((x[k - 1] + x[k]) / 2, color="grey", linestyle=":", linewidth=1)
            if starts:
                for k in [0] + starts:
                    b = x[k] - 0.5 if k else x[0]
                    ax.annotate(phases[k], (b, 1.0), xycoords=("data", "axes fraction"), fontsize=9,
                                ha="left", va="top", color="#555555", xytext=(3, -3), textcoords="offset points")
            if best_epoch is not None:
                ax.axvline(float(best_epoch), color="#55a868", linestyle="--", linewidth=1,
                           label=f"best epoch ({best_epoch}, lowest val_loss)")
            ax.set_xlabel("epoch" + (" (all phases)" if len(set(phases)) > 1 else ""))
            ax.set_ylabel(label)
            if metric == "accuracy":
                ax.set_ylim(0, 1.02)
            ax.grid(alpha=0.3)
        if len(x) and len(x) <= 30:
            for ax in axes:
                ax.set_xticks(x[:: max(1, len(x) // 15)])
        handles, names = axes[0].get_legend_handles_labels()
        fig.tight_layout()
        fig.legend(handles, names, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=len(names), frameon=False)
        if title:
            fig.suptitle(title, y=1.02)
        save_figure(fig, path)


_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif; margin: 12px;
       color: #1f2328; background: #ffffff; font-size: 13px; }
h1 { font-size: 20px; margin: 0 0 4px 0; } h2 { font-size: 16px; margin: 20px 0 6px 0; }
p.note { color: #555; max-width: 60em; margin: 4px 0; }
table { border-collapse: collapse; margin: 6px 0 12px 0; }
th, td { padding: 3px 7px; border-bottom: 1px solid #e1e4e8; }
td.zero { color: #b0b0b0; }
td { white-space: nowrap; }
td.key + td { white-space: normal; }
th { background: #f3f4f6; text-align: left; position: sticky; top: 0; vertical-align: bottom; max-width: 7em;
     font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.total td { font-weight: bold; border-top: 2px solid #999; }
tr:hover td { background: #fffbe6; }
td.key { color: #444; white-space: nowrap; }
"""


def _shade(value: float) -> str:
    """A background from light red (0) through white-ish yellow to light green (1) for scores."""
    if not np.isfinite(value):
        return ""
    v = float(np.clip(value, 0.0, 1.0))
    if v < 0.5:
        r, g, b = 248, int(180 + 140 * v), int(180 + 60 * v)
    else:
        r, g, b = int(248 - 130 * (v - 0.5)), int(250 - 30 * (v - 0.5)), int(210 - 60 * (v - 0.5))
    return f' style="background:#{r:02x}{min(g, 255):02x}{min(b, 255):02x}"'


def html_table(df: pd.DataFrame, floats: dict | None = None, shade=(), total_rows=(), headers: dict | None = None,
               labels: dict | None = None) -> str:
    """An HTML table of ``df``: numbers right-aligned with fixed formats, score columns shaded 0 (red) to 1 (green).

    ``labels`` gives a column's displayed name, ``headers`` its tooltip.
    """
    floats = floats or {}
    headers = headers or {}
    labels = labels or {}
    out = ["<table>", "<thead><tr>"]
    for c in df.columns:
        num = pd.api.types.is_numeric_dtype(df[c])
        title = headers.get(c)
        attr = f' title="{html.escape(title)}"' if title else ""
        out.append(f'<th class="{"num" if num else "txt"}"{attr}>{html.escape(str(labels.get(c, c)))}</th>')
    out.append("</tr></thead><tbody>")
    for _, row in df.iterrows():
        first = str(row.iloc[0])
        out.append('<tr class="total">' if first in total_rows else "<tr>")
        for c in df.columns:
            v = row[c]
            if isinstance(v, (float, np.floating)):
                text = "" if not np.isfinite(v) else floats.get(c, "{:.4f}").format(v)
                style = _shade(v) if c in shade and first not in total_rows else ""
                out.append(f'<td class="num"{style}>{text}</td>')
            elif isinstance(v, (int, np.integer)):
                out.append(f'<td class="num{" zero" if v == 0 else ""}">{int(v)}</td>')
            elif v is None or v is pd.NA:  # a missing integer (nullable Int64 column): not applicable
                out.append('<td class="num">–</td>')
            else:
                out.append(f"<td>{html.escape(str(v))}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def html_page(title: str, body: str) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n"
            f"<h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n")


def _key_value_table(rows) -> str:
    out = ["<table>"]
    for k, v in rows:
        out.append(f'<tr><td class="key">{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>')
    out.append("</table>")
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# One experiment
# --------------------------------------------------------------------------------------------

@dataclass
class SplitResult:
    split: str
    predictions: pd.DataFrame
    metrics: dict
    report: pd.DataFrame
    confusion: np.ndarray
    bins: pd.DataFrame
    n_excluded: int = 0
    excluded_ids: list = field(default_factory=list)
    mistakes: pd.DataFrame | None = None  # the most confident mistakes (rows of ``predictions``)
    mistake_images: np.ndarray | None = None
    probabilities: np.ndarray | None = None  # every class's probability, row for row with ``predictions``


def most_confident_mistakes(predictions: pd.DataFrame, n: int = MISTAKES_SHOWN) -> pd.DataFrame:
    """The wrong predictions with the highest probability first (ties by item id)."""
    wrong = predictions[predictions["correct"] == 0]
    return wrong.sort_values(["probability", "item_id"], ascending=[False, True], kind="stable").head(n)


def select_items(split_table: pd.DataFrame, split: str, include_augmented: bool = False) -> pd.DataFrame:
    """The rows of ``split`` to evaluate, sorted by item id: originals only unless ``include_augmented``."""
    rows = split_table[split_table["split"] == split]
    if not include_augmented:
        rows = rows[rows["augmented"].astype(int) == 0]
    return rows.sort_values("item_id", kind="stable").reset_index(drop=True)


def evaluate_split(model, store, split_table: pd.DataFrame, split: str, classes, include_augmented: bool = False,
                   batch_size: int = 32, bins: int = ECE_BINS, source: str = "split.tsv",
                   model_source: str = "model", base_features=None) -> SplitResult:
    """Predict one split's objects that have a usable image, and compute its metrics and tables.

    ``base_features`` (a :class:`lokiml.base_features.BaseFeatures` of the model's frozen base): the
    model's head classifies them, and no image goes through the base again.
    """
    rows = select_items(split_table, split, include_augmented)
    ok = store.ok(rows["item_id"].tolist())
    excluded = rows.loc[~ok, "item_id"].tolist()
    if excluded:
        log.warning("%s: %d item(s) left out, their image is not in the store or could not be normalised: %s",
                    split, len(excluded), ", ".join(excluded[:10]) + (" ..." if len(excluded) > 10 else ""))
    rows = rows[ok].reset_index(drop=True)
    if rows.empty:
        raise InputError(source, f"no {split} objects with a usable image to evaluate")
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(rows["class_name"]) - set(index))
    if unknown:
        raise InputError(source, f"{split} objects of classes the model does not know: {unknown}",
                         hint="the split and the model come from different configurations; rerun the workflow")
    y = rows["class_name"].map(index).to_numpy(dtype=int)
    log.info("%s: predicting %d objects", split, len(rows))
    if base_features is not None:
        probs = check_probabilities(head_probabilities(model, base_features.take(rows["item_id"]), batch_size),
                                    len(classes), model_source)
    else:
        probs = predict_probabilities(model, store, rows["item_id"], batch_size, len(classes), source=model_source)
    return split_result(rows, y, probs, classes, split, include_augmented, bins, excluded, store.gather)


def split_result(rows: pd.DataFrame, y: np.ndarray, probs: np.ndarray, classes, split: str,
                 include_augmented: bool = False, bins: int = ECE_BINS, excluded=(), gather=None) -> SplitResult:
    """Metrics and tables of one split from its rows (``item_id``, ``object_id``), labels and probabilities.

    The seam shared by every kind of experiment: ``probs[i]`` belongs to ``rows.iloc[i]``.
    ``gather(item_ids)`` returns the images of the most confident mistakes (None: no images).
    """
    excluded = list(excluded)
    pred = probs.argmax(axis=1)
    metrics = compute_metrics(y, probs, list(classes), bins=bins)
    metrics["split"] = split
    metrics["include_augmented"] = bool(include_augmented)
    metrics["n_excluded_no_image"] = len(excluded)
    if metrics["classes_absent"]:
        log.warning("%s: no objects of %s; their F1 counts as 0 in the macro average", split, metrics["classes_absent"])
    table = predictions_table(rows["item_id"], rows["object_id"], y, probs, classes)
    mistakes = most_confident_mistakes(table)
    images = gather(mistakes["item_id"].tolist()) if len(mistakes) and gather is not None else None
    return SplitResult(split, table, metrics, classification_table(y, pred, list(classes)),
                       confusion_counts(y, pred, len(classes)), calibration_bins(y, probs, bins),
                       len(excluded), excluded, mistakes, images, np.asarray(probs, dtype=np.float32))


def _round_floats(obj, digits: int = 6):
    if isinstance(obj, float):
        return None if not math.isfinite(obj) else round(obj, digits)
    if isinstance(obj, dict):
        return {k: _round_floats(v, digits) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_round_floats(v, digits) for v in obj]
    return obj


def write_split_outputs(result: SplitResult, classes, paths: dict, experiment: str = "") -> None:
    """Write one split's tables, figures and metrics to ``paths`` (keys: SPLIT_OUTPUTS)."""
    classes = list(classes)
    s = result.split
    what = "validation" if s == "valid" else s
    write_tsv(paths["predictions"], result.predictions, float_format=FLOAT_FORMAT)
    if "probabilities" in paths and result.probabilities is not None:  # for lokiml.decision_report
        save_npy(paths["probabilities"], result.probabilities)
    write_tsv(paths["report"], result.report, float_format=FLOAT_FORMAT)
    counts = pd.DataFrame(result.confusion, index=pd.Index(classes, name="true\\predicted"), columns=classes)
    write_tsv(paths["confusion_counts"], counts.reset_index())
    norm = pd.DataFrame(normalise_rows(result.confusion), index=pd.Index(classes, name="true\\predicted"),
                        columns=classes)
    write_tsv(paths["confusion_normalised"], norm.reset_index(), float_format=FLOAT_FORMAT)
    metrics = dict(result.metrics)
    metrics["calibration_bins"] = result.bins.to_dict(orient="records")
    write_json(paths["metrics"], _round_floats(metrics))
    m = result.metrics
    head = f"{experiment}, {what} split" if experiment else f"{what} split"
    plot_confusion(result.confusion, classes, paths["confusion_counts_fig"],
                   title=f"{head}: confusion matrix (objects)\naccuracy {m['accuracy']:.3f}, n = {m['n_objects']}")
    plot_confusion(normalise_rows(result.confusion), classes, paths["confusion_normalised_fig"], normalised=True,
                   title=f"{head}: confusion matrix (% of each true class)\n"
                         f"balanced accuracy {m['balanced_accuracy']:.3f}")
    plot_reliability(result.bins, paths["reliability"],
                     title=f"{head}: reliability\nECE {m['ece']:.3f} ({m['ece_bins']} bins), n = {m['n_objects']}")
    plot_mistakes(result.mistakes, result.mistake_images, paths["mistakes"],
                  title=f"{head}: the most confident mistakes "
                        f"({len(result.mistakes) if result.mistakes is not None else 0} of "
                        f"{int((result.predictions['correct'] == 0).sum())})")
    notes = [
        f"{m['n_objects']} objects of the {what} split"
        + (" (originals only: augmented copies are altered images of objects already counted, not new objects)"
           if not m["include_augmented"] else " (including augmented copies)") + ".",
        "precision: of the objects predicted as the class, the share that truly are; recall: of the objects of "
        "the class, the share found; F1: their harmonic mean; support: objects of the class. Cells are shaded "
        "from red (0) to green (1).",
    ]
    if m["classes_absent"]:
        notes.append(f"No objects of {', '.join(m['classes_absent'])} in this split: listed with support 0, "
                     "and F1 = 0 in the macro average.")
    body = "".join(f'<p class="note">{html.escape(t)}</p>' for t in notes)
    body += html_table(result.report, floats={"precision": "{:.3f}", "recall": "{:.3f}", "f1": "{:.3f}"},
                       shade=("precision", "recall", "f1"), total_rows=("macro avg", "weighted avg"),
                       labels={"class_name": "class", "f1": "F1"})
    body += "<h2>Metrics</h2>" + _metrics_html([m])
    write_text(paths["report_html"], html_page(f"{head}: classification report", body))


_METRIC_ROWS = [
    ("n_objects", "objects evaluated", "{:d}"),
    ("accuracy", "accuracy", "{:.4f}"),
    ("balanced_accuracy", "balanced accuracy (mean recall per class)", "{:.4f}"),
    ("macro_f1", "macro F1 (all classes weigh the same)", "{:.4f}"),
    ("weighted_f1", "weighted F1 (classes weighted by support)", "{:.4f}"),
    ("top3_accuracy", "top-3 accuracy (true class among the 3 most probable)", "{:.4f}"),
    ("top2_accuracy", "top-2 accuracy (true class among the 2 most probable)", "{:.4f}"),
    ("log_loss", "log loss (cross-entropy, lower is better)", "{:.4f}"),
    ("ece", "expected calibration error (ECE, lower is better)", "{:.4f}"),
    ("n_excluded_no_image", "left out: no usable image", "{:d}"),
]


def _metrics_html(metrics: list[dict]) -> str:
    splits = [m.get("split", "") for m in metrics]
    out = ["<table><thead><tr><th>metric</th>"]
    out += [f'<th class="num">{html.escape("validation" if s == "valid" else s)}</th>' for s in splits]
    out.append("</tr></thead><tbody>")
    for key, label, fmt in _METRIC_ROWS:
        if not any(key in m for m in metrics):
            continue
        cells = []
        for m in metrics:
            v = m.get(key)
            cells.append("" if v is None or (isinstance(v, float) and not math.isfinite(v)) else fmt.format(v))
        out.append(f'<tr><td class="key">{html.escape(label)}</td>'
                   + "".join(f'<td class="num">{c}</td>' for c in cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _get(d: dict, *keys, default=None):
    """The first of ``keys`` present in ``d`` (a key may be a dotted path into nested dicts)."""
    for key in keys:
        cur = d
        for part in key.split("."):
            if isinstance(cur, dict) and part in cur:
                cur = cur[part]
            else:
                cur = None
                break
        if cur is not None:
            return cur
    return default


def _total(value):
    """A number, or the sum of a per-phase dict of numbers (None when there is nothing)."""
    if isinstance(value, dict):
        nums = [v for v in value.values() if isinstance(v, (int, float))]
        return sum(nums) if nums else None
    return value


def training_facts(info: dict, history: pd.DataFrame) -> dict:
    """Epochs run, early stopping, best epoch and training time, from train_info.json with history.tsv as fallback.

    Accepts per-phase dicts where a single number is expected (``{"head": 8, "fine_tune": 3}``).
    """
    epochs_run = _total(_get(info, "epochs_run", "epochs.run", "n_epochs"))
    if epochs_run is None and len(history):
        epochs_run = len(history)
    seconds = _get(info, "seconds_total", "seconds.total", "training_seconds", "train_seconds")
    if seconds is None and "seconds" in history.columns:
        seconds = float(pd.to_numeric(history["seconds"], errors="coerce").sum())
    per_epoch = _get(info, "seconds_per_epoch", "seconds.per_epoch")
    if isinstance(per_epoch, list):
        per_epoch = float(np.mean(per_epoch)) if per_epoch else None
    if per_epoch is None and "seconds" in history.columns and len(history):
        per_epoch = float(pd.to_numeric(history["seconds"], errors="coerce").mean())
    stopped = _get(info, "stopped_early_at")
    if isinstance(stopped, dict):
        stops = [v for v in stopped.values() if v is not None]
        stopped = max(stops) if stops else None
    phases = {}
    per_phase = _get(info, "epochs_per_phase")
    if not isinstance(per_phase, dict) and isinstance(_get(info, "epochs_run"), dict):
        per_phase = _get(info, "epochs_run")
    if isinstance(per_phase, dict):
        phases = {str(k): int(v) for k, v in per_phase.items() if v}
    elif "phase" in history.columns:
        for ph in history["phase"].astype(str):
            phases[ph] = phases.get(ph, 0) + 1
    return {
        "epochs_run": int(epochs_run) if epochs_run is not None else None,
        "stopped_early_at": stopped,
        "best_epoch": _get(info, "best_epoch"),
        "seconds_total": float(seconds) if seconds is not None else None,
        "seconds_per_epoch": float(per_epoch) if per_epoch is not None else None,
        "feature_seconds": _get(info, "feature_seconds"),
        "phases": phases,
        "device": _get(info, "device", "runtime.device"),
        "precision": _get(info, "precision", "runtime.precision"),
        "backend": _get(info, "backend", "runtime.backend"),
        "backend_version": _get(info, "runtime.backend_version"),
        "cached_features": _get(info, "cached_features", "cache_features", "features_cached"),
    }


def short_weights(weights: str | None) -> str:
    """A table-sized name of an experiment's weights: imagenet, none (from scratch), or the file's name."""
    w = (weights or "none").strip()
    if w.lower() in ("imagenet", "none"):
        return "none (from scratch)" if w.lower() == "none" else "imagenet"
    return Path(w).name


def describe_weights(weights: str | None, fine_tune: dict | None = None) -> str:
    """Pre-trained or not, and what was trained (the seed's 'Pre-Trained: True/False')."""
    w = (weights or "none").strip()
    if w.lower() == "none":
        return "not pre-trained: the whole network trained from a random initialisation"
    source = "ImageNet weights (keras.applications)" if w.lower() == "imagenet" else f"base weights from {w}"
    text = f"pre-trained: {source}; base frozen, the head trained"
    if fine_tune:
        text += f", then the top {fine_tune.get('layers', '?')} layers of the base fine-tuned"
    return text


def _duration(seconds) -> str:
    if seconds is None:
        return "unknown"
    s = float(seconds)
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min ({s:.0f} s)"
    return f"{s / 3600:.2f} h ({s:.0f} s)"


def split_counts(split_table: pd.DataFrame) -> dict:
    aug = split_table["augmented"].astype(int)
    out = {}
    for s in ("train", "valid", "test"):
        sel = split_table["split"] == s
        out[s] = {"items": int(sel.sum()), "originals": int((sel & (aug == 0)).sum()),
                  "augmented": int((sel & (aug == 1)).sum())}
    return out



def result_lines(test: dict, valid: dict, n_classes: int) -> list[tuple[str, str]]:
    """The 'Results' section of an experiment's summary: the key test and validation metrics."""
    k = next(key for key in test if key.startswith("top") and key.endswith("_accuracy"))
    return [
        ("Test accuracy", f"{test['accuracy']:.4f}"),
        ("Test loss", f"{test['log_loss']:.4f} (log loss over all {n_classes} classes)"),
        ("Test balanced accuracy", f"{test['balanced_accuracy']:.4f}"),
        ("Test macro F1", f"{test['macro_f1']:.4f}"),
        (f"Test top-{k[3:-9]} accuracy", f"{test[k]:.4f}"),
        ("Test calibration error", f"{test['ece']:.4f} (ECE, {test['ece_bins']} bins)"),
        ("Validation accuracy", f"{valid['accuracy']:.4f}"),
        ("Validation loss", f"{valid['log_loss']:.4f}"),
    ]

def summary_lines(experiment: str, params: dict, facts: dict, results: dict, classes, counts: dict,
                  model_file: str, include_augmented: bool) -> list[tuple[str, list[tuple[str, str]]]]:
    """Sections of (label, value) pairs: the same content for summary.txt and summary.html."""
    test = results["test"].metrics
    valid = results["valid"].metrics
    early = facts["stopped_early_at"]
    epochs_cfg = params.get("epochs")
    fine = params.get("fine_tune") or {}
    planned = (int(epochs_cfg) + int(fine.get("epochs", 0))) if epochs_cfg is not None else None
    phases = ", ".join(f"{p}: {n}" for p, n in facts["phases"].items()) if len(facts["phases"]) > 1 else ""
    model = [
        ("Model", f"{params.get('model', '?')} (keras.applications base, global average pooling, dropout "
                  f"{params.get('dropout', '?')}, dense softmax over {len(classes)} classes)"),
        ("Weights", describe_weights(params.get("weights"), params.get("fine_tune"))),
        ("Image size", f"{params.get('image_size', '?')} x {params.get('image_size', '?')} px, grey"),
        ("Optimiser", f"{params.get('optimizer', '?')}, learning rate {params.get('learning_rate', '?')}, "
                      f"batch size {params.get('batch_size', '?')}"),
        ("Evaluated checkpoint", f"{model_file} (the epoch with the lowest validation loss"
                                 + (f", epoch {facts['best_epoch']}" if facts["best_epoch"] is not None else "") + ")"),
    ]
    res = result_lines(test, valid, len(classes))
    training = [
        ("Epochs run", f"{facts['epochs_run']}" + (f" of {planned} planned" if planned else "")
                       + (f" ({phases})" if phases else "")),
        ("Early stopping", (f"stopped at epoch {early}" if early else "did not stop early")
                           + _early_stopping_rule(params)),
        ("Best epoch", f"{facts['best_epoch']}" if facts["best_epoch"] is not None else "unknown"),
        ("Training time", f"{_duration(facts['seconds_total'])} in total"
                          + (f" (of which {_duration(facts['feature_seconds'])} computing the frozen base's features "
                             "once)" if facts.get("feature_seconds") else "")
                          + f", {_duration(facts['seconds_per_epoch'])} per epoch"),
    ]
    if facts["cached_features"] is not None:
        training.append(("Cached base features", "yes" if facts["cached_features"] else "no"))
    if facts["device"]:
        training.append(("Device", str(facts["device"])))
    if facts.get("backend") or facts.get("precision"):
        training.append(("Backend and precision",
                         f"Keras on {facts.get('backend') or '?'}"
                         + (f" {facts['backend_version']}" if facts.get("backend_version") else "")
                         + f", {facts.get('precision') or '?'}"))
    what = ("originals only: augmented copies are flipped, rotated or shifted images of objects that are "
            "already in the split, not new objects, so they are left out of the metrics"
            if not include_augmented else "originals and augmented copies")
    data = [("Classes", f"{len(classes)}: {', '.join(classes)}")]
    for s, label in (("train", "Train"), ("valid", "Validation"), ("test", "Test")):
        c = counts[s]
        data.append((label, f"{c['items']} images: {c['originals']} objects + {c['augmented']} augmented copies"))
    data.append(("Evaluated on", f"{what}; valid {valid['n_objects']} and test {test['n_objects']} objects"))
    excl = valid["n_excluded_no_image"] + test["n_excluded_no_image"]
    if excl:
        data.append(("Left out", f"{excl} objects whose image could not be normalised (see the normalise logs)"))
    return [("Model", model), ("Results", res), ("Training", training), ("Data", data)]


def with_warnings(sections, info: dict, results: dict, classes):
    """``sections`` with a first section "Warnings" when training or the predictions show a model that did not
    learn (lokiml.diagnostics); each warning is logged too."""
    from . import diagnostics

    found = [str(w) for w in (_get(info, "warnings", default=[]) or [])]
    for s in ("valid", "test"):
        if s in results:
            found += diagnostics.confusion_warnings(results[s].confusion, classes, s)
    for w in found:
        log.warning("diagnostics: %s", w)
    if not found:
        return sections
    return [("Warnings", [(f"Warning {k}", w) for k, w in enumerate(found, 1)])] + list(sections)


def _early_stopping_rule(params: dict) -> str:
    es = params.get("early_stopping")
    if not es:
        return " (early stopping off)" if "early_stopping" in params else ""
    return (f" (monitor {es.get('monitor', 'val_loss')}, patience {es.get('patience', '?')}, "
            f"min_delta {es.get('min_delta', '?')})")


def summary_text(experiment: str, sections) -> str:
    width = max(len(k) for _, rows in sections for k, _ in rows) + 2
    lines = [f"lokiml experiment {experiment}", "=" * (len(experiment) + 18), ""]
    for title, rows in sections:
        lines.append(f"{title}")
        for k, v in rows:
            lines.append(f"  {(k + ':').ljust(width)}{v}")
        lines.append("")
    return "\n".join(lines)


def summary_html(experiment: str, sections, results: dict) -> str:
    body = ""
    for title, rows in sections:
        body += f"<h2>{html.escape(title)}</h2>"
        if title == "Results":
            body += _metrics_html([results["test"].metrics, results["valid"].metrics])
        else:
            body += _key_value_table(rows)
    return html_page(f"Experiment {experiment}", body)


def evaluate_experiment(model_path, classes_path, history_path, info_path, split_path, store_npys, store_indexes,
                        classes, outputs: dict, experiment: str = "", params: dict | None = None,
                        include_augmented: bool = False, batch_size: int = 32, ece_bins: int = ECE_BINS,
                        model=None, threads: int | None = None, base_features=None) -> dict:
    """Evaluate one experiment on the validation and test splits and write every output.

    ``outputs`` maps names to paths: ``summary`` (text), ``summary_html``,
    ``curves`` (training curves figure), and for each split in ``SPLITS``
    ``{split}_{key}`` for each key of ``SPLIT_OUTPUTS``. ``model`` may be given
    instead of loading ``model_path`` (tests). ``threads``: the backend's threads (the rule's
    ``threads:``; set once per process; None leaves the backend as it is). ``base_features``: (features,
    index) of rule compute_base_features for a model whose frozen base was not fine-tuned: the head
    classifies them instead of the full model classifying the images. Returns the results per split.
    """
    from .store import Store

    if threads is not None:
        from .runtime import configure

        configure(threads, {"mixed_precision": False}, what="evaluation")

    params = dict(params or {})
    trained = [line.strip() for line in Path(classes_path).read_text(encoding="utf-8").splitlines() if line.strip()]
    if classes is not None and list(classes) != trained:
        raise InputError(classes_path, f"the model was trained on classes {trained}, the configuration lists "
                                       f"{list(classes)}",
                         hint="retrain the experiment (snakemake -R train_model) or restore the class list")
    classes = trained
    split_table = read_tsv(split_path)
    store = Store(store_npys, store_indexes)
    if model is None:
        model = load_classifier(model_path)
    features = BaseFeatures(*base_features) if base_features else None
    results = {}
    for s in SPLITS:
        results[s] = evaluate_split(model, store, split_table, s, classes, include_augmented, batch_size, ece_bins,
                                    source=str(split_path), model_source=str(model_path), base_features=features)
        paths = split_paths(outputs, s)
        write_split_outputs(results[s], classes, paths, experiment)
        m = results[s].metrics
        log.info("%s: accuracy %.4f, macro F1 %.4f, log loss %.4f, ECE %.4f (n = %d)", s, m["accuracy"],
                 m["macro_f1"], m["log_loss"], m["ece"], m["n_objects"])
    history = read_tsv(history_path) if Path(history_path).stat().st_size else pd.DataFrame()
    info = json.loads(Path(info_path).read_text(encoding="utf-8")) if info_path else {}
    if not params:
        params = dict(_get(info, "experiment", "params", default={}) or {})
    facts = training_facts(info, history)
    plot_training_curves(history, outputs["curves"], title=f"{experiment}: training curves",
                         best_epoch=facts["best_epoch"])
    sections = summary_lines(experiment, params, facts, results, classes, split_counts(split_table),
                             Path(model_path).name, include_augmented)
    sections = with_warnings(sections, info, results, classes)
    write_text(outputs["summary"], summary_text(experiment, sections))
    write_text(outputs["summary_html"], summary_html(experiment, sections, results))
    return results


# --------------------------------------------------------------------------------------------
# Leaderboard
# --------------------------------------------------------------------------------------------

LEADERBOARD_COLUMNS = ["rank", "experiment", "valid_macro_f1", "test_macro_f1", "test_accuracy",
                       "test_balanced_accuracy", "test_top3_accuracy", "test_log_loss", "test_ece", "cv_macro_f1",
                       "cv_macro_f1_sd", "logo_macro_f1", "logo_macro_f1_sd", "model", "weights",
                       "image_size", "epochs_run", "best_epoch", "training_seconds", "n_test"]
# The repeated estimates (lokiml.estimates) of the experiments that have one: mean and sd of macro F1 over
# k-fold splits (cv_) and over left-out groups (logo_); missing for the others.
ESTIMATE_COLUMNS = {"cv_macro_f1": ("kfold", "macro_f1_mean"), "cv_macro_f1_sd": ("kfold", "macro_f1_sd"),
                    "logo_macro_f1": ("logo", "macro_f1_mean"), "logo_macro_f1_sd": ("logo", "macro_f1_sd")}


LEADERBOARD_OPTIONAL_INTS = ("image_size", "epochs_run", "best_epoch")


def leaderboard_table(rows: list[dict]) -> pd.DataFrame:
    """Sort experiments by validation macro F1 (best first; ties by name) and number them.

    The validation split is the one a model is chosen by; ranking by the test split would choose on it,
    and its scores would no longer estimate how the chosen model does on new objects.

    Image size, epochs and best epoch are integers, missing (empty in the TSV, a dash in the HTML) for
    experiments that have none, such as descriptors experiments.
    """
    table = pd.DataFrame(rows)
    for col in LEADERBOARD_OPTIONAL_INTS:
        if col in table.columns:
            table[col] = table[col].astype("Int64")
    table = table.sort_values(["valid_macro_f1", "experiment"], ascending=[False, True], kind="stable")
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table.reset_index(drop=True)[[c for c in LEADERBOARD_COLUMNS if c in table.columns]]


def leaderboard(experiments, test_metrics, valid_metrics, infos, settings: dict, out_tsv, out_html=None,
                out_figure=None, estimates: dict | None = None) -> pd.DataFrame:
    """One row per experiment, sorted by validation macro F1.

    ``test_metrics``, ``valid_metrics`` and ``infos`` are paths, in the order
    of ``experiments``; ``settings`` maps an experiment to its configuration
    (model, weights, image_size); ``estimates`` an experiment to its ``estimate.json`` (those that have one).
    """
    estimates = dict(estimates or {})
    rows = []
    for name, tpath, vpath, ipath in zip(experiments, test_metrics, valid_metrics, infos, strict=True):
        t = json.loads(Path(tpath).read_text(encoding="utf-8"))
        v = json.loads(Path(vpath).read_text(encoding="utf-8"))
        info = json.loads(Path(ipath).read_text(encoding="utf-8")) if ipath else {}
        facts = training_facts(info, pd.DataFrame())
        cfg = settings.get(name, {})
        topk = next((t[k] for k in t if k.startswith("top") and k.endswith("_accuracy")), None)
        rows.append({
            "experiment": name, "model": cfg.get("model", ""), "weights": cfg.get("weights", ""),
            "image_size": int(cfg["image_size"]) if "image_size" in cfg else None,
            "test_macro_f1": t["macro_f1"], "test_accuracy": t["accuracy"],
            "test_balanced_accuracy": t["balanced_accuracy"], "test_top3_accuracy": topk,
            "test_log_loss": t["log_loss"], "test_ece": t["ece"], "valid_macro_f1": v["macro_f1"],
            "epochs_run": facts["epochs_run"],
            "best_epoch": facts["best_epoch"],
            "training_seconds": facts["seconds_total"] if facts["seconds_total"] is not None else float("nan"),
            "n_test": t["n_objects"],
        })
        est = json.loads(Path(estimates[name]).read_text(encoding="utf-8")) if name in estimates else {}
        for col, (scheme, key) in ESTIMATE_COLUMNS.items():
            rows[-1][col] = (est.get(scheme) or {}).get(key, float("nan"))
    table = leaderboard_table(rows)
    for pair in (["cv_macro_f1", "cv_macro_f1_sd"], ["logo_macro_f1", "logo_macro_f1_sd"]):
        if table[pair[0]].isna().all():  # no experiment has this estimate: no column for it
            table = table.drop(columns=pair)
    write_tsv(out_tsv, table, float_format="%.4f")
    if out_html:
        notes = ("Experiments ranked by macro F1 on the validation split (every class weighs the same): choose "
                 "a model by it. The test scores estimate how the chosen model does on new objects, honestly "
                 "only because they played no part in the choice. Hover over a column name for its meaning.")
        heads = {
            "test_macro_f1": "mean F1 over all classes, test split",
            "test_balanced_accuracy": "mean recall per class, test split",
            "test_top3_accuracy": "true class among the 3 most probable",
            "test_log_loss": "cross-entropy on the test split (lower is better)",
            "test_ece": "expected calibration error, 15 bins (lower is better)",
            "training_seconds": "wall time of training, all phases",
        }
        shown = table.copy()
        shown["weights"] = [short_weights(w) for w in shown["weights"]]
        shown["training_time"] = [_duration(v) if np.isfinite(v) else "" for v in shown.pop("training_seconds")]
        for col in ("cv_macro_f1", "logo_macro_f1"):
            if col in shown.columns:
                sd = shown.pop(f"{col}_sd")
                shown[col] = [f"{m:.3f} ± {e:.3f}" if np.isfinite(m) else "" for m, e in zip(shown[col], sd)]
        heads["cv_macro_f1"] = ("macro F1 over repeated stratified k-fold splits, mean ± sd over the folds, the grid "
                                "chosen inside each fold (scikit-learn experiments; see their summary)")
        heads["logo_macro_f1"] = ("macro F1 on a group (split.group_by) the model never saw, mean ± sd over the "
                                  "groups: what a new sample, haul or cruise looks like")
        heads["weights"] = "; ".join(f"{e}: {w}" for e, w in zip(table["experiment"], table["weights"]))
        labels = {"test_macro_f1": "test macro F1", "test_accuracy": "test accuracy",
                  "test_balanced_accuracy": "test balanced accuracy", "test_top3_accuracy": "test top-3 accuracy",
                  "test_log_loss": "test log loss", "test_ece": "test ECE", "valid_macro_f1": "validation macro F1",
                  "epochs_run": "epochs", "best_epoch": "best epoch", "training_time": "training time",
                  "n_test": "test objects", "image_size": "image size (px)",
                  "cv_macro_f1": "k-fold macro F1 (mean ± sd)", "logo_macro_f1": "new group macro F1 (mean ± sd)"}
        heads["valid_macro_f1"] = "mean F1 over all classes, validation split: the ranking"
        scores = ["rank", "experiment", "valid_macro_f1", "test_macro_f1", "test_accuracy", "test_balanced_accuracy",
                  "test_top3_accuracy", "test_log_loss", "test_ece", "cv_macro_f1", "logo_macro_f1"]
        settings_cols = ["rank", "experiment", "model", "weights", "image_size", "epochs_run", "best_epoch",
                         "training_time", "n_test"]
        body = f'<p class="note">{html.escape(notes)}</p><h2>Scores</h2>' + html_table(
            shown[[c for c in scores if c in shown.columns]],
            floats={c: "{:.3f}" for c in shown.columns if c.startswith(("test_", "valid_"))}, headers=heads,
            labels=labels,
            shade=("test_macro_f1", "test_accuracy", "test_balanced_accuracy", "test_top3_accuracy", "valid_macro_f1"))
        body += "<h2>Experiments</h2>" + html_table(shown[[c for c in settings_cols if c in shown.columns]],
                                                     headers=heads, labels=labels)
        write_text(out_html, html_page("Leaderboard", body))
    if out_figure:
        plot_leaderboard(table, out_figure)
    return table


def plot_leaderboard(table: pd.DataFrame, path) -> None:
    plt = _pyplot()
    n = len(table)
    names = table["experiment"].tolist()[::-1]
    with plt.rc_context(_RC):
        fig, ax = plt.subplots(figsize=(9.0, max(2.5, 0.55 * n + 1.5)))
        y = np.arange(n)
        h = 0.27
        for off, col, label, colour in ((h, "valid_macro_f1", "validation macro F1 (the ranking)", "#aaaaaa"),
                                        (0, "test_macro_f1", "test macro F1", "#4c72b0"),
                                        (-h, "test_accuracy", "test accuracy", "#dd8452")):
            vals = table[col].to_numpy(dtype=float)[::-1]
            ax.barh(y + off, vals, height=h, label=label, color=colour)
            for yi, v in zip(y, vals):
                ax.text(v + 0.005, yi + off, f"{v:.3f}", va="center", fontsize=9)
        ax.set_yticks(y)
        ax.set_yticklabels(names)
        ax.set_xlim(0, 1.08)
        ax.set_xlabel("score (higher is better)")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, _below(fig, ax)), ncol=3,
                  frameon=False)
        ax.set_title("Experiments, best first (by validation macro F1)")
        save_figure(fig, path)


# --------------------------------------------------------------------------------------------
# Data preparation figures
# --------------------------------------------------------------------------------------------

def plot_data_summary(summary_path, split_path, out_objects, out_dropped, out_splits, out_html, classes=None,
                      cap=None, reasons: dict | None = None, manifest_path=None, polarity: str = "dark") -> None:
    """Figures of the data stage: objects per class before/after balancing, dropped rows, split sizes; summary HTML.

    With ``manifest_path`` (results/data/images.tsv), the summary also says what the images' borders tell of
    their polarity (lokiml.manifest.polarity_evidence).
    """
    if reasons is None:
        from .objects import REASONS as reasons
    summary = read_tsv(summary_path)
    for c in summary.columns[1:]:
        summary[c] = pd.to_numeric(summary[c]).astype(int)
    split = read_tsv(split_path)
    per_class = summary[~summary["class_name"].isin(["TOTAL", "(no class)"])].copy()
    if classes is not None:
        per_class = per_class.set_index("class_name").reindex(list(classes)).fillna(0).astype(int).reset_index()
    plt = _pyplot()
    n = len(per_class)
    names = per_class["class_name"].tolist()
    tick = float(np.clip(12.0 - 0.08 * n, 7.0, 11.0))
    height = max(3.0, 0.32 * n + 1.5)

    # 1. objects per class, before and after balancing
    with plt.rc_context(_RC):
        fig, ax = plt.subplots(figsize=(9.0, height))
        y = np.arange(n)[::-1]
        h = 0.38
        used = per_class["used"].to_numpy()
        orig = per_class["balanced_originals"].to_numpy()
        aug = per_class["augmented_copies"].to_numpy()
        ax.barh(y + h / 2, used, height=h, color="#8c8c8c", label="usable objects in the export")
        ax.barh(y - h / 2, orig, height=h, color="#4c72b0", label="after balancing: objects kept")
        ax.barh(y - h / 2, aug, left=orig, height=h, color="#a1c9f4", label="after balancing: augmented copies")
        top = max(int(used.max()) if n else 1, int((orig + aug).max()) if n else 1, 1)
        for yi, u, o, a in zip(y, used, orig, aug):
            ax.text(u + top * 0.01, yi + h / 2, f"{u}", va="center", fontsize=tick - 1)
            ax.text(o + a + top * 0.01, yi - h / 2, f"{o} + {a}" if a else f"{o}", va="center", fontsize=tick - 1)
        if cap:
            ax.axvline(cap, color="#c44e52", linestyle="--", linewidth=1, label=f"cap ({cap} per class)")
        ax.set_yticks(y)
        ax.set_yticklabels(names, fontsize=tick)
        ax.set_xlim(0, top * 1.18)
        ax.set_xlabel("objects")
        ax.set_title("Objects per class, before and after balancing")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, _below(fig, ax)), ncol=2, frameon=False)
        save_figure(fig, out_objects)

    # 2. dropped rows by reason (all rows of the export, including those of no configured class)
    total = summary[summary["class_name"] == "TOTAL"].iloc[0]
    drop_cols = [c for c in summary.columns if c.startswith("dropped_")]
    counts = [(c[len("dropped_"):], int(total[c])) for c in drop_cols]
    counts = [(r, k) for r, k in counts if k > 0]
    counts.sort(key=lambda rk: (-rk[1], rk[0]))
    with plt.rc_context(_RC):
        m = max(1, len(counts) + 1)
        fig, ax = plt.subplots(figsize=(9.0, max(2.5, 0.6 * m + 1.2)))
        labels = ["used\n(trained on, balanced, split)"] + [f"{r}\n{reasons.get(r, '')}" for r, _ in counts]
        values = [int(total["used"])] + [k for _, k in counts]
        colours = ["#55a868"] + ["#c44e52"] * len(counts)
        yy = np.arange(len(values))[::-1]
        ax.barh(yy, values, color=colours, height=0.6)
        vmax = max(values) if values else 1
        for yi, v in zip(yy, values):
            ax.text(v + vmax * 0.01, yi, f"{v}", va="center", fontsize=10)
        ax.set_yticks(yy)
        ax.set_yticklabels(labels, fontsize=10)
        ax.set_xlim(0, vmax * 1.15)
        ax.set_xlabel("rows of the export")
        ax.set_title(f"What happened to the {int(total['export_rows'])} rows of the export")
        save_figure(fig, out_dropped)

    # 3. split sizes per class, originals and augmented copies
    aug_flag = split["augmented"].astype(int)
    colours = {"train": "#4c72b0", "valid": "#dd8452", "test": "#55a868"}
    light = {"train": "#a1c9f4", "valid": "#ffb482", "test": "#8de5a1"}
    with plt.rc_context(_RC):
        fig, ax = plt.subplots(figsize=(9.0, height))
        y = np.arange(n)[::-1]
        left = np.zeros(n)
        for s in ("train", "valid", "test"):
            for is_aug, colour in ((0, colours[s]), (1, light[s])):
                sel = split[(split["split"] == s) & (aug_flag == is_aug)]
                k = sel.groupby("class_name").size().reindex(names).fillna(0).to_numpy()
                n_obj = int((split["split"].eq(s) & aug_flag.eq(is_aug)).sum())
                what = "augmented copies" if is_aug else "objects"
                ax.barh(y, k, left=left, height=0.7, color=colour, label=f"{s}: {n_obj} {what}")
                left = left + k
        for yi, t in zip(y, left):
            ax.text(t + max(left.max(), 1) * 0.01, yi, f"{int(t)}", va="center", fontsize=tick - 1)
        ax.set_yticks(y)
        ax.set_yticklabels(names, fontsize=tick)
        ax.set_xlim(0, max(left.max(), 1) * 1.12)
        ax.set_xlabel("images (objects and augmented copies)")
        ax.set_title("Train / validation / test split per class")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, _below(fig, ax)), ncol=3, frameon=False)
        save_figure(fig, out_splits)

    # 4. the summary table
    heads = {"export_rows": "rows of the export labelled with this class",
             "used": "rows used (validated, with a readable image)",
             "balanced_originals": "objects kept after capping large classes",
             "augmented_copies": "augmented copies added to fill small classes"}
    for c in drop_cols:
        heads[c] = reasons.get(c[len("dropped_"):], "")
    body = ('<p class="note">Per class: rows of the export = used + dropped (by reason); then objects kept after '
            'balancing, augmented copies, and images per split (train, valid, test include augmented copies). '
            '"(no class)" counts rows that map to none of the configured classes. Hover over a column name for '
            'its meaning; results/data/ledger.tsv says what happened to every single row.</p>')
    labels = {c: c.replace("dropped_", "dropped: ").replace("_", " ") for c in summary.columns}
    labels.update({"class_name": "class", "balanced_originals": "kept after balancing",
                   "augmented_copies": "augmented copies added", "train": "train images", "valid": "valid images",
                   "test": "test images"})
    body += html_table(summary, headers=heads, total_rows=("TOTAL",), labels=labels)
    if manifest_path:
        from .manifest import polarity_evidence, read_manifest

        _, rows = read_manifest(manifest_path)
        if rows:
            body += f'<p class="note">Images: {html.escape(polarity_evidence(rows, polarity).sentence())}.</p>'
    write_text(out_html, html_page("Data: objects per class at each step", body))
