"""The image manifest (lokiml.manifest): data updates that are never missed, and read only what changed.

read_export writes the manifest; the workflow's ``export_state`` compares it with the files at each
DAG build (a parameter of read_export: a change reruns it); the check cache lets a rerun read only
new or changed images, and decode only new contents.
"""

from __future__ import annotations

import io
import os
import time

import numpy as np
import pytest
from PIL import Image

from lokiml import memory, pipeline
from lokiml.ecotaxa import open_export
from lokiml.images import ImageError
from lokiml.io import read_tsv
from lokiml.manifest import CheckParams, check_images, export_state, read_manifest


def jpeg(k: int, size=(80, 60)) -> bytes:
    a = np.full(size[::-1], 245, np.uint8)
    a[10 + k % 7: 30, 10: 40 + k % 11] = 40 + k
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def make_export(folder, n=12, missing=()):
    (folder / "img").mkdir(parents=True, exist_ok=True)
    lines = ["img_file_name\tobject_id\tobject_annotation_status\tobject_annotation_category"]
    for k in range(n):
        name = f"img/{k}.jpg"
        if k not in missing:
            (folder / name).write_bytes(jpeg(k))
        lines.append(f"{name}\to{k}\tvalidated\t{'A' if k % 2 else 'B'}")
    (folder / "ecotaxa_x.tsv").write_text("\n".join(lines) + "\n")
    return folder


def run_read(folder, out, cache, **kw):
    """read_export as the rule runs it: the state token first (the DAG build), then the job."""
    state = export_state(folder, out / "images.tsv")
    sel = pipeline.read_export(folder, out / "objects.tsv", out / "ledger.tsv", ["A", "B"], threads=2,
                               manifest_out=out / "images.tsv", cache_dir=cache, state=state, **kw)
    return state, sel


def test_unchanged_export_gives_the_same_state_and_changes_are_seen(tmp_path):
    folder = make_export(tmp_path / "e", missing=(3,))
    out, cache = tmp_path / "out", tmp_path / "cache"
    first, _ = run_read(folder, out, cache)
    assert first == "none"  # no manifest yet
    assert export_state(folder, out / "images.tsv") == first  # nothing changed: the recorded state, no rerun
    # an image replaced in place (truncated), with a new modification time
    img = folder / "img" / "5.jpg"
    img.write_bytes(jpeg(5)[:300])
    changed = export_state(folder, out / "images.tsv")
    assert changed != first
    state, sel = run_read(folder, out, cache)
    assert state == changed and export_state(folder, out / "images.tsv") == changed  # recorded: stable again
    assert sel.ledger.set_index("object_id").at["o5", "outcome"] == "unreadable_image"
    # the image a row named but that was missing appears
    (folder / "img" / "3.jpg").write_bytes(jpeg(3))
    assert export_state(folder, out / "images.tsv") != changed
    _, sel = run_read(folder, out, cache)
    assert sel.ledger.set_index("object_id").at["o3", "outcome"] == "used"
    # an image removed; a table replaced by an older copy (same name, older time)
    settled = export_state(folder, out / "images.tsv")
    (folder / "img" / "7.jpg").unlink()
    assert export_state(folder, out / "images.tsv") != settled
    run_read(folder, out, cache)
    settled = export_state(folder, out / "images.tsv")
    table = folder / "ecotaxa_x.tsv"
    table.write_text(table.read_text().replace("o11\tvalidated", "o11\tpredicted"))
    os.utime(table, ns=(1_000_000_000, 1_000_000_000))
    assert export_state(folder, out / "images.tsv") != settled


def test_a_rerun_reads_only_new_or_changed_images_and_decodes_only_new_contents(tmp_path, monkeypatch):
    folder = make_export(tmp_path / "e", n=20)
    out, cache = tmp_path / "out", tmp_path / "cache"
    with open_export(folder) as ex:
        reads, decodes = [], []
        real_read = ex.read_image_by_ref
        monkeypatch.setattr(ex, "read_image_by_ref", lambda ref, **kw: reads.append(ref) or real_read(ref, **kw))
        import lokiml.manifest as m

        real_check = m.check_content
        monkeypatch.setattr(m, "check_content", lambda data, name, *a, **kw: decodes.append(name) or
                            real_check(data, name, *a, **kw))
        refs = [f"img/{k}.jpg" for k in range(20)]

        def run():
            reads.clear(), decodes.clear()
            cc = m.CheckCache(cache, folder, CheckParams())
            checks = check_images(ex, refs, CheckParams(), cc, threads=2)
            cc.save(list(checks.values()))
            return checks

        assert len(run()) == 20 and len(reads) == 20 and len(decodes) == 20
        run()
        assert reads == [] and decodes == []  # nothing changed: nothing read
        time.sleep(0.01)
        (folder / "img" / "4.jpg").write_bytes(jpeg(4))  # touched: same bytes, new time
        (folder / "img" / "6.jpg").write_bytes(jpeg(99))  # new content
        checks = run()
        assert sorted(reads) == ["img/4.jpg", "img/6.jpg"] and decodes == ["img/6.jpg"]
        assert checks["img/6.jpg"].key != checks["img/4.jpg"].key


def test_manifest_lists_every_image_looked_at_with_its_outcome_and_content_key(tmp_path):
    folder = make_export(tmp_path / "e", missing=(2,))
    (folder / "img" / "9.jpg").write_bytes(np.full(100, 7, np.uint8).tobytes())
    run_read(folder, tmp_path / "out", tmp_path / "cache")
    state, rows = read_manifest(tmp_path / "out" / "images.tsv")
    by_ref = {r["image_ref"]: r for r in rows}
    assert by_ref["ecotaxa_x.tsv"]["kind"] == "table"
    assert by_ref["img/2.jpg"]["outcome"] == "missing_image" and by_ref["img/2.jpg"]["stamp"] == "absent"
    assert by_ref["img/9.jpg"]["outcome"] == "unreadable_image"
    ok = [r for r in rows if r["outcome"] == "ok"]
    assert len(ok) == 10 and all(len(r["key"]) == 40 for r in ok)
    objects = read_tsv(tmp_path / "out" / "objects.tsv")
    assert set(objects["image_key"]) == {r["key"] for r in ok}  # normalisation finds its cache by this key


def test_descriptor_only_runs_need_no_images(tmp_path):
    folder = tmp_path / "e"
    folder.mkdir()
    (folder / "ecotaxa_x.tsv").write_text("object_id\tobject_annotation_status\tobject_annotation_category\t"
                                          "object_area\n" + "".join(f"o{k}\tvalidated\t{'AB'[k % 2]}\t{k}\n"
                                                                    for k in range(10)))
    for mode in ("ignored", "optional"):
        _, sel = run_read(folder, tmp_path / mode, tmp_path / "cache", images=mode)
        assert (sel.ledger["outcome"] == "used").all() and len(sel.objects) == 10
        assert (sel.objects["image_ref"] == "").all()
    with pytest.raises(Exception, match="img_file_name"):
        run_read(folder, tmp_path / "out2", tmp_path / "cache2", images="required")
    # optional, with images: they are checked as when required (descriptors measured on them need them)
    with_images = make_export(tmp_path / "with", missing=(4,))
    _, sel = run_read(with_images, tmp_path / "out3", tmp_path / "cache3", images="optional")
    assert sel.ledger.set_index("object_id").at["o4", "outcome"] == "missing_image"
    assert (sel.objects["image_ref"] != "").all()


def test_memory_budget_makes_large_decodes_take_turns_and_refuses_what_cannot_fit():
    budget = memory.MemoryBudget(100 * memory.MB)
    with budget.reserve(60 * memory.MB):
        assert budget.free == 40 * memory.MB
    assert budget.free == budget.total
    with pytest.raises(ImageError) as e:
        with budget.reserve(101 * memory.MB, "huge.png"):
            pass
    assert e.value.reason == "image too large" and "mem_mb" in str(e.value) and "huge.png" in str(e.value)
    # a 16-bit image of 8000 x 12000 needs about 8000 * 12000 * 6 bytes: refused under a 300 MB budget
    buf = io.BytesIO()
    Image.new("I;16", (12000, 8000)).save(buf, "PNG")
    need, w, h = memory.decode_need(buf.getvalue())
    assert (w, h) == (12000, 8000) and 500 * memory.MB < need < 700 * memory.MB


def test_an_image_over_the_jobs_memory_is_counted_not_decoded(tmp_path):
    folder = make_export(tmp_path / "e", n=4)
    buf = io.BytesIO()
    Image.new("L", (6000, 5000), 250).save(buf, "PNG")
    (folder / "img" / "1.jpg").write_bytes(buf.getvalue())
    try:  # a job whose mem_mb leaves the least budget there is (64 MB): the 30-Mpixel image needs ~250 MB
        _, sel = run_read(folder, tmp_path / "out", tmp_path / "cache", mem_mb=1)
    finally:
        memory.set_budget(None)
    row = sel.ledger.set_index("object_id").loc["o1"]
    assert row["outcome"] == "image_too_large" and "mem_mb" in row["detail"]


@pytest.mark.slow
def test_read_export_stays_under_its_mem_mb_with_huge_images(tmp_path):
    """Three 100-Mpixel RGBA images (700 MB each to decode), two threads, mem_mb 1400: the decodings
    take turns, and the job's peak memory (VmHWM, in a child process) stays under mem_mb."""
    import subprocess
    import sys

    folder = tmp_path / "e"
    (folder / "img").mkdir(parents=True)
    a = np.full((10_000, 10_000, 4), 250, np.uint8)
    a[4000:6000, 4000:6000, :3] = 30
    buf = io.BytesIO()
    Image.fromarray(a, "RGBA").save(buf, "PNG", compress_level=1)
    del a
    lines = ["img_file_name\tobject_id\tobject_annotation_status\tobject_annotation_category"]
    for k in range(3):
        (folder / "img" / f"{k}.png").write_bytes(buf.getvalue())
        lines.append(f"img/{k}.png\to{k}\tvalidated\tA")
    (folder / "ecotaxa_x.tsv").write_text("\n".join(lines) + "\n")
    code = f"""
import sys; sys.path.insert(0, {str(pytest.importorskip('lokiml').__path__[0] + '/..')!r})
from lokiml import pipeline
from lokiml.logs import peak_rss_mb
sel = pipeline.read_export({str(folder)!r}, {str(tmp_path / 'objects.tsv')!r}, {str(tmp_path / 'ledger.tsv')!r},
                           ["A", "B"], threads=2, mem_mb=1400, manifest_out={str(tmp_path / 'images.tsv')!r})
print(list(sel.ledger["outcome"]), peak_rss_mb())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    outcomes, peak = out.stdout.strip().rsplit(" ", 1)
    assert outcomes == "['used', 'used', 'used']", out.stdout
    assert float(peak) < 1400, f"peak {peak} MB"
