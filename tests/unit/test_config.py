import copy

import pytest
import yaml

from lokiml.config import class_slug, image_sizes, validate_config
from lokiml.errors import ConfigError


@pytest.fixture()
def base_config(project_root):
    with open(project_root / "config" / "config.yaml") as fh:
        return yaml.safe_load(fh)


def test_shipped_config_is_valid_and_defaults_filled(base_config):
    cfg = validate_config(base_config)
    assert cfg["balance"]["cap"] == 1000
    assert cfg["split"] == {"train": 0.6, "valid": 0.2, "test": 0.2, "seed": 3, "exact_shares": False,
                            "group_by": None, "holdout": None}
    exp = cfg["experiments"]["inceptionv3_pretrained_rmsprop_1000"]
    # the seed's settings
    assert (exp["model"], exp["weights"], exp["image_size"], exp["batch_size"], exp["epochs"]) == (
        "inceptionv3", "imagenet", 1000, 4, 110)
    assert exp["early_stopping"] == {"monitor": "val_loss", "patience": 20, "min_delta": 0.01}
    assert exp["dropout"] == 0.4 and exp["optimizer"] == "rmsprop"
    assert {n for n, e in cfg["experiments"].items() if e["kind"] == "cnn"} == {
        "inceptionv3_pretrained_rmsprop_1000", "inceptionv3_pretrained_rmsprop_1530",
        "inceptionv3_selftrained_rmsprop_1000", "resnet101_pretrained_1000", "resnet101_selftrained_1000"}
    assert image_sizes(cfg) == [1000, 1530]


def test_demo_config_merges_and_is_valid(base_config, project_root):
    from snakemake.utils import update_config

    with open(project_root / "config" / "demo.yaml") as fh:
        demo = yaml.safe_load(fh)
    cfg = copy.deepcopy(base_config)
    update_config(cfg, demo)
    cfg = validate_config(cfg)
    assert max(image_sizes(cfg)) <= 128
    assert cfg["experiments"]["resnet101_selftrained_1000"]["model"] == "resnet101"


def test_input_config_is_not_modified(base_config):
    before = copy.deepcopy(base_config)
    validate_config(base_config)
    assert base_config == before


@pytest.mark.parametrize("change, key", [
    (lambda c: c.update(bakance={"cap": 3}), "bakance"),
    (lambda c: c["balance"].update(cpa=3), "cpa"),
    (lambda c: c.update(balance={"cap": -1}), "balance.cap"),
    (lambda c: c.update(balance={"cap": "many"}), "balance.cap"),
    (lambda c: c["experiments"]["resnet101_pretrained_1000"].update(epochz=3), "epochz"),
    (lambda c: c["experiments"]["resnet101_pretrained_1000"].update(optimizer="adagrad"), "experiments.resnet101_pretrained_1000.optimizer"),
    (lambda c: c.update(normalise={"polarity": "up"}), "normalise.polarity"),
])
def test_bad_config_names_the_key(base_config, change, key):
    change(base_config)
    with pytest.raises(ConfigError) as err:
        validate_config(base_config)
    assert key in str(err.value)


def test_split_fractions_must_sum_to_one(base_config):
    base_config["split"] = {"train": 0.7, "valid": 0.2, "test": 0.2}
    with pytest.raises(ConfigError, match="sum to 1"):
        validate_config(base_config)


def test_null_experiment_is_switched_off(base_config):
    base_config["experiments"]["resnet101_pretrained_1000"] = None
    cfg = validate_config(base_config)
    assert "resnet101_pretrained_1000" not in cfg["experiments"]


@pytest.mark.parametrize("names", [
    ["a/b", "a_b"], ["Calanoida", "calanoida"], ["x<y", "x>y", "x y", 'x"y', "x'y", "Noctiluca scintillans", "Ophiuroïdea"],
])
def test_class_slugs_are_safe_and_distinct(names):
    slugs = [class_slug(n) for n in names]
    assert len(set(slugs)) == len(slugs)
    for s in slugs:
        assert all(ch.isalnum() and ch.isascii() or ch in "-_." for ch in s), s
        assert not s.startswith(".")


def test_classes_that_collide_after_slugging_are_refused(base_config, monkeypatch):
    import lokiml.config as lc

    monkeypatch.setattr(lc, "class_slug", lambda n: n.lower())
    base_config["classes"] = ["Calanoida", "calanoida"]
    with pytest.raises(ConfigError, match="same file name"):
        validate_config(base_config)


def test_model_names_known_at_validation_are_the_keras_backbones():
    """lokiml.config keeps a list of keras.applications backbones (validation must not import Keras):
    it is the list lokiml.models builds from Keras itself."""
    from lokiml.config import KERAS_BACKBONES, OWN_BACKBONES
    from lokiml.models import known_backbones

    assert sorted(KERAS_BACKBONES + OWN_BACKBONES) == known_backbones()
