"""Per-class balancing (the seed's step 1, without its defects).

A class with more than ``cap`` objects keeps ``cap`` of them, spread evenly
over its objects sorted by date and time (the seed took every n-th with
n = floor(count / cap) and truncated, which for cap < count < 2*cap keeps
only the earliest ``cap``). A smaller class keeps all its objects and, with
augmentation on, is filled up to ``cap`` with augmented copies: each copy
names the object it came from and carries its own augmentation parameters
(horizontal flip, rotation, shift), drawn from a seeded generator, so the
same seed gives the same table. The images themselves are made at
normalisation time from these parameters.
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import pandas as pd

from .errors import InputError

log = logging.getLogger(__name__)

COLUMNS = ["item_id", "object_id", "class_name", "image_ref", "augmented", "flip", "angle", "dx", "dy"]


def class_rng(seed: int, class_name: str) -> np.random.Generator:
    """A generator that depends on the seed and the class only (not on other classes)."""
    digest = hashlib.sha256(f"{seed}\x00{class_name}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def spread_evenly(n: int, k: int) -> np.ndarray:
    """``k`` indices out of ``range(n)``, evenly spread, first one included."""
    return (np.arange(k) * n) // k


def _time_key(df: pd.DataFrame) -> pd.DataFrame:
    date = df["object_date"].astype(str) if "object_date" in df.columns else pd.Series("", index=df.index)
    time = df["object_time"].astype(str) if "object_time" in df.columns else pd.Series("", index=df.index)
    # EcoTaxa writes dates as YYYYMMDD and times as HHMMSS; zero-pad times written as integers.
    time = time.str.replace(":", "", regex=False).str.zfill(6)
    return pd.DataFrame({"date": date.to_numpy(), "time": time.to_numpy(), "object_id": df["object_id"].to_numpy()})


def balance(objects: pd.DataFrame, classes, cap: int = 1000, augment: bool = True, seed: int = 1,
            flip: bool = True, rotation: float = 180.0, shift: float = 0.1, source: str = "objects") -> pd.DataFrame:
    """Return the balanced item table (originals and augmented copies), sorted by class and item id."""
    out = []
    for cls in classes:
        members = objects[objects["class_name"] == cls]
        n = len(members)
        if n == 0:
            raise InputError(source, f"class {cls!r} has no usable objects",
                             hint="check the ledger for why its rows were dropped, fix the class name, or remove the class from the config")
        key = _time_key(members)
        order = np.lexsort((key["object_id"].to_numpy(), key["time"].to_numpy(), key["date"].to_numpy()))
        members = members.iloc[order]
        if n > cap:
            members = members.iloc[spread_evenly(n, cap)]
            log.info("class %s: %d objects, kept %d spread evenly over time", cls, n, cap)
        base = pd.DataFrame({
            "item_id": members["object_id"].to_numpy(),
            "object_id": members["object_id"].to_numpy(),
            "class_name": cls,
            "image_ref": members["image_ref"].to_numpy(),
            "augmented": 0, "flip": 0, "angle": 0.0, "dx": 0.0, "dy": 0.0,
        })
        out.append(base)
        missing = cap - len(base)
        if augment and missing > 0:
            rng = class_rng(seed, cls)
            # Copies go round-robin over the originals in a seeded order, so every
            # original gets floor or ceil(missing / n) copies.
            perm = rng.permutation(len(base))
            src = np.resize(perm, missing)
            copy_no = np.zeros(missing, dtype=int)
            counts: dict[int, int] = {}
            for j, s in enumerate(src):
                counts[s] = counts.get(s, 0) + 1
                copy_no[j] = counts[s]
            aug = pd.DataFrame({
                "item_id": [f"{base['object_id'].iat[s]}#aug{c:04d}" for s, c in zip(src, copy_no)],
                "object_id": base["object_id"].to_numpy()[src],
                "class_name": cls,
                "image_ref": base["image_ref"].to_numpy()[src],
                "augmented": 1,
                "flip": (rng.random(missing) < 0.5).astype(int) if flip else np.zeros(missing, dtype=int),
                "angle": np.round(rng.uniform(-rotation, rotation, missing), 3),
                "dx": np.round(rng.uniform(-shift, shift, missing), 4),
                "dy": np.round(rng.uniform(-shift, shift, missing), 4),
            })
            out.append(aug)
            log.info("class %s: %d objects, added %d augmented copies", cls, n, missing)
        elif missing > 0:
            log.info("class %s: %d objects (below the cap of %d; augmentation off)", cls, n, cap)
    table = pd.concat(out, ignore_index=True)[COLUMNS]
    return table.sort_values(["class_name", "item_id"], kind="stable").reset_index(drop=True)
