"""Prediction: threshold, kept statuses, the import table and its bundle, inputs, unreadable images,
normalisation taken from the recorded JSON (never from config), and a shared real import table.

Most tests use a stand-in model whose answer is written into the image (the grey level of the
object), so that every count is known; one test saves and reloads a real tiny Keras model.
"""

import json
import zipfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lokiml import predict as pr
from lokiml.ecotaxa import open_export, parse_table
from lokiml.errors import InputError

CLASSES = ["Calanoida", "detritus", "Noctiluca"]
ECOTAXA = ["Calanoida", "detritus", "Noctiluca<Noctilucaceae"]
# object grey level -> probabilities the stand-in model returns
LEVELS = {0: [0.9, 0.05, 0.05], 100: [0.1, 0.8, 0.1], 180: [0.3, 0.3, 0.4]}


class FakeModel:
    """Reads the grey level at the image centre and answers from LEVELS; records the input shapes."""

    def __init__(self):
        self.shapes = []

    def predict_on_batch(self, x):
        x = np.asarray(x)
        self.shapes.append(x.shape)
        s = x.shape[1] // 2
        out = []
        for img in x:
            level = min(LEVELS, key=lambda v: abs(v - int(img[s, s, 0])))
            out.append(LEVELS[level])
        return np.array(out, dtype=np.float32)


def _image(path, level, size=(40, 30), fmt=None):
    arr = np.full((size[1], size[0]), 255, dtype=np.uint8)
    arr[8:22, 10:30] = level
    Image.fromarray(arr, "L").save(path, format=fmt)


def _write_record(path, size=16, **kw):
    rec = {"version": 1, "experiment": "x", "model": "best.keras", "model_sha1": None, "image_size": size,
           "threshold": 245, "polarity": "dark", "bottom_crop": 0.0, "max_pixels": 10_000_000, "img_rank": 0,
           "classes": [{"name": c, "ecotaxa_name": e} for c, e in zip(CLASSES, ECOTAXA)]}
    rec.update(kw)
    path.write_text(json.dumps(rec))
    return path


def _export(tmp_path):
    """An import table with 6 objects: validated, predicted, unlabelled, light (below threshold), corrupt."""
    d = tmp_path / "export"
    (d / "imgs").mkdir(parents=True)
    rows = [
        ("o1", "imgs/o1.jpg", 0, "validated", "Calanoida"),     # kept (and correct)
        ("o2", "imgs/o2.png", 100, "predicted", "Calanoida"),   # overwritten -> detritus
        ("o3", "imgs/o3.png", 0, "", ""),                       # -> Calanoida
        ("o4", "imgs/o4.png", 180, "", ""),                     # 0.4 < 0.5: left unclassified
        ("o5", "imgs/o5.jpg", None, "", ""),                    # corrupt
        ("o6", "imgs/o6.png", 100, "validated", "detritus"),    # kept (and correct)
    ]
    lines = ["object_id\timg_file_name\tobject_annotation_status\tobject_annotation_category\tsample_id\tobject_depth_min",
             "[t]\t[t]\t[t]\t[t]\t[t]\t[f]"]
    for oid, name, level, status, cat in rows:
        if level is None:
            (d / name).write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
        else:
            _image(d / name, level)
        lines.append(f"{oid}\t{name}\t{status}\t{cat}\tst1\t{len(oid)}.5")
    (d / "ecotaxa_new.tsv").write_text("\n".join(lines) + "\n")
    return d


def _run(tmp_path, src, record=None, model=None, **kw):
    out = tmp_path / "out"
    record = record or _write_record(tmp_path / "normalisation.json")
    paths = {"out_table": out / "ecotaxa_t.tsv", "out_zip": out / "ecotaxa_t.zip", "out_top3": out / "top3.csv",
             "out_summary": out / "summary.json"}
    summary = pr.predict_job(src, tmp_path / "best.keras", record, "t", model=model or FakeModel(), **paths, **kw)
    return summary, paths


def _table(path):
    t = parse_table(path.read_bytes(), str(path))
    return t, t.df.set_index("object_id")


def test_outputs_written_block_by_block_are_the_same_files(tmp_path, monkeypatch):
    """The tables and the zip are built a block of objects at a time (memory flat in the number of
    objects); the block size must change nothing in what is written."""
    src = _export(tmp_path)
    (tmp_path / "whole").mkdir()
    (tmp_path / "blocks").mkdir()
    whole, paths = _run(tmp_path / "whole", src, threshold=0.5)
    monkeypatch.setattr(pr, "BLOCK", 2)  # 6 rows, one unreadable: 3 blocks, the last one short
    blocks, paths2 = _run(tmp_path / "blocks", src, threshold=0.5)
    for key in ("out_table", "out_zip", "out_top3"):
        assert paths[key].read_bytes() == paths2[key].read_bytes(), key
    assert {k: v for k, v in whole.items() if k != "model"} == {k: v for k, v in blocks.items() if k != "model"}
    assert whole["validated"]["validated_in_classes"] == 2 and whole["counts"]["unreadable"] == 1


def test_threshold_kept_statuses_and_counts(tmp_path):
    summary, paths = _run(tmp_path, _export(tmp_path), threshold=0.5, chunk=2, batch_size=2)
    c = summary["counts"]
    assert c == {"rows": 6, "predicted": 2, "below_threshold": 1, "kept": 2, "unreadable": 1, "missing_image": 0,
                 "missing_object_id": 0, "other_image_rank": 0, "duplicate_object_id": 0, "trusted": 0,
                 "to_check": 3}
    assert c["predicted"] + c["below_threshold"] + c["kept"] + c["unreadable"] == c["rows"]
    _, df = _table(paths["out_table"])
    assert df.loc["o1", "object_annotation_category"] == "Calanoida"
    assert df.loc["o1", "object_annotation_status"] == "validated"
    assert df.loc["o6", "object_annotation_status"] == "validated"
    assert df.loc["o2", "object_annotation_category"] == "detritus"       # predicted status is overwritten
    assert df.loc["o2", "object_annotation_status"] == "predicted"
    assert df.loc["o3", "object_annotation_category"] == "Calanoida"
    assert df.loc["o4", "object_annotation_category"] == ""                # below threshold
    assert df.loc["o4", "object_annotation_status"] == ""
    assert float(df.loc["o4", "object_score"]) == pytest.approx(0.4)
    assert "o5" not in df.index and summary["unreadable_objects"] == ["o5"]
    assert summary["validated"] == {"validated_objects": 2, "validated_in_classes": 2, "correct": 2,
                                   "accuracy": 1.0}


def test_threshold_zero_classifies_everything_and_ecotaxa_names(tmp_path):
    summary, paths = _run(tmp_path, _export(tmp_path), threshold=0.0, statuses_to_keep=[])
    assert summary["counts"]["predicted"] == 5 and summary["counts"]["below_threshold"] == 0
    _, df = _table(paths["out_table"])
    # the class's original EcoTaxa name (with its parent), not the training class name
    assert df.loc["o4", "object_annotation_category"] == "Noctiluca<Noctilucaceae"
    assert df.loc["o1", "object_annotation_status"] == "predicted"  # nothing kept


def test_import_table_round_trip(tmp_path):
    _, paths = _run(tmp_path, _export(tmp_path))
    t, df = _table(paths["out_table"])
    cols = list(t.df.columns)
    assert cols[:5] == ["img_file_name", "object_id", "object_annotation_category", "object_annotation_status",
                        "object_score"]
    # the decisions (lokiml.decisions), then the input's other columns, carried over with their types
    assert cols[5:9] == list(pr.DECISION_COLUMNS)
    assert [t.types[c] for c in cols[5:9]] == ["[t]", "[t]", "[f]", "[f]"]
    assert cols[9:11] == ["sample_id", "object_depth_min"]
    assert (t.types["sample_id"], t.types["object_depth_min"]) == ("[t]", "[f]")
    assert (df["sample_id"] == "st1").all() and (df["object_depth_min"] == "2.5").all()
    assert cols[11:] == ["object_prob_Calanoida", "object_prob_detritus", "object_prob_Noctiluca"]
    assert all(c.startswith(("object_", "img_", "sample_")) for c in cols)
    assert t.types is not None
    assert {t.types[c] for c in [cols[4]] + cols[11:]} == {"[f]"} and {t.types[c] for c in cols[:4]} == {"[t]"}
    probs = df[cols[11:]].astype(float)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    assert (probs.max(axis=1) == df["object_score"].astype(float)).all()
    top3 = pd.read_csv(paths["out_top3"])
    assert list(top3.columns) == ["object_id", "top1_class", "top1_prob", "top2_class", "top2_prob",
                                  "top3_class", "top3_prob"]
    assert top3.set_index("object_id").loc["o2", "top1_class"] == "detritus"


def test_zip_bundle_holds_table_and_images_and_reads_back(tmp_path):
    src = _export(tmp_path)
    _, paths = _run(tmp_path, src)
    with zipfile.ZipFile(paths["out_zip"]) as z:
        names = sorted(z.namelist())
        assert names == ["ecotaxa_t.tsv", "imgs/o1.jpg", "imgs/o2.png", "imgs/o3.png", "imgs/o4.png", "imgs/o6.png"]
        assert z.read("imgs/o2.png") == (src / "imgs/o2.png").read_bytes()
    with open_export(paths["out_zip"]) as ex:
        (table,) = ex.tables
        assert len(table.df) == 5
        for name in table.df["img_file_name"]:
            assert ex.image_exists(table, name)


def test_plain_folder_of_images(tmp_path):
    d = tmp_path / "imgs"
    (d / "sub").mkdir(parents=True)
    _image(d / "a.jpg", 0)
    _image(d / "sub" / "b.png", 100)
    _image(d / "c.bmp", 0, fmt="BMP")
    _image(d / "d.tif", 180, fmt="TIFF")
    (d / "notes.md").write_text("not an image")
    (d / "e.gif").write_bytes(b"GIF89a broken")
    summary, paths = _run(tmp_path, d)
    assert summary["counts"]["rows"] == 5 and summary["counts"]["unreadable"] == 1
    _, df = _table(paths["out_table"])
    assert sorted(df.index) == ["a", "b", "c", "d"]
    assert df.loc["b", "img_file_name"] == "sub/b.png"
    assert df.loc["b", "object_annotation_category"] == "detritus"
    with zipfile.ZipFile(paths["out_zip"]) as z:
        assert "sub/b.png" in z.namelist()


def test_normalisation_comes_from_the_record(tmp_path, monkeypatch):
    src = _export(tmp_path)
    record = _write_record(tmp_path / "rec.json", size=24, threshold=200, polarity="auto", bottom_crop=0.1,
                           max_pixels=5000)
    seen = []
    import lokiml.predictors as predictors

    real = predictors.normalise_item

    def spy(data, name, p, *a, **kw):
        seen.append(p)
        return real(data, name, p, *a, **kw)

    monkeypatch.setattr(predictors, "normalise_item", spy)
    model = FakeModel()
    _run(tmp_path, src, record=record, model=model)
    assert {(p.size, p.threshold, p.polarity, p.bottom_crop, p.max_pixels) for p in seen} == {(24, 200, "auto", 0.1, 5000)}
    assert all(s[1:] == (24, 24, 1) for s in model.shapes)
    # the library takes no normalisation keyword: the config's `normalise:` cannot reach it
    import inspect

    assert not {"threshold_px", "polarity", "bottom_crop", "max_pixels", "image_size"} & set(
        inspect.signature(pr.predict_job).parameters)


def test_record_normalisation_and_real_keras_model(tmp_path):
    import keras

    inp = keras.Input(shape=(16, 16, 1), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1 / 255.0)(inp)
    x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(3, activation="softmax")(x)
    model = keras.Model(inp, out)
    model_path = tmp_path / "best.keras"
    model.save(model_path)
    (tmp_path / "classes.txt").write_text("".join(f"{c}\n" for c in CLASSES))
    objects = pd.DataFrame({"object_id": ["a", "b", "c", "d"], "class_name": ["Calanoida", "detritus", "Noctiluca", "Noctiluca"],
                            "category": ["Calanoida", "fiber<detritus", "Noctiluca scintillans<Noctiluca<Noctilucaceae",
                                         "Noctiluca<Noctilucaceae"]})
    objects.to_csv(tmp_path / "objects.tsv", sep="\t", index=False)
    rec_path = tmp_path / "normalisation.json"
    rec = pr.record_normalisation(model_path, tmp_path / "classes.txt", tmp_path / "objects.tsv", rec_path, "x",
                                  image_size=16, threshold=240, polarity="dark", bottom_crop=0.0, max_pixels=10**7)
    assert [c["ecotaxa_name"] for c in rec["classes"]] == ["Calanoida", "detritus", "Noctiluca<Noctilucaceae"]
    assert pr.load_record(rec_path).params.threshold == 240
    out = tmp_path / "out"
    summary = pr.predict_job(_export(tmp_path), model_path, rec_path, "t", out / "t.tsv", out / "t.zip",
                             out / "top3.csv", out / "summary.json", threshold=0.0)
    assert summary["counts"]["unreadable"] == 1 and summary["counts"]["kept"] == 2
    # a model changed after the record was made is refused
    dense = model.layers[-1]
    dense.set_weights([w + 1.0 for w in dense.get_weights()])
    model.save(model_path)
    with pytest.raises(InputError, match="another version"):
        pr.predict_job(_export(tmp_path / "again"), model_path, rec_path, "t", out / "t.tsv", out / "t.zip",
                       out / "top3.csv", out / "summary.json")


def test_other_rank_duplicates_and_missing_images(tmp_path):
    d = tmp_path / "ex"
    d.mkdir()
    _image(d / "a.png", 0)
    _image(d / "a2.png", 0)
    (d / "ecotaxa_x.tsv").write_text(
        "object_id\timg_file_name\timg_rank\n"
        "a\ta.png\t0\n"
        "a\ta2.png\t1\n"
        "b\tmissing.png\t0\n"
        "a\ta.png\t0\n")
    summary, _ = _run(tmp_path, d)
    c = summary["counts"]
    assert (c["rows"], c["predicted"], c["other_image_rank"], c["missing_image"], c["duplicate_object_id"]) == (4, 1, 1, 1, 1)


def test_empty_folder_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="neither"):
        pr.Input(tmp_path / "empty")


def test_shared_import_table_with_images(tmp_path, shared_data):
    """A real import table with images (EcoTaxa backend QA): it runs, counts add up, the table reads back."""
    src = shared_data / "ecotaxa_back_qa" / "import_test"
    summary, paths = _run(tmp_path, src, threshold=0.0)
    c = summary["counts"]
    assert c["rows"] > 0
    assert c["rows"] == sum(c[k] for k in ("predicted", "below_threshold", "kept", "unreadable", "missing_image",
                                           "missing_object_id", "other_image_rank", "duplicate_object_id"))
    t, df = _table(paths["out_table"])
    assert len(df) == c["predicted"] + c["below_threshold"] + c["kept"]
    with open_export(paths["out_zip"]) as ex:
        (table,) = ex.tables
        assert len(table.df) == len(df)
        assert all(ex.image_exists(table, n) for n in table.df["img_file_name"])
