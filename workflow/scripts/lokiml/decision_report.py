"""Rule evaluate_decisions: trust thresholds, natural-frequency evaluation, abundances and unknowns of one experiment.

Works on what the evaluation rules of every kind of experiment wrote: the validation and test
predictions with their full probabilities (``{split}/predictions.tsv`` + ``probabilities.npy``) and the
predictions of the objects training never saw (``extra/``: the capped-out objects of large classes and
the objects of no configured class, :mod:`lokiml.extra_objects`). No model is loaded: changing a
decision setting (``decisions:`` in the config) reruns this light job only.

What is measured where (the page ``decisions.html`` says it too):

* thresholds (:mod:`lokiml.decisions`) are chosen on the **validation** split, weighted to the export's
  class proportions, with the *calibration* half of the unknowns counted as errors;
* they are checked on the **natural test set**: the test split's originals plus the capped-out objects
  (of the test groups, when the split is grouped), weighted to the export's proportions (``N_c / n_c``),
  with the *test* half of the unknowns. The precision reached there is compared with the target;
* the closed-set metrics at natural frequencies (accuracy, macro F1, per-class precision and recall,
  the confusion matrix in estimated objects of the export) stand beside the balanced test split's;
* abundances (:mod:`lokiml.abundance`) are counted per sample (``decisions.abundance_by``) over the
  natural test set's objects of the configured classes;
* the unknowns' test half: how many get a confident prediction, how many are trusted (should be few),
  how well the top probability tells them from known objects (ROC AUC), per category.
"""

from __future__ import annotations

import html
import logging
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from . import decisions as dc
from .abundance import abundance_table, confusion_rates, mae_per_class, plot_abundance
from .errors import InputError
from .io import read_tsv, write_json, write_text, write_tsv

log = logging.getLogger(__name__)

#: Outputs of rule evaluate_decisions (key -> file name in results/evaluation/{experiment}/decisions/).
OUTPUTS = {
    "page": "decisions.html", "rule": "decisions.json", "thresholds": "thresholds.tsv",
    "curves": "precision_recall.svg", "natural_metrics": "natural_metrics.json",
    "natural_report": "natural_classification_report.tsv", "natural_confusion": "natural_confusion.tsv",
    "natural_confusion_fig": "natural_confusion.svg", "abundance": "abundance.tsv",
    "abundance_errors": "abundance_errors.tsv", "abundance_fig": "abundance.svg", "open_set": "open_set.tsv",
    "open_set_fig": "open_set.svg",
}
CONFIDENT = (0.5, 0.9)  # top probabilities reported for the unknowns
FEW_OBJECTS = 30  # a threshold resting on fewer trusted validation objects is flagged as uncertain


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------

def read_scored_split(predictions_path, probabilities_path, classes) -> tuple[pd.DataFrame, np.ndarray]:
    """An evaluated split: its predictions table and the full probabilities, row for row."""
    table = read_tsv(predictions_path)
    probs = np.load(probabilities_path)
    if probs.ndim != 2 or probs.shape != (len(table), len(classes)):
        raise InputError(probabilities_path, f"holds {probs.shape} probabilities, {predictions_path} lists "
                                             f"{len(table)} objects of {len(classes)} classes",
                         hint="rerun the experiment's evaluation (snakemake --forcerun evaluate_model, or "
                              "evaluate_descriptors / evaluate_deep_features)")
    return table, probs


def class_index(names, classes, source: str) -> np.ndarray:
    idx = {c: k for k, c in enumerate(classes)}
    names = list(names)
    unknown = sorted(set(names) - set(idx))
    if unknown:
        raise InputError(source, f"objects of classes the model does not know: {unknown[:5]}",
                         hint="the evaluation and the configuration differ; rerun the workflow")
    return np.array([idx[n] for n in names], dtype=int)


def read_counts(path) -> pd.DataFrame:
    counts = read_tsv(path)
    for c in counts.columns[1:]:
        counts[c] = pd.to_numeric(counts[c]).astype(int)
    return counts.set_index("class_name")


# --------------------------------------------------------------------------------------------
# Measures
# --------------------------------------------------------------------------------------------

def weighted_report(truth, pred, weight, classes) -> tuple[pd.DataFrame, dict, np.ndarray]:
    """Per-class precision, recall, F1 (weighted), objects evaluated (unweighted) and the weighted confusion
    matrix; and accuracy, balanced accuracy, macro F1 (scikit-learn, ``sample_weight``)."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score, \
        precision_recall_fscore_support

    labels = list(range(len(classes)))
    p, r, f, _ = precision_recall_fscore_support(truth, pred, labels=labels, sample_weight=weight, zero_division=0)
    n = np.bincount(truth, minlength=len(classes))
    table = pd.DataFrame({"class_name": list(classes), "precision": p, "recall": r, "f1": f,
                          "objects": n.astype(int)})
    cm = confusion_matrix(truth, pred, labels=labels, sample_weight=weight)
    metrics = {
        "n_objects": int(len(truth)),
        "accuracy": float(accuracy_score(truth, pred, sample_weight=weight)),
        "balanced_accuracy": float(balanced_accuracy_score(truth, pred, sample_weight=weight)),
        "macro_f1": float(f1_score(truth, pred, labels=labels, average="macro", sample_weight=weight,
                                   zero_division=0)),
    }
    return table, metrics, cm


def trust_on(scored: dc.Scored, thresholds, classes) -> pd.DataFrame:
    """Per class, on ``scored`` (weighted): objects predicted / trusted (unweighted), precision and recall of
    the trusted ones (unknowns predicted as the class count as errors), share of its predictions trusted."""
    trusted = dc.trusted_mask(scored.probs, thresholds)
    pred = scored.pred
    rows = []
    for c, name in enumerate(classes):
        is_pred = pred == c
        tr = trusted & is_pred
        w = scored.weight
        right = tr & (scored.truth == c)
        positives = w[scored.truth == c].sum()
        rows.append({"class_name": name, "predicted": int(is_pred.sum()), "trusted": int(tr.sum()),
                     "precision": float(w[right].sum() / w[tr].sum()) if w[tr].sum() > 0 else float("nan"),
                     "recall": float(w[right].sum() / positives) if positives > 0 else float("nan"),
                     "trusted_share": float(w[tr].sum() / w[is_pred].sum()) if w[is_pred].sum() > 0
                     else float("nan")})
    return pd.DataFrame(rows)


def overall_trust(scored: dc.Scored, thresholds) -> dict:
    """Share of the (weighted) objects trusted, and the precision of the trusted set as a whole."""
    trusted = dc.trusted_mask(scored.probs, thresholds)
    w = scored.weight
    right = trusted & (scored.pred == scored.truth)
    return {"objects": int(len(w)), "trusted": int(trusted.sum()),
            "trusted_share": float(w[trusted].sum() / w.sum()) if w.sum() > 0 else float("nan"),
            "precision": float(w[right].sum() / w[trusted].sum()) if w[trusted].sum() > 0 else float("nan")}


def open_set_table(extra: pd.DataFrame, probs: np.ndarray, trusted: np.ndarray, nodes: np.ndarray,
                   classes) -> pd.DataFrame:
    """Per category of no configured class: objects, the class most of them are predicted as, mean top
    probability, how many reach 0.5 / 0.9, how many are trusted, and the lineage node most given."""
    names = np.asarray(list(classes), dtype=object)
    rows = []
    for cat, idx in extra.groupby("category", sort=True).indices.items():
        p = probs[idx]
        top = names[p.argmax(axis=1)]
        vals, counts = np.unique(top, return_counts=True)
        nd = [x for x in nodes[idx] if x]
        rows.append({"category": cat, "objects": int(len(idx)),
                     "predicted_as": f"{vals[counts.argmax()]} ({counts.max()})",
                     "mean_top_probability": float(p.max(axis=1).mean()),
                     "top_at_least_0.5": int((p.max(axis=1) >= 0.5).sum()),
                     "top_at_least_0.9": int((p.max(axis=1) >= 0.9).sum()),
                     "trusted": int(trusted[idx].sum()),
                     "lineage_node": (max(set(nd), key=nd.count) + f" ({nd.count(max(set(nd), key=nd.count))})")
                     if nd else ""})
    return pd.DataFrame(rows, columns=["category", "objects", "predicted_as", "mean_top_probability",
                                       "top_at_least_0.5", "top_at_least_0.9", "trusted", "lineage_node"])


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------

def plot_precision_recall(valid_curves, test_curves, table: pd.DataFrame, path, title: str = "") -> None:
    """One panel per class: precision against recall on validation (where the threshold is chosen) and on
    the natural test set, the target precision, and the chosen threshold's point on both."""
    from .evaluate import FIGURE_STYLE, pyplot, save_figure

    plt = pyplot()
    n = len(table)
    cols = min(4, max(n, 1))
    rows = math.ceil(n / cols) if n else 1
    with plt.rc_context(FIGURE_STYLE):
        height = 2.9 * rows + 1.0
        fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, height), squeeze=False, sharex=True, sharey=True)
        for ax in axes.ravel()[n:]:
            ax.axis("off")
        for k, (ax, (_, row)) in enumerate(zip(axes.ravel(), table.iterrows())):
            target = row["target_precision"]
            ax.axhline(target, color="#c44e52", linestyle="--", linewidth=0.9)
            for curve, colour, label in ((valid_curves[k], "#4c72b0", "validation"),
                                         (test_curves[k], "#55a868", "test (natural)")):
                if len(curve.thresholds):
                    keep = _thin(len(curve.recall))
                    ax.step(curve.recall[keep], curve.precision[keep], where="post", color=colour, linewidth=1.3,
                            label=label)
            t = row["threshold"]
            if np.isfinite(t):
                ax.plot([row["valid_recall"]], [row["valid_precision"]], "o", color="#4c72b0", markersize=6)
                if np.isfinite(row.get("test_precision", np.nan)):
                    ax.plot([row["test_recall"]], [row["test_precision"]], "D", color="#55a868", markersize=5)
                note = f"threshold {t:.2f}"
            else:
                note = "target not reached:\nnever trusted"
            ax.text(0.03, 0.04, note, transform=ax.transAxes, fontsize=8, color="#333333")
            ax.set_title(str(row["class_name"]), fontsize=10)
            ax.set_xlim(-0.02, 1.02)
            ax.set_ylim(0, 1.04)
            ax.grid(alpha=0.3)
        for ax in axes[-1]:
            ax.set_xlabel("recall (share trusted)")
        for ax in axes[:, 0]:
            ax.set_ylabel("precision")
        handles = [plt.Line2D([], [], color="#4c72b0", label="validation (thresholds chosen here)"),
                   plt.Line2D([], [], color="#55a868", label="test, at natural proportions"),
                   plt.Line2D([], [], color="#c44e52", linestyle="--", label="target precision"),
                   plt.Line2D([], [], marker="o", linestyle="", color="#4c72b0", label="chosen threshold"),
                   plt.Line2D([], [], marker="D", linestyle="", color="#55a868", label="the same threshold on test")]
        fig.legend(handles=handles, loc="lower center", ncol=3, frameon=False, bbox_to_anchor=(0.5, -0.01))
        if title:
            fig.suptitle(title)
        fig.tight_layout(rect=(0, 0.75 / height, 1, 1))
        save_figure(fig, path)


def _thin(n: int, most: int = 400) -> np.ndarray:
    """Indices of at most ``most`` points of a curve of ``n`` (its ends kept): a figure of 100 000 steps per
    class would be megabytes of SVG and look the same."""
    if n <= most:
        return np.arange(n)
    return np.unique(np.r_[np.linspace(0, n - 1, most).round().astype(int), n - 1])


def plot_open_set(known_score, known_weight, unknown_score, unknown_trusted, path, title: str = "") -> None:
    """Top probability of known objects (natural test set) and of unknowns (test half): where they overlap,
    a threshold on it cannot keep the unknowns out without losing known objects."""
    from .evaluate import FIGURE_STYLE, pyplot, save_figure

    plt = pyplot()
    bins = np.linspace(0, 1, 21)
    with plt.rc_context(FIGURE_STYLE):
        fig, ax = plt.subplots(figsize=(8.0, 4.2))
        if len(known_score):
            ax.hist(known_score, bins=bins, weights=known_weight / max(known_weight.sum(), 1e-12), alpha=0.6,
                    color="#4c72b0", label=f"objects of the classes (n = {len(known_score)})")
        if len(unknown_score):
            ax.hist(unknown_score, bins=bins, weights=np.full(len(unknown_score), 1 / len(unknown_score)),
                    alpha=0.6, color="#c44e52",
                    label=f"objects of no configured class (n = {len(unknown_score)}, "
                          f"{int(np.sum(unknown_trusted))} trusted)")
        else:
            ax.text(0.5, 0.5, "no object of an unmapped category in the export", ha="center", va="center",
                    transform=ax.transAxes)
        ax.set_xlabel("probability of the predicted class")
        ax.set_ylabel("share of the objects")
        ax.legend(loc="upper left", frameon=False)
        if title:
            ax.set_title(title)
        save_figure(fig, path)


# --------------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------------

def _inline_svg(path) -> str:
    text = Path(path).read_text(encoding="utf-8")
    text = re.sub(r"^<\?xml[^>]*>\s*", "", text)
    text = re.sub(r"<!DOCTYPE[^>]*>\s*", "", text)
    return f'<div class="figure">{text}</div>'


def _pct(v) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{100 * v:.1f} %"


def _notes(*texts) -> str:
    return "".join(f'<p class="note">{html.escape(t)}</p>' for t in texts)


def write_page(path, experiment: str, facts: dict, thresholds: pd.DataFrame, natural: pd.DataFrame,
               metrics_rows: pd.DataFrame, mae: pd.DataFrame | None, open_set: pd.DataFrame, nodes: pd.DataFrame,
               figures: dict) -> None:
    from .evaluate import html_page, html_table

    body = _notes(
        f"How to use the predictions of {experiment} in EcoTaxa. Each object is predicted as its most "
        f"probable class; it is trusted when that probability reaches the class's threshold, else it is "
        f"to check. Thresholds are chosen on the validation split so that the trusted objects reach the "
        f"target precision at the export's own class proportions (each object weighs objects of its class in "
        f"the export / in the split), with half of the objects of no configured class counted as errors. "
        f"They are checked below on the natural test set: the test split's originals plus the objects of "
        f"large classes that the balancing cap left out (never trained on), weighted the same way, with the "
        f"other half of the unknowns.")
    share = facts["trust_test"]["trusted_share"]
    body += "<h2>Trust thresholds</h2>"
    body += (f'<p class="big">On the natural test set, <b>{_pct(share)}</b> of the objects need no human look '
             f'(trusted), at a precision of <b>{_pct(facts["trust_test"]["precision"])}</b> '
             f'(target {facts["target_text"]}); the other {_pct(1 - share if np.isfinite(share) else None)} '
             f'are to check.</p>')
    missed = thresholds[(thresholds["reachable"] == 1) & (thresholds["test_precision"] <
                                                          thresholds["target_precision"] - 1e-9)]
    never = thresholds.loc[thresholds["reachable"] == 0, "class_name"].tolist()
    if never:
        body += _notes(f"Cannot reach the target on the validation split, never trusted (all to check): "
                       f"{', '.join(never)}.")
    few = thresholds[(thresholds["reachable"] == 1) & (thresholds["valid_trusted"] < FEW_OBJECTS)]
    if len(few):
        body += _notes(f"Uncertain: the thresholds of {', '.join(few['class_name'])} rest on fewer than "
                       f"{FEW_OBJECTS} trusted validation objects each ("
                       + ", ".join(f"{r.class_name}: {r.valid_trusted}" for r in few.itertuples())
                       + "); a precision seen on so few objects is a rough estimate. Set decisions.confidence "
                       "(e.g. 0.9) to trust a class only when its validation objects show the target with that "
                       "confidence, or raise balance.cap for larger validation splits.")
    if len(missed):
        body += _notes("Reached the target on validation but not on the test set (the estimate is uncertain with "
                       "few objects; consider a higher target or decisions.confidence): "
                       + ", ".join(f"{r.class_name} ({100 * r.test_precision:.1f} %)" for r in missed.itertuples())
                       + ".")
    shown = thresholds.rename(columns={"class_name": "class"})
    labels = {"target_precision": "target", "threshold": "threshold", "reachable": "reachable",
              "valid_precision": "valid precision", "valid_recall": "valid recall (trusted)",
              "valid_trusted": "valid trusted", "valid_predicted": "valid predicted",
              "test_precision": "test precision", "test_recall": "test recall (trusted)",
              "test_trusted": "test trusted", "test_predicted": "test predicted",
              "test_trusted_share": "test: share of its predictions trusted",
              "balanced_test_precision": "balanced test precision", "reached": "target reached on test"}
    heads = {"threshold": "an object predicted as the class is trusted when its probability reaches this",
             "valid_recall": "share of the class's objects (weighted) that are trusted, validation split",
             "test_precision": "precision of the trusted objects on the natural test set (weighted)",
             "balanced_test_precision": "the same on the class-balanced test split, without weights or unknowns",
             "test_trusted": "objects trusted on the natural test set (unweighted count)",
             "reached": "1 when the test precision reaches the target"}
    body += html_table(shown, floats={c: "{:.3f}" for c in shown.columns if shown[c].dtype.kind == "f"},
                       shade=("valid_precision", "test_precision", "balanced_test_precision", "valid_recall",
                              "test_recall"), labels=labels, headers=heads)
    body += "<h2>Precision and recall per class</h2>" + _inline_svg(figures["curves"])
    body += "<h2>Natural frequencies beside the balanced test split</h2>" + _notes(
        "Balanced: the test split as it was made (large classes capped, every class about the same size). "
        "Natural: the test split's originals plus the capped-out objects, each weighted so that the classes "
        "have the export's proportions: what to expect on a sample like the export. Precision of rare classes "
        "usually drops at natural proportions; recall does not depend on them.")
    body += html_table(metrics_rows)
    body += html_table(natural.rename(columns={"class_name": "class"}),
                       floats={c: "{:.3f}" for c in natural.columns if natural[c].dtype.kind == "f"},
                       shade=("natural_precision", "natural_recall", "natural_f1", "balanced_precision",
                              "balanced_recall", "balanced_f1"),
                       labels={c: c.replace("_", " ") for c in natural.columns},
                       headers={"objects": "objects of the class in the natural test set (unweighted)"})
    body += _inline_svg(figures["natural_confusion_fig"])
    body += f"<h2>Abundances per {html.escape(facts['abundance_by'] or 'sample')}</h2>"
    if mae is None:
        body += _notes(facts["abundance_note"])
    else:
        body += _notes(
            f"Objects of the natural test set of each {facts['abundance_by']}, counted per class: true, predicted "
            "(classify and count), adjusted with the validation split's confusion rates (adjusted classify and "
            "count), and trusted only. Mean absolute error per class over the "
            f"{facts['abundance_samples']} {facts['abundance_by']} values (objects per {facts['abundance_by']}).")
        body += html_table(mae.rename(columns={"class_name": "class"}),
                           floats={c: "{:.2f}" for c in mae.columns if mae[c].dtype.kind == "f"},
                           total_rows=("all classes",), labels={c: c.replace("_", " ") for c in mae.columns})
        body += _inline_svg(figures["abundance_fig"])
    body += "<h2>Objects of no configured class (open set)</h2>"
    o = facts["open_set"]
    if o["objects"]:
        body += _notes(
            f"{o['objects']} object{'s' if o['objects'] != 1 else ''} of categories that map to no class (test "
            f"half; {o['calibration']} more were "
            f"used with the validation split to choose the thresholds). The classifier must give each a wrong "
            f"class: {o['top_at_least_0.5']} get a probability of at least 0.5, {o['top_at_least_0.9']} at least "
            f"0.9; {o['trusted']} ({_pct(o['trusted_share'])}) pass their class's threshold and would be wrongly "
            f"trusted; the others are sent to check. The top probability tells them from objects of the classes "
            f"with a ROC AUC of {o['auc']:.3f} (0.5: not at all, 1: perfectly).")
        body += html_table(open_set, floats={"mean_top_probability": "{:.3f}"},
                           labels={c: c.replace("_", " ") for c in open_set.columns})
    else:
        body += _notes("The export holds no object of an unmapped category: nothing to test. (Real exports "
                       "usually do: detritus, artefacts, rare taxa left out of `classes:`.)")
    body += _inline_svg(figures["open_set_fig"])
    body += "<h2>Lineage nodes for objects no class threshold trusts</h2>"
    if len(nodes):
        body += _notes(
            "When an object's class is not trusted, the deepest node of the classes' lineage "
            "(object_annotation_hierarchy) whose summed probability reaches the node's threshold, chosen for the "
            "same target precision among the objects left to check. An unknown object is right for a node its "
            "own lineage passes through. The prediction writes it to object_lokiml_node.")
        body += html_table(nodes, floats={c: "{:.3f}" for c in nodes.columns if nodes[c].dtype.kind == "f"},
                           labels={c: c.replace("_", " ") for c in nodes.columns})
    else:
        body += _notes("No lineage node above two or more classes (the classes carry no shared lineage).")
    page = html_page(f"{experiment}: decisions", body)
    write_text(path, page.replace("</style>", "p.big { font-size: 15px; max-width: 60em; }\n"
                                              "div.figure svg { max-width: 100%; height: auto; }\n</style>", 1))


# --------------------------------------------------------------------------------------------
# The rule
# --------------------------------------------------------------------------------------------

def evaluate_decisions(classes_path, valid_predictions, valid_probabilities, test_predictions, test_probabilities,
                       extra_predictions, extra_probabilities, extra_objects_path, counts_path, objects_path,
                       outputs: dict, experiment: str = "", target_precision: float = 0.95,
                       class_precision: dict | None = None, confidence: float | None = None,
                       abundance_by: str | None = "sample_id", lineage: bool = True) -> dict:
    """Rule evaluate_decisions (module docstring). ``outputs`` maps the keys of :data:`OUTPUTS` to paths."""
    from .evaluate import plot_confusion

    classes = [c.strip() for c in Path(classes_path).read_text(encoding="utf-8").splitlines() if c.strip()]
    n_cls = len(classes)
    targets = dc.class_targets(classes, target_precision, class_precision)
    counts = read_counts(counts_path)
    objects = read_tsv(objects_path)
    extra_objects = read_tsv(extra_objects_path)
    lineages = dc.class_lineages(objects, classes) if lineage else {c: [c] for c in classes}
    class_nodes = [set(lineages[c]) for c in classes]

    def totals(column):
        return {k: float(counts.at[c, column]) if c in counts.index else 0.0 for k, c in enumerate(classes)} | {
            dc.UNKNOWN: float(counts.at["(no class)", column]) if "(no class)" in counts.index else 0.0}

    def known(table, probs, origin, source):
        truth = class_index(table["true_class"], classes, source)
        return dc.Scored(table["object_id"].to_numpy(), truth, probs, np.ones(len(truth)),
                         [class_nodes[t] for t in truth], np.full(len(truth), origin, dtype=object))

    valid_t, valid_p = read_scored_split(valid_predictions, valid_probabilities, classes)
    test_t, test_p = read_scored_split(test_predictions, test_probabilities, classes)
    extra_t = read_tsv(extra_predictions)
    extra_p = np.load(extra_probabilities)
    ok = (extra_t["status"] == "ok").to_numpy()
    if extra_p.shape != (int(ok.sum()), n_cls):
        raise InputError(extra_probabilities, f"holds {extra_p.shape} probabilities for {int(ok.sum())} objects",
                         hint="rerun the experiment's evaluation")
    extra_t = extra_t[ok].reset_index(drop=True)
    info = extra_objects.set_index("item_id")
    extra_t["category"] = info["category"].reindex(extra_t["item_id"]).fillna("").to_numpy()
    extra_t["hierarchy"] = info["hierarchy"].reindex(extra_t["item_id"]).fillna("").to_numpy()
    is_capped = (extra_t["set"] == "capped").to_numpy()
    is_unknown = (extra_t["set"] == "unknown").to_numpy()
    in_pop = extra_t["in_population"].astype(int).to_numpy() == 1
    calib = is_unknown & (extra_t["half"] == "calibration").to_numpy()
    test_unk = is_unknown & (extra_t["half"] == "test").to_numpy() & in_pop

    lineage_sets: dict[tuple, set] = {}  # one set per distinct (category, hierarchy), shared by its objects

    def lineage_set(category, hierarchy):
        key = (category, hierarchy)
        if key not in lineage_sets:
            lineage_sets[key] = set(dc.lineage_of(category, hierarchy))
        return lineage_sets[key]

    def unknowns(mask, origin):
        sub = extra_t[mask]
        sets = [lineage_set(c, h) for c, h in zip(sub["category"], sub["hierarchy"])]
        return dc.Scored(sub["object_id"].to_numpy(), np.full(len(sub), dc.UNKNOWN), extra_p[mask],
                         np.ones(len(sub)), sets, np.full(len(sub), origin, dtype=object))

    # Validation (+ calibration unknowns), weighted to the export's proportions: where thresholds are chosen.
    valid = dc.Scored.concat([known(valid_t, valid_p, "valid", str(valid_predictions)), unknowns(calib, "unknown")])
    valid.weight = dc.natural_weights(valid.truth, totals("export_objects"))
    # The natural test set (+ test unknowns), weighted to the test population's proportions.
    capped_sub = extra_t[is_capped & in_pop]
    capped = dc.Scored(capped_sub["object_id"].to_numpy(),
                       class_index(capped_sub["class_name"], classes, str(extra_predictions)),
                       extra_p[is_capped & in_pop], np.ones(len(capped_sub)), None,
                       np.full(len(capped_sub), "capped", dtype=object))
    capped.lineages = [class_nodes[t] for t in capped.truth]
    test_known = dc.Scored.concat([known(test_t, test_p, "test", str(test_predictions)), capped])
    test = dc.Scored.concat([test_known, unknowns(test_unk, "unknown")])
    test.weight = dc.natural_weights(test.truth, totals("population_objects"))
    test_known = test.select(test.truth >= 0)

    # 1. thresholds, on validation; checked on the natural test set and on the balanced test split
    table, valid_curves = dc.class_thresholds(valid, classes, targets, confidence)
    thresholds = [None if not np.isfinite(t) else float(t) for t in table["threshold"]]
    on_test = trust_on(test, thresholds, classes)
    test_curves = dc.class_curves(test, n_cls)
    balanced = test.select(test.origin == "test")
    balanced.weight = np.ones(len(balanced.truth))
    on_balanced = trust_on(balanced, thresholds, classes)
    table["test_precision"] = on_test["precision"].to_numpy()
    table["test_recall"] = on_test["recall"].to_numpy()
    table["test_trusted"] = on_test["trusted"].to_numpy()
    table["test_predicted"] = on_test["predicted"].to_numpy()
    table["test_trusted_share"] = on_test["trusted_share"].to_numpy()
    table["balanced_test_precision"] = on_balanced["precision"].to_numpy()
    table["reached"] = ((table["reachable"] == 1) & (table["test_precision"] >= table["target_precision"] - 1e-9)
                        ).astype(int)
    trust_test = overall_trust(test, thresholds)
    for row in table.itertuples():
        if not row.reachable:
            log.warning("class %s: no threshold reaches precision %.3f on the validation split: never trusted",
                        row.class_name, row.target_precision)
        elif row.valid_trusted < FEW_OBJECTS:
            log.warning("class %s: its threshold %.3f rests on %d trusted validation objects only (uncertain; "
                        "see decisions.confidence)", row.class_name, row.threshold, row.valid_trusted)
    log.info("thresholds: %d of %d classes can be trusted; on the natural test set %.1f%% of the objects are "
             "trusted at a precision of %.3f", int(table["reachable"].sum()), n_cls,
             100 * trust_test["trusted_share"], trust_test["precision"])

    # lineage nodes, for the objects no class trusts
    nodes = []
    if lineage:
        nodes = dc.lineage_nodes(lineages, classes)
        nodes = dc.node_thresholds(valid, nodes, float(target_precision), confidence,
                                   dc.trusted_mask(valid.probs, thresholds))
    test_trusted = dc.trusted_mask(test.probs, thresholds)
    test_node = dc.trusted_nodes(test.probs, nodes, test_trusted)
    node_rows = []
    for nd in nodes:
        got = test_node == nd.name
        right = got & dc.holds_node(nd.name, test.lineages)
        w = test.weight
        node_rows.append({"node": nd.name, "classes": ", ".join(classes[k] for k in nd.members),
                          "threshold": float("nan") if nd.threshold is None else nd.threshold,
                          "valid_precision": float("nan") if nd.precision is None else nd.precision,
                          "test_objects": int(got.sum()),
                          "test_precision": float(w[right].sum() / w[got].sum()) if w[got].sum() > 0
                          else float("nan")})
    node_table = pd.DataFrame(node_rows, columns=["node", "classes", "threshold", "valid_precision", "test_objects",
                                                  "test_precision"])

    # the rule that prediction applies
    shares = np.array([float(counts.at[c, "export_objects"]) if c in counts.index else 0.0 for c in classes])
    shares = shares / shares.sum() if shares.sum() > 0 else np.full(n_cls, 1.0 / n_cls)
    rule = dc.DecisionRule(classes, thresholds, targets, nodes, dc.correctness_model(valid, classes),
                           shares.tolist(), experiment, confidence)
    write_json(outputs["rule"], rule.to_json())
    write_tsv(outputs["thresholds"], table, float_format="%.6f")

    # 2. natural frequencies (closed set: objects of the configured classes)
    nat_report, nat_metrics, nat_cm = weighted_report(test_known.truth, test_known.pred, test_known.weight, classes)
    bal = test.select(test.origin == "test")
    bal_report, bal_metrics, _ = weighted_report(bal.truth, bal.pred, np.ones(len(bal.truth)), classes)
    nat_metrics.update({"weights": "objects of the class in the test population / in the natural test set",
                        "objects_per_origin": {o: int((test_known.origin == o).sum()) for o in ("test", "capped")},
                        "population": {c: int(v) for c, v in zip(classes, [totals("population_objects")[k]
                                                                          for k in range(n_cls)])}})
    write_json(outputs["natural_metrics"], {"natural": nat_metrics, "balanced_test": bal_metrics,
                                            "trust": trust_test})
    natural = pd.DataFrame({"class_name": classes, "objects": nat_report["objects"],
                            "natural_precision": nat_report["precision"], "natural_recall": nat_report["recall"],
                            "natural_f1": nat_report["f1"], "balanced_precision": bal_report["precision"],
                            "balanced_recall": bal_report["recall"], "balanced_f1": bal_report["f1"]})
    write_tsv(outputs["natural_report"], natural, float_format="%.6f")
    scale = np.round(nat_cm).astype(np.int64)
    cm_df = pd.DataFrame(nat_cm, index=pd.Index(classes, name="true\\predicted"), columns=classes)
    write_tsv(outputs["natural_confusion"], cm_df.reset_index(), float_format="%.2f")
    plot_confusion(scale, classes, outputs["natural_confusion_fig"],
                   title=f"{experiment}: confusion at natural proportions\n(estimated objects of the test "
                         f"population, {int(scale.sum())} in all; n = {nat_metrics['n_objects']} evaluated)")
    metrics_rows = pd.DataFrame([
        {"metric": "objects evaluated", "balanced test split": str(bal_metrics["n_objects"]),
         "natural test set": f"{nat_metrics['n_objects']} ({nat_metrics['objects_per_origin']['test']} of the "
                             f"test split + {nat_metrics['objects_per_origin']['capped']} capped out)"},
        *({"metric": label, "balanced test split": f"{bal_metrics[k]:.4f}", "natural test set": f"{nat_metrics[k]:.4f}"}
          for k, label in (("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy (mean recall)"),
                           ("macro_f1", "macro F1"))),
    ])

    # 3. abundances per sample (objects of the configured classes in the natural test set)
    mae = None
    note = ""
    samples = None
    if abundance_by:
        obj = objects.drop_duplicates("object_id").set_index("object_id")
        if abundance_by in obj.columns:  # test originals and capped-out objects are all objects of the export
            samples = obj[abundance_by].reindex(test_known.object_id).fillna("").to_numpy(dtype=object)
        else:
            note = f"The export has no column {abundance_by!r} (decisions.abundance_by): no abundances."
            log.warning(note)
    else:
        note = "decisions.abundance_by is null: no abundances."
    if samples is not None:
        rates = confusion_rates(valid.truth, valid.pred, n_cls)
        ab = abundance_table(samples, test_known.truth, test_known.pred,
                             dc.trusted_mask(test_known.probs, thresholds), rates, classes)
        mae = mae_per_class(ab, classes)
        write_tsv(outputs["abundance"], ab, float_format="%.3f")
        write_tsv(outputs["abundance_errors"], mae, float_format="%.4f")
        plot_abundance(ab, mae, outputs["abundance_fig"], by=abundance_by,
                       title=f"{experiment}: counts per {abundance_by} (natural test set, "
                             f"{ab['sample'].nunique()} values)")
        log.info("abundances over %d %s: MAE per class %.3f (classify and count), %.3f (adjusted)",
                 ab["sample"].nunique(), abundance_by, mae["mae_predicted"].iloc[-1], mae["mae_adjusted"].iloc[-1])
    else:
        empty = pd.DataFrame(columns=["sample", "class_name", "true", "predicted", "adjusted", "trusted"])
        write_tsv(outputs["abundance"], empty)
        write_tsv(outputs["abundance_errors"], pd.DataFrame(columns=["class_name", "samples", "true_total",
                                                                     "true_mean", "mae_predicted", "mae_adjusted"]))
        _empty_figure(outputs["abundance_fig"], note)

    # 4. unknowns (test half)
    unk = test.select(test.truth == dc.UNKNOWN)
    unk_trusted = dc.trusted_mask(unk.probs, thresholds)
    unk_nodes = dc.trusted_nodes(unk.probs, nodes, unk_trusted)
    unk_extra = extra_t[test_unk].reset_index(drop=True)
    open_set = open_set_table(unk_extra, unk.probs, unk_trusted, unk_nodes, classes)
    write_tsv(outputs["open_set"], open_set, float_format="%.4f")
    auc = float("nan")
    if len(unk.truth) and len(test_known.truth):
        from sklearn.metrics import roc_auc_score

        y = np.r_[np.ones(len(test_known.truth)), np.zeros(len(unk.truth))]
        auc = float(roc_auc_score(y, np.r_[test_known.score, unk.score]))
    o = {"objects": int(len(unk.truth)), "calibration": int(calib.sum()),
         "top_at_least_0.5": int((unk.score >= CONFIDENT[0]).sum()),
         "top_at_least_0.9": int((unk.score >= CONFIDENT[1]).sum()), "trusted": int(unk_trusted.sum()),
         "trusted_share": float(unk_trusted.mean()) if len(unk.truth) else float("nan"),
         "with_lineage_node": int((unk_nodes != "").sum()), "auc": auc}
    plot_open_set(test_known.score, test_known.weight, unk.score, unk_trusted, outputs["open_set_fig"],
                  title=f"{experiment}: objects of no configured class" + (f" (ROC AUC {auc:.3f})"
                                                                          if np.isfinite(auc) else ""))
    if o["objects"]:
        log.info("unknowns: %d (test half): %d with probability >= 0.5, %d >= 0.9, %d trusted; ROC AUC %.3f",
                 o["objects"], o["top_at_least_0.5"], o["top_at_least_0.9"], o["trusted"], auc)

    # the figures and the page
    plot_precision_recall(valid_curves, test_curves, table, outputs["curves"],
                          title=f"{experiment}: precision and recall of the trusted objects per class")
    target_text = (f"{100 * target_precision:.0f} %" if not class_precision else
                   f"{100 * target_precision:.0f} %, per class where set")
    facts = {"trust_test": trust_test, "target_text": target_text, "abundance_by": abundance_by,
             "abundance_note": note, "abundance_samples": int(len(set(samples))) if samples is not None else 0,
             "open_set": o}
    write_page(outputs["page"], experiment, facts, table, natural, metrics_rows, mae, open_set, node_table,
               outputs)
    return {"thresholds": table, "trust": trust_test, "natural": nat_metrics, "balanced": bal_metrics,
            "abundance_errors": mae, "open_set": o, "nodes": node_table}


def _empty_figure(path, text: str) -> None:
    from .evaluate import FIGURE_STYLE, pyplot, save_figure

    plt = pyplot()
    with plt.rc_context(FIGURE_STYLE):
        fig, ax = plt.subplots(figsize=(6.0, 1.2))
        ax.axis("off")
        ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=11, wrap=True)
        save_figure(fig, path)
