"""Rule evaluate_decisions at scale: is it still the light job it is meant to be?

    .venv/bin/python benchmarks/bench_decisions.py [--classes 40 --valid 200 --capped 100000 --unknowns 5000]

Writes the inputs of rule evaluate_decisions for a synthetic export (``--classes`` classes of a
lineage tree, ``--valid`` validation and test objects per class, ``--capped`` capped-out objects over
all classes, ``--unknowns`` objects of no configured class, 200 samples) with the probabilities of a
classifier that is right 80 % of the time, then runs the whole rule (:func:`lokiml.decision_report.
evaluate_decisions`: thresholds, curves, lineage nodes, natural-frequency metrics, abundances, open
set, four figures and the page) and reports its wall time against reading its inputs in the same
process (the floor any implementation pays), and its peak memory.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow" / "scripts"))


def make_inputs(root: Path, n_classes: int, per_class: int, n_capped: int, n_unknowns: int, seed: int = 0):
    from lokiml.extra_objects import write_extra_predictions
    from lokiml.io import write_tsv

    rng = np.random.default_rng(seed)
    classes = [f"taxon{k:02d}" for k in range(n_classes)]
    lineage = {c: f"living>Metazoa>group{k % 5}>family{k % 10}>{c}" for k, c in enumerate(classes)}
    # class sizes in the export: a few very common classes, many rare ones (Zipf)
    sizes = np.maximum((n_capped * 2 / (np.arange(n_classes) + 1)) / sum(1 / (np.arange(n_classes) + 1)),
                       per_class * 5).astype(int)

    def probs(truth):
        p = rng.dirichlet(np.ones(n_classes) * 0.3, size=len(truth))
        right = (truth >= 0) & (rng.uniform(size=len(truth)) < 0.8)
        p[right] *= 0.3
        p[right, truth[right]] += 0.7
        return p.astype(np.float32)

    rows = []
    for s in ("valid", "test"):
        truth = np.repeat(np.arange(n_classes), per_class)
        p = probs(truth)
        ids = [f"{s}{i:07d}" for i in range(len(truth))]
        pred = np.asarray(classes)[p.argmax(axis=1)]
        write_tsv(root / f"{s}_predictions.tsv", pd.DataFrame({
            "item_id": ids, "object_id": ids, "true_class": np.asarray(classes)[truth], "predicted_class": pred,
            "probability": p.max(axis=1), "correct": (pred == np.asarray(classes)[truth]).astype(int)}))
        np.save(root / f"{s}_probabilities.npy", p)
        rows += [(i, classes[t]) for i, t in zip(ids, truth)]
    capped_truth = rng.choice(n_classes, size=n_capped, p=sizes / sizes.sum())
    capped_ids = [f"cap{i:07d}" for i in range(n_capped)]
    rows += [(i, classes[t]) for i, t in zip(capped_ids, capped_truth)]
    objects = pd.DataFrame(rows, columns=["object_id", "class_name"])
    objects["category"] = objects["class_name"]
    objects["object_annotation_hierarchy"] = objects["class_name"].map(lineage)
    objects["sample_id"] = [f"st{k:03d}" for k in rng.integers(0, 200, len(objects))]
    write_tsv(root / "objects.tsv", objects)
    unk_ids = [f"unk{i:06d}" for i in range(n_unknowns)]
    extra = pd.DataFrame({
        "item_id": [f"capped:{i}" for i in capped_ids] + [f"unknown:{i}" for i in unk_ids],
        "object_id": capped_ids + unk_ids, "set": ["capped"] * n_capped + ["unknown"] * n_unknowns,
        "class_name": [classes[t] for t in capped_truth] + [""] * n_unknowns,
        "category": [classes[t] for t in capped_truth] + ["other"] * n_unknowns,
        "hierarchy": [lineage[classes[t]] for t in capped_truth] + ["living>Metazoa>group1>other"] * n_unknowns,
        "half": [""] * n_capped + ["calibration" if i % 2 else "test" for i in range(n_unknowns)],
        "in_population": 1})
    write_tsv(root / "extra.tsv", extra)
    truth = np.r_[capped_truth, np.full(n_unknowns, -1)]
    write_extra_predictions(extra, np.array(["ok"] * len(extra), dtype=object), probs(truth), classes,
                            root / "extra_predictions.tsv", root / "extra_probabilities.npy")
    counts = pd.DataFrame({"class_name": classes + ["(no class)"],
                           "export_objects": list(sizes) + [n_unknowns * 4],
                           "population_objects": list(sizes) + [n_unknowns * 4]})
    for c in ("kept_originals", "test_originals", "capped_in_population", "taken", "taken_calibration",
              "taken_test"):
        counts[c] = 0
    write_tsv(root / "counts.tsv", counts)
    (root / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    return classes


def read_inputs(root: Path) -> None:
    from lokiml.io import read_tsv

    for name in ("valid_predictions.tsv", "test_predictions.tsv", "extra_predictions.tsv", "extra.tsv",
                 "objects.tsv", "counts.tsv"):
        read_tsv(root / name)
    for name in ("valid_probabilities.npy", "test_probabilities.npy", "extra_probabilities.npy"):
        np.load(root / name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", type=int, default=40)
    ap.add_argument("--valid", type=int, default=200, help="validation (and test) objects per class")
    ap.add_argument("--capped", type=int, default=100_000)
    ap.add_argument("--unknowns", type=int, default=5000)
    ap.add_argument("--smoke", action="store_true", help="a tiny run (CI)")
    args = ap.parse_args()
    if args.smoke:
        args.classes, args.valid, args.capped, args.unknowns = 8, 20, 2000, 200
    t = time.perf_counter()
    import matplotlib.pyplot  # noqa: F401  (imported once per job; timed apart from the work)
    import sklearn.metrics  # noqa: F401

    from lokiml.decision_report import OUTPUTS, evaluate_decisions

    imports = time.perf_counter() - t
    with tempfile.TemporaryDirectory(prefix="bench_decisions.") as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        make_inputs(root, args.classes, args.valid, args.capped, args.unknowns)
        made = time.perf_counter() - t
        t = time.perf_counter()
        read_inputs(root)
        floor = time.perf_counter() - t
        outputs = {k: root / "out" / v for k, v in OUTPUTS.items()}
        t = time.perf_counter()
        res = evaluate_decisions(root / "classes.txt", root / "valid_predictions.tsv", root / "valid_probabilities.npy",
                                 root / "test_predictions.tsv", root / "test_probabilities.npy",
                                 root / "extra_predictions.tsv", root / "extra_probabilities.npy", root / "extra.tsv",
                                 root / "counts.tsv", root / "objects.tsv", outputs, experiment="bench")
        took = time.perf_counter() - t
        figures = sum((root / "out" / OUTPUTS[k]).stat().st_size for k in OUTPUTS if OUTPUTS[k].endswith(".svg"))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n = args.classes * args.valid * 2 + args.capped + args.unknowns
    print(f"evaluate_decisions: {args.classes} classes, {n} objects ({args.capped} capped out, {args.unknowns} "
          f"unknowns), {len(res['nodes'])} lineage nodes")
    print(f"  imports (scikit-learn, matplotlib): {imports:.1f} s; inputs made in {made:.1f} s; reading them: "
          f"{floor:.2f} s")
    print(f"  the rule: {took:.1f} s = {took / max(floor, 1e-9):.1f} x reading its inputs; peak memory {peak:.0f} MB; "
          f"figures {figures / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
