"""config/cpu_recipe.yaml and the real-image measurement configs merge over config/config.yaml as the README
says (snakemake --configfile config/config.yaml my_export.yaml config/cpu_recipe.yaml) and stay valid."""

import copy

import pytest
import yaml
from snakemake.utils import update_config

from lokiml.config import validate_config


def _merged(root, *names):
    cfg = yaml.safe_load((root / "config" / "config.yaml").read_text())
    for name in names:
        update_config(cfg, yaml.safe_load((root / name).read_text()))
    return validate_config(copy.deepcopy(cfg))


def test_cpu_recipe_is_a_small_cnn_from_scratch_with_a_forest_on_its_own_features(project_root):
    cfg = _merged(project_root, "config/cpu_recipe.yaml")
    cnns = {n: e for n, e in cfg["experiments"].items() if e["kind"] == "cnn"}
    assert list(cnns) == ["cpu_recipe"]  # the seed's five (GPU, ImageNet weights) are switched off
    recipe = cnns["cpu_recipe"]
    assert recipe["weights"] == "none" and recipe["image_size"] <= 160
    assert recipe["augment"] and recipe["augment"]["flip"] and recipe["class_weight"] == "balanced"
    deep = [e for e in cfg["experiments"].values() if e["kind"] == "deep_features"]
    assert [e["cnn"] for e in deep] == ["cpu_recipe"]
    assert cfg["normalise"]["canvas"] is None  # the measured winner on real images (README, "Object size")


@pytest.mark.parametrize("extra", [[], ["benchmarks/real_data/finalists.yaml"], ["benchmarks/real_data/tta.yaml"],
                                   ["benchmarks/real_data/finalists.yaml", "benchmarks/real_data/canvas256.yaml"]])
@pytest.mark.parametrize("data", ["benchmarks/real_data/zooscan.yaml", "benchmarks/real_data/zooscan_light.yaml"])
def test_real_image_grids_merge_and_every_forest_has_its_cnn(project_root, data, extra):
    cfg = _merged(project_root, data, "config/cpu_recipe.yaml", "benchmarks/real_data/grid.yaml", *extra)
    exps = cfg["experiments"]
    cnns = {n for n, e in exps.items() if e["kind"] == "cnn"}
    assert cnns and all(e["weights"] == "none" for n, e in exps.items() if n in cnns)
    assert {e["cnn"] for e in exps.values() if e["kind"] == "deep_features"} == cnns
    if "smallcnn_64_dihedral" in exps:  # the same training as smallcnn_64, only the views at evaluation differ
        a, b = dict(exps["smallcnn_64_dihedral"]), dict(exps["smallcnn_64"])
        assert a.pop("tta") == "dihedral" and b.pop("tta") is None and a == b
