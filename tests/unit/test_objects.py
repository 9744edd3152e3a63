"""Selecting objects and accounting for every input row (rule read_export)."""

import io

import pytest
from PIL import Image

from lokiml.ecotaxa import open_export
from lokiml.errors import InputError
from lokiml.objects import ClassMatcher, read_mapping, select_objects

ZOOSCAN = "zooscan_export_13539/export_13539_20240728_0803.zip"


def jpeg(value=100, size=(40, 30)):
    buf = io.BytesIO()
    img = Image.new("L", size, 240)
    img.paste(value, (10, 10, 25, 20))
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def write_export(folder, rows, header=None, images=None):
    header = header or ["img_file_name", "object_id", "object_annotation_status", "object_annotation_category",
                        "object_annotation_hierarchy", "object_date", "object_time"]
    lines = ["\t".join(header), "\t".join("[t]" for _ in header)]
    for r in rows:
        lines.append("\t".join(str(r.get(h, "")) for h in header))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ecotaxa_test.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for name, data in (images or {}).items():
        p = folder / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return folder / "ecotaxa_test.tsv"


def row(i, cat, status="validated", hier="", img=None):
    return {"img_file_name": img or f"img/{i}.jpg", "object_id": f"o{i}", "object_annotation_status": status,
            "object_annotation_category": cat, "object_annotation_hierarchy": hier,
            "object_date": "20200101", "object_time": "120000"}


def test_exact_match_only_no_substring():
    m = ClassMatcher(["Calanoida"])
    assert m.match("Calanoida") == "Calanoida"
    assert m.match("Calanoida_egg") is None
    assert m.match("Calanoida egg") is None


def test_deepest_lineage_node_wins():
    m = ClassMatcher(["Copepoda", "Calanoida"])
    lineage = "living>Eukaryota>Arthropoda>Copepoda>Calanoida>Calanidae"
    assert m.match("Calanidae", lineage) == "Calanoida"
    assert m.match("Cyclopoida", "living>Arthropoda>Copepoda>Cyclopoida") == "Copepoda"


def test_zooscan_parent_notation_is_a_lineage():
    m = ClassMatcher(["Noctiluca", "detritus"])
    assert m.match("Noctiluca scintillans<Noctiluca<Noctilucaceae") == "Noctiluca"
    assert m.match("fiber<detritus") == "detritus"


def test_mapping_merges_renames_and_drops():
    m = ClassMatcher(["Copepoda", "other"], {"Calanoida": "Copepoda", "egg": "drop", "Noctiluca": "other"})
    assert m.match("Calanidae", "a>Calanoida>Calanidae") == "Copepoda"
    assert m.match("egg<other") is ClassMatcher.DROP  # deepest node first: 'egg' says drop
    assert m.match("Noctiluca") == "other"


def test_mapping_table_is_validated(tmp_path):
    p = tmp_path / "map.tsv"
    p.write_text("source\tclass\nCalanus\tCopepoda\nfoo\tNotAClass\n")
    with pytest.raises(InputError, match=r"map.tsv, row 3: class 'NotAClass'"):
        read_mapping(p, ["Copepoda"])
    p.write_text("source\tclass\nCalanus\tCopepoda\negg\tdrop\n")
    assert read_mapping(p, ["Copepoda"]) == {"Calanus": "Copepoda", "egg": "drop"}


def test_every_row_is_accounted_for(tmp_path):
    good = jpeg()
    rows = [
        row(1, "A"), row(2, "A"), row(3, "B", hier="x>B>B1"), row(4, "A", status="predicted"),
        row(5, "Zzz"), row(6, ""), row(7, "A", img="img/missing.jpg"), row(8, "B", img="img/bad.jpg"),
        row(9, "A", img="../outside.jpg"), row(10, "A", img="/etc/passwd"), row(11, "B", img="img/trunc.jpg"),
    ]
    rows.append(dict(row(1, "B"), img_file_name="img/2.jpg"))  # duplicate object_id o1
    images = {f"img/{i}.jpg": good for i in (1, 2, 3, 4, 5, 6)}
    images["img/bad.jpg"] = b"not an image at all"
    images["img/trunc.jpg"] = good[: len(good) // 2]
    tsv = write_export(tmp_path / "exp", rows, images=images)
    (tmp_path / "outside.jpg").write_bytes(good)
    with open_export(tsv) as ex:
        sel = select_objects(ex, ["A", "B"], threads=2)
    out = dict(zip(sel.ledger["object_id"] + "@" + sel.ledger["line"].astype(str), sel.ledger["outcome"]))
    assert len(sel.ledger) == len(rows)
    assert sorted(sel.objects["object_id"]) == ["o1", "o2", "o3"]
    assert sel.objects.set_index("object_id").loc["o3", "class_name"] == "B"
    expected = {"o4": "status_not_selected", "o5": "unmapped_category", "o6": "no_category",
                "o7": "missing_image", "o8": "unreadable_image", "o9": "unsafe_image_path",
                "o10": "unsafe_image_path", "o11": "unreadable_image"}
    by_id = sel.ledger.groupby("object_id")["outcome"].apply(list).to_dict()
    for oid, reason in expected.items():
        assert by_id[oid] == [reason], (oid, by_id[oid])
    assert by_id["o1"] == ["used", "duplicate_object_id"]
    # line numbers point at the physical row in the file (header + type row first)
    assert sel.ledger.loc[sel.ledger["object_id"] == "o4", "line"].item() == 6
    assert out  # noqa


def test_image_rank_selects_one_image_per_object(tmp_path):
    header = ["img_file_name", "img_rank", "object_id", "object_annotation_status", "object_annotation_category"]
    rows = [{"img_file_name": "a0.jpg", "img_rank": 0, "object_id": "o1", "object_annotation_status": "validated", "object_annotation_category": "A"},
            {"img_file_name": "a1.jpg", "img_rank": 1, "object_id": "o1", "object_annotation_status": "validated", "object_annotation_category": "A"}]
    tsv = write_export(tmp_path / "e", rows, header=header, images={"a0.jpg": jpeg(), "a1.jpg": jpeg(50)})
    with open_export(tsv) as ex:
        sel = select_objects(ex, ["A", "B"], img_rank=1)
    assert list(sel.objects["image_ref"]) == ["a1.jpg"]
    assert sorted(sel.ledger["outcome"]) == ["other_image_rank", "used"]


def test_missing_required_column_is_refused_with_file_name(tmp_path):
    tsv = write_export(tmp_path / "e", [{"object_id": "o1"}], header=["object_id", "object_annotation_category"])
    with open_export(tsv) as ex, pytest.raises(InputError, match=r"ecotaxa_test.tsv.*img_file_name"):
        select_objects(ex, ["A", "B"])


def test_zooscan_export_read_from_zip(shared_data):
    with open_export(shared_data / ZOOSCAN) as ex:
        sel = select_objects(ex, ["detritus", "artefact", "Noctiluca"], threads=2)
    led = sel.ledger
    assert len(led) == 437
    assert (led["outcome"] == "status_not_selected").sum() == 69 + 60
    per_class = sel.objects["class_name"].value_counts().to_dict()
    # fiber<detritus (166 rows in all, validated ones here) count as detritus; badfocus<artefact as artefact
    assert set(per_class) <= {"detritus", "artefact", "Noctiluca"}
    assert sel.objects.loc[sel.objects["category"] == "fiber<detritus", "class_name"].eq("detritus").all()
    assert sel.objects["image_ref"].str.match(r"^0/0_.*\.jpg$").all()
    assert len(sel.objects) + (led["outcome"] != "used").sum() == 437


def test_loki_table_with_corrupted_images(shared_data):
    path = shared_data / "ecotaxa_back_qa/import_issues/corrupted_img/ecotaxa.PS122.txt"
    with open_export(path) as ex:
        df = ex.tables[0].df
        classes = sorted(set(df["object_annotation_category"]) - {""}) if "object_annotation_category" in df else []
        sel = select_objects(ex, classes or ["a", "b"], statuses=["validated", "predicted", "dubious", ""])
    # the 3 images are deliberately corrupted and the 4th is absent: nothing is used, everything is counted
    assert len(sel.ledger) == 4
    assert len(sel.objects) == 0
    assert set(sel.ledger["outcome"]) <= {"unreadable_image", "missing_image", "unmapped_category", "no_category"}


def test_ecotaxar_export_lineage_from_hierarchy(shared_data):
    with open_export(shared_data / "ecotaxar/export.tsv") as ex:
        sel = select_objects(ex, ["Calanoida", "detritus"], check_images=False)
    # Calanidae rows reach Calanoida through object_annotation_hierarchy
    led = sel.ledger
    calanidae = led[led["category"] == "Calanidae"]
    assert len(calanidae) == 43
    assert calanidae["class_name"].eq("Calanoida").all()
    assert (led["outcome"] == "missing_image").sum() > 0  # this export ships no images
