"""Honest estimates of a scikit-learn experiment: repeated stratified k-fold, and leave one group out.

One train/valid/test split of a few hundred objects says little: on 194 LOKI objects its test macro F1
moved by about ±0.03 from one seed to the next, more than the differences a leaderboard ranks. So the
descriptor and deep-features experiments are also estimated over many splits (rules
``estimate_descriptors`` and ``estimate_deep_features``), with the *whole* procedure repeated inside
each fold, so that nothing of a fold's test objects reaches its model:

* **repeated stratified k-fold** (``estimate.folds`` x ``estimate.repeats``, scikit-learn's
  ``RepeatedStratifiedKFold``): each fold's test objects are predicted by a model whose grid was chosen
  on a validation part of the other objects (the split's ``valid`` share of them, per class) and which
  was then refitted on all of them (as the experiment itself is, with ``refit: true``);
* **leave one group out** when ``estimate.group_by`` (or else ``split.group_by``) names a column (a
  haul, a station, a cruise): each group in turn is the test set, and the model never saw an object of
  it. This is what a new cruise looks like.
  With more groups than ``estimate.max_group_folds``, ``GroupKFold`` with that many folds (several
  groups left out at a time) keeps the cost bounded.

A fold's macro F1 is scikit-learn's ``f1_score(average="macro")`` over the classes present in its truth
or its predictions, as ``cross_val_score(scoring="f1_macro")`` computes it; the summary gives the mean
and the standard deviation (ddof 1) over the folds, and the macro F1 of all out-of-fold predictions
pooled (every object predicted once per repeat, by a model that did not see it).
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .errors import InputError

log = logging.getLogger(__name__)

DEFAULTS = {"folds": 5, "repeats": 2, "max_group_folds": 20, "group_by": None}
TABLE_COLUMNS = ["scheme", "repeat", "fold", "group", "n_groups", "n_train", "n_valid", "n_test", "classes_in_test",
                 "classes_unseen", "chosen_params", "macro_f1", "accuracy", "balanced_accuracy"]


@dataclass
class Fold:
    scheme: str  # "kfold" or "logo"
    repeat: int
    fold: int
    test: np.ndarray  # indices into the objects
    group: str = ""  # the group(s) left out (logo)
    n_groups: int = 0


@dataclass
class Estimate:
    """The per-fold table, out-of-fold predictions per scheme and repeat, and the summary (``estimate.json``)."""

    table: pd.DataFrame
    summary: dict
    predictions: dict = field(default_factory=dict)


def settings_of(value) -> dict | None:
    """An experiment's ``estimate`` key with defaults filled in; None (switched off) stays None."""
    if value is None:
        return None
    out = dict(DEFAULTS)
    out.update({k: v for k, v in dict(value).items() if v is not None})
    return out


def fold_plan(y: np.ndarray, folds: int = 5, repeats: int = 2, seed: int = 1, groups=None, testable=None,
              max_group_folds: int = 20) -> list[Fold]:
    """The test sets of the estimate: k-fold over the ``testable`` objects, then one per group (or group fold).

    ``testable`` (a mask; default all): the objects that may be tested (deep features: those the CNN did
    not train on); the others are always training objects. Classes with fewer testable objects than
    ``folds`` are spread over as many folds as they have objects (scikit-learn warns; the warning is logged).
    """
    from sklearn.model_selection import GroupKFold, RepeatedStratifiedKFold

    y = np.asarray(y)
    n = len(y)
    testable = np.ones(n, dtype=bool) if testable is None else np.asarray(testable, dtype=bool)
    idx = np.flatnonzero(testable)
    plan: list[Fold] = []
    if len(idx) < 2:
        raise InputError("estimate", f"only {len(idx)} object(s) to test: too few for an estimate",
                         hint="set the experiment's estimate to null to switch it off")
    k = int(min(folds, len(idx)))
    if k >= 2:
        rskf = RepeatedStratifiedKFold(n_splits=k, n_repeats=int(repeats), random_state=int(seed))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            splits = list(rskf.split(np.zeros(len(idx)), y[idx]))
        for w in {str(w.message) for w in caught}:
            log.warning("k-fold: %s", w)
        for j, (_, test) in enumerate(splits):
            plan.append(Fold("kfold", j // k, j % k, idx[test]))
    if groups is not None:
        g = np.asarray(groups, dtype=str)[idx]
        names = np.unique(g)
        if len(names) < 2:
            log.warning("leave-one-group-out: only one group (%s) among the objects to test: skipped", names[0])
        elif len(names) <= max_group_folds:
            for j, name in enumerate(names):
                plan.append(Fold("logo", 0, j, idx[g == name], group=str(name), n_groups=1))
        else:
            gkf = GroupKFold(n_splits=int(max_group_folds))
            for j, (_, test) in enumerate(gkf.split(np.zeros(len(idx)), groups=g)):
                left = np.unique(g[test])
                label = f"{len(left)} groups: " + ", ".join(left[:3]) + (" ..." if len(left) > 3 else "")
                plan.append(Fold("logo", 0, j, idx[test], group=label, n_groups=len(left)))
    return plan


def inner_split(y: np.ndarray, pool: np.ndarray, valid_share: float, seed: int, validatable=None):
    """(train, valid) indices of ``pool``: per class, ``valid_share`` of its validatable objects go to valid.

    Every class with at least two objects in the pool keeps at least one in train and, when it has a
    validatable object, puts at least one in valid. A seeded shuffle, per class, like the split itself.
    """
    rng = np.random.default_rng(int(seed))
    y = np.asarray(y)
    ok = np.ones(len(y), dtype=bool) if validatable is None else np.asarray(validatable, dtype=bool)
    train, valid = [], []
    for c in np.unique(y[pool]):
        members = pool[y[pool] == c]
        cand = members[ok[members]]
        cand = cand[rng.permutation(len(cand))]
        if len(members) < 2 or not len(cand):
            train.append(members)
            continue
        n_valid = int(round(valid_share * len(cand)))
        n_valid = min(max(n_valid, 1), len(cand), len(members) - 1)
        chosen = cand[:n_valid]
        valid.append(chosen)
        train.append(np.setdiff1d(members, chosen))
    cat = lambda parts: np.sort(np.concatenate(parts)) if parts else np.array([], dtype=int)  # noqa: E731
    return cat(train), cat(valid)


def fold_scores(y_true: np.ndarray, probs: np.ndarray) -> dict:
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    pred = probs.argmax(axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {"macro_f1": float(f1_score(y_true, pred, average="macro", zero_division=0)),
                "accuracy": float(accuracy_score(y_true, pred)),
                "balanced_accuracy": float(balanced_accuracy_score(y_true, pred))}


def run_estimate(y: np.ndarray, n_classes: int, plan: list[Fold], learner, valid_share: float, seed: int = 1,
                 validatable=None) -> Estimate:
    """Run ``learner`` on every fold of ``plan``.

    ``learner(train, valid, pool) -> (predict, chosen_params)``: chooses on ``train``/``valid`` (index
    arrays), refits on ``pool`` (or not, as the experiment says) and returns ``predict(test) ->
    probabilities (len(test), n_classes)``. Nothing of a fold's test objects is passed to it.
    """
    from .logs import Progress

    y = np.asarray(y)
    n = len(y)
    rows = []
    oof: dict[tuple[str, int], np.ndarray] = {}
    progress = Progress(len(plan), "estimate folds", log, every=30.0)
    for f in plan:
        t0 = time.perf_counter()
        pool = np.setdiff1d(np.arange(n), f.test)
        train, valid = inner_split(y, pool, valid_share, seed * 1000 + f.repeat * 100 + f.fold, validatable)
        if not len(train) or not len(valid):
            raise InputError("estimate", f"{f.scheme} fold {f.fold}: too few objects for a train and a valid part",
                             hint="set the experiment's estimate to null, or add objects")
        predict, chosen = learner(train, valid, pool)
        probs = predict(f.test)
        key = (f.scheme, f.repeat)
        if key not in oof:
            oof[key] = np.full((n, n_classes), np.nan)
        oof[key][f.test] = probs
        s = fold_scores(y[f.test], probs)
        rows.append({"scheme": f.scheme, "repeat": f.repeat, "fold": f.fold, "group": f.group, "n_groups": f.n_groups,
                     "n_train": len(pool), "n_valid": len(valid), "n_test": len(f.test),
                     "classes_in_test": int(len(np.unique(y[f.test]))),
                     "classes_unseen": int(len(np.setdiff1d(np.unique(y[f.test]), np.unique(y[pool])))),
                     "chosen_params": json.dumps(chosen, sort_keys=True), **s})
        log.info("%s repeat %d fold %d%s: %d test objects, macro F1 %.4f, accuracy %.4f, chose %s (%.1f s)",
                 f.scheme, f.repeat, f.fold, f" ({f.group})" if f.group else "", len(f.test), s["macro_f1"],
                 s["accuracy"], chosen, time.perf_counter() - t0)
        progress.update()
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    return Estimate(table, summarise(table, oof, y), oof)


def _mean_sd(values) -> tuple[float, float]:
    v = np.asarray(values, dtype=float)
    return float(v.mean()), (float(v.std(ddof=1)) if len(v) > 1 else 0.0)


def group_column(est: dict, split: dict | None) -> str | None:
    """The column of the leave-one-group-out estimate: the estimate's own ``group_by``, else the split's."""
    return est.get("group_by") or (split or {}).get("group_by") or None


def groups_of(objects: pd.DataFrame, column: str | None, source: str = "objects.tsv"):
    """The group of every row of ``objects`` (None without a column); a missing column is an error naming it."""
    if not column:
        return None
    if column not in objects.columns:
        raise InputError(source, f"estimate: group column {column!r} is not in the export",
                         hint="set estimate.group_by (or split.group_by) to one of the export's columns")
    return objects[column].astype(str).to_numpy()


def summarise(table: pd.DataFrame, oof: dict, y: np.ndarray) -> dict:
    """Mean and sd over the folds of each scheme, and the pooled out-of-fold macro F1."""
    out = {}
    for scheme in ("kfold", "logo"):
        part = table[table["scheme"] == scheme]
        if part.empty:
            out[scheme] = None
            continue
        s = {"folds": int(len(part)), "repeats": int(part["repeat"].nunique()),
             "n_objects": int(part.groupby("repeat")["n_test"].sum().iloc[0])}
        for m in ("macro_f1", "accuracy", "balanced_accuracy"):
            s[f"{m}_mean"], s[f"{m}_sd"] = _mean_sd(part[m])
        pooled = []
        for (sch, _), probs in oof.items():
            if sch != scheme:
                continue
            done = ~np.isnan(probs[:, 0])
            pooled.append(fold_scores(y[done], probs[done])["macro_f1"])
        s["pooled_macro_f1"] = float(np.mean(pooled))
        if scheme == "logo":
            s["groups"] = part["group"].tolist()
            s["method"] = ("leave one group out" if (part["n_groups"] == 1).all() else
                           f"{len(part)} folds of whole groups (GroupKFold)")
        out[scheme] = s
    return out


def format_estimate(s: dict | None, what: str = "macro F1") -> str:
    """``0.812 ± 0.034`` from a summary of :func:`summarise` (empty when there is none)."""
    if not s:
        return ""
    return f"{s['macro_f1_mean']:.3f} ± {s['macro_f1_sd']:.3f}"


def summary_lines(est: dict | None) -> list[tuple[str, str]]:
    """The "Estimates" section of a summary (``estimate.json`` of rule estimate_*)."""
    if not est:
        return [("Repeated estimate", "switched off (estimate: null)")]
    lines = []
    k = est.get("kfold")
    if k:
        lines.append(("Repeated estimate",
                      f"macro F1 {k['macro_f1_mean']:.3f} ± {k['macro_f1_sd']:.3f}, accuracy "
                      f"{k['accuracy_mean']:.3f} ± {k['accuracy_sd']:.3f} (mean ± sd over {k['folds']} folds: "
                      f"{est['settings']['folds']}-fold stratified cross-validation x {k['repeats']} repeat(s) "
                      f"over {k['n_objects']} objects; the grid chosen inside each fold on a validation part of "
                      f"its training objects{', then refitted on all of them' if est.get('refit') else ''}; "
                      f"pooled out-of-fold macro F1 {k['pooled_macro_f1']:.3f})"))
    g = est.get("logo")
    if g:
        lines.append((f"New {est.get('group_by', 'group')}",
                      f"macro F1 {g['macro_f1_mean']:.3f} ± {g['macro_f1_sd']:.3f}, accuracy "
                      f"{g['accuracy_mean']:.3f} ± {g['accuracy_sd']:.3f} (mean ± sd over {g['folds']} "
                      f"{est.get('group_by', 'group')} folds, {g['method']}: the model never saw an object of the "
                      f"group it is tested on; pooled macro F1 {g['pooled_macro_f1']:.3f})"))
    elif est.get("group_by"):
        lines.append((f"New {est['group_by']}", "not estimated: fewer than two groups among the objects to test"))
    if est.get("note"):
        lines.append(("Estimated on", est["note"]))
    return lines
