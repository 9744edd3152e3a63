"""normalise.canvas: a scale-preserving normalisation keeps the objects' sizes relative to each other."""

import numpy as np
import pytest

from lokiml.images import normalise
from lokiml.store import NormParams


def _disc(radius: int, side: int = 200) -> np.ndarray:
    yy, xx = np.mgrid[:side, :side]
    img = np.full((side, side), 250, np.uint8)
    img[(yy - side / 2) ** 2 + (xx - side / 2) ** 2 < radius ** 2] = 40
    return img


def _object_share(img):
    return float((img < 128).mean())


def test_own_square_makes_every_object_fill_the_frame():
    small, large = normalise(_disc(4), 64), normalise(_disc(40), 64)
    assert _object_share(small) > 0.6 and _object_share(large) > 0.6  # a disc fills pi/4 of its square


def test_a_fixed_canvas_keeps_relative_sizes_and_shrinks_larger_objects():
    small, large = normalise(_disc(4), 64, canvas=100), normalise(_disc(40), 64, canvas=100)
    ratio = _object_share(large) / max(_object_share(small), 1e-9)
    assert ratio == pytest.approx(100.0, rel=0.35)  # area ratio (40 / 4) ** 2
    huge = normalise(_disc(90), 64, canvas=100)  # larger than the canvas: shrunk to fit, never cut
    assert huge.shape == (64, 64) and _object_share(huge) > 0.6
    light = normalise(255 - _disc(4), 64, polarity="light", canvas=100)
    assert (light > 128).mean() == pytest.approx(_object_share(small), abs=0.01)


def test_canvas_enters_the_cache_key_only_when_set():
    plain = NormParams(size=64)
    assert plain.key() == NormParams(size=64, canvas=None).key()
    assert NormParams(size=64, canvas=100).key() != plain.key()
