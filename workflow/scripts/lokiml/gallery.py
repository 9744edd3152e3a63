"""Image galleries for the report: example images of each class, raw and normalised, and the images of
objects evaluated without images (descriptor experiments).

The class gallery is the only way to judge the normalisation settings by eye: for a few objects of
each class it shows the image as exported (with the box that ``normalise.threshold`` and
``normalise.polarity`` crop it to, and the ``bottom_crop`` line) next to the normalised image the
networks see. A threshold that is too strict cuts faint appendages off; a wrong polarity crops to
the background; a scale bar left in place stretches the box.
"""

from __future__ import annotations

import hashlib
import logging
import re

import numpy as np
import pandas as pd

from . import images
from .ecotaxa import open_export
from .errors import InputError
from .io import read_tsv
from .store import NormParams, normalise_item

log = logging.getLogger(__name__)

PER_CLASS = 6  # example objects per class
RAW_SIDE = 256  # raw images are shrunk to at most this many pixels a side (the figure is a few inches)


def pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


STYLE = {"svg.hashsalt": "lokiml", "font.family": "DejaVu Sans", "font.size": 9}


def shorten(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters: the middle replaced by an ellipsis (object ids keep both ends)."""
    text = str(text)
    if len(text) <= width:
        return text
    head = (width - 1) // 2
    return text[:head] + "…" + text[len(text) - (width - 1 - head):]


def wrap(text: str, width: int, lines: int = 2) -> str:
    """``text`` on at most ``lines`` lines of at most ``width`` characters (the last one shortened).

    Lines break after a space or an underscore (experiment and class names are snake_case), inside a
    word only when a word alone is too long.
    """
    tokens = [t for t in re.split(r"(?<=[ _])", str(text)) if t]
    parts, cur = [], ""
    for tok in tokens:
        while len(tok) > width:  # a word longer than a line
            if cur:
                parts.append(cur)
                cur = ""
            parts.append(tok[:width])
            tok = tok[width:]
        if len(cur) + len(tok.rstrip()) > width and cur:
            parts.append(cur)
            cur = ""
        cur += tok
    if cur or not parts:
        parts.append(cur)
    parts = [p.rstrip() for p in parts]
    if len(parts) > lines:
        parts = parts[: lines - 1] + [shorten("".join(parts[lines - 1:]), width)]
    return "\n".join(parts)


def choose_examples(split_table: pd.DataFrame, classes, per_class: int = PER_CLASS) -> pd.DataFrame:
    """Up to ``per_class`` original objects of each class, the same ones at every run.

    Chosen by a hash of the object id (not the first rows of the export, which are often one sample),
    among the originals of every split.
    """
    rows = split_table[split_table["augmented"].astype(int) == 0].copy()
    rows["_key"] = [hashlib.sha1(str(o).encode()).hexdigest() for o in rows["object_id"]]
    out = []
    for c in classes:
        out.append(rows[rows["class_name"] == c].sort_values("_key", kind="stable").head(per_class))
    return pd.concat(out, ignore_index=True).drop(columns="_key") if out else rows.head(0)


def crop_box(img: np.ndarray, threshold: int, polarity: str, bottom_crop: float):
    """(top, bottom, left, right, kept_rows) of the crop ``images.normalise`` makes, for drawing it.

    The same rule as :func:`lokiml.images.normalise`: object pixels are darker than ``threshold``
    (``dark``) or brighter than ``255 - threshold`` (``light``), after the bottom crop.
    """
    h = img.shape[0]
    kept = max(1, int(round(h * (1.0 - float(bottom_crop))))) if bottom_crop else h
    part = img[:kept]
    if polarity == "auto":
        polarity = images.detect_polarity(part)
    obj = part < threshold if polarity == "dark" else part > (255 - threshold)
    rows = np.flatnonzero(obj.any(axis=1))
    if not rows.size:
        return 0, kept - 1, 0, img.shape[1] - 1, kept
    cols = np.flatnonzero(obj.any(axis=0))
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1]), kept


def _shrink(img: np.ndarray, side: int = RAW_SIDE) -> tuple[np.ndarray, float]:
    from PIL import Image

    h, w = img.shape
    scale = min(1.0, side / max(h, w))
    if scale >= 1.0:
        return img, 1.0
    out = Image.fromarray(img, "L").resize((max(1, round(w * scale)), max(1, round(h * scale))),
                                           Image.Resampling.LANCZOS)
    return np.asarray(out), scale


def load_pairs(export_path, refs, norm: NormParams):
    """For each image reference: (raw grey image shrunk for display, its scale, normalised image), or None
    when it can't be read (the reason is logged)."""
    out = []
    with open_export(export_path) as export:
        for ref in refs:
            try:
                data = export.read_image_by_ref(ref)
                raw = images.decode_grey(data, ref, max_pixels=norm.max_pixels)
                normalised = normalise_item(data, ref, norm)
            except (images.ImageError, InputError, OSError, ValueError) as exc:
                log.warning("%s: not shown (%s)", ref, exc)
                out.append(None)
                continue
            shown, scale = _shrink(raw)
            box = crop_box(raw, norm.threshold, norm.polarity, norm.bottom_crop)
            out.append((shown, scale, box, normalised))
    return out


def plot_class_gallery(examples: pd.DataFrame, pairs, classes, path, norm: NormParams, title: str = "") -> None:
    """One row per class: for each example, the exported image (the crop box in red, the bottom crop
    in blue) and the normalised image beside it."""
    from .evaluate import save_figure

    plt = pyplot()
    by_class = {c: [] for c in classes}
    for (_, row), pair in zip(examples.iterrows(), pairs):
        by_class.setdefault(row["class_name"], []).append((row, pair))
    per_row = max([len(v) for v in by_class.values()] + [1])
    n_rows = len(classes)
    tile = 1.05  # inches per image
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(n_rows, 2 * per_row, squeeze=False,
                                 figsize=(2 * per_row * tile + 1.6, n_rows * (tile + 0.45) + 0.9))
        for ax in axes.ravel():
            ax.axis("off")
        for r, c in enumerate(classes):
            axes[r, 0].text(-0.08, 0.5, wrap(c, 16, 3), transform=axes[r, 0].transAxes, ha="right",
                            va="center", fontsize=9, fontweight="bold")
            if not by_class[c]:
                axes[r, 0].text(0.0, 0.5, "no objects", transform=axes[r, 0].transAxes, va="center")
            for k, (row, pair) in enumerate(by_class[c]):
                ax_raw, ax_norm = axes[r, 2 * k], axes[r, 2 * k + 1]
                ax_raw.set_title(shorten(row["object_id"], 18), fontsize=6.5, loc="left")
                if pair is None:
                    ax_raw.text(0.5, 0.5, "unreadable", ha="center", va="center", fontsize=7)
                    continue
                shown, scale, (top, bottom, left, right, kept), normalised = pair
                ax_raw.imshow(shown, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
                ax_raw.add_patch(plt.Rectangle(((left - 0.5) * scale, (top - 0.5) * scale),
                                               (right - left + 1) * scale, (bottom - top + 1) * scale,
                                               fill=False, edgecolor="#d62728", linewidth=0.8))
                if kept < shown.shape[0] / scale:
                    ax_raw.axhline(kept * scale - 0.5, color="#1f77b4", linewidth=0.8)
                ax_norm.imshow(normalised, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
                ax_norm.set_title(f"{normalised.shape[0]} px", fontsize=6.5, loc="right", color="#555555")
        fig.subplots_adjust(left=1.5 / fig.get_figwidth(), right=0.99, wspace=0.08, hspace=0.45,
                            top=1 - 0.55 / fig.get_figheight(), bottom=0.1 / fig.get_figheight())
        if title:
            fig.suptitle(title, fontsize=10)
        save_figure(fig, path, dpi=110)


def class_gallery(objects_path, split_path, export_path, classes, out_figure, size: int, threshold: int = 245,
                  polarity: str = "dark", bottom_crop: float = 0.0, max_pixels: int = 100_000_000,
                  per_class: int = PER_CLASS) -> pd.DataFrame:
    """Rule plot_class_gallery: example images of each class, as exported and as normalised."""
    split_table = read_tsv(split_path)
    objects = read_tsv(objects_path)
    examples = choose_examples(split_table, classes, per_class)
    refs = objects.drop_duplicates("object_id").set_index("object_id")["image_ref"]
    missing = sorted(set(examples["object_id"]) - set(refs.index))
    if missing:
        raise InputError(str(objects_path), f"objects of the split not in the objects table: {missing[:5]}",
                         hint="the split and the objects table come from different runs; rerun the workflow")
    norm = NormParams(size=int(size), threshold=int(threshold), polarity=polarity, bottom_crop=float(bottom_crop),
                      max_pixels=int(max_pixels))
    pairs = load_pairs(export_path, refs.loc[examples["object_id"]].tolist(), norm)
    plot_class_gallery(examples, pairs, list(classes), out_figure, norm,
                       title=f"Examples of each class: exported (red: the crop at threshold {threshold}, "
                             f"polarity {polarity}" + (f"; blue: bottom crop {bottom_crop:g}" if bottom_crop else "")
                             + f") and normalised ({size} px)")
    log.info("class gallery: %d objects of %d classes", len(examples), len(classes))
    return examples


def export_gather(export_path, objects: pd.DataFrame, rows: pd.DataFrame, size: int = 128, **norm):
    """A ``gather(item_ids) -> images`` for :func:`lokiml.evaluate.split_result` that reads the images
    from the export and normalises them (for experiments evaluated without an image store).

    ``objects``: the objects table (``object_id``, ``image_ref``); ``rows``: the evaluated rows
    (``item_id``, ``object_id``). An image that can't be read is a blank tile.
    """
    refs = objects.drop_duplicates("object_id").set_index("object_id")["image_ref"]
    object_of = dict(zip(rows["item_id"], rows["object_id"]))
    params = NormParams(size=int(size), **norm)

    def gather(item_ids):
        tiles = []
        wanted = [refs.get(object_of.get(i, ""), "") for i in item_ids]
        for pair in load_pairs(export_path, wanted, params):
            tiles.append(pair[3] if pair is not None else np.full((params.size, params.size), 255, dtype=np.uint8))
        return np.stack(tiles) if tiles else None

    return gather
