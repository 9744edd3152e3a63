"""The report pages of issue 18: class gallery, per-class F1 across experiments, prediction page, and the
images of a descriptors experiment's mistakes. On the demo export's data stage (a small one)."""

import json
import zipfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lokiml import gallery, per_class, prediction_report
from lokiml.demo import make_demo_export
from lokiml.io import read_tsv
from lokiml.pipeline import balance_classes, read_export, split_dataset

CLASSES = ["Appendicularia", "Calanoida", "Calanoida_egg", "Chaetognatha", "Noctiluca", "Ostracoda", "detritus"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    export = root / "export"
    make_demo_export(export, scale=0.3)
    read_export(export, root / "objects.tsv", root / "ledger.tsv", CLASSES)
    balance_classes(root / "objects.tsv", root / "balanced.tsv", CLASSES, cap=12)
    split_dataset(root / "balanced.tsv", root / "objects.tsv", root / "split.tsv")
    return root, export


def test_examples_are_originals_of_each_class_and_stable(data):
    root, _ = data
    split = read_tsv(root / "split.tsv")
    ex = gallery.choose_examples(split, CLASSES, per_class=4)
    assert (ex.groupby("class_name").size() <= 4).all() and set(ex["class_name"]) == set(CLASSES)
    assert set(ex["augmented"].astype(int)) == {0}
    assert ex["object_id"].tolist() == gallery.choose_examples(split.sample(frac=1, random_state=2), CLASSES,
                                                               per_class=4)["object_id"].tolist()


def test_crop_box_is_the_one_normalisation_crops_to():
    img = np.full((40, 60), 250, dtype=np.uint8)
    img[10:20, 5:30] = 30  # the object
    img[35:40, :] = 0  # a scale bar at the bottom
    assert gallery.crop_box(img, 245, "dark", 0.0)[:4] == (10, 39, 0, 59)  # the bar stretches the box
    top, bottom, left, right, kept = gallery.crop_box(img, 245, "dark", 0.2)
    assert (top, bottom, left, right, kept) == (10, 19, 5, 29, 32)
    light = 255 - img
    assert gallery.crop_box(light, 245, "light", 0.2)[:4] == (10, 19, 5, 29)
    assert gallery.crop_box(light, 245, "auto", 0.2)[:4] == (10, 19, 5, 29)


def test_class_gallery_shows_raw_and_normalised_images(data, tmp_path):
    root, export = data
    out = tmp_path / "gallery.jpg"
    ex = gallery.class_gallery(root / "objects.tsv", root / "split.tsv", export, CLASSES, out, size=64, per_class=3)
    assert len(ex) == 3 * len(CLASSES)
    img = np.asarray(Image.open(out).convert("L"))
    assert img.shape[0] > 400 and img.shape[1] > 400
    assert img.std() > 20  # images, not a blank page


def test_mistake_images_of_a_descriptors_experiment_come_from_the_export(data):
    root, export = data
    objects, split = read_tsv(root / "objects.tsv"), read_tsv(root / "split.tsv")
    rows = split[split["augmented"].astype(int) == 0].head(5)
    gather = gallery.export_gather(export, objects, rows, size=32, threshold=245, polarity="dark",
                                   bottom_crop=0.0, max_pixels=10**8)
    tiles = gather(rows["item_id"].tolist())
    assert tiles.shape == (5, 32, 32) and tiles.dtype == np.uint8
    assert (tiles.reshape(5, -1).min(axis=1) < 200).all()  # each holds a dark object
    assert gather(["no such item"]).shape == (1, 32, 32)  # a blank tile, not a crash


def _report(path, f1):
    pd.DataFrame({"class_name": CLASSES + ["macro avg"], "precision": 0.5, "recall": 0.5,
                  "f1": list(f1) + [float(np.mean(f1))], "support": 3}).to_csv(path, sep="\t", index=False)
    return path


def test_per_class_f1_of_every_experiment_in_the_leaderboard_order(tmp_path):
    names = ["b_exp", "a_exp"]
    test = [_report(tmp_path / f"{n}_test.tsv", np.linspace(0, 1, len(CLASSES)) * (i + 1) / 2)
            for i, n in enumerate(names)]
    valid = [_report(tmp_path / f"{n}_valid.tsv", np.full(len(CLASSES), 0.5)) for n in names]
    vm = []
    for n, f in zip(names, (0.4, 0.9)):
        (tmp_path / f"{n}_vm.json").write_text(json.dumps({"macro_f1": f}))
        vm.append(tmp_path / f"{n}_vm.json")
    table = per_class.compare_classes(names, test, valid, vm, CLASSES, tmp_path / "f1.svg", tmp_path / "f1.tsv")
    assert table.columns.tolist() == ["a_exp", "b_exp"]  # a_exp has the better validation macro F1
    assert table.loc["detritus", "a_exp"] == pytest.approx(1.0)
    back = pd.read_csv(tmp_path / "f1.tsv", sep="\t")
    assert len(back) == 2 * len(CLASSES) and set(back["experiment_rank"]) == {1, 2}
    svg = (tmp_path / "f1.svg").read_text()
    assert svg.lstrip().startswith("<?xml")


def _bundle(tmp_path, rows):
    table = pd.DataFrame(rows)
    types = ["[t]"] * len(table.columns)
    path = tmp_path / "ecotaxa_demo.zip"
    with zipfile.ZipFile(path, "w") as z:
        text = "\t".join(table.columns) + "\n" + "\t".join(types) + "\n"
        text += "".join("\t".join(str(v) for v in r) + "\n" for r in table.itertuples(index=False))
        z.writestr("ecotaxa_demo.tsv", "\ufeff" + text)
        for name in table["img_file_name"]:
            img = np.full((50, 80), 240, dtype=np.uint8)
            img[10:40, 20:60] = 20
            buf = __import__("io").BytesIO()
            Image.fromarray(img).save(buf, "PNG")
            z.writestr(name, buf.getvalue())
    return path


def test_prediction_page_counts_every_class_and_shows_examples(tmp_path):
    rows = [{"img_file_name": f"i{i}.png", "object_id": f"o{i}",
             "object_annotation_category": ["Calanoida", "detritus", ""][i % 3],
             "object_annotation_status": ["predicted", "predicted", ""][i % 3],
             "object_score": f"{0.5 + i / 40:.3f}"} for i in range(12)]
    bundle = _bundle(tmp_path, rows)
    summary = {"name": "demo", "input": "in", "model": "m", "threshold": 0.5, "statuses_to_keep": ["validated"],
               "counts": {"rows": 12, "predicted": 8, "below_threshold": 4, "kept": 0, "unreadable": 0},
               "validated": {"validated_in_classes": 0, "accuracy": None}, "columns_not_carried": {}}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    out = [tmp_path / "s.html", tmp_path / "c.svg", tmp_path / "e.jpg"]
    prediction_report.report_prediction(tmp_path / "summary.json", bundle, tmp_path / "t.tsv", *out)
    counts = prediction_report.predicted_counts(prediction_report.read_bundle_table(bundle))
    assert counts.set_index("category")["objects"].to_dict() == {"Calanoida": 4, "detritus": 4}
    page = out[0].read_text()
    assert "Calanoida" in page and "below the threshold 0.5" in page and "ecotaxa_demo.zip" in page
    ex = prediction_report.choose_examples(prediction_report.read_bundle_table(bundle), per_end=1)
    assert len(ex) == 4  # the most and the least confident of each class
    assert np.asarray(Image.open(out[2]).convert("L")).std() > 10
