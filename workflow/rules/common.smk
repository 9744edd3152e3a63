# Shared set-up: config validation, wildcard constraints and input functions.
# Nothing heavy happens here: the export is read by rule read_export, not at DAG-build time.

import re
import os
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
# Conda environment (--sdm conda) of the rules that ask for a GPU: config device.conda_env.
GPU_RULES_ENV = "../envs/train-gpu.yaml" if config["device"]["conda_env"] == "gpu" else "../envs/train.yaml"
SIZES = image_sizes(config)
SHARDS = list(range(config["normalise"]["shards"]))


wildcard_constraints:
    size=r"\d+",
    shard=r"\d+",
    experiment=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    prediction=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    # no wildcard may start with a dot: lokiml.io's temporary names (.<name>.<random><suffix>) never match a pattern
    model=r"[A-Za-z0-9][A-Za-z0-9_.-]*",


def get_export():
    """The export to read: the configured one, or the built-in demo export."""
    if config["export"]:
        return config["export"]
    return "resources/demo_export"


def get_export_tables():
    """For an export that is a folder: its table files.

    Snakemake sees a folder input change only when the folder itself changes, not
    when a table inside it is rewritten or appended to; listing the tables (a
    cheap glob, nothing is read) makes a data update rerun read_export.
    """
    export = config["export"]
    if not export or not os.path.isdir(export):
        return []
    found = set()
    for pattern in ("ecotaxa*.tsv", "ecotaxa*.txt"):
        found.update(str(p) for p in Path(export).rglob(pattern))
    return sorted(found)


def get_class_mapping():
    return [config["class_mapping"]] if config["class_mapping"] else []


def get_shards(size):
    return {
        "npy": expand(f"{DATA}/images/{size}px/shard{{shard}}.npy", shard=SHARDS),
        "index": expand(f"{DATA}/images/{size}px/shard{{shard}}.tsv", shard=SHARDS),
    }


def get_all_targets():
    targets = [f"{DATA}/split.tsv"] + list(rules.summarise_data.output)
    for size in SIZES:
        targets += get_shards(size)["index"]
    targets += expand(f"{EXP}/{{experiment}}/model.keras", experiment=CNN_EXPERIMENTS)
    # Every output of the evaluation rules is a target (not only one per job), so that a deleted
    # figure or table is made again. rules.* exist here: rule all is parsed after the includes.
    targets += list(rules.plot_data_summary.output)
    targets += expand(list(rules.evaluate_model.output), experiment=CNN_EXPERIMENTS)
    targets += expand(list(rules.evaluate_descriptors.output), experiment=DESCRIPTOR_EXPERIMENTS)
    targets += expand(list(rules.evaluate_deep_features.output), experiment=DEEP_FEATURE_EXPERIMENTS)
    targets += expand(list(rules.estimate_descriptors.output), experiment=ESTIMATED_DESCRIPTOR_EXPERIMENTS)
    targets += expand(list(rules.estimate_deep_features.output), experiment=ESTIMATED_DEEP_FEATURE_EXPERIMENTS)
    if EVALUATED_EXPERIMENTS:
        targets += list(rules.make_leaderboard.output)
    targets += expand(f"{EXP}/{{experiment}}/normalisation.json", experiment=CNN_EXPERIMENTS)
    if PREDICTIONS:
        targets += expand(list(rules.predict_images.output), prediction=PREDICTIONS)
    return targets


EXP = "results/experiments"
EVAL = "results/evaluation"
CNN_EXPERIMENTS = sorted(n for n, e in config["experiments"].items() if e["kind"] == "cnn")
DESCRIPTOR_EXPERIMENTS = sorted(n for n, e in config["experiments"].items() if e["kind"] == "descriptors")
DEEP_FEATURE_EXPERIMENTS = sorted(n for n, e in config["experiments"].items() if e["kind"] == "deep_features")
# The CNN experiments whose features a deep_features experiment uses (lokiml.config checks that they are CNNs).
DEEP_FEATURE_CNNS = sorted({config["experiments"][n]["cnn"] for n in DEEP_FEATURE_EXPERIMENTS})
# Every experiment with evaluation outputs (results/evaluation/{experiment}/...): on the leaderboard.
EVALUATED_EXPERIMENTS = sorted(CNN_EXPERIMENTS + DESCRIPTOR_EXPERIMENTS + DEEP_FEATURE_EXPERIMENTS)
# The scikit-learn experiments with a repeated estimate (estimate: not null), and those that use morphometrics.
ESTIMATED_DESCRIPTOR_EXPERIMENTS = sorted(n for n in DESCRIPTOR_EXPERIMENTS if config["experiments"][n]["estimate"])
ESTIMATED_DEEP_FEATURE_EXPERIMENTS = sorted(
    n for n in DEEP_FEATURE_EXPERIMENTS if config["experiments"][n]["estimate"]
)
ESTIMATED_EXPERIMENTS = sorted(ESTIMATED_DESCRIPTOR_EXPERIMENTS + ESTIMATED_DEEP_FEATURE_EXPERIMENTS)
MORPHOMETRIC_EXPERIMENTS = sorted(
    n for n in DESCRIPTOR_EXPERIMENTS if config["experiments"][n]["features"] in ("auto", "morphometrics", "both")
)


def one_of(names):
    """A wildcard constraint matching exactly these experiment names (none: matches nothing).

    Both kinds write results/experiments/{experiment}/classes.txt and the same evaluation files,
    so each rule is constrained to the experiments of its kind.
    """
    return "|".join(re.escape(n) for n in names) if names else "(?!)"


PRED = "results/predictions"
PREDICTIONS = sorted(config["predict"])
for _name, _job in config["predict"].items():
    if _job["experiment"] not in CNN_EXPERIMENTS:
        raise WorkflowError(
            f"config key predict.{_name}.experiment: {_job['experiment']!r} is not a CNN experiment of "
            f"`experiments:` (known: {', '.join(CNN_EXPERIMENTS) or 'none'})"
        )


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
    """Model, weights and image size per CNN experiment, for the leaderboard's columns.

    A descriptors experiment shows its classifier as the model and `descriptors` as the weights; a
    deep_features experiment its classifier, the CNN it takes the features of, and that CNN's image size.
    """
    settings = {
        name: {k: config["experiments"][name][k] for k in ("model", "weights", "image_size")}
        for name in CNN_EXPERIMENTS
    }
    for name in DESCRIPTOR_EXPERIMENTS:
        settings[name] = {"model": config["experiments"][name]["classifier"], "weights": "descriptors"}
    for name in DEEP_FEATURE_EXPERIMENTS:
        exp = config["experiments"][name]
        settings[name] = {
            "model": exp["classifier"],
            "weights": f"features of {exp['cnn']}{' and descriptors' if exp['descriptors'] else ''}",
            "image_size": config["experiments"][exp["cnn"]]["image_size"],
        }
    return settings


SKLEARN_KEYS = (
    "kind", "classifier", "param_grid", "max_missing", "exclude_columns", "include_columns", "refit",
    "early_stopping_rounds", "seed",
)


def get_descriptor_params(wildcards):
    """The keys a descriptors experiment uses (changing a CNN-only key reruns nothing)."""
    exp = config["experiments"][wildcards.experiment]
    return {k: exp[k] for k in SKLEARN_KEYS + ("features",)}


def get_deep_features_params(wildcards):
    """The keys a deep_features experiment uses (changing a CNN-only key of it reruns nothing)."""
    exp = config["experiments"][wildcards.experiment]
    return {k: exp[k] for k in SKLEARN_KEYS + ("cnn", "descriptors", "pca")}


def get_descriptor_estimate_params(wildcards):
    """The keys the estimate of a descriptors experiment uses: its training keys and `estimate`."""
    return {**get_descriptor_params(wildcards), "estimate": config["experiments"][wildcards.experiment]["estimate"]}


def get_deep_features_estimate_params(wildcards):
    """The keys the estimate of a deep_features experiment uses: its training keys and `estimate`."""
    return {**get_deep_features_params(wildcards), "estimate": config["experiments"][wildcards.experiment]["estimate"]}


def get_morphometrics_params():
    """How objects are cut out of their images for the morphometrics: the normalisation's settings."""
    n = config["normalise"]
    return {k: n[k] for k in ("threshold", "polarity", "bottom_crop", "max_pixels")}


def get_morphometrics_shards(experiment):
    """The morphometrics tables a descriptors experiment reads (none with features: export)."""
    if experiment not in MORPHOMETRIC_EXPERIMENTS:
        return []
    return expand(f"{DATA}/morphometrics/shard{{shard}}.tsv", shard=SHARDS)


def get_descriptor_training_inputs(wildcards):
    """Inputs of train_descriptors: the objects and the split, and the morphometrics when the experiment uses them."""
    return {
        "objects": f"{DATA}/objects.tsv",
        "split": f"{DATA}/split.tsv",
        "morphometrics": get_morphometrics_shards(wildcards.experiment),
    }


def get_descriptor_evaluation_inputs(wildcards):
    """Inputs of evaluate_descriptors: the trained experiment, its data, and its estimate when there is one."""
    exp_dir = f"{EXP}/{wildcards.experiment}"
    inputs = {
        **get_descriptor_training_inputs(wildcards),
        **{k: f"{exp_dir}/{f}" for k, f in (("model", "model.pkl"), ("classes", "classes.txt"),
                                            ("columns", "columns.tsv"), ("grid", "grid.tsv"),
                                            ("info", "train_info.json"), ("valid", "valid_probabilities.tsv"))},
    }
    return {**inputs, **get_estimate_input(wildcards.experiment)}


def get_descriptor_estimate_inputs(wildcards):
    """Inputs of estimate_descriptors: the data, and the columns the experiment chose."""
    return {
        **get_descriptor_training_inputs(wildcards),
        "columns": f"{EXP}/{wildcards.experiment}/columns.tsv",
    }


def get_deep_features_estimate_inputs(wildcards):
    """Inputs of estimate_deep_features: the CNN's features, the data, and the columns the experiment chose."""
    return {
        **get_deep_features_inputs(wildcards),
        "columns": f"{EXP}/{wildcards.experiment}/columns.tsv",
    }


def get_estimate_split_params():
    """The split settings an estimate uses: the valid share of a fold's training objects, and group_by."""
    s = config["split"]
    return {k: s[k] for k in ("train", "valid", "group_by")}


def get_feature_extraction_inputs(wildcards):
    """Inputs of extract_deep_features (wildcard: the CNN): its best checkpoint and its image store."""
    shards = get_shards(config["experiments"][wildcards.experiment]["image_size"])
    return {
        "model": f"{EXP}/{wildcards.experiment}/best.keras",
        "split": f"{DATA}/split.tsv",
        "npys": shards["npy"],
        "indexes": shards["index"],
    }


def get_deep_features_inputs(wildcards):
    """Inputs of train_deep_features: the features of the experiment's CNN, the descriptors and the split."""
    cnn = config["experiments"][wildcards.experiment]["cnn"]
    return {
        "features": f"{EXP}/{cnn}/penultimate.npy",
        "index": f"{EXP}/{cnn}/penultimate.tsv",
        "objects": f"{DATA}/objects.tsv",
        "split": f"{DATA}/split.tsv",
    }


def get_deep_features_evaluation_inputs(wildcards):
    """Inputs of evaluate_deep_features: the trained model, its features, and the CNN's images (for the mistakes)."""
    exp_dir = f"{EXP}/{wildcards.experiment}"
    cnn = config["experiments"][wildcards.experiment]["cnn"]
    shards = get_shards(config["experiments"][cnn]["image_size"])
    return {
        "model": f"{exp_dir}/model.pkl",
        "classes": f"{exp_dir}/classes.txt",
        "columns": f"{exp_dir}/columns.tsv",
        "grid": f"{exp_dir}/grid.tsv",
        "info": f"{exp_dir}/train_info.json",
        "valid": f"{exp_dir}/valid_probabilities.tsv",
        **get_deep_features_inputs(wildcards),
        "npys": shards["npy"],
        "indexes": shards["index"],
        **get_estimate_input(wildcards.experiment),
    }


def get_estimate_input(experiment):
    """{"estimate": its estimate.json} for an experiment with a repeated estimate, else {}."""
    if experiment in ESTIMATED_EXPERIMENTS:
        return {"estimate": f"{EVAL}/{experiment}/estimate.json"}
    return {}


def get_deep_features_cnn(wildcards):
    """The settings of a deep_features experiment's CNN that its summary describes."""
    cnn = config["experiments"][config["experiments"][wildcards.experiment]["cnn"]]
    return {k: cnn[k] for k in ("model", "weights", "image_size", "fine_tune")}


def get_demo_weights_inputs(wildcards):
    """The training images that calibrate the demo's stand-in weights of a backbone.

    At the smallest image size of the experiments that use this backbone.
    """
    sizes = [e["image_size"] for e in config["experiments"].values()
             if e["kind"] == "cnn" and e["model"].lower() == wildcards.model]
    shards = get_shards(min(sizes) if sizes else min(SIZES))
    return {"split": f"{DATA}/split.tsv", "npys": shards["npy"], "indexes": shards["index"]}


def get_normalisation_params(wildcards):
    """How the training images of an experiment were normalised: recorded next to its model."""
    n = config["normalise"]
    return {
        "image_size": config["experiments"][wildcards.experiment]["image_size"],
        "threshold": n["threshold"],
        "polarity": n["polarity"],
        "bottom_crop": n["bottom_crop"],
        "max_pixels": n["max_pixels"],
        "canvas": n["canvas"],
        "img_rank": config["img_rank"],
    }


def get_prediction_inputs(wildcards):
    """The images to classify, and the model with its normalisation record (never the config's `normalise:`)."""
    job = config["predict"][wildcards.prediction]
    exp_dir = f"{EXP}/{job['experiment']}"
    return {
        "images": job["input"],
        "model": f"{exp_dir}/best.keras",
        "record": f"{exp_dir}/normalisation.json",
    }


def get_prediction_params(wildcards):
    """Threshold, kept statuses and batch size of one prediction job."""
    job = config["predict"][wildcards.prediction]
    return {k: job[k] for k in ("threshold", "statuses_to_keep", "batch_size")}


def evaluation_outputs(curves_caption="../report/training_curves.rst", curves_label="training curves"):
    """The outputs of evaluate_model and evaluate_descriptors, the same files for every kind of experiment.

    Keys: summary, summary_html, curves, and {split}_{key} for lokiml.evaluate.SPLITS x SPLIT_OUTPUTS.
    """
    return {
        "summary_html": report(
            f"{EVAL}/{{experiment}}/summary.html",
            caption="../report/summary.rst",
            category="{experiment}",
            subcategory="summary",
            labels={"result": "summary (model, results, training, data)", "type": "table"},
        ),
        "summary": report(
            f"{EVAL}/{{experiment}}/summary.txt",
            caption="../report/summary.rst",
            category="{experiment}",
            subcategory="summary",
            labels={"result": "summary (model, results, training, data)", "type": "text (download)"},
        ),
        "curves": report(
            f"{EVAL}/{{experiment}}/training_curves.svg",
            caption=curves_caption,
            category="{experiment}",
            subcategory="training",
            labels={"result": curves_label, "type": "figure"},
        ),
        "test_predictions": report(
            f"{EVAL}/{{experiment}}/test/predictions.tsv",
            caption="../report/predictions.rst",
            category="{experiment}",
            subcategory="test",
            labels={"result": "predictions per object", "type": "TSV (download)"},
        ),
        "test_metrics": f"{EVAL}/{{experiment}}/test/metrics.json",
        "test_report": f"{EVAL}/{{experiment}}/test/classification_report.tsv",
        "test_report_html": report(
            f"{EVAL}/{{experiment}}/test/classification_report.html",
            caption="../report/classification_report.rst",
            category="{experiment}",
            subcategory="test",
            labels={"result": "classification report and metrics", "type": "table"},
        ),
        "test_confusion_counts": f"{EVAL}/{{experiment}}/test/confusion_counts.tsv",
        "test_confusion_normalised": f"{EVAL}/{{experiment}}/test/confusion_normalised.tsv",
        "test_confusion_counts_fig": report(
            f"{EVAL}/{{experiment}}/test/confusion_counts.svg",
            caption="../report/confusion_counts.rst",
            category="{experiment}",
            subcategory="test",
            labels={"result": "confusion matrix, objects", "type": "figure"},
        ),
        "test_confusion_normalised_fig": report(
            f"{EVAL}/{{experiment}}/test/confusion_normalised.svg",
            caption="../report/confusion_normalised.rst",
            category="{experiment}",
            subcategory="test",
            labels={"result": "confusion matrix, % of true class", "type": "figure"},
        ),
        "test_reliability": report(
            f"{EVAL}/{{experiment}}/test/reliability.svg",
            caption="../report/reliability.rst",
            category="{experiment}",
            subcategory="test",
            labels={"result": "reliability diagram (calibration)", "type": "figure"},
        ),
        "test_mistakes": report(
            f"{EVAL}/{{experiment}}/test/mistakes.jpg",
            caption="../report/mistakes.rst",
            category="{experiment}",
            subcategory="test",
            labels={"result": "the most confident mistakes (images)", "type": "figure"},
        ),
        "valid_predictions": report(
            f"{EVAL}/{{experiment}}/valid/predictions.tsv",
            caption="../report/predictions.rst",
            category="{experiment}",
            subcategory="valid",
            labels={"result": "predictions per object", "type": "TSV (download)"},
        ),
        "valid_metrics": f"{EVAL}/{{experiment}}/valid/metrics.json",
        "valid_report": f"{EVAL}/{{experiment}}/valid/classification_report.tsv",
        "valid_report_html": report(
            f"{EVAL}/{{experiment}}/valid/classification_report.html",
            caption="../report/classification_report.rst",
            category="{experiment}",
            subcategory="valid",
            labels={"result": "classification report and metrics", "type": "table"},
        ),
        "valid_confusion_counts": f"{EVAL}/{{experiment}}/valid/confusion_counts.tsv",
        "valid_confusion_normalised": f"{EVAL}/{{experiment}}/valid/confusion_normalised.tsv",
        "valid_confusion_counts_fig": report(
            f"{EVAL}/{{experiment}}/valid/confusion_counts.svg",
            caption="../report/confusion_counts.rst",
            category="{experiment}",
            subcategory="valid",
            labels={"result": "confusion matrix, objects", "type": "figure"},
        ),
        "valid_confusion_normalised_fig": report(
            f"{EVAL}/{{experiment}}/valid/confusion_normalised.svg",
            caption="../report/confusion_normalised.rst",
            category="{experiment}",
            subcategory="valid",
            labels={"result": "confusion matrix, % of true class", "type": "figure"},
        ),
        "valid_reliability": report(
            f"{EVAL}/{{experiment}}/valid/reliability.svg",
            caption="../report/reliability.rst",
            category="{experiment}",
            subcategory="valid",
            labels={"result": "reliability diagram (calibration)", "type": "figure"},
        ),
        "valid_mistakes": report(
            f"{EVAL}/{{experiment}}/valid/mistakes.jpg",
            caption="../report/mistakes.rst",
            category="{experiment}",
            subcategory="valid",
            labels={"result": "the most confident mistakes (images)", "type": "figure"},
        ),
    }
