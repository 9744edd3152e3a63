"""Keeping a job under its declared memory (``mem_mb``) whatever images it meets.

A job that decodes images in several threads holds, at its peak, every thread's decoded image at
once: two 100-Mpixel RGBA images need about 1.8 GB. :class:`MemoryBudget` makes the threads take
turns instead: each decoding reserves what it will need (estimated from the image's header by
:func:`decode_need`) out of what the job may still use, and waits until enough is free. An image
that alone needs more than the whole budget is refused (:class:`lokiml.images.ImageError`,
``image too large``, saying how much it needs), never decoded. ``set_budget(mem_mb)`` sets the
process's budget from the job's ``mem_mb`` and what the process holds already.
"""

from __future__ import annotations

import contextlib
import logging
import threading

log = logging.getLogger(__name__)

MB = 1 << 20
#: Bytes per pixel of a decoded image, as Pillow stores each mode (RGB takes 4, like RGBA).
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
#: On top of the decoded image, per pixel: the grey array and its copies, the object mask, the crop.
_WORK_BYTES = 4
#: Fixed extra of one decoding: the bands of a large conversion, Pillow's buffers.
_FIXED = 96 * MB
#: The share of mem_mb this process lets images take, with what it holds when the budget is set.
_SHARE = 0.9


def rss_bytes() -> int:
    """Resident memory of this process now (Linux; 0 where unknown)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def decode_need(data: bytes, reduce_to: int | None = None) -> tuple[int, int, int]:
    """``(bytes, width, height)``: what decoding and normalising ``data`` needs, from its header only.

    ``reduce_to``: the JPEG will be decoded at a reduced scale keeping both sides at least this
    (:func:`lokiml.images.decode_grey`'s ``min_size``). ``(0, 0, 0)`` when the header cannot be
    read (the decoder then fails fast on it).
    """
    from .images import header

    found = header(data)
    if found is None:  # not an image: the decoder will say so, without allocating
        return 0, 0, 0
    w, h, mode, fmt = found
    dw, dh = w, h
    if fmt == "JPEG" and reduce_to:
        for scale in (8, 4, 2):
            if w // scale >= reduce_to and h // scale >= reduce_to:
                dw, dh = -(-w // scale), -(-h // scale)
                break
    bpp = _MODE_BYTES.get(mode, 4)
    return dw * dh * (bpp + _WORK_BYTES) + len(data) + _FIXED, w, h


class MemoryBudget:
    """Bytes that image decodings in this process may hold at once; each waits for its share."""

    def __init__(self, total: int):
        self.total = int(total)
        self.free = int(total)
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def reserve(self, need: int, name: str = ""):
        from .images import ImageError

        if need > self.total:
            raise ImageError("image too large", name,
                             f"decoding it needs about {need / MB:.0f} MB, more than the {self.total / MB:.0f} MB "
                             "this job may use for images: raise the rule's mem_mb (profile set-resources), or "
                             "lower normalise.max_pixels")
        with self._cond:
            self._cond.wait_for(lambda: self.free >= need)
            self.free -= need
        try:
            yield
        finally:
            with self._cond:
                self.free += need
                self._cond.notify_all()


_BUDGET: MemoryBudget | None = None


def set_budget(mem_mb: float | None) -> MemoryBudget | None:
    """Let image decodings of this process use what is left of ``mem_mb`` (None: no limit)."""
    global _BUDGET
    if not mem_mb:
        _BUDGET = None
        return None
    total = max(int(_SHARE * float(mem_mb) * MB) - rss_bytes(), 64 * MB)
    _BUDGET = MemoryBudget(total)
    log.info("memory: images may take %.0f MB at once (mem_mb %s, %.0f MB held already)", total / MB, mem_mb,
             rss_bytes() / MB)
    return _BUDGET


@contextlib.contextmanager
def reserved(data: bytes, name: str = "", reduce_to: int | None = None):
    """Hold this process's budget for decoding (and normalising) ``data`` while the block runs."""
    if _BUDGET is None:
        yield
        return
    need, _, _ = decode_need(data, reduce_to)
    with _BUDGET.reserve(need, name):
        yield
