"""Decoding, normalising and augmenting plankton images (numpy + Pillow only).

Three steps turn the bytes of one EcoTaxa image into a classifier input:

1. :func:`decode_grey` reads any image format and mode Pillow knows into an
   8-bit grey ``uint8`` array ``(H, W)``, and turns every failure (empty,
   truncated, corrupt, too large) into an :class:`ImageError` with a short
   ``reason`` that the ledger records.
2. :func:`augment` (optional) flips, rotates and shifts a grey image with
   Keras-like ``'nearest'`` fill, for the augmented copies of small classes.
3. :func:`normalise` crops to the object, centres it on a square canvas of the
   background colour and resizes it to ``size x size``; the aspect ratio is
   kept and the object is never cropped.

Conventions chosen here
-----------------------
* **Grey from colour**: ITU-R 601-2 luma, ``L = R*299/1000 + G*587/1000 +
  B*114/1000`` (Pillow's ``convert('L')``). Transparent pixels (RGBA, LA, P
  with transparency) are composited over **white**, the background of
  dark-on-light instruments. A colour JPEG is decoded straight to its luma
  channel (Y, the same weights), which is about twice as fast: identical for
  JPEGs of grey content (LOKI's three equal channels); for truly coloured
  ones it differs from ``convert('L')`` of the decoded RGB only where that
  route clamps out-of-gamut colours (a tenth of a grey level on average),
  and is as close to the luma of the image before encoding.
* **16-bit and 32-bit integer images** (``I;16``, ``I;16B``, ``I;16L``, ``I``)
  are scaled by the bit depth implied by the image's own maximum: with
  ``bits = max(8, ceil(log2(max + 1)))``, ``grey = v * 255 / (2**bits - 1)``.
  A full-range 16-bit image is thus scaled like ``v >> 8``, a 12-bit camera
  image (max <= 4095) like ``v >> 4``, and 8-bit values stored in a 16-bit
  container are kept as they are. This is not a contrast stretch: a light
  background stays light. Negative values are clipped to 0.
* **Float images** (``F``): values within ``[0, 1]`` are taken as fractions of
  white (``* 255``); otherwise the integer rule above is applied to the values
  rounded and clipped at 0.
* **Multi-frame images** (GIF, TIFF): the first frame.
* **Truncated files** fail: this module relies on Pillow's default
  ``ImageFile.LOAD_TRUNCATED_IMAGES = False`` and never changes it.
"""

from __future__ import annotations

import io
import logging
import math
import threading
import warnings

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

#: The reasons an :class:`ImageError` may carry.
REASONS = ("unreadable image", "truncated image", "image too large", "empty image")

POLARITIES = ("dark", "light", "auto")

# Guards the temporary change of Pillow's global pixel limit in decode_grey (shard workers may be threads).
_PIL_LIMIT_LOCK = threading.Lock()


class ImageError(Exception):
    """An image that cannot be used. ``reason`` is one of :data:`REASONS`; the message names the image."""

    def __init__(self, reason: str, name: str = "", detail: str = ""):
        if reason not in REASONS:
            raise ValueError(f"unknown image error reason {reason!r}")
        self.reason = reason
        self.name = name
        self.detail = detail
        msg = reason if not name else f"{name}: {reason}"
        if detail:
            msg += f" ({detail})"
        super().__init__(msg)


# ---------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------

def _reason_for(exc: BaseException) -> str:
    """Map a Pillow / decoder exception to an :class:`ImageError` reason."""
    if isinstance(exc, Image.DecompressionBombError):
        return "image too large"
    if isinstance(exc, EOFError):
        return "truncated image"
    text = str(exc).lower()
    if "truncated" in text or "premature end" in text:
        return "truncated image"
    return "unreadable image"


def decode_grey(data: bytes, name: str, max_pixels: int = 100_000_000, min_size: int | None = None) -> np.ndarray:
    """Decode image bytes into an 8-bit grey array ``uint8 (H, W)``.

    ``name`` only serves the error messages. ``max_pixels`` bounds
    ``width * height`` as read from the file header, *before* any pixel is
    decoded (a decompression bomb never gets allocated); Pillow's own
    ``DecompressionBombError`` is reported the same way. When ``max_pixels``
    is above Pillow's own limit, that limit is raised for the duration of the
    call so that ours is the one that applies.

    ``min_size``: when given, a JPEG may be decoded at a reduced scale (1/2,
    1/4 or 1/8, through ``Image.draft``) as long as both sides stay at least
    ``min_size`` pixels; pass a conservative value (the object may be smaller
    than the image). Other formats ignore it.

    Raises :class:`ImageError` (never a raw Pillow exception) with reason
    ``"empty image"`` (no bytes, or a zero-sized image), ``"image too large"``,
    ``"truncated image"`` or ``"unreadable image"``.
    """
    if not data:
        raise ImageError("empty image", name, "0 bytes")
    pil_limit = Image.MAX_IMAGE_PIXELS
    raise_pil_limit = pil_limit is not None and max_pixels is not None and max_pixels > pil_limit
    try:
        with warnings.catch_warnings():
            # We apply our own limit below; Pillow's warning would only be noise in the logs.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if raise_pil_limit:
                with _PIL_LIMIT_LOCK:  # Image.open only parses the header: the lock is held briefly
                    Image.MAX_IMAGE_PIXELS = max_pixels
                    try:
                        im = Image.open(io.BytesIO(data))
                    finally:
                        Image.MAX_IMAGE_PIXELS = pil_limit
            else:
                im = Image.open(io.BytesIO(data))
            with im:
                w, h = im.size
                if w <= 0 or h <= 0:
                    raise ImageError("empty image", name, f"{w}x{h} pixels")
                if max_pixels is not None and w * h > max_pixels:
                    raise ImageError("image too large", name, f"{w}x{h} pixels > max_pixels {max_pixels}")
                if im.format == "JPEG":
                    # "L": libjpeg returns a colour JPEG's Y channel (ITU-R 601 luma) directly, without
                    # decoding the chroma and converting to RGB: about half the decoding time. With a size,
                    # draft() also picks the largest power-of-two reduction keeping both sides >= it.
                    # (A CMYK JPEG keeps its mode and is converted below.)
                    im.draft("L", (int(min_size), int(min_size)) if min_size else None)
                if getattr(im, "n_frames", 1) > 1:
                    im.seek(0)
                im.load()
                arr = _to_grey(im)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError("image too large", name, str(exc)) from None
    except MemoryError as exc:
        raise ImageError("image too large", name, f"out of memory: {exc}") from None
    except Image.UnidentifiedImageError:
        raise ImageError("unreadable image", name, "not a recognised image format") from None
    except Exception as exc:  # noqa: BLE001 - every decoder failure becomes an ImageError
        raise ImageError(_reason_for(exc), name, f"{type(exc).__name__}: {exc}") from None
    if arr.size == 0:
        raise ImageError("empty image", name, f"{arr.shape[1]}x{arr.shape[0]} pixels")
    return arr


def _to_grey(im: Image.Image) -> np.ndarray:
    """Convert a loaded Pillow image of any mode to ``uint8 (H, W)`` (see the module docstring)."""
    mode = im.mode
    if mode == "L":
        return np.array(im, dtype=np.uint8)
    if mode == "1":
        return np.array(im.convert("L"), dtype=np.uint8)
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        return _scale_integers(np.array(im).astype(np.int64))
    if mode == "F":
        vals = np.array(im, dtype=np.float64)
        vals = np.nan_to_num(vals, nan=0.0, posinf=0.0, neginf=0.0)
        if vals.size and vals.min() >= 0.0 and vals.max() <= 1.0:
            return np.rint(vals * 255.0).astype(np.uint8)
        return _scale_integers(np.rint(np.clip(vals, 0, 2**31 - 1)).astype(np.int64))
    has_alpha = mode in ("RGBA", "LA", "La", "RGBa", "PA") or (mode == "P" and "transparency" in im.info)
    if has_alpha:
        rgba = np.array(im.convert("RGBA"), dtype=np.float32)
        alpha = rgba[..., 3:4] / 255.0
        rgb = np.rint(rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
        return np.array(Image.fromarray(rgb, "RGB").convert("L"), dtype=np.uint8)
    if mode == "RGB":
        return np.array(im.convert("L"), dtype=np.uint8)
    # P without transparency, CMYK, YCbCr, LAB, HSV, ...: through RGB.
    return np.array(im.convert("RGB").convert("L"), dtype=np.uint8)


def _scale_integers(vals: np.ndarray) -> np.ndarray:
    """Scale non-negative integers to 8 bits by the bit depth implied by their maximum."""
    vals = np.clip(vals, 0, None)
    vmax = int(vals.max()) if vals.size else 0
    bits = max(8, vmax.bit_length())
    if bits == 8:
        return vals.astype(np.uint8)
    return np.rint(vals * (255.0 / float(2**bits - 1))).astype(np.uint8)


# ---------------------------------------------------------------------------
# Polarity, augmentation, normalisation
# ---------------------------------------------------------------------------

def _border(img: np.ndarray) -> np.ndarray:
    """The 1-pixel border of ``img`` (each pixel once)."""
    h, w = img.shape
    if h <= 2 or w <= 2:
        return img.ravel()
    return np.concatenate([img[0, :], img[-1, :], img[1:-1, 0], img[1:-1, -1]])


def detect_polarity(img: np.ndarray) -> str:
    """``'dark'`` (dark object on a light background: LOKI, ZooScan, FlowCam) or ``'light'`` (UVP).

    Decided by the median of the 1-pixel border: ``>= 128`` means a light background.
    """
    img = _check_grey(img)
    return "dark" if float(np.median(_border(img))) >= 128 else "light"


def augment(img: np.ndarray, flip: bool, angle: float, dx: float, dy: float) -> np.ndarray:
    """Flip, rotate and shift a grey image; same shape, ``uint8``, deterministic.

    In this order: horizontal flip (when ``flip``), rotation by ``angle``
    degrees **counter-clockwise** as displayed, about the image centre, then a
    shift by ``dx * width`` pixels to the right and ``dy * height`` pixels
    down. Sampling is bilinear; pixels that come from outside the image take
    the value of the nearest edge pixel (Keras' ``fill_mode='nearest'``): the
    image is padded with its edge values, transformed by Pillow, and cropped
    back.
    """
    img = _check_grey(img)
    if flip:
        img = img[:, ::-1]
    angle = float(angle)
    dx = float(dx)
    dy = float(dy)
    if angle == 0.0 and dx == 0.0 and dy == 0.0:
        return np.ascontiguousarray(img)
    h, w = img.shape
    tx, ty = dx * w, dy * h
    # Every output pixel samples within half the diagonal plus the length of the
    # shift of the centre (the shift is undone before the rotation, so it turns
    # with it): pad that far in both directions.
    reach = 0.5 * math.hypot(w, h) + math.hypot(tx, ty)
    pad_x = int(math.ceil(max(0.0, reach - w / 2.0))) + 2
    pad_y = int(math.ceil(max(0.0, reach - h / 2.0))) + 2
    padded = np.pad(img, ((pad_y, pad_y), (pad_x, pad_x)), mode="edge")
    # Inverse map (output -> input), in Pillow's continuous coordinates (pixel centres at i + 0.5).
    theta = math.radians(angle)
    c, s = math.cos(theta), math.sin(theta)
    cx, cy = w / 2.0, h / 2.0
    # u = p - centre - shift;  q = centre + R(-theta) u  (y axis points down)
    a, b = c, -s
    d, e = s, c
    ox = cx + pad_x - a * (cx + tx) - b * (cy + ty)
    oy = cy + pad_y - d * (cx + tx) - e * (cy + ty)
    out = Image.fromarray(np.ascontiguousarray(padded), "L").transform(
        (w, h), Image.Transform.AFFINE, (a, b, ox, d, e, oy), resample=Image.Resampling.BILINEAR
    )
    return np.array(out, dtype=np.uint8)


def normalise(img: np.ndarray, size: int, threshold: int = 245, polarity: str = "dark",
              bottom_crop: float = 0.0, canvas: int | None = None) -> np.ndarray:
    """Crop to the object, centre it on a square canvas and resize: ``uint8 (size, size)``.

    * ``bottom_crop``: the fraction of the height removed from the bottom first
      (burnt-in scale bars); ``round(h * (1 - bottom_crop))`` rows are kept, at least one.
    * ``polarity``: ``'dark'`` objects are the pixels ``< threshold``;
      ``'light'`` objects are the pixels ``> 255 - threshold`` (the same
      tolerance measured from black); ``'auto'`` picks one with
      :func:`detect_polarity` (after the bottom crop).
    * The image is cropped to the bounding box of the object pixels; with no
      object pixel the whole image is kept.
    * The crop is pasted centred on a square canvas of side ``max(h, w)``,
      filled with the background: the median of the image's border pixels that
      are not object pixels (all object: 255 for dark, 0 for light).
    * The square is resized to ``size x size`` with Pillow: LANCZOS when
      shrinking (sharp, no aliasing), BILINEAR when enlarging (no ringing on
      small objects). The aspect ratio is kept by construction and the object
      is never cropped.
    * ``canvas`` (pixels of the original image, scale-preserving): the square's side is at least
      ``canvas``, so every object no larger than it keeps its size relative to the frame (a 5 px speck
      stays small, a 90 px organism fills most of a 100 px canvas); larger objects are shrunk to fit.
      None: each object on its own square (fills the frame whatever its size).
    """
    img = _check_grey(img)
    size = int(size)
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if not 0.0 <= float(bottom_crop) < 1.0:
        raise ValueError(f"bottom_crop must be in [0, 1), got {bottom_crop}")
    if polarity not in POLARITIES:
        raise ValueError(f"polarity must be one of {POLARITIES}, got {polarity!r}")
    if bottom_crop:
        h = img.shape[0]
        img = img[: max(1, int(round(h * (1.0 - float(bottom_crop)))))]
    if polarity == "auto":
        polarity = detect_polarity(img)
    if polarity == "dark":
        obj = img < threshold
        fallback = 255
    else:
        obj = img > (255 - threshold)
        fallback = 0

    border = _border(img)
    border_bg = border[~_border(obj)]
    background = int(np.rint(np.median(border_bg))) if border_bg.size else fallback

    rows = np.flatnonzero(obj.any(axis=1))
    if rows.size:
        cols = np.flatnonzero(obj.any(axis=0))
        img = img[rows[0]: rows[-1] + 1, cols[0]: cols[-1] + 1]
    h, w = img.shape
    side = max(h, w, int(canvas or 0))
    square = np.full((side, side), background, dtype=np.uint8)
    top, left = (side - h) // 2, (side - w) // 2
    square[top: top + h, left: left + w] = img
    if side == size:
        return square
    resample = Image.Resampling.LANCZOS if side > size else Image.Resampling.BILINEAR
    out = Image.fromarray(square, "L").resize((size, size), resample=resample)
    return np.array(out, dtype=np.uint8)


def _check_grey(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim != 2:
        raise ValueError(f"expected a grey image (H, W), got shape {img.shape}")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"empty image array {img.shape}")
    if img.dtype != np.uint8:
        raise ValueError(f"expected uint8, got {img.dtype}")
    return img

