"""The built-in synthetic demo: a small EcoTaxa export of LOKI-like plankton images.

:func:`make_demo_export` writes, into one folder,

* ``ecotaxa_demo.tsv``: an EcoTaxa-style export table (header row, then the
  ``[t]``/``[f]`` type row, unquoted tab-separated cells, ``\\n`` line ends);
* ``images/``: one grey JPEG per object, named like LOKI's vignettes
  (``"20200108 080729  764  000001 0702 1167.jpg"``: date, time, milliseconds,
  running number, x and y position, with runs of spaces).

The images are drawn with numpy and Pillow: dark, plankton-like shapes on a
light, slightly noisy background (248-252, never darker than 246, so that the
default ``normalise.threshold`` of 245 isolates the object), in random
orientation, sizes and non-square canvases. Each class has its own shape, so
that even a tiny CNN learns to tell them apart. The table also carries rows
the workflow must drop or account for: ``predicted`` and ``dubious`` rows, and
validated rows of a category that is not among the configured classes
(``Foraminifera``). ``Calanoida_egg`` is a separate class whose name contains
``Calanoida`` and whose lineage passes through it, to test exact matching.

Everything follows from ``seed``: the same seed writes the same bytes
(fixed JPEG quality, no timestamps). The folder is written atomically.
"""

from __future__ import annotations

import io
import logging
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .io import fault_point, remove_stale_temps

log = logging.getLogger(__name__)

TSV_NAME = "ecotaxa_demo.tsv"
IMAGE_DIR = "images"
JPEG_QUALITY = 92

_METAZOA = "living>Eukaryota>Opisthokonta>Holozoa>Metazoa"
_COPEPODA = f"{_METAZOA}>Arthropoda>Crustacea>Multicrustacea>Hexanauplia>Copepoda"

#: The drawn classes: validated ``count`` at ``scale=1``, EcoTaxa ``lineage``,
#: the ``shape`` drawer and its parameter ranges (pixels, grey levels).
#: ``unmapped`` marks the category a demo config does not list.
DEMO_CLASSES: dict[str, dict] = {
    "Calanoida": {
        "count": 90, "lineage": f"{_COPEPODA}>Calanoida", "shape": "copepod",
        "length": (36, 62), "grey": (55, 95),
    },
    "Chaetognatha": {
        "count": 75, "lineage": f"{_METAZOA}>Chaetognatha", "shape": "arrow_worm",
        "length": (80, 118), "width": (5, 9), "grey": (125, 160),
    },
    "detritus": {
        "count": 45, "lineage": "not-living>detritus", "shape": "blob",
        "radius": (14, 40), "grey": (95, 175),
    },
    "Appendicularia": {
        "count": 40, "lineage": f"{_METAZOA}>Chordata>Tunicata>Appendicularia", "shape": "tadpole",
        "trunk": (9, 14), "tail": (55, 85), "grey": (50, 85),
    },
    "Ostracoda": {
        "count": 35, "lineage": f"{_METAZOA}>Arthropoda>Crustacea>Ostracoda", "shape": "bean",
        "length": (36, 60), "grey": (30, 65),
    },
    "Calanoida_egg": {
        "count": 30, "lineage": f"{_COPEPODA}>Calanoida>Calanoida_egg", "shape": "egg",
        "diameter": (22, 36), "grey": (60, 95),
    },
    "Noctiluca": {
        "count": 25,
        "lineage": "living>Eukaryota>Harosa>Alveolata>Myzozoa>Holodinophyta>Dinophyceae>Noctilucales"
                   ">Noctilucaceae>Noctiluca",
        "shape": "bubble", "diameter": (70, 116), "grey": (198, 214),
    },
    "Foraminifera": {
        "count": 10, "lineage": "living>Eukaryota>Harosa>Rhizaria>Retaria>Foraminifera", "shape": "spiral",
        "chamber": (5, 8), "grey": (45, 80), "unmapped": True,
    },
    # Two more categories of no configured class, for the open-set test of lokiml.decisions: a copepod
    # that is not a Calanoida (its lineage meets the classes' at Copepoda), and artefacts (not-living,
    # like detritus). Drawn from a second random stream after the others ("added"), so that every other
    # object of the export keeps its image, id and descriptors: the classes are exactly as hard as before.
    "Cyclopoida": {
        "count": 16, "lineage": f"{_COPEPODA}>Cyclopoida", "shape": "cyclopoid",
        "length": (30, 52), "grey": (45, 90), "unmapped": True, "added": True,
    },
    "artefact": {
        "count": 12, "lineage": "not-living>artefact", "shape": "scratch",
        "length": (40, 110), "grey": (90, 170), "unmapped": True, "added": True,
    },
}

#: The class names a config lists for the demo: every drawn class but the unmapped one.
DEMO_CONFIG_CLASSES: list[str] = sorted(n for n, c in DEMO_CLASSES.items() if not c.get("unmapped"))

#: Rows that are not ground truth (category drawn among the configured classes).
DEMO_NON_VALIDATED: dict[str, int] = {"predicted": 6, "dubious": 3}

#: Two cruises over ten consecutive days, two stations a day.
_CRUISES = (("PS121", (79.05, 4.20)), ("PS122", (85.80, 116.50)))
_START_DAY = np.datetime64("2020-01-08")
_N_DAYS = 10
_STATIONS_PER_DAY = 2

COLUMNS: list[tuple[str, str]] = [
    ("img_file_name", "t"), ("img_rank", "f"), ("object_id", "t"), ("object_lat", "f"), ("object_lon", "f"),
    ("object_date", "t"), ("object_time", "t"), ("object_depth_min", "f"), ("object_depth_max", "f"),
    ("object_annotation_status", "t"), ("object_annotation_category", "t"),
    ("object_annotation_hierarchy", "t"), ("sample_id", "t"), ("object_cruise", "t"),
    ("acq_instrument", "t"), ("object_index", "f"), ("object_area", "f"), ("object_mean", "f"),
    ("object_stddev", "f"), ("object_major", "f"), ("object_minor", "f"), ("object_perim.", "f"),
    ("object_circ.", "f"), ("object_feret", "f"), ("object_elongation", "f"),
]


# ---------------------------------------------------------------------------
# Shapes: each drawer returns primitives in local coordinates (major axis on x)
#   ("poly", points (n, 2), grey)  or  ("line", points (n, 2), grey, width)
# ---------------------------------------------------------------------------

def _u(rng: np.random.Generator, lo_hi) -> float:
    lo, hi = lo_hi
    return float(rng.uniform(lo, hi))


def _ellipse(cx: float, cy: float, a: float, b: float, n: int | None = None) -> np.ndarray:
    n = n or max(24, int(2.0 * math.pi * max(a, b) / 2.0))
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    return np.column_stack([cx + a * np.cos(t), cy + b * np.sin(t)])


def _copepod(rng, p):
    length = _u(rng, p["length"])
    width = length * rng.uniform(0.34, 0.42)
    g = _u(rng, p["grey"])
    a, b = length / 2.0, width / 2.0
    prims = []
    for s in (-1.0, 1.0):  # antennae: long, thin, sweeping back from the head
        pts = np.array([[a * 0.75, s * b * 0.3], [a * 0.95, s * (b + length * 0.2)],
                        [a * 0.55, s * (b + length * 0.45)], [a * 0.1, s * (b + length * 0.6)]])
        prims.append(("line", pts, g + 25, 2))
    tail_end = -a - length * 0.45
    for s in (-1.0, 1.0):  # caudal setae
        prims.append(("line", np.array([[tail_end + 2, 0.0], [tail_end - length * 0.18, s * length * 0.1]]),
                      g + 45, 1))
    uro = np.array([[-a + 3, b * 0.3], [tail_end, b * 0.15], [tail_end, -b * 0.15], [-a + 3, -b * 0.3]])
    prims.append(("poly", uro, g + 15))
    prims.append(("poly", _ellipse(0.0, 0.0, a, b), g))
    prims.append(("poly", _ellipse(a * 0.15, 0.0, a * 0.3, b * 0.35), max(g - 30, 5)))  # gut / oil sac
    return prims


def _arrow_worm(rng, p):
    length = _u(rng, p["length"])
    w = _u(rng, p["width"])
    g = _u(rng, p["grey"])
    half = length / 2.0
    x = np.linspace(-half, half, 40)
    t = (x + half) / length
    hw = w / 2.0 * (0.3 + 0.7 * np.sqrt(np.sin(np.pi * np.clip(t, 0.0, 1.0)) + 1e-9))
    body = np.concatenate([np.column_stack([x, hw]), np.column_stack([x[::-1], -hw[::-1]])])
    prims = []
    x0 = -half + length * 0.18
    for s in (-1.0, 1.0):  # lateral fins
        prims.append(("poly", np.array([[x0, 0.0], [x0 + length * 0.14, s * w * 0.4],
                                        [x0 + length * 0.04, s * w * 1.1]]), g + 30))
    prims.append(("poly", np.array([[-half + 2, 0.0], [-half - w * 1.2, w * 0.9], [-half - w * 1.2, -w * 0.9]]),
                  g + 30))  # tail fin
    prims.append(("poly", body, g))
    prims.append(("poly", _ellipse(half, 0.0, w * 0.75, w * 0.65), max(g - 25, 5)))  # head
    prims.append(("line", np.array([[-half * 0.6, 0.0], [half * 0.7, 0.0]]), max(g - 45, 5), 1))  # gut
    return prims


def _blob(rng, p):
    radius = _u(rng, p["radius"])
    prims = []
    for _ in range(int(rng.integers(2, 5))):
        n = int(rng.integers(9, 17))
        ang = np.sort(rng.uniform(0.0, 2.0 * math.pi, n))
        r = radius * rng.uniform(0.45, 1.0, n)
        c = rng.uniform(-0.3, 0.3, 2) * radius
        prims.append(("poly", np.column_stack([c[0] + r * np.cos(ang), c[1] + r * np.sin(ang)]),
                      _u(rng, p["grey"])))
    for _ in range(int(rng.integers(5, 16))):  # dark specks
        c = rng.uniform(-0.5, 0.5, 2) * radius
        rr = rng.uniform(1.0, 2.5)
        prims.append(("poly", _ellipse(c[0], c[1], rr, rr, 8), rng.uniform(50, 100)))
    return prims


def _tadpole(rng, p):
    a = _u(rng, p["trunk"])
    b = a * rng.uniform(0.75, 0.9)
    tail = _u(rng, p["tail"])
    g = _u(rng, p["grey"])
    amp = rng.uniform(4.0, 9.0)
    wavelength = tail / rng.uniform(1.2, 2.0)
    phase = rng.uniform(0.0, 2.0 * math.pi)
    x = np.linspace(0.0, tail, 30)
    y = amp * np.sin(2.0 * math.pi * x / wavelength + phase) * np.sqrt(x / tail)
    y -= y[0]
    pts = np.column_stack([a * 0.8 + x, y])
    return [("line", pts, rng.uniform(120, 150), 4),
            ("poly", _ellipse(0.0, 0.0, a, b), g),
            ("poly", _ellipse(-a * 0.2, 0.0, a * 0.45, b * 0.45), max(g - 30, 5))]


def _bean(rng, p):
    a = _u(rng, p["length"]) / 2.0
    b = a * rng.uniform(0.58, 0.68)
    g = _u(rng, p["grey"])
    notch = rng.uniform(0.25, 0.4)
    t = np.linspace(0.0, 2.0 * math.pi, 60, endpoint=False)
    x = a * np.cos(t)
    y = b * np.sin(t)
    top = np.sin(t) > 0
    y[top] -= notch * b * np.sin(t[top]) * np.exp(-(np.cos(t[top]) ** 2) / 0.15)
    outline = np.column_stack([x, y])
    return [("poly", outline, g + 50),                       # lighter carapace rim
            ("poly", outline * 0.85, g),
            ("line", np.array([[a * 0.9, -b * 0.2], [a * 1.25, -b * 0.7]]), g + 60, 1)]


def _egg(rng, p):
    d = _u(rng, p["diameter"])
    g = _u(rng, p["grey"])
    r = d / 2.0
    off = rng.uniform(-0.25, 0.25, 2) * r
    return [("poly", _ellipse(0.0, 0.0, r + 2.5, r + 2.5), 200),   # pale membrane
            ("poly", _ellipse(0.0, 0.0, r, r * rng.uniform(0.92, 1.0)), g),
            ("poly", _ellipse(off[0], off[1], r * 0.22, r * 0.22), g + 35)]


def _bubble(rng, p):
    r = _u(rng, p["diameter"]) / 2.0
    fill = _u(rng, p["grey"])
    ang = rng.uniform(0.0, 2.0 * math.pi)
    spot = np.array([math.cos(ang), math.sin(ang)]) * r * 0.55
    sr = rng.uniform(4.0, 7.0)
    return [("poly", _ellipse(0.0, 0.0, r, r), rng.uniform(160, 180)),      # outline
            ("poly", _ellipse(0.0, 0.0, r - 2.0, r - 2.0), fill),
            ("line", np.array([spot, spot * 1.6]), 150, 2),                  # tentacle
            ("poly", _ellipse(spot[0], spot[1], sr, sr * 0.8), rng.uniform(70, 110))]


def _cyclopoid(rng, p):
    """A cyclopoid copepod: slimmer, pear-shaped body, short antennae, often two egg sacs."""
    length = _u(rng, p["length"])
    width = length * rng.uniform(0.26, 0.33)
    g = _u(rng, p["grey"])
    a, b = length / 2.0, width / 2.0
    prims = []
    for s in (-1.0, 1.0):  # short antennae, held forward and out
        prims.append(("line", np.array([[a * 0.8, s * b * 0.4], [a * 1.15, s * (b + length * 0.12)]]), g + 30, 2))
    tail_end = -a - length * 0.35
    prims.append(("poly", np.array([[-a + 2, b * 0.25], [tail_end, b * 0.12], [tail_end, -b * 0.12],
                                    [-a + 2, -b * 0.25]]), g + 10))
    if rng.random() < 0.6:  # paired egg sacs beside the urosome
        for s in (-1.0, 1.0):
            prims.append(("poly", _ellipse(-a - length * 0.12, s * b * 0.9, length * 0.16, b * 0.55), g + 20))
    x = np.linspace(-a, a, 30)
    half = b * np.sqrt(np.clip(1 - (x / a) ** 2, 0, 1)) * (0.75 + 0.25 * (x + a) / (2 * a))
    prims.append(("poly", np.concatenate([np.column_stack([x, half]), np.column_stack([x[::-1], -half[::-1]])]), g))
    return prims


def _scratch(rng, p):
    """An artefact: a few thin, straight or slightly bent streaks (fibres of the net, scratches, bubbles' rims)."""
    prims = []
    for _ in range(int(rng.integers(1, 4))):
        length = _u(rng, p["length"])
        bend = rng.uniform(-0.15, 0.15) * length
        x = np.linspace(-length / 2, length / 2, 12)
        y = bend * (1 - (2 * x / length) ** 2) + rng.uniform(-8, 8)
        prims.append(("line", np.column_stack([x, y]), _u(rng, p["grey"]), int(rng.integers(1, 4))))
    if rng.random() < 0.5:  # a pale ring
        r = rng.uniform(6, 14)
        prims.append(("poly", _ellipse(rng.uniform(-10, 10), rng.uniform(-10, 10), r, r), _u(rng, p["grey"])))
    return prims


def _spiral(rng, p):
    k = int(rng.integers(p["chamber"][0], p["chamber"][1] + 1))
    g = _u(rng, p["grey"])
    r0 = rng.uniform(5.0, 7.0)
    prims = []
    for i in range(k):
        r = r0 * 1.18 ** i
        ang = i * 0.9
        dist = r * 1.1 if i else 0.0
        cx, cy = dist * math.cos(ang), dist * math.sin(ang)
        prims.append(("poly", _ellipse(cx, cy, r + 1.5, r + 1.5), 150))
        prims.append(("poly", _ellipse(cx, cy, r, r), g))
    return prims


_DRAWERS = {
    "copepod": _copepod, "arrow_worm": _arrow_worm, "blob": _blob, "tadpole": _tadpole,
    "bean": _bean, "egg": _egg, "bubble": _bubble, "spiral": _spiral, "cyclopoid": _cyclopoid,
    "scratch": _scratch,
}


def draw_object(rng: np.random.Generator, cls: str) -> tuple[np.ndarray, np.ndarray]:
    """Draw one object of class ``cls``: ``(image uint8 (H, W), mask bool (H, W))``.

    The shape is rotated at random and placed on a canvas of 80-220 pixels a
    side, with independent margins (non-square). The background is 248-252
    plus at most +-2.5 of noise; the object carries its own texture noise. The
    mask (the pixels at least 10 grey levels darker than white before noise) is
    what the descriptors are computed from.
    """
    p = DEMO_CLASSES[cls]
    prims = _DRAWERS[p["shape"]](rng, p)
    theta = rng.uniform(0.0, 2.0 * math.pi)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    prims = [(kind, pts @ rot.T, *rest) for kind, pts, *rest in prims]
    allpts = np.concatenate([pr[1] for pr in prims])
    lo = allpts.min(axis=0) - 3.0
    hi = allpts.max(axis=0) + 3.0
    extent = hi - lo
    margins = rng.uniform(6.0, 45.0, 4)  # left, right, top, bottom
    width = int(np.clip(math.ceil(extent[0] + margins[0] + margins[1]), 80, 220))
    height = int(np.clip(math.ceil(extent[1] + margins[2] + margins[3]), 80, 220))
    left = (width - extent[0]) * margins[0] / (margins[0] + margins[1])
    top = (height - extent[1]) * margins[2] / (margins[2] + margins[3])
    shift = np.array([left, top]) - lo

    canvas = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(canvas)
    for kind, pts, grey, *rest in prims:
        xy = [tuple(map(float, q)) for q in pts + shift]
        fill = int(np.clip(round(grey), 0, 255))
        if kind == "poly":
            draw.polygon(xy, fill=fill)
        else:
            draw.line(xy, fill=fill, width=int(rest[0]), joint="curve")
    clean = np.asarray(canvas.filter(ImageFilter.GaussianBlur(0.8)), dtype=np.float32)
    mask = clean <= 245.0

    bg = rng.uniform(248.0, 252.0)
    img = clean * (bg / 255.0)
    img += rng.triangular(-2.5, 0.0, 2.5, img.shape)
    img[mask] += rng.normal(0.0, 4.0, int(mask.sum()))
    img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return img, mask


# ---------------------------------------------------------------------------
# Descriptors (EcoTaxa-like, from the mask)
# ---------------------------------------------------------------------------

def descriptors(img: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """EcoTaxa-like shape and grey descriptors of the object ``mask`` in ``img``.

    area (pixels), mean and stddev (grey of the object), major and minor (axes
    of the ellipse with the same second moments), perim. (the object's
    exposed pixel sides times pi/4), circ. (``4 pi area / perim^2``, at
    most 1), feret (largest caliper diameter over 1-degree steps) and
    elongation (major / minor).
    """
    ys, xs = np.nonzero(mask)
    area = float(len(xs))
    vals = img[mask].astype(np.float64)
    cov = np.cov(np.vstack([xs, ys]).astype(np.float64)) if area > 1 else np.zeros((2, 2))
    ev = np.sort(np.clip(np.linalg.eigvalsh(cov), 0.0, None))[::-1]
    major, minor = 4.0 * math.sqrt(ev[0]), 4.0 * math.sqrt(ev[1])
    padded = np.pad(mask, 1)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    edge = mask & ~inner
    # Exposed pixel sides, times pi/4 (their mean projection factor): ~2 pi r for a disc.
    exposed = sum(int((padded[1:-1, 1:-1] & ~nb).sum())
                  for nb in (padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]))
    perim = exposed * math.pi / 4.0
    ey, ex = np.nonzero(edge)
    ang = np.deg2rad(np.arange(180.0))
    proj = np.outer(ex, np.cos(ang)) + np.outer(ey, np.sin(ang))
    feret = float((proj.max(axis=0) - proj.min(axis=0)).max() + 1.0) if len(ex) else 0.0
    return {
        "object_area": area,
        "object_mean": float(vals.mean()) if area else 0.0,
        "object_stddev": float(vals.std()) if area else 0.0,
        "object_major": major,
        "object_minor": minor,
        "object_perim.": perim,
        "object_circ.": min(1.0, 4.0 * math.pi * area / perim ** 2) if perim else 0.0,
        "object_feret": feret,
        "object_elongation": major / minor if minor > 0 else 0.0,
    }


# ---------------------------------------------------------------------------
# The export
# ---------------------------------------------------------------------------

def _counts(scale: float) -> tuple[dict[str, int], dict[str, int]]:
    """Validated rows per class, and non-validated rows per status, at ``scale``."""
    per_class = {}
    for name, c in DEMO_CLASSES.items():
        floor = 1 if c.get("unmapped") else 3
        per_class[name] = max(floor, int(round(c["count"] * scale)))
    other = {s: max(1, int(round(n * scale))) for s, n in DEMO_NON_VALIDATED.items()}
    return per_class, other


def _fmt(value, decimals: int) -> str:
    return f"{value:.{decimals}f}"


def make_demo_export(out_dir, seed: int = 1, scale: float = 1.0) -> Path:
    """Write the synthetic demo export into ``out_dir``; return the path of its TSV.

    ``scale`` multiplies the per-class counts (at least 3 validated objects per
    configured class, at least 1 of the rest). ``out_dir`` is replaced as a
    whole: the export is written into a temporary sibling folder and renamed
    into place.
    """
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    rng = np.random.default_rng(seed)
    per_class, other = _counts(scale)

    specs = [(cls, "validated") for cls, n in per_class.items() for _ in range(n)
             if not DEMO_CLASSES[cls].get("added")]
    for status, n in other.items():
        specs += [(str(rng.choice(DEMO_CONFIG_CLASSES)), status) for _ in range(n)]
    n_samples = _N_DAYS * _STATIONS_PER_DAY
    # Every object gets a station and a second within that station's hour of sampling.
    stations = rng.integers(0, n_samples, len(specs))
    seconds = rng.integers(0, 3600, len(specs))
    order = np.lexsort((np.arange(len(specs)), seconds, stations))

    station_info = []
    for s in range(n_samples):
        day, k = divmod(s, _STATIONS_PER_DAY)
        cruise, (lat0, lon0) = _CRUISES[0] if day < _N_DAYS // 2 else _CRUISES[1]
        date = str(_START_DAY + np.timedelta64(day, "D")).replace("-", "")
        start = int(rng.integers(6 * 3600, 9 * 3600)) + k * 8 * 3600
        lat = lat0 + day * 0.05 + rng.uniform(-0.02, 0.02)
        lon = lon0 + day * 0.3 + rng.uniform(-0.1, 0.1)
        station_info.append({"sample_id": f"{cruise}_{date}_st{s + 1:02d}", "cruise": cruise, "date": date,
                             "start": start, "lat": lat, "lon": lon})

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        (tmp / IMAGE_DIR).mkdir()
        lines = ["\t".join(c for c, _ in COLUMNS), "\t".join(f"[{t}]" for _, t in COLUMNS)]
        # The "added" categories come last, from a stream of their own (see DEMO_CLASSES), numbered on.
        added = [cls for cls, n in per_class.items() if DEMO_CLASSES[cls].get("added") for _ in range(n)]
        rng_added = np.random.default_rng([seed, 1])
        added_stations = rng_added.integers(0, n_samples, len(added))
        added_seconds = rng_added.integers(0, 3600, len(added))
        jobs = [(rng, specs[i], int(stations[i]), int(seconds[i])) for i in order]
        jobs += [(rng_added, (cls, "validated"), int(s), int(t)) for cls, s, t in zip(added, added_stations,
                                                                                     added_seconds)]
        for index, (rng, (cls, status), station, second) in enumerate(jobs, start=1):
            st = station_info[station]
            secs = st["start"] + second
            hhmmss = f"{secs // 3600:02d}{secs // 60 % 60:02d}{secs % 60:02d}"
            ms = int(rng.integers(0, 1000))
            posx, posy = int(rng.integers(0, 2048)), int(rng.integers(0, 2048))
            fname = f"{st['date']} {hhmmss}  {ms:03d}  {index:06d} {posx:04d} {posy:04d}.jpg"
            img, mask = draw_object(rng, cls)
            buf = io.BytesIO()
            Image.fromarray(img, "L").save(buf, "JPEG", quality=JPEG_QUALITY)
            (tmp / IMAGE_DIR / fname).write_bytes(buf.getvalue())
            depth = rng.uniform(5.0, 500.0)
            d = descriptors(img, mask)
            row = {
                "img_file_name": f"{IMAGE_DIR}/{fname}", "img_rank": "0", "object_id": f"demo_{index:06d}",
                "object_lat": _fmt(st["lat"], 5), "object_lon": _fmt(st["lon"], 5),
                "object_date": st["date"], "object_time": hhmmss,
                "object_depth_min": _fmt(depth, 1), "object_depth_max": _fmt(depth + rng.uniform(0.0, 5.0), 1),
                "object_annotation_status": status, "object_annotation_category": cls,
                "object_annotation_hierarchy": DEMO_CLASSES[cls]["lineage"], "sample_id": st["sample_id"],
                "object_cruise": st["cruise"], "acq_instrument": "LOKI", "object_index": str(index),
                **{k: _fmt(v, 0 if k == "object_area" else 4) for k, v in d.items()},
            }
            lines.append("\t".join(row[c] for c, _ in COLUMNS))
        (tmp / TSV_NAME).write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.chmod(tmp, 0o755)
        fault_point(out_dir)
        if out_dir.is_dir() and not out_dir.is_symlink():
            shutil.rmtree(out_dir)
        elif out_dir.exists() or out_dir.is_symlink():
            out_dir.unlink()
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("demo export: %d objects (%s validated per class; %s) in %s, %.1f s",
             len(jobs), per_class, other, out_dir, time.perf_counter() - t0)
    return out_dir / TSV_NAME
