"""Tests of lokiml.demo: the synthetic EcoTaxa export of the demo workflow."""

from __future__ import annotations

import hashlib
import re
import time

import numpy as np
import pandas as pd
import pytest

from lokiml.demo import DEMO_CLASSES, DEMO_CONFIG_CLASSES, DEMO_NON_VALIDATED, draw_object, make_demo_export
from lokiml.images import decode_grey, detect_polarity, normalise

DESCRIPTORS = ["object_area", "object_mean", "object_stddev", "object_major", "object_minor", "object_perim.",
               "object_circ.", "object_feret", "object_elongation", "object_index"]
LOKI_NAME = re.compile(r"^images/(\d{8}) (\d{6})  \d{3}  \d{6} \d{4} \d{4}\.jpg$")


def read(tsv) -> pd.DataFrame:
    return pd.read_csv(tsv, sep="\t", skiprows=[1], dtype=str, keep_default_na=False)


def tree_digest(folder) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo_export"
    t0 = time.perf_counter()
    tsv = make_demo_export(out, seed=1)
    return tsv, read(tsv), time.perf_counter() - t0


def test_files_are_written(demo):
    tsv, df, elapsed = demo
    assert tsv.name == "ecotaxa_demo.tsv" and tsv.is_file()
    images = sorted((tsv.parent / "images").iterdir())
    assert len(images) == len(df)
    for name in df["img_file_name"]:
        assert (tsv.parent / name).is_file()
    assert [p.name for p in tsv.parent.parent.iterdir()] == ["demo_export"]   # no temporary folder left over
    assert elapsed < 10.0


def test_class_and_status_counts(demo):
    _, df, _ = demo
    validated = df[df["object_annotation_status"] == "validated"]
    counts = validated["object_annotation_category"].value_counts().to_dict()
    assert counts == {name: c["count"] for name, c in DEMO_CLASSES.items()}
    assert df["object_annotation_status"].value_counts().to_dict() == {"validated": len(validated), **DEMO_NON_VALIDATED}
    assert 300 <= len(df) <= 400
    assert len(DEMO_CLASSES) >= 7 and len(DEMO_CONFIG_CLASSES) >= 6
    big = [n for n in DEMO_CONFIG_CLASSES if DEMO_CLASSES[n]["count"] > 60]
    small = [n for n in DEMO_CONFIG_CLASSES if DEMO_CLASSES[n]["count"] <= 40]
    assert len(big) >= 2 and len(small) >= 3
    # The unmapped categories (the open-set test): drawn and validated, but not configured classes. One is a
    # copepod (lineage through Copepoda, like Calanoida), one not-living (like detritus).
    unmapped = [n for n, c in DEMO_CLASSES.items() if c.get("unmapped")]
    assert unmapped == ["Foraminifera", "Cyclopoida", "artefact"] and not set(unmapped) & set(DEMO_CONFIG_CLASSES)
    assert counts["Foraminifera"] == 10 and counts["Cyclopoida"] == 16 and counts["artefact"] == 12
    assert ">Copepoda>" in DEMO_CLASSES["Cyclopoida"]["lineage"] and DEMO_CLASSES["artefact"]["lineage"].startswith(
        "not-living>")
    non_validated = df[df["object_annotation_status"] != "validated"]
    assert set(non_validated["object_annotation_category"]) <= set(DEMO_CONFIG_CLASSES)


def test_config_lists_the_demo_classes(project_root):
    yaml = pytest.importorskip("yaml")
    with open(project_root / "config" / "config.yaml") as fh:
        cfg = yaml.safe_load(fh)
    assert sorted(cfg["classes"]) == sorted(DEMO_CONFIG_CLASSES)


def test_lineages_and_exact_matching_case(demo):
    _, df, _ = demo
    for name, c in DEMO_CLASSES.items():
        assert c["lineage"].split(">")[-1] == name
    egg = df[df["object_annotation_category"] == "Calanoida_egg"]["object_annotation_hierarchy"].iloc[0]
    assert "Calanoida" in egg.split(">") and egg.endswith(">Calanoida>Calanoida_egg")
    assert df["object_annotation_hierarchy"].str.startswith(("living>", "not-living>")).all()


def test_header_and_type_row(demo):
    tsv, df, _ = demo
    lines = tsv.read_text(encoding="utf-8").split("\n")
    header, types = lines[0].split("\t"), lines[1].split("\t")
    assert len(header) == len(types) and set(types) == {"[t]", "[f]"}
    kinds = dict(zip(header, types))
    for col in DESCRIPTORS + ["img_rank", "object_lat", "object_lon", "object_depth_min", "object_depth_max"]:
        assert kinds[col] == "[f]", col
    for col in ["img_file_name", "object_id", "object_annotation_category", "object_annotation_status",
                "object_annotation_hierarchy", "sample_id", "object_cruise", "acq_instrument", "object_date",
                "object_time"]:
        assert kinds[col] == "[t]", col
    assert '"' not in tsv.read_text(encoding="utf-8")       # unquoted cells
    assert lines[-1] == "" and "\r" not in tsv.read_text(encoding="utf-8")


def test_loki_file_names_with_runs_of_spaces(demo):
    _, df, _ = demo
    for _, row in df.iterrows():
        m = LOKI_NAME.match(row["img_file_name"])
        assert m, row["img_file_name"]
        assert m.group(1) == row["object_date"] and m.group(2) == row["object_time"]
    assert df["img_file_name"].is_unique and df["object_id"].is_unique
    assert df["object_id"].str.fullmatch(r"demo_\d{6}").all()
    assert (df["img_rank"] == "0").all() and (df["acq_instrument"] == "LOKI").all()


def test_cruises_dates_and_samples(demo):
    _, df, _ = demo
    assert set(df["object_cruise"]) == {"PS121", "PS122"}
    dates = pd.to_datetime(df["object_date"], format="%Y%m%d")
    assert dates.nunique() >= 8 and (dates.max() - dates.min()).days <= 14
    assert df["object_time"].str.fullmatch(r"\d{6}").all()
    # A sample is one station on one day of one cruise.
    per_sample = df.groupby("sample_id")[["object_date", "object_cruise", "object_lat", "object_lon"]].nunique()
    assert (per_sample == 1).all().all() and len(per_sample) >= 10
    # Samples hold several classes and some unmapped objects: per-sample abundances have something to count.
    validated = df[df["object_annotation_status"] == "validated"]
    assert validated.groupby("sample_id")["object_annotation_category"].nunique().min() >= 3
    assert validated[~validated["object_annotation_category"].isin(DEMO_CONFIG_CLASSES)]["sample_id"].nunique() >= 10


def test_added_categories_leave_every_other_object_unchanged(tmp_path, monkeypatch):
    """The unmapped categories added for the open-set test come from their own random stream, after the rest:
    every other row and image is what the export held without them (so the classes are not made easier)."""
    import lokiml.demo as demo_module

    tsv = make_demo_export(tmp_path / "with", seed=1, scale=0.2)
    df = read(tsv)
    added = df["object_annotation_category"].isin([n for n, c in DEMO_CLASSES.items() if c.get("added")])
    assert added.sum() == sum(max(1, round(c["count"] * 0.2)) for c in DEMO_CLASSES.values() if c.get("added"))
    assert added.to_numpy().nonzero()[0].min() == (~added).sum()  # they come last, numbered on
    monkeypatch.setattr(demo_module, "DEMO_CLASSES", {n: c for n, c in DEMO_CLASSES.items() if not c.get("added")})
    before = make_demo_export(tmp_path / "without", seed=1, scale=0.2)
    old = read(before)
    assert old.equals(df[~added].reset_index(drop=True))
    for name in old["img_file_name"]:
        assert (before.parent / name).read_bytes() == (tsv.parent / name).read_bytes(), name


def test_descriptor_columns_are_numeric_and_plausible(demo):
    _, df, _ = demo
    num = df[DESCRIPTORS + ["object_lat", "object_lon", "object_depth_min", "object_depth_max"]].apply(pd.to_numeric)
    assert num.notna().all().all()
    assert (num["object_area"] > 50).all() and (num["object_mean"] < 240).all()
    assert (num["object_major"] >= num["object_minor"]).all() and (num["object_elongation"] >= 1).all()
    assert ((num["object_circ."] > 0) & (num["object_circ."] <= 1)).all()
    assert (num["object_depth_max"] >= num["object_depth_min"]).all()
    assert list(num["object_index"]) == list(range(1, len(df) + 1))
    # The shapes differ: eggs are round, arrow worms are long.
    by = num.assign(c=df["object_annotation_category"]).groupby("c").median()
    assert by.loc["Calanoida_egg", "object_circ."] > 0.9 and by.loc["Chaetognatha", "object_elongation"] > 5


def test_images_are_dark_objects_on_light_that_normalise_crops(demo):
    tsv, df, _ = demo
    for name in df["img_file_name"].iloc[::7]:
        img = decode_grey((tsv.parent / name).read_bytes(), name)
        h, w = img.shape
        assert 80 <= h <= 220 and 80 <= w <= 220
        assert detect_polarity(img) == "dark"
        obj = img < 245            # the default threshold isolates the object: it never touches the border
        rows, cols = np.flatnonzero(obj.any(axis=1)), np.flatnonzero(obj.any(axis=0))
        assert rows.size and 0 < rows[0] and rows[-1] < h - 1 and 0 < cols[0] and cols[-1] < w - 1
        assert normalise(img, 32).shape == (32, 32)
    shapes = {decode_grey((tsv.parent / n).read_bytes(), n).shape for n in df["img_file_name"].iloc[:40]}
    assert any(a != b for a, b in shapes) and len(shapes) > 10      # non-square, varied canvases


def test_same_seed_same_bytes_other_seed_differs(tmp_path, demo):
    tsv, _, _ = demo
    again = make_demo_export(tmp_path / "a", seed=1)
    assert tree_digest(again.parent) == tree_digest(tsv.parent)
    other = make_demo_export(tmp_path / "b", seed=2)
    assert tree_digest(other.parent) != tree_digest(tsv.parent)
    assert again.read_bytes() != other.read_bytes()


def test_scale_and_replacing_an_existing_folder(tmp_path):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    tsv = make_demo_export(out, seed=5, scale=0.1)
    assert not (out / "stale.txt").exists()
    df = read(tsv)
    counts = df[df["object_annotation_status"] == "validated"]["object_annotation_category"].value_counts()
    assert counts["Calanoida"] == 9 and counts["Noctiluca"] == 3 and counts.min() >= 1
    assert set(DEMO_CONFIG_CLASSES) <= set(counts.index)
    assert (df["object_annotation_status"] == "predicted").sum() == 1
    with pytest.raises(ValueError):
        make_demo_export(tmp_path / "x", scale=0)


def test_draw_object_every_class():
    rng = np.random.default_rng(0)
    for cls in DEMO_CLASSES:
        img, mask = draw_object(rng, cls)
        assert img.dtype == np.uint8 and mask.shape == img.shape and mask.any()
        assert img[~mask].min() >= 230 and img[mask].mean() < 225
