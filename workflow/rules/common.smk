# Shared set-up: config validation, wildcard constraints and input functions.
# Nothing heavy happens here: the export is read by rule read_export, not at DAG-build time.

import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "workflow" / "scripts"))

from lokiml.config import validate_config, image_sizes  # noqa: E402
from lokiml.errors import ConfigError  # noqa: E402

try:
    _validated = validate_config(config)
except ConfigError as _err:
    raise WorkflowError(str(_err)) from None
config.clear()
config.update(_validated)

DATA = "results/data"
SIZES = image_sizes(config)
SHARDS = list(range(config["normalise"]["shards"]))


wildcard_constraints:
    size=r"\d+",
    shard=r"\d+",
    experiment=r"[A-Za-z0-9][A-Za-z0-9_.-]*",


def get_export():
    """The export to read: the configured one, or the built-in demo export."""
    if config["export"]:
        return config["export"]
    return "resources/demo_export"


def get_class_mapping():
    return [config["class_mapping"]] if config["class_mapping"] else []


def get_shards(size):
    return {
        "npy": expand(f"{DATA}/images/{size}px/shard{{shard}}.npy", shard=SHARDS),
        "index": expand(f"{DATA}/images/{size}px/shard{{shard}}.tsv", shard=SHARDS),
    }


def get_all_targets():
    targets = [f"{DATA}/split.tsv", f"{DATA}/summary.tsv"]
    for size in SIZES:
        targets += get_shards(size)["index"]
    targets += expand(f"{EXP}/{{experiment}}/model.keras", experiment=CNN_EXPERIMENTS)
    # Every output of the evaluation rules is a target (not only one per job), so that a deleted
    # figure or table is made again. rules.* exist here: rule all is parsed after the includes.
    targets += list(rules.plot_data_summary.output)
    targets += expand(list(rules.evaluate_model.output), experiment=CNN_EXPERIMENTS)
    if CNN_EXPERIMENTS:
        targets += list(rules.make_leaderboard.output)
    return targets


EXP = "results/experiments"
EVAL = "results/evaluation"
CNN_EXPERIMENTS = sorted(n for n, e in config["experiments"].items() if e["kind"] == "cnn")


def get_weights_file(experiment):
    """The weights file a CNN experiment loads into its base, or None (trained from scratch)."""
    w = config["experiments"][experiment]["weights"]
    model = config["experiments"][experiment]["model"].lower()
    if w == "imagenet":
        return f"resources/weights/{model}_imagenet_notop.weights.h5"
    if w == "none":
        return None
    return w


def get_training_inputs(wildcards):
    exp = config["experiments"][wildcards.experiment]
    size = exp["image_size"]
    shards = get_shards(size)
    inputs = {"split": f"{DATA}/split.tsv", "npys": shards["npy"], "indexes": shards["index"]}
    weights = get_weights_file(wildcards.experiment)
    if weights:
        inputs["weights"] = weights
    return inputs


def get_experiment_params(wildcards):
    return config["experiments"][wildcards.experiment]


def get_state_dir(wildcards):
    """Resume state of a training job: outside the declared outputs, so Snakemake keeps it."""
    return f"resources/train_state/{wildcards.experiment}"


def get_evaluation_inputs(wildcards):
    """Inputs of evaluate_model (the best checkpoint and training records, the split and the image store).

    Only outputs of train_model and the data rules: evaluating never asks for retraining.
    """
    exp_dir = f"{EXP}/{wildcards.experiment}"
    shards = get_shards(config["experiments"][wildcards.experiment]["image_size"])
    return {
        "model": f"{exp_dir}/best.keras",
        "classes": f"{exp_dir}/classes.txt",
        "history": f"{exp_dir}/history.tsv",
        "info": f"{exp_dir}/train_info.json",
        "split": f"{DATA}/split.tsv",
        "npys": shards["npy"],
        "indexes": shards["index"],
    }


def get_evaluation_batch_size(wildcards):
    """Evaluate with the experiment's training batch size: known to fit the device's memory at that image size."""
    return config["experiments"][wildcards.experiment]["batch_size"]


def get_leaderboard_settings():
    """Model, weights and image size per CNN experiment, for the leaderboard's columns."""
    return {
        name: {k: config["experiments"][name][k] for k in ("model", "weights", "image_size")}
        for name in CNN_EXPERIMENTS
    }


def get_demo_weights_inputs(wildcards):
    """The training images that calibrate the demo's stand-in weights of a backbone.

    At the smallest image size of the experiments that use this backbone.
    """
    sizes = [e["image_size"] for e in config["experiments"].values()
             if e["kind"] == "cnn" and e["model"].lower() == wildcards.model]
    shards = get_shards(min(sizes) if sizes else min(SIZES))
    return {"split": f"{DATA}/split.tsv", "npys": shards["npy"], "indexes": shards["index"]}
