"""lokiml.train: cached features, resume after a kill, determinism, early stopping, fine-tuning, outputs.

Everything runs on a tiny synthetic image store (3 classes of shapes, 32 px) with small
backbones, so that the whole file takes a few minutes on 2 CPU cores.
"""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

keras = pytest.importorskip("keras")

from lokiml import models, train  # noqa: E402
from lokiml.io import read_tsv  # noqa: E402

CLASSES = ["circle", "square", "cross"]
SIZE = 32
BACKBONE = "resnet50"  # has BatchNorm, and unlike MobileNets its random-init features differ clearly per image
FINE_TUNE = {"layers": 12, "epochs": 2, "learning_rate": 0.0001}
SCRIPTS = Path(__file__).resolve().parents[2] / "workflow" / "scripts"


# ---- synthetic data ---------------------------------------------------------------------


def shape_image(kind: int, size: int, rng) -> np.ndarray:
    """A dark circle, square or cross at a random place and size on a light, noisy background."""
    img = np.full((size, size), 255.0)
    yy, xx = np.mgrid[:size, :size]
    cy, cx = size / 2 + rng.uniform(-size / 8, size / 8, 2)
    r = size * rng.uniform(0.2, 0.3)
    if kind == 0:
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2
    elif kind == 1:
        mask = (abs(yy - cy) < r) & (abs(xx - cx) < r)
    else:
        mask = ((abs(yy - cy) < r / 4) & (abs(xx - cx) < r)) | ((abs(xx - cx) < r / 4) & (abs(yy - cy) < r))
    img[mask] = rng.integers(20, 90)
    return np.clip(img + rng.integers(-10, 10, img.shape), 0, 255).astype(np.uint8)


def make_store(root: Path, size: int = SIZE, per_class=(6, 3, 1), seed: int = 0) -> dict:
    """A split table and a 2-shard image store in lokiml.store's format; one train item failed to normalise."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows, images = [], []
    for k, cls in enumerate(CLASSES):
        for part, n in zip(("train", "valid", "test"), per_class):
            for i in range(n):
                item = f"{cls}_{part}_{i}"
                rows.append({"item_id": item, "object_id": item, "class_name": cls, "image_ref": f"{item}.png",
                             "augmented": 0, "flip": 0, "angle": 0, "dx": 0, "dy": 0, "split": part})
                images.append(shape_image(k, size, rng))
    pd.DataFrame(rows).sort_values("item_id").to_csv(root / "split.tsv", sep="\t", index=False)
    npys, indexes = [], []
    for shard in range(2):
        sel = [i for i in range(len(rows)) if i % 2 == shard][::-1]  # rows not in item order
        status = ["ok"] * len(sel)
        if shard == 0:
            status[-1] = "unreadable_image: truncated file"  # circle_train_0
        np.save(root / f"shard{shard}.npy", np.stack([images[i] for i in sel]))
        pd.DataFrame({"item_id": [rows[i]["item_id"] for i in sel], "row": np.arange(len(sel)), "status": status}) \
            .to_csv(root / f"shard{shard}.tsv", sep="\t", index=False)
        npys.append(str(root / f"shard{shard}.npy"))
        indexes.append(str(root / f"shard{shard}.tsv"))
    return {"split_path": str(root / "split.tsv"), "store_npys": npys, "store_indexes": indexes,
            "classes": list(CLASSES), "images": dict(zip([r["item_id"] for r in rows], images))}


def outputs(folder: Path) -> dict:
    return {
        "out_model": str(folder / "model.keras"), "out_best": str(folder / "best.keras"),
        "out_classes": str(folder / "classes.txt"), "out_history": str(folder / "history.tsv"),
        "out_summary": str(folder / "model_summary.txt"), "out_info": str(folder / "train_info.json"),
        "state_dir": str(folder / "state"),
    }


def run(data: dict, folder: Path, weights=None, **params) -> dict:
    """train_experiment on ``data`` into ``folder``; returns the info plus the output paths."""
    args = {k: v for k, v in data.items() if k not in ("images", "weights")}
    params = {"image_size": SIZE, "batch_size": 4, "epochs": 2, **params}
    info = train.train_experiment(**args, **outputs(folder), params=params, weights_path=weights, threads=2)
    return {**info, **outputs(folder)}


def history(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "history.tsv", sep="\t")


def assert_same_weights(a, b, **tol):
    wa, wb = a.get_weights(), b.get_weights()
    assert len(wa) == len(wb)
    for x, y in zip(wa, wb):
        if tol:
            np.testing.assert_allclose(x, y, **tol)
        else:
            np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    d = make_store(root)
    d["weights"] = str(models.save_seeded_base_weights(BACKBONE, root / f"{BACKBONE}_seeded.weights.h5", seed=7))
    return d


@pytest.fixture(scope="module")
def fine_tuned(data, tmp_path_factory):
    """A pre-trained run with both phases: 2 head epochs on cached features, then 2 fine-tuning epochs."""
    folder = tmp_path_factory.mktemp("fine_tuned")
    return run(data, folder, weights=data["weights"], model=BACKBONE, epochs=2, fine_tune=FINE_TUNE)


# ---- outputs ----------------------------------------------------------------------------


def test_outputs_and_their_formats(fine_tuned):
    out = fine_tuned
    assert Path(out["out_classes"]).read_text() == "circle\nsquare\ncross\n"
    h = pd.read_csv(out["out_history"], sep="\t")
    assert list(h.columns) == train.HISTORY_COLUMNS
    assert list(h["phase"]) == ["head", "head", "fine_tune", "fine_tune"] and list(h["epoch"]) == [1, 2, 3, 4]
    assert list(h["learning_rate"]) == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4])
    assert (h["seconds"] > 0).all() and h[["loss", "val_loss", "accuracy", "val_accuracy"]].notna().all().all()
    info = json.loads(Path(out["out_info"]).read_text())
    assert info["epochs_run"] == 4 and info["epochs_per_phase"] == {"head": 2, "fine_tune": 2}
    assert info["stopped_early_at"] is None
    best = h.set_index("epoch").loc[info["best_epoch"], "val_loss"]
    assert best == pytest.approx(h["val_loss"].min(), rel=1e-5) == pytest.approx(info["best_val_loss"], rel=1e-5)
    assert info["cached_features"] is True and info["feature_seconds"] > 0
    assert info["items"] == {"train": 17, "valid": 9}
    assert info["skipped"] == {"train": {"unreadable_image": 1}, "valid": {}}
    assert info["experiment"]["model"] == BACKBONE and info["experiment"]["early_stopping"]["patience"] == 20
    assert info["device"] == "CPU" and info["versions"]["keras"] == keras.__version__
    assert len(info["seconds_per_epoch"]) == 4 and info["seconds_total"] > sum(info["seconds_per_epoch"])
    assert "Total params" in Path(out["out_summary"]).read_text()
    assert not Path(out["state_dir"]).exists()


def test_saved_models_reload_and_take_raw_grey_uint8(fine_tuned, data):
    from lokiml.store import Store

    config = json.loads(__import__("zipfile").ZipFile(fine_tuned["out_model"]).read("config.json"))
    assert "lokiml>GreyToBackboneInput" in json.dumps(config)  # the layer is found by its registered name
    items = sorted(data["images"])
    store = Store(data["store_npys"], data["store_indexes"])
    x = store.gather(items)[..., None]  # raw uint8 grey images, straight from the store
    assert x.dtype == np.uint8
    for name in ("out_model", "out_best"):
        model = keras.models.load_model(fine_tuned[name])
        assert model.input.dtype == "uint8" and tuple(model.input.shape) == (None, SIZE, SIZE, 1)
        p = model.predict(x, verbose=0)
        assert p.shape == (len(items), 3)
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
        assert isinstance(model.get_layer("preprocess"), models.GreyToBackboneInput)


def test_fine_tuning_trains_the_top_and_keeps_batchnorm_frozen(fine_tuned, data):
    model = keras.models.load_model(fine_tuned["out_model"])
    base = models.get_base(model)
    ref = models.get_backbone(BACKBONE).constructor(include_top=False, weights=None, input_shape=(SIZE, SIZE, 3))
    ref.load_weights(data["weights"])
    changed, frozen_same = [], []
    for layer, ref_layer in zip(base.layers, ref.layers):
        if not layer.weights:
            continue
        same = all(np.array_equal(a, b) for a, b in zip(layer.get_weights(), ref_layer.get_weights()))
        if isinstance(layer, keras.layers.BatchNormalization):
            assert not layer.trainable and same, f"BatchNorm {layer.name} changed"
        elif layer.trainable:
            changed.append(not same)
        else:
            frozen_same.append(same)
    # (a layer can keep its weights where its gradient is zero, e.g. behind a saturated activation)
    assert changed and sum(changed) >= len(changed) / 2, "the unfrozen top layers should have been trained"
    assert frozen_same and all(frozen_same), "layers below the top must not change"


# ---- cached features --------------------------------------------------------------------


def test_cached_features_train_the_same_model_as_the_full_network(data, tmp_path):
    common = {"model": BACKBONE, "epochs": 3, "dropout": 0.4, "optimizer": "adam", "early_stopping": None}
    cached = run(data, tmp_path / "cached", weights=data["weights"], cache_features=True, **common)
    full = run(data, tmp_path / "full", weights=data["weights"], cache_features=False, **common)
    assert cached["cached_features"] is True and full["cached_features"] is False
    hc, hf = history(tmp_path / "cached"), history(tmp_path / "full")
    for col in ("loss", "val_loss", "accuracy", "val_accuracy"):
        np.testing.assert_allclose(hc[col], hf[col], rtol=1e-4, atol=1e-5)
    x = np.stack(list(data["images"].values()))[..., None]
    pc = keras.models.load_model(cached["out_model"]).predict(x, verbose=0)
    pf = keras.models.load_model(full["out_model"]).predict(x, verbose=0)
    np.testing.assert_allclose(pc, pf, rtol=1e-4, atol=1e-5)
    assert np.abs(pc - 1 / 3).max() > 1e-3, "the head should have learnt something"


def test_cache_features_true_needs_a_frozen_base_and_no_augmentation(data, tmp_path):
    with pytest.raises(ValueError, match="augment"):
        run(data, tmp_path / "a", weights=data["weights"], model=BACKBONE, cache_features=True, augment={})
    with pytest.raises(ValueError, match="scratch"):
        run(data, tmp_path / "b", model=BACKBONE, cache_features=True)


# ---- resume -----------------------------------------------------------------------------


class Interrupted(Exception):
    pass


def test_an_interrupted_run_resumes_exactly(data, fine_tuned, tmp_path, monkeypatch, caplog):
    """Stopped after epoch 3 (the first fine-tuning epoch), the rerun ends exactly like the uninterrupted
    run of the same parameters (the `fine_tuned` fixture): history, final and best weights."""

    def stop_after_3(epoch):
        if epoch == 3:
            raise Interrupted

    monkeypatch.setattr(train, "_test_kill_hook", stop_after_3)
    with pytest.raises(Interrupted):
        run(data, tmp_path, weights=data["weights"], model=BACKBONE, epochs=2, fine_tune=FINE_TUNE)
    state = json.loads((tmp_path / "state" / "state.json").read_text())
    assert state["epoch"] == 3 and state["phase"] == "fine_tune" and state["model_kind"] == "full"
    assert not (tmp_path / "model.keras").exists()
    monkeypatch.undo()
    with caplog.at_level(logging.INFO, logger="lokiml.train"):
        info = run(data, tmp_path, weights=data["weights"], model=BACKBONE, epochs=2, fine_tune=FINE_TUNE)
    assert "resuming from epoch 3 (phase fine_tune)" in caplog.text
    assert "restored the model and optimizer state of epoch 3" in caplog.text
    assert info["resumed_from_epoch"] == 3 and info["epochs_per_phase"] == {"head": 2, "fine_tune": 2}
    ref = Path(fine_tuned["out_model"]).parent
    pd.testing.assert_frame_equal(history(ref).drop(columns="seconds"), history(tmp_path).drop(columns="seconds"))
    for name in ("model.keras", "best.keras"):
        assert_same_weights(keras.models.load_model(ref / name), keras.models.load_model(tmp_path / name))
    assert not (tmp_path / "state").exists()


DRIVER = """
import json, sys
sys.path.insert(0, {scripts!r})
from lokiml.logs import setup_logging
setup_logging()
from lokiml.train import train_experiment
train_experiment(**json.loads(sys.argv[1]))
"""


def test_a_killed_job_resumes_where_it_stopped(data, fine_tuned, tmp_path):
    """SIGKILL (as from a scheduler) once the state of epoch 1 is written; the rerun resumes from epoch 1,
    reuses the cached features, and its 2 head epochs match those of the `fine_tuned` run."""
    out = outputs(tmp_path)
    kwargs = {**{k: v for k, v in data.items() if k not in ("images", "weights")}, **out,
              "params": {"image_size": SIZE, "batch_size": 4, "model": BACKBONE, "epochs": 2},
              "weights_path": data["weights"], "threads": 2}
    cmd = [sys.executable, "-c", DRIVER.format(scripts=str(SCRIPTS)), json.dumps(kwargs)]
    env = {**os.environ, train.CRASH_ENV: "1"}
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == -9, first.stderr[-3000:]
    state = json.loads((tmp_path / "state" / "state.json").read_text())
    assert state["epoch"] == 1 and state["phase"] == "head" and state["model_kind"] == "head"
    assert not Path(out["out_model"]).exists()

    env.pop(train.CRASH_ENV)
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming from epoch 1 (phase head)" in second.stderr
    assert "reusing the cached train features" in second.stderr
    h = history(tmp_path)
    assert list(h["phase"]) == ["head", "head"] and list(h["epoch"]) == [1, 2]
    ref = history(Path(fine_tuned["out_history"]).parent).iloc[:2]
    for col in ("loss", "val_loss", "accuracy", "val_accuracy"):
        np.testing.assert_allclose(h[col], ref[col], rtol=1e-4, atol=1e-6)
    assert not Path(out["state_dir"]).exists()


# ---- determinism, augmentation, early stopping ----------------------------------------------


def test_same_seed_same_result_with_augmentation_from_scratch(data, tmp_path):
    params = {"model": "vgg16", "epochs": 2, "seed": 3, "augment": {"rotation": 90, "zoom": 0.1, "translation": 0.1}}
    a = run(data, tmp_path / "a", **params)
    b = run(data, tmp_path / "b", **params)
    assert a["cached_features"] is False
    pd.testing.assert_frame_equal(history(tmp_path / "a").drop(columns="seconds"),
                                  history(tmp_path / "b").drop(columns="seconds"))
    ma, mb = keras.models.load_model(a["out_model"]), keras.models.load_model(b["out_model"])
    assert_same_weights(ma, mb)
    assert models.get_base(ma).trainable  # trained from scratch: the whole network learns


def test_early_stopping_stops_and_a_state_for_other_parameters_is_not_resumed(data, tmp_path, caplog):
    state = tmp_path / "state"
    state.mkdir()
    (state / "state.json").write_text(json.dumps({"version": train.STATE_VERSION, "fingerprint": "other",
                                                  "epoch": 5, "phase": "head"}))
    (state / "model_e0005.keras").write_text("stale")
    with caplog.at_level(logging.INFO, logger="lokiml.train"):
        info = run(data, tmp_path, weights=data["weights"], model=BACKBONE, epochs=6,
                   early_stopping={"monitor": "val_loss", "patience": 1, "min_delta": 10.0})
    assert "starting over" in caplog.text and "resuming" not in caplog.text
    assert len(history(tmp_path)) == 2
    assert info["stopped_early_at"] == 2 and info["epochs_per_phase"] == {"head": 2}
    assert info["best_epoch"] in (1, 2) and info["resumed_from_epoch"] is None


def test_improvement_rules():
    assert train._improved(0.5, None, "min", 0.1)
    assert train._improved(0.39, 0.5, "min", 0.1) and not train._improved(0.41, 0.5, "min", 0.1)
    assert train._improved(0.61, 0.5, "max", 0.1) and not train._improved(0.59, 0.5, "max", 0.1)
    assert not train._improved(float("nan"), None, "min", 0.0)


def test_bad_inputs_are_clear_errors(data, tmp_path):
    from lokiml.errors import ConfigError, InputError

    with pytest.raises(ConfigError, match="optimizer"):
        run(data, tmp_path / "a", optimizer="adagrad")
    with pytest.raises(InputError, match="32 px"):
        run(data, tmp_path / "b", image_size=75)
    split = read_tsv(data["split_path"])
    split.loc[0, "class_name"] = "ghost"
    bad = tmp_path / "split.tsv"
    split.to_csv(bad, sep="\t", index=False)
    with pytest.raises(InputError, match="ghost"):
        run({**data, "split_path": str(bad)}, tmp_path / "c")
