"""The normalised image store: uint8 arrays in shards, one per (image size, shard).

Each shard is a ``.npy`` file of shape (n, size, size), dtype uint8, read by
training through a memory map, and a ``.tsv`` index with one row per item
(``item_id``, ``row`` in the array, ``status``: ``ok`` or the reason the image
could not be normalised). Items are assigned to shards by a stable hash of
their id, so adding objects does not move the others.

An optional content cache (``cache_dir``) keeps each normalised image under a
key made of the image's content key (the SHA-1 of its bytes, which read_export
records as ``image_key``), its augmentation and the normalisation parameters,
so that after a data update only new or changed images are read, decoded and
normalised again.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import images, memory
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
        # v3: images larger than the target are shrunk before they are centred (lokiml.images.square),
        # and cached images are found by the content key of their image (image_key).
        # canvas enters the key only when set.
        d = {k: v for k, v in self.__dict__.items() if not (k == "canvas" and v is None)}
        return params_hash({"v": 3, **d})


def normalise_item(data: bytes, name: str, p: NormParams, flip=0, angle=0.0, dx=0.0, dy=0.0) -> np.ndarray:
    """Decode, (augment,) and normalise one image, within this process's memory budget (lokiml.memory)."""
    with memory.reserved(data, name):
        return _normalise_item(data, name, p, flip, angle, dx, dy)


def _normalise_item(data: bytes, name: str, p: NormParams, flip, angle, dx, dy) -> np.ndarray:
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
    """Normalise ``items`` (item_id, image_ref, flip, angle, dx, dy; optionally image_key) into one shard.

    ``read_bytes(image_ref) -> bytes`` reads an image from the export. With ``cache_dir``, an item
    whose ``image_key`` (the SHA-1 of its image's bytes, from read_export) is in the cache is not
    read at all; without a key, the image is read and hashed to look it up. The cache holds the last
    shard written under this name (a hard link to it, read a row at a time) and each image
    normalised since, one file each.
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
    image_keys = items["image_key"].fillna("").astype(str).tolist() if "image_key" in items else [""] * n
    rows = list(zip(items["image_ref"], items["flip"], items["angle"], items["dx"], items["dy"], image_keys))
    ckeys = [_cache_key(image_key, flip, angle, dx, dy) if image_key else ""
             for _, flip, angle, dx, dy, image_key in rows]
    pack = _Pack.open(cache, out_npy, size) if cache is not None else None

    def cached(ckey):
        if pack is not None:
            arr = pack.get(ckey)
            if arr is not None:
                return arr
        path = cache / ckey[:2] / f"{ckey}.npy"
        try:
            arr = np.load(path)
        except (OSError, ValueError):
            return None
        return arr if arr.shape == (size, size) and arr.dtype == np.uint8 else None

    def work(i):
        image_ref, flip, angle, dx, dy, image_key = rows[i]
        ckey = ckeys[i]
        if cache is not None and ckey:
            # The content key read_export computed: a cached image is found without reading the file.
            arr = cached(ckey)
            if arr is not None:
                return i, arr, None, True
        try:
            data = read_bytes(image_ref)
        except Exception as exc:  # noqa: BLE001
            return i, None, f"{getattr(exc, 'reason', 'missing_image')}: {exc}", False
        if cache is not None and not image_key:
            h = hashlib.sha1(data)
            h.update(f"|{flip}|{angle}|{dx}|{dy}".encode())
            ckey = ckeys[i] = h.hexdigest()
            arr = cached(ckey)
            if arr is not None:
                return i, arr, None, True
        try:
            arr = normalise_item(data, image_ref, params, flip, angle, dx, dy)
        except images.ImageError as exc:
            return i, None, f"{exc.reason.replace(' ', '_')}: {exc}", False
        if cache is not None:
            path = cache / ckey[:2] / f"{ckey}.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp.npy")
            np.save(tmp, arr)
            os.replace(tmp, path)
        return i, arr, None, False

    blank = np.zeros((size, size), dtype=np.uint8)
    try:
        with atomic_path(out_npy, suffix=".npy") as tmp, open(tmp, "wb") as out:
            # Written front to back as the images come (in order), not through a memory map of the whole
            # shard: a map's dirty pages count as the job's resident memory, which then grew with the
            # shard (284 MB per job at 100 000 objects, 99 MB at 10 000).
            np.lib.format.write_array_header_1_0(
                out, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
                      "shape": (n, size, size)})
            with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
                for i, arr, err, hit in ordered_map(pool, work, range(n), window=8 * max(1, threads)):
                    if err:
                        status[i] = err
                        ckeys[i] = ""
                        out.write(blank.tobytes())
                        log.warning("item %s (%s): %s", items.at[i, "item_id"], items.at[i, "image_ref"], err)
                    else:
                        out.write(np.ascontiguousarray(arr, dtype=np.uint8).tobytes())
                        hits += hit
                    progress.update()
    finally:
        if pack is not None:
            pack.close()
    if cache is not None:
        _Pack.save(cache, out_npy, ckeys)
    index = pd.DataFrame({"item_id": items["item_id"], "row": np.arange(n), "status": status})
    write_tsv(out_index, index)
    bad = int((status != "ok").sum())
    log.info("shard written: %d items, %d from cache, %d could not be normalised", n, hits, bad)
    return index


def _cache_key(image_key, flip, angle, dx, dy) -> str:
    return hashlib.sha1(f"key:{image_key}|{flip}|{angle}|{dx}|{dy}".encode()).hexdigest()


class _Pack:
    """The last shard written under a name, kept in the cache as a hard link with the cache key of each row.

    A data update then finds most of its images there, a row read each (``os.pread``: nothing mapped,
    so the job's memory does not grow with the shard), instead of loading one file per image.
    """

    def __init__(self, fd: int, rows: dict[str, int], offset: int, size: int):
        self.fd, self.rows, self.offset, self.size = fd, rows, offset, size

    @staticmethod
    def paths(cache: Path, out_npy):
        name = f"shard-{Path(out_npy).parent.name}-{Path(out_npy).stem}"
        return cache / f"{name}.npy", cache / f"{name}.keys"

    @classmethod
    def open(cls, cache: Path, out_npy, size: int):
        npy, keys = cls.paths(cache, out_npy)
        try:
            with open(keys, encoding="utf-8") as f:
                head = f.readline().split()
                rows = {k: i for i, k in enumerate(line.rstrip("\n") for line in f) if k}
            fd = os.open(npy, os.O_RDONLY)
        except OSError:
            return None
        st = os.fstat(fd)
        with os.fdopen(os.dup(fd), "rb") as f:
            try:
                version = np.lib.format.read_magic(f)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read_header(f)
                offset = f.tell()
            except ValueError:
                shape, dtype, offset = None, None, 0
        if head != [f"inode={st.st_ino}", f"bytes={st.st_size}"] or dtype != np.uint8 or shape is None \
                or tuple(shape[1:]) != (size, size) or len(shape) != 3:
            os.close(fd)
            return None
        return cls(fd, rows, offset, size)

    def get(self, ckey: str):
        row = self.rows.get(ckey)
        if row is None:
            return None
        n = self.size * self.size
        data = os.pread(self.fd, n, self.offset + row * n)
        return np.frombuffer(data, dtype=np.uint8).reshape(self.size, self.size) if len(data) == n else None

    def close(self):
        os.close(self.fd)

    @classmethod
    def save(cls, cache: Path, out_npy, ckeys) -> None:
        """Link the shard just written into the cache, with its rows' keys (the keys name the linked file)."""
        npy, keys = cls.paths(cache, out_npy)
        cache.mkdir(parents=True, exist_ok=True)
        tmp = npy.with_name(f".{npy.name}.{os.getpid()}.tmp")
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            os.link(out_npy, tmp)
        except OSError as e:  # the cache on another filesystem: keep the one-file-per-image cache only
            log.info("shard not kept in the cache (%s); images stay cached one file each", e)
            return
        st = os.stat(tmp)
        with atomic_path(keys, suffix=".keys") as tk:
            tk.write_text(f"inode={st.st_ino} bytes={st.st_size}\n" + "".join(f"{k}\n" for k in ckeys),
                          encoding="utf-8")
        os.replace(tmp, npy)


def ordered_map(pool, fn, items, window: int):
    """``pool.map(fn, items)`` with at most ``window`` results waiting: memory stays bounded.

    ``Executor.map`` submits every item at once, and the results that finish before the one the
    caller waits for pile up: with one slow image at the head, thousands of large normalised images.
    """
    from collections import deque

    pending = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


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
