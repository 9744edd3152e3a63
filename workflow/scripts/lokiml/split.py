"""Train/valid/test split (the seed's step 3, without leaks).

Originals are split per class with a seeded shuffle; augmented copies go to
the split of the object they came from, so no image of one object is in two
splits. Optional: ``group_by`` keeps each group (sample, haul, cruise) in one
split; ``holdout`` sends the rows whose column has one of the given values to
the test split and splits the rest into train and valid.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from .balance import class_rng
from .errors import InputError

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")


def _counts(n: int, fractions: dict[str, float]) -> dict[str, int]:
    """Objects per split for a class of ``n``: every split with a positive fraction gets at least one."""
    names = [s for s in SPLITS if fractions.get(s, 0) > 0]
    counts = {s: 0 for s in SPLITS}
    for s in names[1:]:
        counts[s] = max(1, int(round(fractions[s] * n)))
    counts[names[0]] = n - sum(counts[s] for s in names[1:])
    return counts


def split_items(balanced: pd.DataFrame, objects: pd.DataFrame, train: float = 0.6, valid: float = 0.2,
                test: float = 0.2, seed: int = 3, group_by: str | None = None, holdout: dict | None = None,
                source: str = "balanced") -> pd.DataFrame:
    """Return ``balanced`` with a ``split`` column."""
    fractions = {"train": train, "valid": valid, "test": test}
    originals = balanced[balanced["augmented"].astype(int) == 0]
    obj = objects.set_index("object_id")
    for col in [c for c in (group_by, (holdout or {}).get("column")) if c]:
        if col not in obj.columns:
            raise InputError(source, f"split column {col!r} is not in the export",
                             hint="set split.group_by / split.holdout.column to one of the export's columns")
    assign: dict[str, str] = {}
    rest = originals
    if holdout:
        values = {str(v) for v in holdout["values"]}
        in_holdout = obj.loc[originals["object_id"], holdout["column"]].astype(str).isin(values).to_numpy()
        for oid in originals["object_id"][in_holdout]:
            assign[oid] = "test"
        rest = originals[~in_holdout]
        log.info("holdout %s in %s: %d objects to test", holdout["column"], sorted(values), int(in_holdout.sum()))
        tv = train + valid
        fractions = {"train": train / tv, "valid": valid / tv, "test": 0.0}
        if not in_holdout.any():
            raise InputError(source, f"holdout: no object has {holdout['column']} in {sorted(values)}")
    need = sum(1 for v in fractions.values() if v > 0)
    if group_by:
        assign.update(_split_groups(rest, obj, group_by, fractions, seed))
    else:
        # Every class too small is named at once, so that one fix of the config deals with all of them.
        sizes = rest.groupby("class_name", sort=True).size()
        small = sizes[sizes < need]
        if len(small):
            listed = ", ".join(f"{cls!r} ({n} object{'s' if n != 1 else ''})" for cls, n in small.items())
            raise InputError(source, f"class(es) with too few objects to put one in each of the {need} splits: {listed}",
                             hint="add objects, merge the class into another with class_mapping, or remove it from "
                                  "`classes:`; augmented copies cannot help, they stay in their original's split")
        for cls, members in rest.groupby("class_name", sort=True):
            ids = members["object_id"].to_numpy()
            ids = np.array(np.sort(ids), dtype=object)
            class_rng(seed, cls).shuffle(ids)
            counts = _counts(len(ids), fractions)
            start = 0
            for s in SPLITS:
                for oid in ids[start:start + counts[s]]:
                    assign[oid] = s
                start += counts[s]
    for cls in sorted(set(balanced["class_name"])):
        have = {assign[o] for o in originals.loc[originals["class_name"] == cls, "object_id"]}
        lacking = [s for s in SPLITS if (fractions[s] > 0 or (holdout and s == "test")) and s not in have]
        if lacking:
            raise InputError(source, f"class {cls!r} has no object in the {'/'.join(lacking)} split",
                             hint="too few objects or groups for this class: add objects, merge or remove the class, or change split.group_by")
    out = balanced.copy()
    out["split"] = out["object_id"].map(assign)
    assert out["split"].notna().all()
    for s in SPLITS:
        log.info("split %-5s: %d items (%d originals)", s, int((out["split"] == s).sum()),
                 int(((out["split"] == s) & (out["augmented"].astype(int) == 0)).sum()))
    return out.sort_values(["class_name", "item_id"], kind="stable").reset_index(drop=True)


def _split_groups(originals: pd.DataFrame, obj: pd.DataFrame, column: str, fractions: dict, seed: int) -> dict:
    """Assign whole groups to splits, greedily by deficit, in a seeded order."""
    groups = obj.loc[originals["object_id"], column].astype(str).to_numpy()
    sizes = pd.Series(1, index=groups).groupby(level=0).sum().sort_index()
    names = np.array(sizes.index.to_numpy(), dtype=object)
    rng = class_rng(seed, f"groups:{column}")
    rng.shuffle(names)
    total = len(originals)
    target = {s: fractions[s] * total for s in SPLITS}
    have = {s: 0 for s in SPLITS}
    group_split = {}
    active = [s for s in SPLITS if fractions[s] > 0]
    if len(names) < len(active):
        raise InputError(column, f"only {len(names)} distinct value(s) of {column!r}: too few groups for {len(active)} splits")
    # Seed each active split with one group, then give each next group to the split furthest below target.
    for s, g in zip(active, names[: len(active)]):
        group_split[g] = s
        have[s] += int(sizes[g])
    for g in names[len(active):]:
        s = max(active, key=lambda s: (target[s] - have[s]) / max(target[s], 1e-9))
        group_split[g] = s
        have[s] += int(sizes[g])
    log.info("group split by %s: %d groups; objects per split %s", column, len(names), have)
    return {oid: group_split[g] for oid, g in zip(originals["object_id"], groups)}
