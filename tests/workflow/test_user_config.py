"""A user's own config (`--configfile my.yaml`) starts from a clean slate of experiments.

Before: a config for one's own export still ran the eight shipped experiments of config/config.yaml
(46 jobs, the ImageNet ones failing offline) unless each was set to null by name.
"""

import subprocess
import sys

import pytest

from project_copy import local_env, make_copy

pytestmark = pytest.mark.workflow

MINE = """demo:
  scale: 0.4
normalise:
  shards: 1
"""
EXPERIMENT = """experiments:
  mine:
    model: mobilenetv2
    weights: none
    image_size: 48
    epochs: 1
"""


def dry_run(wd, *configfiles):
    """(rule -> jobs, output) of a dry run given only these config files (not config/config.yaml)."""
    cmd = [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile", *configfiles]
    res = subprocess.run(cmd, cwd=wd, capture_output=True, text=True, timeout=600, env=local_env())
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    counts, in_table = {}, False
    for line in out.splitlines():
        parts = line.split()
        if parts[:2] == ["job", "count"]:
            in_table = True
        elif in_table and len(parts) == 2 and parts[1].isdigit() and parts[0] != "total":
            counts[parts[0]] = int(parts[1])
        elif in_table and parts[:1] == ["total"]:
            break
    return counts, out


@pytest.fixture(scope="module")
def wd(project_root, tmp_path_factory):
    return make_copy(project_root, tmp_path_factory.mktemp("user"))


def test_a_config_without_experiments_runs_the_data_stage_only(wd):
    (wd / "mine.yaml").write_text(MINE)
    counts, out = dry_run(wd, "mine.yaml")
    assert {"read_export", "split_dataset", "summarise_data", "plot_class_gallery"} <= set(counts), counts
    assert not {"train_model", "train_descriptors", "resolve_weights", "normalise_images"} & set(counts), counts
    assert "not run: " in out and "inceptionv3_pretrained_rmsprop_1000" in out and "keep_shipped_experiments" in out


def test_a_config_with_experiments_runs_those_only(wd):
    (wd / "mine.yaml").write_text(MINE + EXPERIMENT)
    counts, _ = dry_run(wd, "mine.yaml")
    assert counts.get("train_model") == 1 and counts.get("evaluate_model") == 1, counts
    assert "train_descriptors" not in counts and "resolve_weights" not in counts, counts


def test_keep_shipped_experiments_merges_into_config_yaml(wd):
    (wd / "mine.yaml").write_text(MINE + EXPERIMENT + "keep_shipped_experiments: true\n")
    counts, _ = dry_run(wd, "mine.yaml")
    assert counts.get("train_model") == 6 and counts.get("train_descriptors") == 2, counts  # 5 shipped CNNs + mine


def test_naming_config_yaml_itself_runs_its_experiments(wd):
    counts, out = dry_run(wd, "config/config.yaml")  # the shipped file itself, named
    assert counts.get("train_model") == 5 and "not run: " not in out, counts
