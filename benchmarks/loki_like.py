"""LOKI-like test images for the benchmarks: a dark, copepod-like organism on a near-white, noisy background.

Not a benchmark itself (``make bench`` runs ``bench_*.py`` only). The images are stored the way
the seed's scripts expect LOKI's: 8-bit JPEGs with three identical channels (the seed reads them
with ``skimage.io.imread`` and keeps channel 0), sides of ``min_side`` to ``max_side`` pixels
with varied aspect ratios, the organism filling 35-90 % of the shorter side.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def _ellipse(cx, cy, a, b, n=48):
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    return np.column_stack([cx + a * np.cos(t), cy + b * np.sin(t)])


def loki_like_image(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """One grey image ``uint8 (height, width)``: background 250-254 with +-2 noise, organism 40-150."""
    length = rng.uniform(0.35, 0.9) * min(width, height) / 1.6  # body length; appendages reach ~1.6x
    a, b = length / 2.0, length * rng.uniform(0.18, 0.24)
    g = rng.uniform(40.0, 110.0)
    lw = max(1, int(round(length / 120)))
    prims = []
    for s in (-1.0, 1.0):  # antennae, swept back from the head
        pts = np.array([[a * 0.75, s * b * 0.3], [a * 0.95, s * (b + length * 0.2)],
                        [a * 0.55, s * (b + length * 0.45)], [a * 0.1, s * (b + length * 0.6)]])
        prims.append(("line", pts, g + 30, lw))
    tail = -a - length * 0.35
    for s in (-1.0, 1.0):  # caudal setae
        prims.append(("line", np.array([[tail, 0.0], [tail - length * 0.15, s * length * 0.08]]), g + 45, lw))
    prims.append(("poly", np.array([[-a + 3, b * 0.3], [tail, b * 0.15], [tail, -b * 0.15], [-a + 3, -b * 0.3]]),
                  g + 15))
    prims.append(("poly", _ellipse(0.0, 0.0, a, b), g))
    prims.append(("poly", _ellipse(a * 0.15, 0.0, a * 0.3, b * 0.35), max(g - 30.0, 5.0)))
    theta = rng.uniform(0.0, 2.0 * math.pi)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    prims = [(k, pts @ rot.T, *rest) for k, pts, *rest in prims]
    allpts = np.concatenate([p[1] for p in prims])
    lo, hi = allpts.min(axis=0), allpts.max(axis=0)
    room = np.array([width, height]) - (hi - lo)
    shift = -lo + room * rng.uniform(0.2, 0.8, 2)

    canvas = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(canvas)
    for kind, pts, grey, *rest in prims:
        xy = [tuple(map(float, q)) for q in pts + shift]
        fill = int(np.clip(round(grey), 0, 255))
        if kind == "poly":
            draw.polygon(xy, fill=fill)
        else:
            draw.line(xy, fill=fill, width=int(rest[0]), joint="curve")
    clean = np.asarray(canvas.filter(ImageFilter.GaussianBlur(1.0)), dtype=np.float32)
    obj = clean < 240.0
    img = clean * (rng.uniform(250.0, 254.0) / 255.0)
    img += rng.triangular(-2.0, 0.0, 2.0, img.shape).astype(np.float32)
    img[obj] += rng.normal(0.0, 6.0, int(obj.sum())).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def write_images(folder, n: int, seed: int = 0, min_side: int = 300, max_side: int = 1500,
                 quality: int = 90) -> list[Path]:
    """``n`` LOKI-like JPEGs (3 identical channels) in ``folder``; returns their paths, in order."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"loki_{i:05d}.jpg"
        path.write_bytes(jpeg_bytes(rng, min_side, max_side, quality))
        paths.append(path)
    return paths


def jpeg_bytes(rng: np.random.Generator, min_side: int = 300, max_side: int = 1500, quality: int = 90) -> bytes:
    """One LOKI-like JPEG (3 identical channels), as bytes."""
    import io

    side = rng.uniform(min_side, max_side)
    aspect = rng.uniform(0.6, 1.6)
    w = int(np.clip(round(side * math.sqrt(aspect)), min_side, max_side))
    h = int(np.clip(round(side / math.sqrt(aspect)), min_side, max_side))
    buf = io.BytesIO()
    Image.fromarray(loki_like_image(rng, w, h)).convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def unique_copy(jpeg: bytes, tag: str) -> bytes:
    """``jpeg`` with a JPEG comment segment (COM) naming ``tag`` after its start marker: other bytes (and so
    another content hash) but the same pixels and the same decoding work."""
    if jpeg[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG")
    text = tag.encode("utf-8")[:60000]
    return jpeg[:2] + b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text + jpeg[2:]


class JpegPool:
    """A pool of ``size`` distinct LOKI-like JPEGs, handed out as unique copies (:func:`unique_copy`).

    Writing tens of thousands of LOKI-sized images one by one takes about 0.1-0.5 s each; the scale
    benchmarks write copies of a pool instead. Each copy has its own bytes (so content caches and
    duplicate checks see distinct images) and decodes exactly like its original.
    """

    def __init__(self, size: int = 64, seed: int = 0, min_side: int = 300, max_side: int = 1500):
        rng = np.random.default_rng(seed)
        self.jpegs = [jpeg_bytes(rng, min_side, max_side) for _ in range(size)]

    def image(self, i: int) -> bytes:
        """The ``i``-th image: a unique copy of pool member ``i % size``."""
        return unique_copy(self.jpegs[i % len(self.jpegs)], f"lokiml benchmark image {i}")


def small_image(i: int) -> bytes:
    """A small vignette (60-140 px, one dark ellipse on a light background), seeded by ``i``: it stands for
    UVP or FlowCam vignettes, and for the per-object costs of a benchmark (tables, zip directory),
    not for LOKI's decoding (8-9 times cheaper)."""
    import io

    from PIL import ImageDraw

    rng = np.random.default_rng(i)
    w, h = int(rng.integers(60, 140)), int(rng.integers(60, 140))
    img = Image.new("L", (w, h), 240)
    d = ImageDraw.Draw(img)
    a, b = rng.integers(8, w // 2), rng.integers(4, h // 2)
    cx, cy = w // 2, h // 2
    d.ellipse((cx - a, cy - b, cx + a, cy + b), fill=int(rng.integers(40, 140)))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def image_maker(kind: str):
    """``i -> JPEG bytes`` of image ``i``: LOKI-sized (``loki``: unique copies of a :class:`JpegPool`) or a
    small vignette (``small``: :func:`small_image`)."""
    if kind == "small":
        return small_image
    if kind == "loki":
        return JpegPool(64, seed=0).image
    raise ValueError(f"unknown image kind {kind!r}: loki or small")
