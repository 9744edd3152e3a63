"""The normalised image store: shards written by normalise_shard, read back by Store."""

import io

import numpy as np
import pandas as pd
from PIL import Image

from lokiml.store import NormParams, Store, normalise_item, normalise_shard, shard_of


def _jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    img = np.full((80, 120), 240, np.uint8)
    y, x = int(rng.integers(10, 50)), int(rng.integers(10, 80))
    img[y:y + 20, x:x + 30] = int(rng.integers(20, 120))
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=90)
    return buf.getvalue()


FILES = {f"img/{k}.jpg": _jpeg(k) for k in range(5)}
FILES["img/broken.jpg"] = FILES["img/0.jpg"][:200]


def _items():
    rows = [(f"o{k}", f"img/{k}.jpg", 0, 0.0, 0.0, 0.0) for k in range(5)]
    rows += [("o1#aug0001", "img/1.jpg", 1, 30.0, 0.05, 0.0), ("o9", "img/broken.jpg", 0, 0.0, 0.0, 0.0),
             ("o8", "img/missing.jpg", 0, 0.0, 0.0, 0.0)]
    return pd.DataFrame(rows, columns=["item_id", "image_ref", "flip", "angle", "dx", "dy"]).sample(frac=1, random_state=1)


def _write(tmp_path, name, cache=None, threads=2):
    p = NormParams(size=32)
    npy, idx = tmp_path / f"{name}.npy", tmp_path / f"{name}.tsv"
    index = normalise_shard(_items(), FILES.__getitem__, p, npy, idx, threads=threads, cache_dir=cache)
    return p, npy, idx, index


def test_shard_holds_every_item_in_id_order_with_the_reason_of_each_failure(tmp_path):
    p, npy, idx, index = _write(tmp_path, "s")
    arr = np.load(npy)
    assert arr.shape == (8, 32, 32) and arr.dtype == np.uint8
    assert list(index["item_id"]) == sorted(_items()["item_id"]) and list(index["row"]) == list(range(8))
    status = dict(zip(index["item_id"], index["status"]))
    assert status["o9"].startswith(("truncated", "unreadable")), status["o9"]
    assert status["o8"].startswith("missing_image")
    assert sum(s == "ok" for s in status.values()) == 6
    for item, ref, flip, angle, dx, dy in _items().itertuples(index=False):
        row = int(index.set_index("item_id").at[item, "row"])
        if status[item] == "ok":
            np.testing.assert_array_equal(arr[row], normalise_item(FILES[ref], ref, p, flip, angle, dx, dy))
        else:
            assert not arr[row].any()
    # the augmented copy differs from its original
    rows = index.set_index("item_id")["row"]
    assert not np.array_equal(arr[rows["o1"]], arr[rows["o1#aug0001"]])


def test_content_cache_gives_the_same_shard_byte_for_byte(tmp_path, caplog):
    cache = tmp_path / "cache"
    _, npy1, _, _ = _write(tmp_path, "first", cache=cache)
    caplog.clear()
    with caplog.at_level("INFO"):
        _, npy2, _, _ = _write(tmp_path, "second", cache=cache, threads=1)
    assert npy1.read_bytes() == npy2.read_bytes()
    assert any("8 items, 6 from cache" in r.getMessage() for r in caplog.records)


def test_store_gathers_items_across_shards_in_the_order_asked(tmp_path):
    p = NormParams(size=32)
    items = _items()
    items = items[~items["item_id"].isin(["o8", "o9"])]
    npys, idxs = [], []
    for k in range(2):
        mine = items[[shard_of(i, 2) == k for i in items["item_id"]]]
        npys.append(tmp_path / f"shard{k}.npy")
        idxs.append(tmp_path / f"shard{k}.tsv")
        normalise_shard(mine, FILES.__getitem__, p, npys[-1], idxs[-1])
    store = Store(npys, idxs)
    ask = ["o4", "o1#aug0001", "o0", "o3"]
    got = store.gather(ask)
    ref = items.set_index("item_id")
    for k, item in enumerate(ask):
        r = ref.loc[item]
        np.testing.assert_array_equal(got[k], normalise_item(FILES[r["image_ref"]], r["image_ref"], p, r["flip"],
                                                             r["angle"], r["dx"], r["dy"]))
    assert store.ok(ask).all() and store.size == 32


def test_items_with_a_content_key_are_found_in_the_cache_without_reading_their_image(tmp_path):
    p = NormParams(size=32)
    items = _items()
    items = items[~items["item_id"].isin(["o8", "o9"])].assign(image_key=lambda d: "key-" + d["image_ref"])
    reads = []

    def read(ref):
        reads.append(ref)
        return FILES[ref]

    first = normalise_shard(items, read, p, tmp_path / "a.npy", tmp_path / "a.tsv", cache_dir=tmp_path / "c")
    assert len(reads) == len(items) and (first["status"] == "ok").all()
    reads.clear()
    normalise_shard(items, read, p, tmp_path / "b.npy", tmp_path / "b.tsv", cache_dir=tmp_path / "c")
    assert reads == []  # every image came from the cache by its key
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "b.npy").read_bytes()


def test_a_rerun_takes_its_images_from_the_last_shard_without_reading_files(tmp_path, caplog):
    """The last shard written under a name is kept in the cache (a hard link): a data update takes its
    unchanged images from it, a row each, and normalises only the new ones."""
    p = NormParams(size=32)
    items = _items()
    items = items[~items["item_id"].isin(["o8", "o9"])].assign(image_key=lambda d: "key-" + d["image_ref"])
    out = tmp_path / "results" / "32px"
    normalise_shard(items, FILES.__getitem__, p, out / "shard0.npy", out / "shard0.tsv", cache_dir=tmp_path / "c")
    first = np.load(out / "shard0.npy")
    # the per-image files are gone: only the kept shard can give them now
    for f in (tmp_path / "c").rglob("??/*.npy"):
        f.unlink()
    (out / "shard0.npy").unlink()  # as Snakemake deletes an output before its job runs again
    new = pd.DataFrame([("o7", "img/4.jpg", 1, 10.0, 0.0, 0.0, "key-img/4.jpg")], columns=items.columns)
    reads = []
    normalise_shard(pd.concat([items, new]), lambda ref: reads.append(ref) or FILES[ref], p, out / "shard0.npy",
                    out / "shard0.tsv", cache_dir=tmp_path / "c")
    assert reads == ["img/4.jpg"]  # only the new item's image was read
    second = np.load(out / "shard0.npy")
    index = pd.read_csv(out / "shard0.tsv", sep="\t").set_index("item_id")
    old_rows = [i for i in sorted(items["item_id"])]
    np.testing.assert_array_equal(second[index.loc[old_rows, "row"].to_numpy()], first)
