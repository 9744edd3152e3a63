"""From scores to decisions: which predictions to trust, which to look at, in which order.

What an EcoTaxa user does with a classifier is decide which predictions to trust, validate the rest by
eye, and publish counts per sample. This module holds the decision logic; :mod:`lokiml.decision_report`
measures it on an experiment's splits and :mod:`lokiml.predict` applies it to new images.

* **Per-class trust thresholds** (:func:`class_thresholds`). An object predicted as class ``c`` (its most
  probable class) with probability ``p`` is *trusted* when ``p >= t_c``, else it is *to check*. ``t_c``
  is the lowest threshold at which the trusted objects of ``c`` on the **validation** split reach the
  target precision (``decisions.target_precision``, per class overridable): the most objects trusted
  for that precision. A class whose precision never reaches the target gets no threshold: none of its
  predictions is trusted, and the report says so.
* **Natural frequencies.** The validation and test splits are class-balanced (large classes capped,
  small ones filled with augmented copies), but precision depends on how common each class is: in the
  balanced split a rare class predicted with 95 % precision may fall to 60 % in a real sample, where
  the common classes' few mistakes into it outnumber its own objects. Every object is therefore weighed
  by ``N_c / n_c`` (objects of its class in the export / in the evaluated set; :func:`natural_weights`),
  so precision, recall and the confusion matrix are those of the export's own class proportions.
  Thresholds are chosen at these weights: they aim at the precision of a sample like the export.
* **Unknowns.** Objects of categories that map to no configured class (``unmapped_category``,
  ``dropped_by_mapping`` in the ledger) are in every real sample and always get a wrong class. Half of
  them (a seeded hash of their id) are scored with the validation split as *errors* of whatever class
  they are predicted as, so thresholds also keep them out of the trusted set; the other half tests
  that on the test side (:mod:`lokiml.decision_report`).
* **Lineage nodes** (:func:`lineage_nodes`, :func:`node_thresholds`). When no class is trusted, the
  deepest node of the classes' lineage (``object_annotation_hierarchy``: Copepoda, Metazoa, not-living)
  whose summed probability reaches its own threshold, chosen the same way among the objects left to
  check (an unknown object counts as right when its own lineage passes through the node).
* **An order for the human** (:func:`correctness_model`, :func:`review_order`): objects to check first,
  the most likely wrong first: the probability that the prediction is right, estimated per predicted
  class on the validation split at natural weights (isotonic regression of right/wrong on the score,
  so rare classes, whose predictions are less often right, come forward by themselves).

Everything here is a pure function of arrays; scikit-learn computes the precision-recall curves and the
isotonic fits.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError

log = logging.getLogger(__name__)

#: Label of an object of no configured class (an unknown) in integer truth arrays.
UNKNOWN = -1
#: Decisions written to the import table.
TRUSTED, TO_CHECK = "trusted", "to_check"
DECISIONS_VERSION = 1
#: Fewer validation objects predicted as a class than this: its correctness model is the pooled one.
MIN_CALIBRATION_OBJECTS = 20


def half_of(object_id: str, seed: int = 1) -> str:
    """``calibration`` or ``test``: a stable, seeded split of the unknown objects in two halves."""
    h = hashlib.sha256(f"unknown-half\x00{seed}\x00{object_id}".encode()).digest()
    return "calibration" if h[0] & 1 else "test"


def stable_priority(values, seed: int = 1, salt: str = "") -> np.ndarray:
    """A seeded pseudo-random rank per value that depends on the value only (for stable subsamples)."""
    return np.array([int.from_bytes(hashlib.sha256(f"{salt}\x00{seed}\x00{v}".encode()).digest()[:8], "little")
                     for v in values], dtype=np.uint64)


def natural_weights(labels: np.ndarray, totals: dict[int, float]) -> np.ndarray:
    """Weight ``N_k / n_k`` per object: ``N_k`` objects of label ``k`` in the population (``totals``),
    ``n_k`` of them among ``labels``. Weighted, the objects stand for the population's proportions.

    A label missing from ``totals`` (or with a total of 0) weighs 0.
    """
    labels = np.asarray(labels)
    w = np.zeros(len(labels), dtype=np.float64)
    for k in np.unique(labels):
        sel = labels == k
        total = float(totals.get(int(k), 0.0))
        if total > 0:
            w[sel] = total / sel.sum()
    return w


def wilson_lower(p: np.ndarray, n: np.ndarray, confidence: float) -> np.ndarray:
    """The Wilson score interval's lower bound of a proportion ``p`` seen on ``n`` objects (one-sided)."""
    from scipy.stats import norm

    z = float(norm.ppf(confidence))
    p = np.asarray(p, dtype=float)
    n = np.maximum(np.asarray(n, dtype=float), 1e-12)
    centre = p + z * z / (2 * n)
    spread = z * np.sqrt(np.maximum(p * (1 - p) / n + z * z / (4 * n * n), 0))
    return (centre - spread) / (1 + z * z / n)


@dataclass
class Curve:
    """A precision-recall curve over thresholds (descending), with the unweighted number of trusted objects."""

    thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    trusted: np.ndarray  # objects at or above each threshold (unweighted)


def trust_curve(positive: np.ndarray, score: np.ndarray, weight: np.ndarray, candidate: np.ndarray) -> Curve:
    """Precision and recall of "trust the ``candidate`` objects whose ``score`` reaches t", for every t.

    ``positive``: the object truly is what would be trusted; recall is the share of all weighted
    positives (candidates or not) that are trusted. scikit-learn's ``precision_recall_curve`` does the
    counting; non-candidates get a score of -1 and their thresholds are dropped.
    """
    from sklearn.metrics import precision_recall_curve

    positive = np.asarray(positive, dtype=bool)
    weight = np.asarray(weight, dtype=float)
    keep = weight > 0
    s = np.where(candidate, score, -1.0)[keep]
    y, w = positive[keep], weight[keep]
    if not (s >= 0).any():
        return Curve(np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0, dtype=int))
    if y.all() or not y.any():  # precision_recall_curve needs both labels: precision is 1 (or 0) everywhere
        ts = np.unique(s[s >= 0])[::-1]
        rec = np.array([w[s >= t].sum() / w.sum() for t in ts]) if y.any() else np.zeros(len(ts))
        return Curve(ts, np.full(len(ts), 1.0 if y.any() else 0.0), rec, np.array([(s >= t).sum() for t in ts]))
    prec, rec, thr = precision_recall_curve(y, s, sample_weight=w)
    prec, rec = prec[:-1], rec[:-1]  # the last point (precision 1, recall 0) has no threshold
    ok = thr >= 0
    thr, prec, rec = thr[ok][::-1], prec[ok][::-1], rec[ok][::-1]
    order = np.sort(s)
    trusted = len(s) - np.searchsorted(order, thr, side="left")
    return Curve(thr.astype(float), prec.astype(float), rec.astype(float), trusted.astype(int))


def choose_threshold(curve: Curve, target: float, confidence: float | None = None) -> int | None:
    """Index into ``curve`` of the lowest threshold whose precision reaches ``target`` (None: never).

    The lowest such threshold trusts the most objects: every object above it together has at least the
    target precision. With ``confidence`` (e.g. 0.95) the Wilson lower bound of the precision, over the
    unweighted number of trusted objects, must reach the target instead of the estimate itself.
    """
    if not len(curve.thresholds):
        return None
    prec = curve.precision
    if confidence:
        prec = wilson_lower(prec, curve.trusted, confidence)
    hits = np.flatnonzero(prec >= target - 1e-12)
    return int(hits[-1]) if len(hits) else None


def class_targets(classes, target_precision: float, per_class: dict | None = None) -> list[float]:
    """The target precision of each class: the global one unless ``per_class`` names the class."""
    per_class = dict(per_class or {})
    unknown = sorted(set(per_class) - set(classes))
    if unknown:
        raise InputError("config", f"decisions.class_precision names classes that are not configured: {unknown}",
                         hint="use the names listed under `classes:`")
    return [float(per_class.get(c, target_precision)) for c in classes]


@dataclass
class Scored:
    """Objects with their class probabilities, truth and natural weight: what the decisions are measured on.

    ``truth``: class index, or :data:`UNKNOWN` for an object of no configured class. ``lineages``: per
    object, the set of lineage nodes of its true category (for the node decisions), or None.
    """

    object_id: np.ndarray
    truth: np.ndarray
    probs: np.ndarray
    weight: np.ndarray
    lineages: list | None = None
    origin: np.ndarray | None = None  # "test", "capped", "valid", "unknown": where the object comes from

    def __post_init__(self):
        self.object_id = np.asarray(self.object_id, dtype=object)
        self.truth = np.asarray(self.truth, dtype=int)
        self.probs = np.asarray(self.probs, dtype=np.float64)
        self.weight = np.asarray(self.weight, dtype=np.float64)
        if self.origin is None:
            self.origin = np.full(len(self.truth), "", dtype=object)

    @property
    def pred(self) -> np.ndarray:
        return self.probs.argmax(axis=1) if len(self.probs) else np.zeros(0, dtype=int)

    @property
    def score(self) -> np.ndarray:
        return self.probs.max(axis=1) if len(self.probs) else np.zeros(0)

    def select(self, mask) -> "Scored":
        mask = np.asarray(mask, dtype=bool)
        return Scored(self.object_id[mask], self.truth[mask], self.probs[mask], self.weight[mask],
                      [lin for lin, m in zip(self.lineages, mask) if m] if self.lineages is not None else None,
                      self.origin[mask])

    @staticmethod
    def concat(parts: list["Scored"]) -> "Scored":
        parts = [p for p in parts if p is not None]
        lineages = None
        if all(p.lineages is not None for p in parts):
            lineages = [lin for p in parts for lin in p.lineages]
        n_cls = max((p.probs.shape[1] for p in parts if p.probs.ndim == 2 and p.probs.shape[1]), default=0)
        probs = [p.probs.reshape(len(p.truth), n_cls) for p in parts]
        return Scored(np.concatenate([p.object_id for p in parts]), np.concatenate([p.truth for p in parts]),
                      np.concatenate(probs) if probs else np.zeros((0, n_cls)),
                      np.concatenate([p.weight for p in parts]), lineages,
                      np.concatenate([p.origin for p in parts]))


# --------------------------------------------------------------------------------------------
# Class thresholds
# --------------------------------------------------------------------------------------------

THRESHOLD_COLUMNS = ["class_name", "target_precision", "threshold", "reachable", "valid_precision",
                     "valid_recall", "valid_trusted", "valid_predicted"]


def class_curves(scored: Scored, n_classes: int) -> list[Curve]:
    """Per class: the trust curve of the objects predicted as that class (score: its probability)."""
    pred, score = scored.pred, scored.score
    return [trust_curve(scored.truth == c, score, scored.weight, pred == c) for c in range(n_classes)]


def class_thresholds(scored: Scored, classes, targets, confidence: float | None = None):
    """``(table, curves)``: per class the threshold for its target precision and what it achieves on ``scored``.

    The table has :data:`THRESHOLD_COLUMNS`; ``threshold`` is NaN and ``reachable`` 0 where no threshold
    reaches the target (the class is never trusted). ``valid_trusted``/``valid_predicted``: unweighted
    objects trusted / predicted as the class.
    """
    classes = list(classes)
    curves = class_curves(scored, len(classes))
    pred = scored.pred
    rows = []
    for c, (name, target, curve) in enumerate(zip(classes, targets, curves)):
        k = choose_threshold(curve, target, confidence)
        row = {"class_name": name, "target_precision": float(target), "threshold": float("nan"), "reachable": 0,
               "valid_precision": float("nan"), "valid_recall": 0.0, "valid_trusted": 0,
               "valid_predicted": int((pred == c).sum())}
        if k is not None:
            row.update(threshold=float(curve.thresholds[k]), reachable=1, valid_precision=float(curve.precision[k]),
                       valid_recall=float(curve.recall[k]), valid_trusted=int(curve.trusted[k]))
        elif len(curve.thresholds):
            row["valid_precision"] = float(curve.precision.max())  # the best it gets, below the target
        rows.append(row)
    return pd.DataFrame(rows, columns=THRESHOLD_COLUMNS), curves


def trusted_mask(probs: np.ndarray, thresholds) -> np.ndarray:
    """Objects whose most probable class has a threshold and whose probability reaches it."""
    thresholds = np.asarray([np.nan if t is None else t for t in thresholds], dtype=float)
    if not len(probs):
        return np.zeros(0, dtype=bool)
    pred = probs.argmax(axis=1)
    score = probs.max(axis=1)
    t = thresholds[pred]
    return np.isfinite(t) & (score >= t - 1e-12)


# --------------------------------------------------------------------------------------------
# Lineage nodes
# --------------------------------------------------------------------------------------------

def lineage_of(category: str, hierarchy: str = "") -> list[str]:
    """The nodes of a category's lineage, root first (``object_annotation_hierarchy``, or ``a<b<c`` parents)."""
    from .objects import ClassMatcher

    return list(reversed(ClassMatcher.lineage(str(category or ""), str(hierarchy or ""))))


def class_lineages(objects: pd.DataFrame, classes) -> dict[str, list[str]]:
    """Each class's lineage (root first, ending at the class's node), from its objects' most common lineage.

    The lineage is cut at the class's own node (a class named after a parent keeps only the parents).
    A class whose objects carry no lineage gets ``[class]``.
    """
    out = {}
    frame = pd.DataFrame({
        "class_name": objects["class_name"].astype(str), "category": objects["category"].astype(str),
        "hierarchy": objects["object_annotation_hierarchy"].astype(str).replace({"nan": "", "NaN": ""})
        if "object_annotation_hierarchy" in objects.columns else ""})
    # one lineage per distinct (class, category, hierarchy): a million objects hold a few hundred of them
    distinct = frame.value_counts(sort=False).reset_index(name="n")
    for c in classes:
        counts: dict[tuple, int] = {}
        for cat, h, n in distinct.loc[distinct["class_name"] == c, ["category", "hierarchy", "n"]].itertuples(
                index=False):
            nodes = lineage_of(cat, h)
            nodes = nodes[:nodes.index(c) + 1] if c in nodes else nodes + [c]
            counts[tuple(nodes)] = counts.get(tuple(nodes), 0) + int(n)
        out[c] = list(max(counts.items(), key=lambda kv: (kv[1], kv[0]))[0]) if counts else [c]
    return out


def holds_node(name: str, lineages: list) -> np.ndarray:
    """Per object, whether its lineage (a set of node names) holds ``name``; each distinct set is looked at
    once (objects of a class share their class's set)."""
    seen: dict[int, bool] = {}
    out = np.empty(len(lineages), dtype=bool)
    for i, lin in enumerate(lineages):
        key = id(lin)
        hit = seen.get(key)
        if hit is None:
            hit = seen[key] = name in lin
        out[i] = hit
    return out


@dataclass
class Node:
    name: str
    members: list[int]  # class indices under the node
    depth: int
    threshold: float | None = None
    precision: float | None = None
    recall: float | None = None


def lineage_nodes(lineages: dict[str, list[str]], classes) -> list[Node]:
    """The lineage nodes above two or more classes (but not all of them), deepest first.

    Nodes that cover the same classes are all kept (``Calanoida`` over a class and its eggs, and
    ``Copepoda`` above it): their scores are equal, but an object of no configured class may belong
    to the higher one only (a Cyclopoida is a Copepoda, not a Calanoida), so their thresholds differ.
    A node is named by its lineage name (an EcoTaxa taxon).
    """
    classes = list(classes)
    found: dict[str, Node] = {}
    for c, nodes in lineages.items():
        for depth, name in enumerate(nodes[:-1]):  # the class's own node is the class
            if name in found:
                continue
            members = [k for k, cc in enumerate(classes) if name in lineages.get(cc, [])]
            if 2 <= len(members) < len(classes):
                found[name] = Node(name, members, depth)
    return sorted(found.values(), key=lambda n: (len(n.members), -n.depth, n.name))


def node_thresholds(scored: Scored, nodes: list[Node], targets_default: float, confidence: float | None,
                    class_trusted: np.ndarray) -> list[Node]:
    """Thresholds for the nodes, chosen on the objects of ``scored`` that no class threshold trusts.

    An object counts as right for a node when its true lineage (``scored.lineages``) holds the node.
    Of nodes over the same classes, one whose right objects are those of a deeper one is left out: same
    score, same truth, same threshold (``Hexanauplia`` and ``Multicrustacea`` above ``Copepoda``).
    """
    if scored.lineages is None:
        return nodes
    left = ~class_trusted
    out = []
    kept: dict[tuple, list] = {}
    for node in nodes:  # deepest first among nodes over the same classes
        score = scored.probs[:, node.members].sum(axis=1) if len(scored.probs) else np.zeros(0)
        positive = holds_node(node.name, scored.lineages)
        same = kept.setdefault(tuple(node.members), [])
        if any(np.array_equal(positive, other) for other in same):
            continue
        same.append(positive)
        curve = trust_curve(positive, score, np.where(left, scored.weight, 0.0), left)
        k = choose_threshold(curve, targets_default, confidence)
        out.append(Node(node.name, node.members, node.depth,
                        float(curve.thresholds[k]) if k is not None else None,
                        float(curve.precision[k]) if k is not None else None,
                        float(curve.recall[k]) if k is not None else None))
    return out


def trusted_nodes(probs: np.ndarray, nodes: list[Node], class_trusted: np.ndarray) -> np.ndarray:
    """Per object the name of the deepest trusted node ('' when none, or when its class is trusted)."""
    out = np.full(len(probs), "", dtype=object)
    todo = ~np.asarray(class_trusted, dtype=bool)
    for node in nodes:  # deepest (fewest classes) first
        if node.threshold is None:
            continue
        hit = todo & (probs[:, node.members].sum(axis=1) >= node.threshold - 1e-12)
        out[hit] = node.name
        todo &= ~hit
    return out


# --------------------------------------------------------------------------------------------
# The probability that a prediction is right, and the order for the human
# --------------------------------------------------------------------------------------------

def _isotonic(score, correct, weight) -> dict:
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
    iso.fit(score, correct.astype(float), sample_weight=weight)
    return {"x": [float(v) for v in iso.X_thresholds_], "y": [float(v) for v in iso.y_thresholds_]}


def correctness_model(scored: Scored, classes) -> dict:
    """Per predicted class, P(the prediction is right | its probability), isotonic in the probability.

    Fitted on ``scored`` (the validation split and the calibration unknowns, at natural weights); a class
    predicted fewer than :data:`MIN_CALIBRATION_OBJECTS` times, or always right or always wrong there, uses
    the model pooled over all classes. Returns ``{"pooled": {x, y}, "per_class": {class: {x, y}}}``.
    """
    pred, score = scored.pred, scored.score
    correct = pred == scored.truth
    w = scored.weight
    use = w > 0
    model = {"pooled": _isotonic(score[use], correct[use], w[use]) if use.any() else {"x": [0.0, 1.0],
                                                                                       "y": [0.0, 1.0]},
             "per_class": {}}
    for c, name in enumerate(classes):
        sel = use & (pred == c)
        if sel.sum() >= MIN_CALIBRATION_OBJECTS and 0 < correct[sel].sum() < sel.sum():
            model["per_class"][name] = _isotonic(score[sel], correct[sel], w[sel])
    return model


def p_correct(model: dict, classes, pred: np.ndarray, score: np.ndarray) -> np.ndarray:
    """The correctness model of :func:`correctness_model` applied to predictions (class index, probability)."""
    out = np.zeros(len(pred), dtype=np.float64)
    for c, name in enumerate(classes):
        sel = pred == c
        if not sel.any():
            continue
        m = model["per_class"].get(name) or model["pooled"]
        out[sel] = np.interp(score[sel], m["x"], m["y"]) if len(m["x"]) else 0.5
    return out


def review_order(trusted: np.ndarray, p_right: np.ndarray, class_share: np.ndarray, object_ids,
                 score: np.ndarray | None = None) -> np.ndarray:
    """The order in which a person should look at the objects (a permutation; first = most worth a look).

    Objects to check come before trusted ones; among each, the least likely right first (``p_right``; the
    isotonic model is a step function, so many share a value), then the least confident (``score``, the
    probability of the predicted class), then those predicted as the rarer class (``class_share``: the
    predicted class's share of the export), then by object id, so the order is stable.
    """
    ids = np.asarray(list(object_ids), dtype=object)
    score = np.zeros(len(ids)) if score is None else np.asarray(score, dtype=float)
    return np.lexsort((ids, np.round(class_share, 9), np.round(score, 9), np.round(p_right, 9),
                       np.asarray(trusted, dtype=int)))


# --------------------------------------------------------------------------------------------
# The rule a prediction applies (decisions.json)
# --------------------------------------------------------------------------------------------

@dataclass
class DecisionRule:
    """Everything a prediction job needs to decide: thresholds, nodes, correctness model, class shares."""

    classes: list[str]
    thresholds: list[float | None]
    targets: list[float]
    nodes: list[Node] = field(default_factory=list)
    correctness: dict = field(default_factory=lambda: {"pooled": {"x": [0.0, 1.0], "y": [0.0, 1.0]},
                                                       "per_class": {}})
    class_share: list[float] = field(default_factory=list)
    experiment: str = ""
    confidence: float | None = None

    def __post_init__(self):
        if len(self.class_share) != len(self.classes):  # not known: every class as common
            self.class_share = [1.0 / max(len(self.classes), 1)] * len(self.classes)

    def to_json(self) -> dict:
        return {
            "version": DECISIONS_VERSION, "experiment": self.experiment, "classes": self.classes,
            "thresholds": {c: (None if t is None or not math.isfinite(t) else round(float(t), 6))
                           for c, t in zip(self.classes, self.thresholds)},
            "target_precision": {c: t for c, t in zip(self.classes, self.targets)},
            "confidence": self.confidence,
            "nodes": [{"name": n.name, "classes": [self.classes[k] for k in n.members], "depth": n.depth,
                       "threshold": None if n.threshold is None else round(n.threshold, 6),
                       "valid_precision": n.precision, "valid_recall": n.recall} for n in self.nodes],
            "correctness": self.correctness,
            "class_share": {c: round(float(s), 9) for c, s in zip(self.classes, self.class_share)},
        }

    @classmethod
    def from_json(cls, d: dict, source: str = "decisions.json") -> "DecisionRule":
        try:
            classes = list(d["classes"])
            idx = {c: k for k, c in enumerate(classes)}
            nodes = [Node(n["name"], [idx[c] for c in n["classes"]], int(n.get("depth", 0)), n.get("threshold"),
                          n.get("valid_precision"), n.get("valid_recall")) for n in d.get("nodes", [])]
            share = d.get("class_share") or {}
            return cls(classes, [d["thresholds"].get(c) for c in classes],
                       [float(d.get("target_precision", {}).get(c, float("nan"))) for c in classes], nodes,
                       d.get("correctness") or {"pooled": {"x": [0.0, 1.0], "y": [0.0, 1.0]}, "per_class": {}},
                       [float(share.get(c, 1.0 / max(len(classes), 1))) for c in classes], d.get("experiment", ""),
                       d.get("confidence"))
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(source, f"not a decisions file of lokiml ({type(e).__name__}: {e})",
                             hint="make it again: snakemake --forcerun evaluate_decisions") from None

    @classmethod
    def load(cls, path) -> "DecisionRule":
        try:
            d = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise InputError(path, f"cannot read the decisions file ({e})",
                             hint="run the workflow's rule evaluate_decisions for this experiment") from None
        return cls.from_json(d, str(path))

    def apply(self, probs: np.ndarray, object_ids) -> dict:
        """Decisions for rows of probabilities (no NaN rows): arrays ``pred, score, trusted, node, p_correct,
        review_rank`` (1 = look first)."""
        probs = np.asarray(probs, dtype=np.float64)
        n = len(probs)
        pred = probs.argmax(axis=1) if n else np.zeros(0, dtype=int)
        score = probs.max(axis=1) if n else np.zeros(0)
        trusted = trusted_mask(probs, self.thresholds) if n else np.zeros(0, dtype=bool)
        node = trusted_nodes(probs, self.nodes, trusted) if n else np.zeros(0, dtype=object)
        p_right = p_correct(self.correctness, self.classes, pred, score)
        share = np.asarray(self.class_share, dtype=float)[pred] if n else np.zeros(0)
        order = review_order(trusted, p_right, share, object_ids, score)
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(1, n + 1)
        return {"pred": pred, "score": score, "trusted": trusted, "node": node, "p_correct": p_right,
                "review_rank": rank, "order": order}
