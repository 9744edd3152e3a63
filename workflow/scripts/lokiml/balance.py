"""Per-class balancing (the seed's step 1, without its defects).

A class with more than ``cap`` objects keeps ``cap`` of them, spread over its
time range in proportion to when it was seen: ``cap`` is shared out over the
days (``object_date``), each day's share over its hours (``object_time``), by
largest remainders, and within an hour a seeded hash of the object id decides.
So every day keeps its share, to within one object (the seed took every n-th
with n = floor(count / cap) and truncated, which for cap < count < 2*cap keeps
only the earliest ``cap``), and the choice is stable: appending new objects to
an export changes the kept set only by about the share of the new objects,
so a data update does not reshuffle (and renormalise) the whole training set.
A smaller class keeps all its objects and, with
augmentation on, is filled up to ``cap`` with augmented copies: each copy
names the object it came from and carries its own augmentation parameters
(horizontal flip, rotation, shift), drawn from a seeded generator, so the
same seed gives the same table. The images themselves are made at
normalisation time from these parameters.
"""

from __future__ import annotations

import hashlib
import logging
import re

import numpy as np
import pandas as pd

from .errors import InputError

log = logging.getLogger(__name__)

COLUMNS = ["item_id", "object_id", "class_name", "image_ref", "image_key", "augmented", "flip", "angle", "dx", "dy"]

#: An augmented copy's item id is its original's object_id, this mark and a number (``X#aug0001``).
AUG_MARK = "#aug"
_AUGMENTED_ID = re.compile(re.escape(AUG_MARK) + r"[0-9]+$")


def augmented_id(object_id: str, number: int) -> str:
    """The item id of the ``number``-th augmented copy of ``object_id`` (from 1)."""
    return f"{object_id}{AUG_MARK}{number:04d}"


def is_augmented_id(item_id: str) -> bool:
    """True for an id of the form of :func:`augmented_id`'s.

    The reader drops an object whose own id has this form (``reserved_object_id``), so that no
    augmented copy's id can ever be a real object's: ``X#aug0001`` next to ``X`` would otherwise be
    both a real object and X's first copy.
    """
    return bool(_AUGMENTED_ID.search(str(item_id)))


def class_rng(seed: int, class_name: str) -> np.random.Generator:
    """A generator that depends on the seed and the class only (not on other classes)."""
    digest = hashlib.sha256(f"{seed}\x00{class_name}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def apportion(counts: np.ndarray, k: int) -> np.ndarray:
    """Share ``k`` out over strata of sizes ``counts`` by largest remainders.

    Each stratum gets floor or ceil of its exact share ``k * count / total`` (never
    more than its count); ties go to the earlier stratum.
    """
    counts = np.asarray(counts, dtype=np.int64)
    exact = counts * k / counts.sum()
    quota = np.floor(exact).astype(np.int64)
    rest = k - int(quota.sum())
    if rest:
        order = np.lexsort((np.arange(len(counts)), -(exact - quota)))
        quota[order[:rest]] += 1
    return quota


def _priority(seed: int, object_ids) -> np.ndarray:
    """A seeded pseudo-random rank per object that depends on its id only."""
    return np.array([int.from_bytes(hashlib.sha256(f"{seed}\x00{oid}".encode()).digest()[:8], "little")
                     for oid in object_ids], dtype=np.uint64)


def cap_over_time(key: pd.DataFrame, cap: int, seed: int) -> np.ndarray:
    """Positions of ``cap`` rows of ``key`` (columns date, time, object_id), kept over time.

    ``cap`` is apportioned over the dates, each date's quota over its hours, and
    within an hour the rows with the smallest seeded hash of their object id are kept.
    Returns the kept positions, sorted.
    """
    day = key["date"].to_numpy()
    hour = key["time"].str.slice(0, 2).to_numpy()
    prio = _priority(seed, key["object_id"].to_numpy())
    keep = []
    days, day_of = np.unique(day, return_inverse=True)
    for d, q_day in enumerate(apportion(np.bincount(day_of), cap)):
        if q_day == 0:
            continue
        in_day = np.flatnonzero(day_of == d)
        hours, hour_of = np.unique(hour[in_day], return_inverse=True)
        for h, q_hour in enumerate(apportion(np.bincount(hour_of), int(q_day))):
            if q_hour == 0:
                continue
            rows = in_day[hour_of == h]
            keep.append(rows[np.argsort(prio[rows], kind="stable")[:q_hour]])
    return np.sort(np.concatenate(keep))


def _time_key(df: pd.DataFrame) -> pd.DataFrame:
    date = df["object_date"].astype(str) if "object_date" in df.columns else pd.Series("", index=df.index)
    time = df["object_time"].astype(str) if "object_time" in df.columns else pd.Series("", index=df.index)
    # EcoTaxa writes dates as YYYYMMDD and times as HHMMSS; zero-pad times written as integers.
    time = time.str.replace(":", "", regex=False).str.zfill(6)
    return pd.DataFrame({"date": date.to_numpy(), "time": time.to_numpy(), "object_id": df["object_id"].to_numpy()})


def balance(objects: pd.DataFrame, classes, cap: int = 1000, augment: bool = True, seed: int = 1,
            flip: bool = True, rotation: float = 180.0, shift: float = 0.1, source: str = "objects") -> pd.DataFrame:
    """Return the balanced item table (originals and augmented copies), sorted by class and item id.

    Small classes are filled with augmented copies up to ``min(cap, largest class)``: with a cap
    larger than every class, every class is brought to the size of the largest (a cap of 10^8 does
    not ask for 10^8 copies of each class).
    """
    sizes = {cls: int((objects["class_name"] == cls).sum()) for cls in classes}
    for cls in classes:
        if sizes[cls] == 0:
            raise InputError(source, f"class {cls!r} has no usable objects",
                             hint="check the ledger for why its rows were dropped, fix the class name, or remove the class from the config")
    fill_to = min(int(cap), max(sizes.values()))
    if fill_to < cap:
        log.info("cap %d is larger than every class: classes are filled to the largest one's %d objects", cap, fill_to)
    if "image_key" not in objects.columns:
        objects = objects.assign(image_key="")
    out = []
    for cls in classes:
        members = objects[objects["class_name"] == cls]
        n = len(members)
        key = _time_key(members)
        order = np.lexsort((key["object_id"].to_numpy(), key["time"].to_numpy(), key["date"].to_numpy()))
        members = members.iloc[order]
        if n > cap:
            members = members.iloc[cap_over_time(key.iloc[order].reset_index(drop=True), cap, seed)]
            log.info("class %s: %d objects, kept %d spread over its days and hours", cls, n, cap)
        base = pd.DataFrame({
            "item_id": members["object_id"].to_numpy(),
            "object_id": members["object_id"].to_numpy(),
            "class_name": cls,
            "image_ref": members["image_ref"].to_numpy(),
            "image_key": members["image_key"].to_numpy(),
            "augmented": 0, "flip": 0, "angle": 0.0, "dx": 0.0, "dy": 0.0,
        })
        out.append(base)
        missing = fill_to - len(base)
        if augment and missing > 0:
            rng = class_rng(seed, cls)
            # Copies go round-robin over the originals in a seeded order, so every
            # original gets floor or ceil(missing / n) copies.
            perm = rng.permutation(len(base))
            src = np.resize(perm, missing)
            # the j-th copy of the round-robin is copy number j // n + 1 of its original
            copy_no = np.arange(missing) // len(base) + 1
            ids = base["object_id"].to_numpy()
            aug = pd.DataFrame({
                "item_id": [augmented_id(ids[s], c) for s, c in zip(src, copy_no)],
                "object_id": ids[src],
                "class_name": cls,
                "image_ref": base["image_ref"].to_numpy()[src],
                "image_key": base["image_key"].to_numpy()[src],
                "augmented": 1,
                "flip": (rng.random(missing) < 0.5).astype(int) if flip else np.zeros(missing, dtype=int),
                "angle": np.round(rng.uniform(-rotation, rotation, missing), 3),
                "dx": np.round(rng.uniform(-shift, shift, missing), 4),
                "dy": np.round(rng.uniform(-shift, shift, missing), 4),
            })
            out.append(aug)
            log.info("class %s: %d objects, added %d augmented copies", cls, n, missing)
        elif missing > 0:
            log.info("class %s: %d objects (below %d; augmentation off)", cls, n, fill_to)
    table = pd.concat(out, ignore_index=True)[COLUMNS]
    return table.sort_values(["class_name", "item_id"], kind="stable").reset_index(drop=True)
