"""Split stability benchmark (issue 14 item 2): after a data update, how many existing objects change split?

For a synthetic export of N objects (default 10 000, six classes of 40 % to 3 %, plus a class of 10
objects) and for the demo export, it splits the objects, appends 1 % and 10 % new objects (new ids,
same classes in the same shares), splits again and counts the objects of the first split that moved.
It also says how far each class is from 60/20/20: the mean and largest difference, in objects, between
a class's count in a split and its exact share, over every class and split.

Compared, on the same objects: lokiml's split (lokiml.split: a seeded hash of each object's id,
repaired only where a class would miss a split), lokiml's with ``split.exact_shares: true`` (each
class cut at its exact shares in the order of the hash), and the seed's (a seeded shuffle of each
class, then cut at 60 % and 80 %: exact shares, but appending one object reshuffles its whole class).

    .venv/bin/python benchmarks/bench_split.py            # seconds
    .venv/bin/python benchmarks/bench_split.py --smoke    # 1 000 objects
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow" / "scripts"))

from lokiml.balance import class_rng  # noqa: E402
from lokiml.split import SPLITS, split_items  # noqa: E402

SHARES = {"Calanoida": 0.40, "Chaetognatha": 0.20, "Ostracoda": 0.15, "detritus": 0.15, "Appendicularia": 0.07,
          "Noctiluca": 0.03}
FRACTIONS = {"train": 0.6, "valid": 0.2, "test": 0.2}


def objects(n: int, start: int = 0, seed: int = 0) -> pd.DataFrame:
    """Objects start..start+n, classes drawn in SHARES, and a class of 10 ('rare') in the first batch."""
    rng = np.random.default_rng(seed + start)
    ids = [f"obj_{i:07d}" for i in range(start, start + n)]
    classes = rng.choice(list(SHARES), n, p=list(SHARES.values()))
    df = pd.DataFrame({"object_id": ids, "class_name": classes, "image_ref": [f"img/{i}.jpg" for i in ids]})
    if start == 0:
        df.loc[df.index[:10], "class_name"] = "rare"
    return df


def as_balanced(obj: pd.DataFrame) -> pd.DataFrame:
    return obj.assign(item_id=obj["object_id"], augmented=0)


def seed_split(obj: pd.DataFrame, seed: int = 3) -> pd.Series:
    """The seed's way (and lokiml's before issue 14): shuffle each class with a seeded generator, cut it."""
    out = {}
    for cls, members in obj.groupby("class_name", sort=True):
        ids = np.array(np.sort(members["object_id"].to_numpy()), dtype=object)
        class_rng(seed, cls).shuffle(ids)
        n = len(ids)
        n_valid, n_test = max(1, round(0.2 * n)), max(1, round(0.2 * n))
        for k, oid in enumerate(ids):
            out[oid] = "train" if k < n - n_valid - n_test else "valid" if k < n - n_test else "test"
    return pd.Series(out)


def lokiml_split(obj: pd.DataFrame, exact_shares: bool = False) -> pd.Series:
    return split_items(as_balanced(obj), obj, seed=3, exact_shares=exact_shares).set_index("object_id")["split"]


def lokiml_exact(obj: pd.DataFrame) -> pd.Series:
    return lokiml_split(obj, exact_shares=True)


def deviation(obj: pd.DataFrame, split: pd.Series) -> tuple[float, float]:
    """Mean and largest |count - exact share| in objects, over every class and split."""
    d = []
    for cls, members in obj.groupby("class_name"):
        counts = split.reindex(members["object_id"]).value_counts()
        d += [abs(counts.get(s, 0) - FRACTIONS[s] * len(members)) for s in SPLITS]
    return float(np.mean(d)), float(np.max(d))


def moved(before: pd.Series, after: pd.Series) -> int:
    return int((after.reindex(before.index) != before).sum())


def bench(name: str, base: pd.DataFrame, more) -> None:
    n = len(base)
    print(f"{name}: {n} objects in {base['class_name'].nunique()} classes")
    for method, fn in (("lokiml", lokiml_split), ("exact", lokiml_exact), ("seed", seed_split)):
        s0 = fn(base)
        mean, worst = deviation(base, s0)
        print(f"  {method:6s} split of the {n}: per class and split, {mean:.2f} objects from the exact share on "
              f"average, {worst:.1f} at most")
        for grow in (0.01, 0.10):
            bigger = pd.concat([base, more(max(1, round(grow * n)))], ignore_index=True)
            s1 = fn(bigger)
            mean, worst = deviation(bigger, s1)
            print(f"  {method:6s} +{grow:.0%} ({len(bigger) - n} objects): {moved(s0, s1)} of the {n} existing objects "
                  f"changed split; {mean:.2f} objects from the exact share on average, {worst:.1f} at most")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args()
    n = 1000 if a.smoke else a.n
    bench("synthetic export", objects(n), lambda k: objects(k, start=10_000_000))
    from lokiml.demo import DEMO_CONFIG_CLASSES, make_demo_export
    from lokiml.ecotaxa import open_export
    from lokiml.objects import select_objects

    with tempfile.TemporaryDirectory() as d:
        make_demo_export(Path(d) / "demo", seed=1)
        with open_export(Path(d) / "demo") as ex:
            demo = select_objects(ex, DEMO_CONFIG_CLASSES, check_images=False).objects
    demo = demo[["object_id", "class_name", "image_ref"]]
    rng = np.random.default_rng(7)

    def more_demo(k):  # new objects of the demo's classes, in its shares
        cls = rng.choice(demo["class_name"].to_numpy(), k)
        ids = [f"new_{rng.integers(10**9):09d}" for _ in range(k)]
        return pd.DataFrame({"object_id": ids, "class_name": cls, "image_ref": [f"new/{i}.jpg" for i in ids]})

    bench("demo export", demo, more_demo)


if __name__ == "__main__":
    main()
