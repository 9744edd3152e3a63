"""Train/valid/test split (the seed's step 3): stable under data updates, and without leaks.

**Stable.** An object's split is a function of its own id and the seed, not of the other objects:
a seeded hash gives it a number ``u`` in [0, 1), and ``u < train`` puts it in train,
``u < train + valid`` in valid, the rest in test. Appending objects to an export (a data update)
never moves an existing object; two versions of a model can be compared on the same test objects;
the same export gives the same split on any machine. (The seed's split shuffled each class as a
whole: appending one object to a class of 10 moved 6 of the 10.) The price: a class gets its
share of each split as a sample does, not to the object (a class of 1 000 gets 200 +- 13 test
objects); no split that is a function of each object alone can do both, since any object of a
class could be the one appended last. ``exact_shares`` chooses the other side: each class is cut
at its exact shares in the order of the hash (to one object), and a data update moves the few
objects at the cuts whose rank it shifts. ``benchmarks/bench_split.py`` measures both.

**No leaks.** Objects that share an image file, or whose images have identical bytes (the same
content key, ``image_key``), are one *unit* and share a split, and they are reported: otherwise
the same picture is in train and in test. With ``group_by`` (a sample, a haul, a cruise) a unit is
a group: every object with one value of the column, values compared as values (``53`` and
``53.0`` are one haul), joined with any group it shares an image with. A unit's ``u`` comes from its
key: the smallest object id in it, or the smallest group value.

**Every class in every split where it can be.** Only where the hash leaves a class without an
object in a split is a unit moved, always the same way for the same objects: the unit of that
class nearest to the split in ``u`` whose move leaves every class it has in its old split. A
class that cannot reach every split (fewer units than splits: all its objects in two hauls, say)
is named in a warning, not an error. With ``group_by`` a split far from its share of the objects
(outside half to one and a half times it: few large groups) is brought back by moving the units
that help most; many small groups never need it.

``holdout`` sends the objects whose column has one of the given values (compared as values) to
the test split, and splits the rest into train and valid in the ratio ``train : valid``.
Augmented copies go where their original went.
"""

from __future__ import annotations

import hashlib
import logging
import math

import numpy as np
import pandas as pd

from .errors import InputError

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
#: A split's share of the objects may stray this far (relative) from its target before a group split
#: moves groups to bring it back.
GROUP_TOLERANCE = 0.5
_EXAMPLES = 5


def value_key(value) -> str:
    """A value as splits compare it: numbers as numbers (``53``, ``53.0``, `` 53 `` and ``5.3e1`` are one), text stripped."""
    s = str(value).strip()
    try:
        f = float(s)
    except ValueError:
        return s
    return f"{f:.15g}" if math.isfinite(f) else s


def unit_u(seed: int, key: str) -> float:
    """The seeded hash of a unit's key, in [0, 1): where the unit falls among the splits."""
    digest = hashlib.sha256(f"{seed}\x00split\x00{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") / 2.0**64


class _Units:
    """Union-find over the originals: objects that must share a split."""

    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def join_equal(self, values) -> int:
        """Join the positions whose ``values`` are equal and not empty; return how many positions were joined."""
        first: dict = {}
        joined = 0
        for i, v in enumerate(values):
            if v == "" or v is None:
                continue
            j = first.setdefault(v, i)
            if j != i:
                a, b = self.find(i), self.find(j)
                if a != b:
                    self.parent[a] = b
                    joined += 1
        return joined


def split_items(balanced: pd.DataFrame, objects: pd.DataFrame, train: float = 0.6, valid: float = 0.2,
                test: float = 0.2, seed: int = 3, group_by: str | None = None, holdout: dict | None = None,
                source: str = "balanced", exact_shares: bool = False) -> pd.DataFrame:
    """Return ``balanced`` with a ``split`` column (and ``split_key``: the key of each item's unit).

    ``exact_shares`` (not with ``group_by``): cut each class at its exact shares in the order of the
    hash (:func:`_cut_classes`), at the price of a few moves at the cuts after a data update.
    """
    fractions = {"train": train, "valid": valid, "test": test}
    originals = balanced[balanced["augmented"].astype(int) == 0].reset_index(drop=True)
    obj = objects.drop_duplicates("object_id").set_index("object_id")
    for col in [c for c in (group_by, (holdout or {}).get("column")) if c]:
        if col not in obj.columns:
            raise InputError(source, f"split column {col!r} is not in the export",
                             hint="set split.group_by / split.holdout.column to one of the export's columns")
    ids = originals["object_id"].astype(str).to_numpy()
    classes = originals["class_name"].astype(str).to_numpy()
    n = len(ids)

    # Units: shared image files, identical bytes, and groups.
    units = _Units(n)
    shared_file = units.join_equal(originals["image_ref"].astype(str).to_numpy()) if "image_ref" in originals else 0
    shared_bytes = units.join_equal(originals["image_key"].astype(str).to_numpy()) if "image_key" in originals else 0
    groups = None
    if group_by:
        raw = obj.loc[ids, group_by].astype(str).to_numpy()
        groups = np.array([value_key(v) for v in raw], dtype=object)
        empty = int((groups == "").sum())
        if empty:
            log.warning("group_by %s: %d object(s) have no value; they form one group of their own", group_by, empty)
        units.join_equal(np.where(groups == "", "\x00empty", groups))
    root = np.array([units.find(i) for i in range(n)])
    _report_shared(ids, root, originals, shared_file, shared_bytes, groups)

    # Each unit: its key, its u, its members.
    members: dict[int, list[int]] = {}
    for i, r in enumerate(root):
        members.setdefault(int(r), []).append(i)
    key = {r: (min(groups[m] for m in ms) if groups is not None else min(ids[m] for m in ms))
           for r, ms in members.items()}
    u = {r: unit_u(seed, key[r]) for r in members}

    # Hold-out: whole units to test.
    fixed_test: set[int] = set()
    if holdout:
        values = {value_key(v) for v in holdout["values"]}
        col = obj.loc[ids, holdout["column"]].astype(str).to_numpy()
        in_holdout = np.array([value_key(v) in values for v in col])
        if not in_holdout.any():
            raise InputError(source, f"holdout: no object has {holdout['column']} in {sorted(values)}",
                             hint="check split.holdout.values against the column's values (compared as values: 53 = 53.0)")
        fixed_test = {int(r) for r in root[in_holdout]}
        mixed = sum(1 for r in fixed_test if not all(in_holdout[m] for m in members[r]))
        if mixed:
            log.warning("holdout: %d unit(s) join held-out objects with others (shared images or groups): all go to test",
                        mixed)
        log.info("holdout %s in %s: %d objects to test", holdout["column"], sorted(values),
                 sum(len(members[r]) for r in fixed_test))
        tv = train + valid
        fractions = {"train": train / tv, "valid": valid / tv, "test": 0.0}
    active = [s for s in SPLITS if fractions[s] > 0]

    if not group_by:
        # Every class too small is named at once, so that one fix of the config deals with all of them.
        sizes = pd.Series(classes[[root[i] not in fixed_test for i in range(n)]]).value_counts().sort_index()
        small = sizes[sizes < len(active)]
        if len(small):
            listed = ", ".join(f"{cls!r} ({k} object{'s' if k != 1 else ''})" for cls, k in small.items())
            raise InputError(source, f"class(es) with too few objects to put one in each of the {len(active)} splits: "
                                     f"{listed}",
                             hint="add objects, merge the class into another with class_mapping, or remove it from "
                                  "`classes:`; augmented copies cannot help, they stay in their original's split")

    bounds = np.cumsum([fractions[s] for s in SPLITS])
    where = {r: ("test" if r in fixed_test else _split_at(u[r], bounds)) for r in members}
    movable = [r for r in members if r not in fixed_test]
    unit_classes = {r: sorted({classes[m] for m in members[r]}) for r in members}
    unit_size = {r: len(members[r]) for r in members}
    if exact_shares and not group_by:
        _cut_classes(movable, where, u, key, members, classes, bounds)
    moved = _reach_every_split(movable, where, u, key, unit_classes, active, bounds)
    if group_by:
        moved += _balance_groups(movable, where, u, key, unit_classes, unit_size, active, fractions)
    if moved:
        log.info("split: %d unit(s) moved from where their hash put them, so that every class reaches every split "
                 "it can%s", moved, " and every split holds about its share" if group_by else "")
    _warn_unreached(members, where, unit_classes, active, fixed_test, group_by, groups)

    split_of = {ids[i]: where[int(root[i])] for i in range(n)}
    key_of = {ids[i]: key[int(root[i])] for i in range(n)}
    out = balanced.copy()
    out["split"] = out["object_id"].astype(str).map(split_of)
    out["split_key"] = out["object_id"].astype(str).map(key_of)
    if out["split"].isna().any():
        orphans = out.loc[out["split"].isna(), "item_id"].head(3).tolist()
        raise InputError(source, f"augmented copies of objects that are not in the table: {orphans}",
                         hint="the balanced table is damaged: rerun rule balance_classes")
    for s in SPLITS:
        log.info("split %-5s: %d items (%d originals)", s, int((out["split"] == s).sum()),
                 int(((out["split"] == s) & (out["augmented"].astype(int) == 0)).sum()))
    return out.sort_values(["class_name", "item_id"], kind="stable").reset_index(drop=True)


def _split_at(position: float, bounds) -> str:
    return SPLITS[min(int(np.searchsorted(bounds, position, side="right")), len(SPLITS) - 1)]


def _cut_classes(movable, where, u, key, members, classes, bounds) -> None:
    """``exact_shares``: each class's units in the order of their hash, cut at the class's exact shares.

    The k-th object of a class of n (in hash order) goes to the split where (k + 1/2) / n falls, so
    every class holds its share of each split to within one object; a unit of several objects goes by
    its middle object. A data update then moves the few objects at the cuts whose rank it shifts.
    """
    by_class: dict[str, list[int]] = {}
    for r in movable:
        names = [classes[m] for m in members[r]]
        primary = min(set(names), key=lambda c: (-names.count(c), c))
        by_class.setdefault(primary, []).append(r)
    for units in by_class.values():
        units.sort(key=lambda r: (u[r], key[r]))
        n = sum(len(members[r]) for r in units)
        done = 0
        for r in units:
            k = len(members[r])
            where[r] = _split_at((done + k / 2) / n, bounds)
            done += k


def _interval_distance(u: float, split: str, bounds) -> float:
    """How far ``u`` lies from the interval of ``split`` (0 inside it)."""
    k = SPLITS.index(split)
    lo = 0.0 if k == 0 else float(bounds[k - 1])
    hi = float(bounds[k])
    return 0.0 if lo <= u < hi else min(abs(u - lo), abs(u - hi))


def _presence(units, where, unit_classes) -> dict[tuple[str, str], int]:
    """(class, split) -> number of units of that class in that split."""
    count: dict[tuple[str, str], int] = {}
    for r in units:
        for c in unit_classes[r]:
            count[(c, where[r])] = count.get((c, where[r]), 0) + 1
    return count


def _reach_every_split(movable, where, u, key, unit_classes, active, bounds) -> int:
    """Move units, fewest first, until every class is in every active split it can reach; return the moves."""
    moved = 0
    all_classes = sorted({c for r in movable for c in unit_classes[r]})
    for _ in range(len(all_classes) * len(active) + 1):
        count = _presence(movable, where, unit_classes)
        changed = False
        for cls in all_classes:
            for s in active:
                if count.get((cls, s), 0):
                    continue
                # a unit of cls from a split where cls has another unit, that no other class needs there
                cands = [r for r in movable if cls in unit_classes[r] and where[r] != s
                         and all(count.get((c, where[r]), 0) >= 2 for c in unit_classes[r])]
                if not cands:
                    continue
                best = min(cands, key=lambda r: (_interval_distance(u[r], s, bounds), key[r]))
                for c in unit_classes[best]:
                    count[(c, where[best])] -= 1
                    count[(c, s)] = count.get((c, s), 0) + 1
                where[best] = s
                moved += 1
                changed = True
        if not changed:
            break
    return moved


def _balance_groups(movable, where, u, key, unit_classes, unit_size, active, fractions) -> int:
    """Move whole groups while a split's share of the objects is outside ``GROUP_TOLERANCE`` of its target."""
    total = sum(unit_size[r] for r in movable)
    if not total:
        return 0
    target = {s: fractions[s] / sum(fractions[t] for t in active) * total for s in active}

    def cost(have):
        return sum(((have[s] - target[s]) / target[s]) ** 2 for s in active)

    moved = 0
    for _ in range(len(movable)):
        have = {s: sum(unit_size[r] for r in movable if where[r] == s) for s in active}
        if all(abs(have[s] - target[s]) <= GROUP_TOLERANCE * target[s] for s in active):
            break
        count = _presence(movable, where, unit_classes)
        base = cost(have)
        best = None
        for r in movable:
            if not all(count.get((c, where[r]), 0) >= 2 for c in unit_classes[r]):
                continue  # it would take a class out of its split
            for s in active:
                if s == where[r]:
                    continue
                trial = dict(have)
                trial[where[r]] -= unit_size[r]
                trial[s] += unit_size[r]
                gain = base - cost(trial)
                if gain > 1e-12 and (best is None or (gain, -unit_size[r], key[r]) > (best[0], -unit_size[best[1]], key[best[1]])):
                    best = (gain, r, s)
        if best is None:
            break
        where[best[1]] = best[2]
        moved += 1
    return moved


def _warn_unreached(members, where, unit_classes, active, fixed_test, group_by, groups) -> None:
    """Name every class that lacks a split, and why."""
    present: dict[str, set[str]] = {}
    units_of: dict[str, list[int]] = {}
    for r, ms in members.items():
        for c in unit_classes[r]:
            present.setdefault(c, set()).add(where[r])
            if r not in fixed_test:
                units_of.setdefault(c, []).append(r)
    expected = set(active) | ({"test"} if fixed_test else set())
    for cls in sorted(present):
        lacking = [s for s in SPLITS if s in expected and s not in present[cls]]
        if not lacking:
            continue
        k = len(units_of.get(cls, []))
        if group_by:
            vals = sorted({groups[m] for r in units_of.get(cls, []) for m in members[r]})
            shown = ", ".join(vals[:_EXAMPLES]) + (" ..." if len(vals) > _EXAMPLES else "")
            why = f"its objects lie in {len(vals)} value(s) of {group_by} ({shown})"
        else:
            why = f"its objects form {k} unit(s) (objects sharing an image go together)"
        log.warning("class %r has no object in the %s split: %s%s", cls, "/".join(lacking), why,
                    "" if k >= len(active) else f", fewer than the {len(active)} splits")


def _report_shared(ids, root, originals, shared_file, shared_bytes, groups) -> None:
    """Log the objects that share an image (file or bytes): they go to one split together."""
    if not (shared_file or shared_bytes):
        return
    # Units of more than one object joined by images (not by groups).
    by_image: dict[str, list[str]] = {}
    for col in ("image_ref", "image_key"):
        if col in originals:
            for oid, v in zip(ids, originals[col].astype(str)):
                if v:
                    by_image.setdefault(f"{col}:{v}", []).append(oid)
    shared = [sorted(v) for v in by_image.values() if len(v) > 1]
    n_objects = len({o for v in shared for o in v})
    examples = "; ".join(", ".join(v[:3]) + (" ..." if len(v) > 3 else "") for v in sorted(shared)[:_EXAMPLES])
    log.warning("%d object(s) share an image with another (%d by file, %d by identical bytes): each set goes to "
                "one split together, so that no picture is in two splits; for example: %s", n_objects, shared_file,
                shared_bytes, examples)
