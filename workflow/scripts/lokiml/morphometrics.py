"""Morphometric descriptors measured on the images themselves (scikit-image), for exports that carry none.

ZooProcess, the LOKI software and EcoTaxa's own pipelines write ``object_*`` descriptors (area, grey
levels, axes, ...) next to each image; UVP vignettes, FlowCam or plain image folders often come without
them, and the descriptor baseline then had nothing to learn from. This module measures a comparable set
on the **original** image (full resolution, not the normalised square of the CNNs):

1. the image is decoded to 8-bit grey (:func:`lokiml.images.decode_grey`, the decoder of the rest of the
   workflow) and the bottom ``bottom_crop`` of its height is cut (burnt-in scale bars), exactly as the
   normalisation does (config ``normalise:``);
2. object pixels are thresholded as the normalisation does: darker than ``threshold`` for dark objects
   (ZooScan, LOKI, FlowCam), brighter than ``255 - threshold`` for light ones (UVP); ``auto`` decides per
   image from the median of its border (:func:`lokiml.images.detect_polarity`);
3. the object is the largest 8-connected component of object pixels (ZooProcess's choice too); specks
   and a scale bar that the crop missed are counted (``morpho_components``) but not measured;
4. ``skimage.measure.regionprops`` measures its shape and, on the *contrast* image (how far each pixel is
   from the background: ``background - grey`` for dark objects, ``grey - background`` for light ones,
   so that both polarities give the same sign), its grey levels and intensity-weighted moments.

The descriptors (:data:`FEATURES`, every column prefixed ``morpho_``) are in pixels (no scale is
assumed: exports state it in different ways, when at all) and invariant to rotation and reflection,
because a plankter lies in any orientation: area (object, filled, convex hull), perimeter (and Crofton's
estimate), equivalent diameter, major/minor axes of the fitted ellipse, elongation, eccentricity,
solidity, circularity, maximum and minimum Feret (caliper) diameters, holes, Euler number, skeleton
length, the seven Hu moments of the shape and of the contrast, and grey statistics of the object
(mean, spread, percentiles, skewness, kurtosis, entropy, integrated contrast). An image without any
object pixel is measured as ``no_object`` (every descriptor missing: the classifiers take missing
values as they are).

Work is done by rule ``compute_morphometrics`` in shards (a job per shard, threads inside, never a job
per image) with progress in its log, and cached per image by content (:func:`measure_items`): the key is
the SHA-1 of the image's bytes and the measuring parameters, so a data update measures only new images.

Public functions for other modules (prediction on new images): :class:`MorphoParams`,
:func:`measure_image`, :func:`measure_items`, :func:`read_morphometrics`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import images
from .config import params_hash
from .errors import InputError
from .io import write_tsv
from .logs import Progress

log = logging.getLogger(__name__)

PREFIX = "morpho_"
#: Version of the measurement: part of the cache key, raised whenever a value would change.
VERSION = 1
#: Names of the descriptors, in the order of :func:`measure_image`'s vector (without the prefix).
NAMES = (
    # shape of the largest component
    "area", "area_filled", "area_convex", "area_holes", "perimeter", "perimeter_crofton",
    "equivalent_diameter", "major_axis", "minor_axis", "elongation", "eccentricity", "solidity",
    "circularity", "feret_max", "feret_min", "feret_ratio", "euler_number", "skeleton_length",
    "hu1", "hu2", "hu3", "hu4", "hu5", "hu6", "hu7",
    # grey levels of its pixels, as contrast to the background (0 = background, 255 = fully dark/light)
    "contrast_mean", "contrast_std", "contrast_min", "contrast_max", "contrast_median", "contrast_p10",
    "contrast_p25", "contrast_p75", "contrast_p90", "contrast_skewness", "contrast_kurtosis",
    "contrast_entropy", "contrast_integrated", "background",
    "weighted_hu1", "weighted_hu2", "weighted_hu3", "weighted_hu4", "weighted_hu5", "weighted_hu6",
    "weighted_hu7",
    # the other object pixels of the image
    "components", "area_all_components", "largest_share",
)
FEATURES = tuple(PREFIX + n for n in NAMES)
STATUSES = {
    "ok": "measured",
    "no_object": "no pixel passes the threshold: every descriptor missing",
    "no_image": "the object has no image in the export",
}
# Components smaller than this (pixels) are JPEG specks, not counted in morpho_components.
SPECK = 4


@dataclass(frozen=True)
class MorphoParams:
    """How objects are cut out of their images: the normalisation's settings (config ``normalise:``)."""

    threshold: int = 245
    polarity: str = "dark"
    bottom_crop: float = 0.0
    max_pixels: int = 100_000_000

    def __post_init__(self):
        if self.polarity not in images.POLARITIES:
            raise ValueError(f"polarity must be one of {images.POLARITIES}, got {self.polarity!r}")
        if not 0.0 <= float(self.bottom_crop) < 1.0:
            raise ValueError(f"bottom_crop must be in [0, 1), got {self.bottom_crop}")
        if not 1 <= int(self.threshold) <= 255:
            raise ValueError(f"threshold must be in [1, 255], got {self.threshold}")

    def key(self) -> str:
        """Cache key of the parameters that change a measurement (max_pixels only refuses images)."""
        return params_hash({"morphometrics": VERSION, "threshold": int(self.threshold), "polarity": self.polarity,
                            "bottom_crop": float(self.bottom_crop)})

    def as_dict(self) -> dict:
        return asdict(self)


def crop_bottom(img: np.ndarray, bottom_crop: float) -> np.ndarray:
    """Cut the bottom ``bottom_crop`` of the height, as the normalisation does (at least one row is kept)."""
    if not bottom_crop:
        return img
    h = img.shape[0]
    return img[: max(1, int(round(h * (1.0 - float(bottom_crop)))))]


def _hu_log(values) -> np.ndarray:
    """Hu moments span many orders of magnitude: -sign(h) log10|h| (0 stays 0), the usual scaling.

    The seventh changes sign with a mirror image (it tells a shape from its reflection): a plankter seen
    from its other side is the same plankter, so its magnitude only is kept.
    """
    v = np.asarray(values, dtype=np.float64).copy()
    v[6] = abs(v[6])
    out = np.zeros_like(v)
    nz = np.isfinite(v) & (v != 0)
    out[nz] = -np.sign(v[nz]) * np.log10(np.abs(v[nz]))
    out[~np.isfinite(v)] = np.nan
    return out


def _feret(mask: np.ndarray) -> tuple[float, float]:
    """(maximum, minimum) caliper diameter of a component, from the convex hull of its pixels' corners.

    Pixel corners (not centres) so that a line one pixel wide measures 1, not 0, and the hull is never
    degenerate. The minimum caliper width of a convex polygon is reached with one side flush against
    the caliper (rotating calipers): the smallest, over the hull's edges, of the largest distance of a
    vertex to that edge's line. scikit-image gives the maximum only (``feret_diameter_max``).
    """
    from scipy.spatial import ConvexHull

    # boundary pixels only: the interior never reaches the hull
    m = np.pad(mask, 1)
    interior = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    rows, cols = np.nonzero(mask & ~interior)
    pts = np.concatenate([np.stack([rows + dr, cols + dc], axis=1) for dr in (-0.5, 0.5) for dc in (-0.5, 0.5)])
    hull = pts[ConvexHull(pts).vertices]
    diff = hull[:, None, :] - hull[None, :, :]
    fmax = float(np.sqrt((diff ** 2).sum(-1)).max())
    edges = np.roll(hull, -1, axis=0) - hull
    lengths = np.hypot(edges[:, 0], edges[:, 1])
    keep = lengths > 0
    normals = np.stack([-edges[keep, 1], edges[keep, 0]], axis=1) / lengths[keep, None]
    # distance of every vertex (columns) to the line of every edge (rows)
    dist = np.abs(((hull[None, :, :] - hull[keep][:, None, :]) * normals[:, None, :]).sum(-1))
    fmin = float(dist.max(axis=1).min())
    return fmax, fmin


def _polarity(img: np.ndarray, polarity: str) -> str:
    return images.detect_polarity(img) if polarity == "auto" else polarity


def object_pixels(img: np.ndarray, threshold: int, polarity: str) -> tuple[np.ndarray, str]:
    """(mask of the object pixels, the polarity used): the normalisation's rule (:func:`lokiml.images.normalise`)."""
    polarity = _polarity(img, polarity)
    mask = img < threshold if polarity == "dark" else img > (255 - threshold)
    return mask, polarity


def measure_image(img: np.ndarray, threshold: int = 245, polarity: str = "dark") -> tuple[np.ndarray, str]:
    """Measure one grey image (``uint8 (H, W)``, already cropped): (vector in the order of :data:`FEATURES`, status).

    Status ``ok`` or ``no_object`` (no object pixel; the vector is all NaN).
    """
    from skimage import measure, morphology

    img = np.asarray(img)
    if img.ndim != 2 or img.dtype != np.uint8 or img.size == 0:
        raise ValueError(f"expected a grey uint8 image (H, W), got {img.dtype} {img.shape}")
    out = np.full(len(NAMES), np.nan)
    mask, polarity = object_pixels(img, threshold, polarity)
    if not mask.any():
        return out, "no_object"
    h, w = img.shape
    border = np.concatenate([img[0, :], img[-1, :], img[:, 0], img[:, -1]])
    border_mask = np.concatenate([mask[0, :], mask[-1, :], mask[:, 0], mask[:, -1]])
    bg_pixels = border[~border_mask]
    if bg_pixels.size == 0:  # the object fills the border: the image's non-object pixels, else the extreme grey
        bg_pixels = img[~mask]
    background = float(np.median(bg_pixels)) if bg_pixels.size else (255.0 if polarity == "dark" else 0.0)

    labels = measure.label(mask, connectivity=2)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    largest = int(sizes.argmax())
    rows = np.flatnonzero((labels == largest).any(axis=1))
    cols = np.flatnonzero((labels == largest).any(axis=0))
    # the component's box with a margin of one pixel (perimeters and hulls see the edge)
    r0, r1 = max(rows[0] - 1, 0), min(rows[-1] + 2, h)
    c0, c1 = max(cols[0] - 1, 0), min(cols[-1] + 2, w)
    comp = labels[r0:r1, c0:c1] == largest
    grey = img[r0:r1, c0:c1].astype(np.float64)
    contrast = (background - grey) if polarity == "dark" else (grey - background)
    contrast = np.clip(contrast, 0.0, 255.0)
    r = measure.regionprops(comp.astype(np.uint8), intensity_image=contrast)[0]

    v = dict.fromkeys(NAMES, np.nan)
    area = float(r.area)
    v["area"] = area
    v["area_filled"] = float(r.area_filled)
    v["area_convex"] = float(r.area_convex)
    v["area_holes"] = float(r.area_filled - r.area)
    v["perimeter"] = float(r.perimeter)
    v["perimeter_crofton"] = float(r.perimeter_crofton)
    v["equivalent_diameter"] = float(r.equivalent_diameter_area)
    v["major_axis"] = float(r.axis_major_length)
    v["minor_axis"] = float(r.axis_minor_length)
    v["elongation"] = v["major_axis"] / v["minor_axis"] if v["minor_axis"] > 0 else np.nan
    v["eccentricity"] = float(r.eccentricity)
    v["solidity"] = float(r.solidity)
    v["circularity"] = 4.0 * math.pi * area / v["perimeter"] ** 2 if v["perimeter"] > 0 else np.nan
    v["feret_max"], v["feret_min"] = _feret(comp)
    v["feret_ratio"] = v["feret_min"] / v["feret_max"] if v["feret_max"] > 0 else np.nan
    v["euler_number"] = float(r.euler_number)
    v["skeleton_length"] = float(morphology.skeletonize(r.image_filled).sum())
    for i, m in enumerate(_hu_log(r.moments_hu), start=1):
        v[f"hu{i}"] = float(m)
    vals = contrast[comp]
    q = np.percentile(vals, [10, 25, 50, 75, 90])
    v["contrast_mean"] = float(vals.mean())
    v["contrast_std"] = float(vals.std())
    v["contrast_min"] = float(vals.min())
    v["contrast_max"] = float(vals.max())
    v["contrast_median"] = float(q[2])
    v["contrast_p10"], v["contrast_p25"], v["contrast_p75"], v["contrast_p90"] = (float(q[0]), float(q[1]),
                                                                                  float(q[3]), float(q[4]))
    sd = vals.std()
    if sd > 0:  # scipy.stats.skew and kurtosis (Fisher, biased), computed directly: 10x faster on small objects
        z = (vals - vals.mean()) / sd
        v["contrast_skewness"] = float((z ** 3).mean())
        v["contrast_kurtosis"] = float((z ** 4).mean() - 3.0)
    else:
        v["contrast_skewness"] = v["contrast_kurtosis"] = 0.0
    hist = np.bincount(np.rint(vals).astype(np.int64), minlength=256).astype(np.float64)
    p = hist[hist > 0] / hist.sum()
    v["contrast_entropy"] = float(-(p * np.log2(p)).sum())
    v["contrast_integrated"] = float(vals.sum())
    v["background"] = background
    if vals.sum() > 0:
        for i, m in enumerate(_hu_log(r.moments_weighted_hu), start=1):
            v[f"weighted_hu{i}"] = float(m)
    v["components"] = float(int((sizes >= SPECK).sum()) or 1)
    v["area_all_components"] = float(mask.sum())
    v["largest_share"] = area / v["area_all_components"]
    out[:] = [v[n] for n in NAMES]
    return out, "ok"


def measure_bytes(data: bytes, name: str, params: MorphoParams) -> tuple[np.ndarray, str]:
    """Decode, crop and measure one image's bytes. Raises :class:`lokiml.images.ImageError` for a bad image."""
    img = images.decode_grey(data, name, max_pixels=params.max_pixels)
    img = crop_bottom(img, params.bottom_crop)
    return measure_image(img, params.threshold, params.polarity)


def measure_items(items: pd.DataFrame, read_bytes, params: MorphoParams, threads: int = 1, cache_dir=None,
                  what: str = "morphometrics") -> pd.DataFrame:
    """Measure the image of every row of ``items`` (columns ``object_id``, ``image_ref``).

    ``read_bytes(image_ref) -> bytes``. Returns one row per item, in the order given: ``object_id``,
    ``morpho_status`` (a key of :data:`STATUSES`, or ``<image error>: <message>`` for an image that cannot
    be read) and the :data:`FEATURES` (NaN where not measured). A failure of one image never stops the
    others: it is logged and recorded in its status.
    """
    n = len(items)
    refs = items["image_ref"].astype(str).to_numpy()
    cache = Path(cache_dir) / params.key() if cache_dir else None
    values = np.full((n, len(FEATURES)), np.nan)
    status = np.full(n, "ok", dtype=object)
    progress = Progress(n, what, log)
    hits = 0

    def work(i):
        ref = refs[i]
        if not ref.strip():
            return i, None, "no_image", False
        try:
            data = read_bytes(ref)
        except Exception as exc:  # noqa: BLE001 - a missing image is recorded, never fatal
            return i, None, f"missing_image: {exc}", False
        path = None
        if cache is not None:
            digest = hashlib.sha1(data).hexdigest()
            path = cache / digest[:2] / f"{digest}.npy"
            if path.exists():
                try:
                    rec = np.load(path, allow_pickle=False)
                    if rec.shape == (len(FEATURES) + 1,):
                        return i, rec[1:], ("ok" if rec[0] == 0 else "no_object"), True
                except (OSError, ValueError):
                    pass
        try:
            vec, st = measure_bytes(data, ref, params)
        except images.ImageError as exc:
            return i, None, f"{exc.reason.replace(' ', '_')}: {exc}", False
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            # a name of its own per process and thread, then an atomic rename: parallel jobs may meet here
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp.npy")
            np.save(tmp, np.concatenate([[0.0 if st == "ok" else 1.0], vec]), allow_pickle=False)
            os.replace(tmp, path)
        return i, vec, st, False

    with ThreadPoolExecutor(max_workers=max(1, int(threads))) as pool:
        for i, vec, st, hit in pool.map(work, range(n)):
            status[i] = st
            hits += hit
            if vec is not None:
                values[i] = vec
            elif st != "no_image":
                log.warning("object %s (%s): %s", items["object_id"].iat[i], refs[i], st)
            progress.update()
    table = pd.DataFrame(values, columns=list(FEATURES))
    table.insert(0, "morpho_status", status)
    table.insert(0, "object_id", items["object_id"].astype(str).to_numpy())
    counts = pd.Series(status).map(lambda s: s.split(":")[0]).value_counts()
    log.info("%s: %d objects, %d from the cache; %s", what, n, hits,
             ", ".join(f"{k} {v}" for k, v in counts.items()) or "none")
    return table


def compute_morphometrics(export_path, balanced_path, out_tsv, shard: int, shards: int, threshold: int = 245,
                          polarity: str = "dark", bottom_crop: float = 0.0, max_pixels: int = 100_000_000,
                          threads: int = 1, cache_dir=None) -> pd.DataFrame:
    """Rule compute_morphometrics: the descriptors of one shard of the original objects of ``balanced.tsv``.

    Objects are sharded like the normalised images (a stable hash of the id, :func:`lokiml.store.shard_of`),
    so a data update leaves each object in its shard. Augmented copies are not measured: they are altered
    images of their original and have no descriptors of their own.
    """
    from .ecotaxa import open_export
    from .io import read_tsv
    from .store import shard_of

    balanced = read_tsv(balanced_path)
    originals = balanced[balanced["augmented"].astype(int) == 0]
    originals = originals.drop_duplicates("object_id").sort_values("object_id", kind="stable")
    mine = originals[[shard_of(o, shards) == shard for o in originals["object_id"]]].reset_index(drop=True)
    params = MorphoParams(threshold=threshold, polarity=polarity, bottom_crop=bottom_crop, max_pixels=max_pixels)
    log.info("shard %d/%d: %d of %d original objects; threshold %d, polarity %s, bottom_crop %g", shard, shards,
             len(mine), len(originals), threshold, polarity, bottom_crop)
    if "image_ref" not in mine.columns:
        mine = mine.assign(image_ref="")
    if mine["image_ref"].astype(str).str.strip().eq("").all():
        table = measure_items(mine, None, params, threads, what=f"morphometrics shard {shard}")
    else:
        with open_export(export_path) as export:
            table = measure_items(mine, export.read_image_by_ref, params, threads, cache_dir,
                                  what=f"morphometrics shard {shard}")
    write_tsv(out_tsv, table, float_format="%.6g")
    return table


def read_morphometrics(paths) -> pd.DataFrame:
    """The shards of rule compute_morphometrics as one table (``object_id``, ``morpho_status``, features as text)."""
    from .io import read_tsv

    frames = [read_tsv(p) for p in paths]
    if not frames:
        return pd.DataFrame(columns=["object_id", "morpho_status", *FEATURES])
    table = pd.concat(frames, ignore_index=True)
    missing = [c for c in ("object_id", "morpho_status", *FEATURES) if c not in table.columns]
    if missing:
        raise InputError(paths[0], f"missing morphometric column(s) {missing[:5]}",
                         hint="written by an older version: rerun rule compute_morphometrics")
    return table.drop_duplicates("object_id").reset_index(drop=True)
