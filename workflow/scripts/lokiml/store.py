"""The normalised image store: uint8 arrays in shards, one per (image size, shard).

Each shard is a ``.npy`` file of shape (n, size, size), dtype uint8, read by
training through a memory map, and a ``.tsv`` index with one row per item
(``item_id``, ``row`` in the array, ``status``: ``ok`` or the reason the image
could not be normalised). Items are assigned to shards by a stable hash of
their id, so adding objects does not move the others.

An optional content cache (``cache_dir``) keeps each normalised image under a
key made of the image bytes' hash and the normalisation parameters, so that
after a data update only new images are decoded and normalised again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import images
from .config import params_hash
from .io import atomic_path, write_tsv
from .logs import Progress

log = logging.getLogger(__name__)


def shard_of(item_id: str, shards: int) -> int:
    return zlib.crc32(item_id.encode("utf-8")) % shards


@dataclass(frozen=True)
class NormParams:
    size: int
    threshold: int = 245
    polarity: str = "dark"
    bottom_crop: float = 0.0
    max_pixels: int = 100_000_000
    canvas: int | None = None  # scale-preserving canvas in pixels (normalise.canvas); None: the object's own square

    def key(self) -> str:
        # v2: colour JPEGs are decoded straight to luma (lokiml.images.decode_grey), which differs
        # from the v1 route by a fraction of a grey level; their cached images are made again.
        # canvas enters the key only when set, so that caches made before it existed stay valid.
        d = {k: v for k, v in self.__dict__.items() if not (k == "canvas" and v is None)}
        return params_hash({"v": 2, **d})


def normalise_item(data: bytes, name: str, p: NormParams, flip=0, angle=0.0, dx=0.0, dy=0.0) -> np.ndarray:
    img = images.decode_grey(data, name, max_pixels=p.max_pixels)
    if p.bottom_crop:
        # Cut the scale bar before augmenting, so that a rotation never carries it into the object's box.
        h = img.shape[0]
        img = img[: max(1, int(round(h * (1.0 - p.bottom_crop))))]
    if int(flip) or float(angle) or float(dx) or float(dy):
        img = images.augment(img, bool(int(flip)), float(angle), float(dx), float(dy))
    return images.normalise(img, p.size, threshold=p.threshold, polarity=p.polarity, bottom_crop=0.0,
                            canvas=p.canvas)


def normalise_shard(items: pd.DataFrame, read_bytes, params: NormParams, out_npy, out_index,
                    threads: int = 1, cache_dir=None) -> pd.DataFrame:
    """Normalise ``items`` (item_id, image_ref, flip, angle, dx, dy) into one shard.

    ``read_bytes(image_ref) -> bytes`` reads an image from the export.
    Returns the index table that was written.
    """
    items = items.sort_values("item_id", kind="stable").reset_index(drop=True)
    n = len(items)
    size = params.size
    pkey = params.key()
    cache = Path(cache_dir) / pkey if cache_dir else None
    progress = Progress(n, f"normalise {size}px", log)
    status = np.full(n, "ok", dtype=object)
    hits = 0

    def work(i):
        row = items.iloc[i]
        try:
            data = read_bytes(row["image_ref"])
        except Exception as exc:  # noqa: BLE001
            return i, None, f"missing_image: {exc}", False
        ckey = None
        if cache is not None:
            h = hashlib.sha1(data)
            h.update(f"|{row['flip']}|{row['angle']}|{row['dx']}|{row['dy']}".encode())
            ckey = h.hexdigest()
            path = cache / ckey[:2] / f"{ckey}.npy"
            if path.exists():
                try:
                    arr = np.load(path)
                    if arr.shape == (size, size) and arr.dtype == np.uint8:
                        return i, arr, None, True
                except (OSError, ValueError):
                    pass
        try:
            arr = normalise_item(data, row["image_ref"], params, row["flip"], row["angle"], row["dx"], row["dy"])
        except images.ImageError as exc:
            return i, None, f"{exc.reason.replace(' ', '_')}: {exc}", False
        if ckey is not None:
            path = cache / ckey[:2] / f"{ckey}.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npy")
            np.save(tmp, arr)
            os.replace(tmp, path)
        return i, arr, None, False

    blank = np.zeros((size, size), dtype=np.uint8)
    with atomic_path(out_npy, suffix=".npy") as tmp, open(tmp, "wb") as out:
        # Written front to back as the images come (pool.map keeps their order), not through a
        # memory map of the whole shard: a map's dirty pages count as the job's resident memory,
        # which then grew with the shard (284 MB per job at 100 000 objects, 99 MB at 10 000).
        np.lib.format.write_array_header_1_0(
            out, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
                  "shape": (n, size, size)})
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            for i, arr, err, hit in pool.map(work, range(n)):
                if err:
                    status[i] = err
                    out.write(blank.tobytes())
                    log.warning("item %s (%s): %s", items.at[i, "item_id"], items.at[i, "image_ref"], err)
                else:
                    out.write(np.ascontiguousarray(arr, dtype=np.uint8).tobytes())
                    hits += hit
                progress.update()
    index = pd.DataFrame({"item_id": items["item_id"], "row": np.arange(n), "status": status})
    write_tsv(out_index, index)
    bad = int((status != "ok").sum())
    log.info("shard written: %d items, %d from cache, %d could not be normalised", n, hits, bad)
    return index


def batches_ahead(store, item_ids, batch_size: int):
    """``(start, images)`` for consecutive batches of ``item_ids`` read with ``store.gather``.

    The next batch is read while the caller works on the current one (a model predicting it).
    """
    item_ids = list(item_ids)
    starts = list(range(0, len(item_ids), batch_size))
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(store.gather, item_ids[0:batch_size]) if starts else None
        for j, start in enumerate(starts):
            x = future.result()
            if j + 1 < len(starts):
                future = pool.submit(store.gather, item_ids[starts[j + 1]:starts[j + 1] + batch_size])
            yield start, x


class Store:
    """Read access to all shards of one image size."""

    def __init__(self, npys, indexes):
        self.arrays = [np.load(p, mmap_mode="r") for p in npys]
        frames = []
        for k, path in enumerate(indexes):
            df = pd.read_csv(path, sep="\t", dtype={"item_id": str, "status": str}, keep_default_na=False)
            df["shard"] = k
            frames.append(df)
        self.index = pd.concat(frames, ignore_index=True).set_index("item_id")

    @property
    def size(self) -> int:
        return int(self.arrays[0].shape[1])

    def ok(self, item_ids) -> np.ndarray:
        st = self.index.reindex(item_ids)["status"]
        return (st == "ok").to_numpy()

    def locate(self, item_ids) -> tuple[np.ndarray, np.ndarray]:
        loc = self.index.loc[list(item_ids)]
        return loc["shard"].to_numpy(), loc["row"].to_numpy()

    def gather(self, item_ids) -> np.ndarray:
        shard, row = self.locate(item_ids)
        out = np.empty((len(shard), self.size, self.size), dtype=np.uint8)
        for k in np.unique(shard):
            sel = shard == k
            rows = row[sel]
            order = np.argsort(rows)
            block = self.arrays[k][rows[order]]
            tmp = np.empty_like(block)
            tmp[order] = block
            out[sel] = tmp
        return out
