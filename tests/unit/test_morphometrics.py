"""Morphometric descriptors measured on the images: geometry, polarity, scale-bar crop, cache, bad images, real data."""

import io
import logging
import zipfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lokiml import morphometrics as m

NAMES = list(m.NAMES)


def ellipse(a=40, b=15, size=(140, 160), grey=60, background=250, angle=0.0):
    """A filled ellipse of semi-axes a, b (pixels), dark on light, rotated by ``angle`` radians."""
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    cy, cx = h / 2, w / 2
    u = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
    v = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
    img = np.full((h, w), background, np.uint8)
    img[(u / a) ** 2 + (v / b) ** 2 <= 1] = grey
    return img


def measured(img, **kw):
    vec, status = m.measure_image(img, **kw)
    return dict(zip(NAMES, vec)), status


def png(img) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def test_geometry_of_an_ellipse():
    v, status = measured(ellipse(40, 15))
    assert status == "ok"
    assert v["area"] == pytest.approx(np.pi * 40 * 15, rel=0.02)
    assert v["major_axis"] == pytest.approx(80, rel=0.03) and v["minor_axis"] == pytest.approx(30, rel=0.05)
    assert v["feret_max"] == pytest.approx(81, abs=2) and v["feret_min"] == pytest.approx(31, abs=2)
    assert v["elongation"] == pytest.approx(80 / 30, rel=0.06)
    assert v["eccentricity"] == pytest.approx(np.sqrt(1 - (15 / 40) ** 2), abs=0.01)
    assert v["solidity"] > 0.95 and v["area_holes"] == 0 and v["euler_number"] == 1
    assert v["contrast_mean"] == pytest.approx(190) and v["contrast_std"] == pytest.approx(0)
    assert v["background"] == 250 and v["components"] == 1 and v["largest_share"] == 1


def test_descriptors_do_not_depend_on_orientation():
    """A plankter lies in any orientation: a rotated or mirrored image gives the same descriptors."""
    base = ellipse(45, 12, size=(160, 160), angle=0.3)
    base[70:90, 60:70] = 200  # a paler patch: grey statistics and weighted moments are not uniform
    v0 = np.array(list(measured(base)[0].values()))
    for img in (np.rot90(base), np.fliplr(base), np.rot90(base, 2).T):
        v = np.array(list(measured(np.ascontiguousarray(img))[0].values()))
        close = np.isclose(v, v0, rtol=0.02, atol=1e-6)
        wrong = [n for n, ok in zip(NAMES, close) if not ok and n != "skeleton_length"]
        assert not wrong, wrong
    # an arbitrary angle: the shape descriptors stay close (pixelisation only)
    v30 = measured(ellipse(45, 12, size=(160, 160), angle=0.3 + np.pi / 6))[0]
    v0d = measured(ellipse(45, 12, size=(160, 160), angle=0.3))[0]
    for n in ("area", "major_axis", "minor_axis", "feret_max", "feret_min", "eccentricity", "hu1"):
        assert v30[n] == pytest.approx(v0d[n], rel=0.04), n


def test_shapes_are_told_apart_by_their_descriptors():
    disk, rod = measured(ellipse(20, 20))[0], measured(ellipse(40, 6))[0]
    ring_img = ellipse(30, 30)
    ring_img[ellipse(18, 18) < 128] = 250
    ring = measured(ring_img)[0]
    assert disk["circularity"] > 0.85 > rod["circularity"]
    assert rod["elongation"] > 5 > disk["elongation"]
    assert ring["area_holes"] == pytest.approx(np.pi * 18 ** 2, rel=0.05) and ring["euler_number"] == 0
    assert ring["solidity"] < 0.7 < disk["solidity"]


def test_polarity_light_objects_measure_like_dark_ones():
    """UVP vignettes (light on dark) with polarity light, or auto, measure as their dark-on-light negative."""
    dark = ellipse(30, 12, grey=40, background=245)
    light = 255 - dark
    vd, sd = measured(dark, polarity="dark")
    vl, sl = measured(light, polarity="light")
    va, _ = measured(light, polarity="auto")
    assert sd == sl == "ok"
    for n in NAMES:
        if n == "background":
            assert vd[n] == 245 and vl[n] == 10 and va[n] == 10
        else:
            assert vl[n] == pytest.approx(vd[n], rel=1e-9, abs=1e-9), n
            assert va[n] == pytest.approx(vd[n], rel=1e-9, abs=1e-9), n
    # with the wrong polarity the whole background is the object: not the same measurement
    assert measured(light, polarity="dark")[0]["area"] > 4 * vd["area"]


def test_largest_component_is_the_object_and_specks_are_counted():
    img = ellipse(30, 10)
    img[5:7, 5:7] = 0  # a 4-pixel speck
    img[130:132, 150] = 0  # 2 pixels: JPEG noise, not counted as a component
    v = measured(img)[0]
    assert v["area"] == pytest.approx(np.pi * 300, rel=0.03)
    assert v["components"] == 2 and v["area_all_components"] == v["area"] + 6
    assert v["contrast_max"] == pytest.approx(190)  # the speck's black pixels are not the object's


def test_bottom_crop_cuts_a_scale_bar_as_the_normalisation_does():
    """ZooScan-like: a black scale bar at the bottom is bigger than the faint object above it."""
    img = np.full((120, 200), 255, np.uint8)
    img[20:40, 80:100] = 230  # the object: 400 faint pixels
    img[105:112, 10:160] = 0  # the bar: 1050 black pixels
    p_none = m.MorphoParams(bottom_crop=0.0)
    p_crop = m.MorphoParams(bottom_crop=0.2)
    bar = dict(zip(NAMES, m.measure_bytes(png(img), "v.png", p_none)[0]))
    obj = dict(zip(NAMES, m.measure_bytes(png(img), "v.png", p_crop)[0]))
    assert bar["area"] == 1050 and bar["components"] == 2
    assert obj["area"] == 400 and obj["components"] == 1 and obj["contrast_mean"] == 25
    assert m.crop_bottom(img, 0.2).shape == (96, 200)  # round(120 * 0.8), as lokiml.images.normalise


def test_no_object_pixel_is_a_status_not_a_crash():
    vec, status = m.measure_image(np.full((30, 30), 255, np.uint8))
    assert status == "no_object" and np.isnan(vec).all()
    # a tiny object still measures (1 pixel, 1 pixel wide)
    one = np.full((10, 10), 255, np.uint8)
    one[4, 4] = 0
    v, status = measured(one)
    assert status == "ok" and v["area"] == 1 and v["feret_min"] == pytest.approx(1) and v["feret_max"] > 1


def test_parameters_are_checked():
    with pytest.raises(ValueError, match="polarity"):
        m.MorphoParams(polarity="bright")
    with pytest.raises(ValueError, match="bottom_crop"):
        m.MorphoParams(bottom_crop=1.5)
    assert m.MorphoParams().key() != m.MorphoParams(threshold=200).key()
    assert m.MorphoParams().key() == m.MorphoParams(max_pixels=10).key()  # refuses images, changes no value


def test_measure_items_statuses_cache_and_order(tmp_path, caplog):
    images = {"a.png": png(ellipse(30, 10)), "b.png": png(ellipse(20, 20)), "bad.png": b"not an image",
              "blank.png": png(np.full((20, 20), 255, np.uint8))}
    items = pd.DataFrame({"object_id": ["o4", "o1", "o2", "o3", "o5"],
                          "image_ref": ["b.png", "a.png", "bad.png", "blank.png", ""]})
    reads = []

    def read(ref):
        reads.append(ref)
        return images[ref]

    cache = tmp_path / "cache"
    with caplog.at_level(logging.WARNING):
        t = m.measure_items(items, read, m.MorphoParams(), threads=2, cache_dir=cache)
    assert t["object_id"].tolist() == ["o4", "o1", "o2", "o3", "o5"]
    st = t.set_index("object_id")["morpho_status"]
    assert st["o1"] == st["o4"] == "ok" and st["o3"] == "no_object" and st["o5"] == "no_image"
    assert st["o2"].startswith("unreadable_image") and "bad.png" in caplog.text
    assert t.set_index("object_id").loc["o1", "morpho_area"] == pytest.approx(np.pi * 300, rel=0.03)
    assert t.loc[t["morpho_status"] != "ok", list(m.FEATURES)].isna().all().all()
    cached = sorted(cache.rglob("*.npy"))
    assert len(cached) == 3  # a, b and the blank one: one file per image content, under the parameters' key
    # a second run reads every measurement from the cache and gives the same table
    again = m.measure_items(items, read, m.MorphoParams(), threads=1, cache_dir=cache)
    pd.testing.assert_frame_equal(t, again)
    other = m.measure_items(items, read, m.MorphoParams(threshold=100), threads=1, cache_dir=cache)
    assert len(sorted(cache.rglob("*.npy"))) == 6 and other.loc[0, "morpho_status"] == "ok"


def test_a_classifier_learns_shape_classes_from_the_morphometrics():
    """Descriptors that carry the shape: a random forest tells rods, disks and rings apart on unseen images."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    rows, labels = [], []
    for i in range(90):
        k = i % 3
        s = rng.uniform(0.7, 1.3)
        if k == 0:
            img = ellipse(35 * s, 7 * s, angle=rng.uniform(0, np.pi))
        elif k == 1:
            img = ellipse(20 * s, 18 * s, angle=rng.uniform(0, np.pi))
        else:
            img = ellipse(25 * s, 23 * s, angle=rng.uniform(0, np.pi))
            img[ellipse(14 * s, 12 * s, angle=rng.uniform(0, np.pi)) < 128] = 250
        img = np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
        rows.append(m.measure_image(img)[0])
        labels.append(k)
    x, y = np.array(rows), np.array(labels)
    model = RandomForestClassifier(n_estimators=50, random_state=0).fit(x[:60], y[:60])
    pred = model.predict(x[60:])
    assert f1_score(y[60:], pred, average="macro") > 0.9
    assert len(set(pred)) == 3


def test_real_zooscan_and_uvp_images(shared_data, tmp_path):
    """Every real vignette measures: ZooScan (dark on white, scale bar cut), UVP6 (light on black)."""
    zs = shared_data / "zooscan_export_13539" / "export_13539_20240728_0803.zip"
    with zipfile.ZipFile(zs) as z:
        names = sorted(n for n in z.namelist() if n.endswith(".jpg"))[:40]
        items = pd.DataFrame({"object_id": names, "image_ref": names})
        t = m.measure_items(items, z.read, m.MorphoParams(polarity="dark", bottom_crop=0.3), threads=2)
    assert (t["morpho_status"] == "ok").all()
    assert (t["morpho_area"] > 20).all() and t["morpho_feret_max"].max() > 200  # fibres are long
    uvp = shared_data / "ecotaxa_back_qa" / "import_uvp6_zip_in_dir" / "b_da_19_Images.zip"
    with zipfile.ZipFile(uvp) as z:
        names = sorted(n for n in z.namelist() if n.endswith(".png"))
        items = pd.DataFrame({"object_id": names, "image_ref": names})
        light = m.measure_items(items, z.read, m.MorphoParams(polarity="light"), threads=1)
        auto = m.measure_items(items, z.read, m.MorphoParams(polarity="auto"), threads=1)
        dark = m.measure_items(items, z.read, m.MorphoParams(polarity="dark"), threads=1)
    assert (light["morpho_status"] == "ok").all() and len(light) == 15
    pd.testing.assert_frame_equal(light, auto)
    assert (light["morpho_background"] <= 10).all() and (light["morpho_contrast_mean"] > 10).all()
    # read with the wrong polarity, the black background becomes the object
    assert (dark["morpho_area"] > light["morpho_area"]).all()
