"""Tests of lokiml.images: decoding every mode, failures as ImageError, normalising and augmenting."""

from __future__ import annotations

import io
import struct
import time
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image

from lokiml.images import ImageError, augment, decode_grey, detect_polarity, normalise


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def luma(r, g, b) -> int:
    """ITU-R 601-2 luma as Pillow rounds it."""
    return int(np.array(Image.new("RGB", (1, 1), (r, g, b)).convert("L"))[0, 0])


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height (8-bit grey) with a tiny IDAT: a decompression bomb stand-in."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
            + chunk(b"IEND", b""))


# --------------------------------------------------------------------------- modes

def test_mode_L_roundtrips_exactly():
    a = np.arange(256, dtype=np.uint8).reshape(16, 16)
    out = decode_grey(encode(Image.fromarray(a, "L"), "PNG"), "l.png")
    assert out.dtype == np.uint8 and out.shape == (16, 16)
    np.testing.assert_array_equal(out, a)


def test_mode_1_gives_black_and_white():
    im = Image.new("1", (8, 4), 0)
    im.paste(1, (4, 0, 8, 4))
    out = decode_grey(encode(im, "PNG"), "bw.png")
    assert out.shape == (4, 8)
    assert set(np.unique(out)) == {0, 255}
    assert (out[:, :4] == 0).all() and (out[:, 4:] == 255).all()


def test_mode_P_palette_uses_the_colours_luma():
    im = Image.new("P", (4, 2), 0)
    im.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    im.paste(1, (2, 0, 4, 2))
    raw = encode(im, "PNG")
    assert Image.open(io.BytesIO(raw)).mode == "P"
    out = decode_grey(raw, "p.png")
    assert (out[:, :2] == luma(255, 0, 0)).all() and (out[:, 2:] == luma(0, 255, 0)).all()


def test_mode_P_with_transparency_is_composited_over_white():
    im = Image.new("P", (4, 2), 0)
    im.putpalette([0, 0, 0, 10, 10, 10] + [0] * 762)
    im.paste(1, (2, 0, 4, 2))
    raw = encode(im, "PNG", transparency=0)
    out = decode_grey(raw, "pt.png")
    assert (out[:, :2] == 255).all() and (out[:, 2:] == 10).all()


def test_mode_RGB_uses_itu_601_luma():
    a = np.zeros((2, 3, 3), np.uint8)
    a[:, 0] = (255, 0, 0)
    a[:, 1] = (0, 255, 0)
    a[:, 2] = (10, 200, 90)
    out = decode_grey(encode(Image.fromarray(a, "RGB"), "PNG"), "rgb.png")
    assert list(out[0]) == [luma(255, 0, 0), luma(0, 255, 0), luma(10, 200, 90)]


def test_mode_RGBA_is_composited_over_white():
    a = np.zeros((1, 3, 4), np.uint8)
    a[0, 0] = (0, 0, 0, 255)      # opaque black
    a[0, 1] = (0, 0, 0, 0)        # transparent
    a[0, 2] = (0, 0, 0, 128)      # half-transparent black
    out = decode_grey(encode(Image.fromarray(a, "RGBA"), "PNG"), "rgba.png")
    assert out[0, 0] == 0 and out[0, 1] == 255 and abs(int(out[0, 2]) - 127) <= 1


def test_mode_LA_is_composited_over_white():
    a = np.array([[[50, 255], [50, 0], [0, 128]]], np.uint8)
    raw = encode(Image.fromarray(a, "LA"), "PNG")
    assert Image.open(io.BytesIO(raw)).mode == "LA"
    out = decode_grey(raw, "la.png")
    assert out[0, 0] == 50 and out[0, 1] == 255 and abs(int(out[0, 2]) - 127) <= 1


def test_mode_CMYK():
    im = Image.new("CMYK", (4, 2), (0, 0, 0, 0))   # white
    im.paste((0, 0, 0, 255), (2, 0, 4, 2))          # black
    raw = encode(im, "TIFF")
    assert Image.open(io.BytesIO(raw)).mode == "CMYK"
    out = decode_grey(raw, "cmyk.tif")
    assert (out[:, :2] == 255).all() and (out[:, 2:] == 0).all()


def test_mode_I16_full_range_is_shifted_by_8_bits():
    a = np.array([[0, 256, 32768, 65535]], np.uint16)
    raw = encode(Image.fromarray(a), "PNG")
    assert Image.open(io.BytesIO(raw)).mode == "I;16"
    out = decode_grey(raw, "16bit.png")
    np.testing.assert_array_equal(out[0], [0, 1, 128, 255])


def test_16_bit_png_with_12_bit_values_scales_by_its_own_range():
    a = np.array([[0, 2048, 4095]], np.uint16)
    out = decode_grey(encode(Image.fromarray(a), "PNG"), "12bit.png")
    np.testing.assert_array_equal(out[0], [0, 128, 255])


def test_16_bit_container_with_8_bit_values_is_kept():
    a = np.array([[0, 17, 255]], np.uint16)
    out = decode_grey(encode(Image.fromarray(a), "PNG"), "8in16.png")
    np.testing.assert_array_equal(out[0], [0, 17, 255])


def test_mode_I16B_big_endian_tiff():
    im = Image.fromarray(np.array([[0, 32768, 65535]], ">u2"))
    assert im.mode == "I;16B"
    out = decode_grey(encode(im, "TIFF"), "16b.tif")
    np.testing.assert_array_equal(out[0], [0, 128, 255])


def test_mode_I_and_F():
    out = decode_grey(encode(Image.fromarray(np.array([[0, 65535]], np.int32)), "TIFF"), "i.tif")
    np.testing.assert_array_equal(out[0], [0, 255])
    out = decode_grey(encode(Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32)), "TIFF"), "f.tif")
    np.testing.assert_array_equal(out[0], [0, 128, 255])


def test_gif_multi_frame_gives_the_first_frame():
    frames = [Image.new("L", (6, 5), 30), Image.new("L", (6, 5), 220)]
    raw = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    assert Image.open(io.BytesIO(raw)).n_frames == 2
    out = decode_grey(raw, "anim.gif")
    assert out.shape == (5, 6) and (out == 30).all()


def test_real_gif_palette_image(shared_data):
    path = shared_data / "ecotaxa_back_qa" / "images" / "4261.gif"
    raw = path.read_bytes()
    with Image.open(io.BytesIO(raw)) as im:
        assert im.mode == "P"
        expected = np.array(im.convert("RGB").convert("L"))
    out = decode_grey(raw, path.name)
    assert out.dtype == np.uint8 and out.shape == (830, 698)
    np.testing.assert_array_equal(out, expected)


def _jpeg_via_rgb(raw: bytes) -> np.ndarray:
    """The grey image the slow way: decode the JPEG fully (to RGB), then convert('L')."""
    with Image.open(io.BytesIO(raw)) as im:
        return np.array(im.convert("RGB").convert("L"), dtype=np.uint8)


def test_jpeg_of_grey_content_decodes_to_luma_exactly_as_converting_rgb():
    # LOKI stores grey images as JPEGs with three equal channels: decoding the Y channel only
    # (Image.draft('L'), no chroma) must give exactly what decoding to RGB and converting gives.
    rng = np.random.default_rng(4)
    a = np.clip(rng.normal(200, 40, (300, 420)), 0, 255).astype(np.uint8)
    a[100:200, 50:300] = rng.integers(20, 120, (100, 250), dtype=np.uint8)
    for quality in (75, 95):
        raw = encode(Image.fromarray(a).convert("RGB"), "JPEG", quality=quality)
        assert Image.open(io.BytesIO(raw)).mode == "RGB"
        np.testing.assert_array_equal(decode_grey(raw, "grey_rgb.jpg"), _jpeg_via_rgb(raw))


def test_colour_jpeg_decodes_to_luma_as_close_to_the_original_as_converting_rgb():
    # Y (the JPEG's own luma) and convert('L') of the decoded RGB differ only where the RGB route
    # clamps out-of-gamut colours; both are equally close to the luma of the image before encoding.
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:240, :320]
    rgb = np.stack([xx * 255 // 319, yy * 255 // 239, (xx + yy) % 256], axis=-1).astype(np.int16)
    rgb = np.clip(rgb + rng.integers(-30, 31, rgb.shape), 0, 255).astype(np.uint8)
    original = np.array(Image.fromarray(rgb, "RGB").convert("L"), dtype=int)
    raw = encode(Image.fromarray(rgb, "RGB"), "JPEG", quality=90)
    out = decode_grey(raw, "colour.jpg")
    ref = _jpeg_via_rgb(raw)
    assert out.shape == ref.shape == (240, 320) and out.dtype == np.uint8
    diff = np.abs(out.astype(int) - ref)
    assert diff.mean() < 0.2 and np.percentile(diff, 99) <= 4
    assert abs(np.abs(out - original).mean() - np.abs(ref - original).mean()) < 0.1


def test_cmyk_and_grey_jpegs_still_decode():
    im = Image.new("CMYK", (40, 20), (0, 0, 0, 0))  # white
    im.paste((0, 0, 0, 255), (20, 0, 40, 20))      # black
    raw = encode(im, "JPEG", quality=95)
    assert Image.open(io.BytesIO(raw)).mode == "CMYK"
    out = decode_grey(raw, "cmyk.jpg")
    assert out.shape == (20, 40)
    np.testing.assert_array_equal(out, _jpeg_via_rgb(raw))
    assert out[:, :15].min() >= 250 and out[:, 25:].max() <= 5
    grey = np.tile(np.arange(0, 250, 5, dtype=np.uint8), (30, 1))
    raw = encode(Image.fromarray(grey, "L"), "JPEG", quality=95)
    np.testing.assert_array_equal(decode_grey(raw, "l.jpg"), _jpeg_via_rgb(raw))


def test_jpeg_draft_decodes_at_reduced_scale_but_not_below_min_size():
    a = np.full((800, 600), 230, np.uint8)
    a[200:600, 100:500] = 40
    raw = encode(Image.fromarray(a).convert("RGB"), "JPEG", quality=90)
    full = decode_grey(raw, "big.jpg")
    small = decode_grey(raw, "big.jpg", min_size=100)
    assert full.shape == (800, 600)
    assert small.shape == (100, 75) or min(small.shape) >= 100
    assert min(small.shape) >= 100 and small.shape[0] < 800
    assert abs(int(np.median(small)) - int(np.median(full))) <= 2


# --------------------------------------------------------------------------- failures

def test_zero_bytes_is_an_empty_image():
    with pytest.raises(ImageError) as e:
        decode_grey(b"", "empty.jpg")
    assert e.value.reason == "empty image" and "empty.jpg" in str(e.value)


def test_truncated_jpeg():
    rng = np.random.default_rng(0)
    raw = encode(Image.fromarray(rng.integers(0, 255, (200, 200), dtype=np.uint8)), "JPEG", quality=90)
    for cut in (len(raw) // 2, len(raw) - 50):
        with pytest.raises(ImageError) as e:
            decode_grey(raw[:cut], "cut.jpg")
        assert e.value.reason == "truncated image"


def test_truncated_png():
    rng = np.random.default_rng(1)
    raw = encode(Image.fromarray(rng.integers(0, 255, (200, 200), dtype=np.uint8)), "PNG")
    with pytest.raises(ImageError) as e:
        decode_grey(raw[: len(raw) // 2], "cut.png")
    assert e.value.reason in ("truncated image", "unreadable image")


def test_random_bytes_are_unreadable():
    with pytest.raises(ImageError) as e:
        decode_grey(np.random.default_rng(2).bytes(4000), "noise.jpg")
    assert e.value.reason == "unreadable image"
    # A valid JPEG signature followed by garbage is not a raw Pillow exception either.
    with pytest.raises(ImageError):
        decode_grey(b"\xff\xd8\xff\xe0" + np.random.default_rng(3).bytes(4000), "garbage.jpg")


def test_decompression_bomb_is_refused_from_the_header_without_allocating():
    bomb = png_header_only(100_000, 100_000)
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(ImageError) as e:
        decode_grey(bomb, "bomb.png")
    elapsed = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert e.value.reason == "image too large"
    assert elapsed < 1.0 and peak < 20_000_000


def test_our_pixel_limit_applies_without_pillows(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)   # Pillow's own check off: ours must still hold
    with pytest.raises(ImageError) as e:
        decode_grey(png_header_only(100_000, 100_000), "bomb.png")
    assert e.value.reason == "image too large"
    with pytest.raises(ImageError) as e:   # well under Pillow's default limit, over ours
        decode_grey(png_header_only(5_000, 5_000), "big.png", max_pixels=1_000_000)
    assert e.value.reason == "image too large"


def test_pixel_limit_counts_width_times_height():
    raw = encode(Image.new("L", (100, 50), 200), "PNG")
    assert decode_grey(raw, "ok.png", max_pixels=5_000).shape == (50, 100)
    with pytest.raises(ImageError) as e:
        decode_grey(raw, "ok.png", max_pixels=4_999)
    assert e.value.reason == "image too large"


def test_real_corrupted_loki_images(shared_data):
    folder = shared_data / "ecotaxa_back_qa" / "import_issues" / "corrupted_img"
    paths = sorted(p for p in folder.iterdir() if p.suffix in (".png", ".jpg"))
    assert len(paths) == 3
    for path in paths:
        with pytest.raises(ImageError) as e:
            decode_grey(path.read_bytes(), path.name)
        assert e.value.reason in ("unreadable image", "truncated image")
        assert path.name in str(e.value)


def test_real_tsv_issue_images(shared_data):
    folder = shared_data / "ecotaxa_back_qa" / "import_issues" / "tsv_issues"
    with pytest.raises(ImageError) as e:
        decode_grey((folder / "m106_mn01_n3_sml_corrupted_image.jpg").read_bytes(), "corrupted")
    assert e.value.reason == "unreadable image"
    good = decode_grey((folder / "m106_mn01_n3_sml_1.jpg").read_bytes(), "good")
    assert good.shape == (56, 35) and detect_polarity(good) == "dark"
    big = (folder / "m106_mn01_n3_sml_too_big.png").read_bytes()
    assert decode_grey(big, "too_big").shape == (346, 225)
    with pytest.raises(ImageError) as e:
        decode_grey(big, "too_big", max_pixels=10_000)
    assert e.value.reason == "image too large"


def test_image_error_rejects_unknown_reasons():
    with pytest.raises(ValueError):
        ImageError("bad luck", "x.jpg")


# --------------------------------------------------------------------------- normalise

def test_normalise_output_dtype_shape_and_centring():
    img = np.full((100, 160), 250, np.uint8)
    img[10:30, 120:150] = 20          # a 20 x 30 object off-centre
    out = normalise(img, 64)
    assert out.dtype == np.uint8 and out.shape == (64, 64)
    # 30 wide x 20 high -> square of 30, object occupies full width and the middle 2/3 of the height.
    dark = out < 128
    rows = np.flatnonzero(dark.any(axis=1))
    cols = np.flatnonzero(dark.any(axis=0))
    assert cols[0] <= 1 and cols[-1] >= 62
    assert abs((rows[0] + rows[-1]) / 2 - 31.5) <= 1.0
    assert abs((rows[-1] - rows[0] + 1) - 64 * 20 / 30) <= 2
    # background is the border median: 250
    assert out[0, 32] == 250 and out[-1, 32] == 250


def test_normalise_never_crops_a_long_thin_object():
    img = np.full((40, 1723), 250, np.uint8)
    img[14:26, 0:1723] = 60            # a fibre spanning the whole width
    out = normalise(img, 96)
    assert out.shape == (96, 96)
    dark_cols = np.flatnonzero((out < 240).any(axis=0))
    assert dark_cols[0] == 0 and dark_cols[-1] == 95      # both ends are kept
    dark_rows = np.flatnonzero((out < 240).any(axis=1))
    assert abs((dark_rows[0] + dark_rows[-1]) / 2 - 47.5) <= 1.0


def test_normalise_real_zooscan_fibre_with_scale_bar(shared_data):
    zpath = shared_data / "zooscan_export_13539" / "export_13539_20240728_0803.zip"
    with zipfile.ZipFile(zpath) as z:
        raw = z.read("0/0_d1_1_16.jpg")
    img = decode_grey(raw, "0_d1_1_16.jpg")
    assert img.shape == (49, 1485)
    out = normalise(img, 128, bottom_crop=0.35)   # the bar and its "1 mm" sit in the bottom third
    assert out.shape == (128, 128)
    obj_cols = np.flatnonzero((out < 250).any(axis=0))
    assert obj_cols[-1] - obj_cols[0] > 120                   # the 1485 px fibre spans the canvas
    assert out.min() > 200                                    # the black scale bar is gone
    assert normalise(img, 128).min() < 200                    # without the crop it is kept
    assert (normalise(img, 128, polarity="auto", bottom_crop=0.35) == out).all()


def test_normalise_no_object_keeps_the_whole_image():
    img = np.full((30, 50), 250, np.uint8)
    out = normalise(img, 20)
    assert out.shape == (20, 20) and (out == 250).all()
    black = np.zeros((10, 10), np.uint8)                      # all object: background falls back to white
    assert normalise(black, 10).shape == (10, 10)


def test_normalise_light_on_dark_with_auto():
    img = np.full((120, 80), 5, np.uint8)
    img[50:60, 10:30] = 220           # bright UVP-like particle, 20 wide x 10 high
    assert detect_polarity(img) == "light"
    out = normalise(img, 32, polarity="auto")
    assert out.shape == (32, 32)
    assert out[16, 16] > 200 and out[16, 0] > 200             # the object fills the width...
    assert out[0, 16] < 20 and out[31, 16] < 20               # ...and is padded with the dark background
    assert (normalise(img, 32, polarity="light") == out).all()
    # Taken as dark, the whole image is "object" and nothing is cropped: a small bright patch remains.
    assert normalise(img, 32, polarity="dark")[16, 16] < 20


def test_bottom_crop_removes_a_scale_bar():
    clean = np.full((100, 100), 245, np.uint8)
    clean[20:50, 30:60] = 40
    with_bar = clean.copy()
    with_bar[92:96, 5:40] = 0         # the scale bar
    expected = normalise(clean[:85], 48)
    assert (normalise(with_bar, 48, bottom_crop=0.15) == expected).all()
    assert not (normalise(with_bar, 48) == expected).all()


def test_normalise_upscales_small_objects():
    img = np.full((20, 20), 240, np.uint8)
    img[5:15, 8:12] = 30
    out = normalise(img, 100)
    assert out.shape == (100, 100) and out.dtype == np.uint8
    assert out[50, 50] < 60


def test_normalise_rejects_bad_arguments():
    img = np.full((10, 10), 200, np.uint8)
    with pytest.raises(ValueError):
        normalise(img, 8, polarity="up")
    with pytest.raises(ValueError):
        normalise(img, 8, bottom_crop=1.0)
    with pytest.raises(ValueError):
        normalise(img.astype(np.float32), 8)
    with pytest.raises(ValueError):
        normalise(np.zeros((4, 4, 3), np.uint8), 8)


# --------------------------------------------------------------------------- augment

def _asymmetric():
    img = np.full((60, 80), 240, np.uint8)
    img[10:20, 5:30] = 10
    img[40:55, 60:70] = 100
    return img


def test_augment_identity_and_flip():
    img = _asymmetric()
    assert (augment(img, False, 0.0, 0.0, 0.0) == img).all()
    flipped = augment(img, True, 0.0, 0.0, 0.0)
    assert (flipped == img[:, ::-1]).all()
    assert (augment(flipped, True, 0.0, 0.0, 0.0) == img).all()


def test_augment_is_deterministic_and_keeps_shape_and_dtype():
    img = _asymmetric()
    a = augment(img, True, 37.5, 0.1, -0.05)
    b = augment(img, True, 37.5, 0.1, -0.05)
    assert a.shape == img.shape and a.dtype == np.uint8
    assert (a == b).all()
    assert not (a == augment(img, True, 38.5, 0.1, -0.05)).all()


def test_augment_rotation_direction_and_quarter_turns():
    img = np.full((41, 41), 240, np.uint8)
    img[20, 30:40] = 0                # a bar right of the centre
    out = augment(img, False, 90.0, 0.0, 0.0)          # counter-clockwise: the bar goes up
    assert out[1:10, 20].max() < 30 and out[20, 30:40].min() > 200
    out180 = augment(img, False, 180.0, 0.0, 0.0)
    np.testing.assert_allclose(out180.astype(int), img[::-1, ::-1].astype(int), atol=1)


def test_augment_shift_and_nearest_fill():
    img = np.tile(np.arange(10, 210, 20, dtype=np.uint8), (10, 1))   # columns 10, 30, ... 190
    out = augment(img, False, 0.0, 0.2, 0.0)                        # 2 px to the right
    np.testing.assert_array_equal(out[:, 2:], img[:, :-2])
    assert (out[:, :2] == 10).all()                                  # edge value extends, no black
    down = augment(img, False, 0.0, 0.0, 0.3)
    np.testing.assert_array_equal(down, img)                         # rows are identical: shift invisible
    rot = augment(np.full((30, 50), 240, np.uint8), False, 45.0, 0.1, 0.1)
    assert (rot == 240).all()                                        # no black corners after rotation


@pytest.mark.parametrize("angle", [30.0, 90.0, -123.377, 170.0])
@pytest.mark.parametrize("shift", [(0.1, 0.1), (-0.1, 0.07), (0.1, -0.1)])
def test_augment_fills_corners_with_the_background_at_any_rotation_and_shift(angle, shift):
    # A rotation plus a shift used to sample outside the padded image: black corners,
    # which normalisation then took for object pixels.
    img = np.full((60, 200), 250, np.uint8)
    img[25:35, 20:180] = 50
    out = augment(img, True, angle, *shift)
    border = np.concatenate([out[0], out[-1], out[:, 0], out[:, -1]])
    assert border.min() >= 50  # only background or object values, never the black of an unpadded sample
    corners = [out[0, 0], out[0, -1], out[-1, 0], out[-1, -1]]
    assert min(corners) == 250


# --------------------------------------------------------------------------- extremes (issue 14)

def _peak_of(fn):
    tracemalloc.start()
    try:
        out = fn()
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("shape", [(10, 30000), (30000, 10), (2, 100000)], ids=["30000x10", "10x30000", "100000x2"])
def test_extreme_aspect_ratios_keep_their_object_without_a_canvas_of_their_length(shape):
    img = np.full(shape, 250, np.uint8)
    long_axis = int(np.argmax(shape))
    sl = [slice(None), slice(None)]
    sl[long_axis] = slice(shape[long_axis] // 10, -shape[long_axis] // 10)
    img[tuple(sl)] = 30  # the object: a long dark line, as thick as the image
    out, peak = _peak_of(lambda: normalise(img, 128))
    assert out.shape == (128, 128)
    assert out.min() < 100  # the line is still dark: kept, not averaged away into the background
    assert peak < 30 * 2**20, f"{peak / 2**20:.0f} MB"  # a 30000 x 30000 canvas was 900 MB


def test_square_shrinks_first_and_keeps_the_aspect_ratio():
    from lokiml.images import square

    crop = np.zeros((40, 400), np.uint8)
    out = square(crop, 100, background=255)
    rows = np.flatnonzero((out < 128).any(axis=1))
    assert out.shape == (100, 100) and len(rows) == 10 and abs((rows[0] + rows[-1]) / 2 - 49.5) <= 1
    assert (square(np.zeros((1, 5000), np.uint8), 64, 255) < 128).any()  # a one-pixel line survives


def test_augmenting_an_extreme_image_stays_bounded():
    img = np.full((3, 60000), 250, np.uint8)
    img[1, 100:59000] = 20
    out, peak = _peak_of(lambda: augment(img, True, 37.0, 0.05, -0.03))
    assert out.shape == img.shape and out.dtype == np.uint8
    assert peak < 200 * 2**20, f"{peak / 2**20:.0f} MB"


def test_large_16_bit_image_converts_in_bands_to_the_same_grey():
    from lokiml import images

    a = (np.arange(3000 * 2000, dtype=np.uint32) % 4096).astype(np.uint16).reshape(3000, 2000)
    data = encode(Image.fromarray(a), "PNG")
    whole = decode_grey(data, "a.png")
    old = images._BAND_PIXELS
    try:
        images._BAND_PIXELS = 100_000  # 50 rows at a time
        assert (decode_grey(data, "a.png") == whole).all()
    finally:
        images._BAND_PIXELS = old
    assert whole.max() == 255  # 12-bit values scaled by their own depth


def test_stats_and_has_object():
    from lokiml.images import has_object, has_object_is_certain, image_stats

    white = image_stats(np.full((20, 20), 255, np.uint8))
    assert not has_object(white) and not has_object(white, polarity="light")
    black = image_stats(np.zeros((20, 20), np.uint8))
    assert not has_object(black) and not has_object(black, polarity="auto")
    spot = np.full((20, 20), 250, np.uint8)
    spot[8:12, 8:12] = 100
    st = image_stats(spot)
    assert has_object(st) and st.border > st.centre
    assert not has_object(st, threshold=100)  # nothing darker than 100
    inexact = image_stats(np.full((20, 20), 250, np.uint8), exact=False)
    assert not has_object_is_certain(inexact)  # "no object" at a reduced scale must be confirmed


def test_header_reads_the_size_of_a_bomb_without_warnings(recwarn):
    from lokiml.images import header

    assert header(png_header_only(100_000, 100_000))[:2] == (100_000, 100_000)
    assert header(b"not an image") is None
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]
