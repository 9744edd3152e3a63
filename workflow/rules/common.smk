# Shared set-up: config validation, wildcard constraints and input functions.
# Nothing heavy happens here: the export is read by rule read_export, not at DAG-build time.

import copy
import hashlib
import re
import os
import sys
from pathlib import Path

# The library (workflow/scripts/lokiml) on sys.path, from where this workflow's files are: a
# checkout, a module of another project's Snakefile (`module lokiml: snakefile: ...`), or a remote
# module (`snakefile: github(...)`), whose files workflow.source_path fetches into Snakemake's source
# cache. Not workflow.basedir: that is the main Snakefile's folder, another project's in a module.
_RULES_DIR = workflow.current_basedir.get_path_or_uri(secret_free=True)
if os.path.isdir(_RULES_DIR):
    LIBRARY_DIR = os.path.normpath(os.path.join(_RULES_DIR, "..", "scripts"))
    _read_library_source = None
else:

    def _read_library_source(path):
        """A library file of a remote module: fetched into the source cache, where jobs import it from."""
        rel = os.path.relpath(path, LIBRARY_DIR)
        with open(workflow.source_path(f"../scripts/{rel}"), encoding="utf-8") as fh:
            return fh.read()

    LIBRARY_DIR = str(
        Path(workflow.source_path("../scripts/lokiml/__init__.py")).parent.parent
    )
    # the modules imported at DAG-build time (below), fetched beside the package
    for _name in (
        "errors.py",
        "config.py",
        "codedigest.py",
        "export_files.py",
        "machine.py",
    ):
        workflow.source_path(f"../scripts/lokiml/{_name}")
    workflow.source_path(
        "../schemas/config.schema.yaml"
    )  # lokiml.config reads it beside the library
if LIBRARY_DIR not in sys.path:
    sys.path.insert(0, LIBRARY_DIR)

from lokiml.config import validate_config, image_sizes  # noqa: E402
from lokiml.codedigest import Library  # noqa: E402
from lokiml.errors import ConfigError  # noqa: E402

# Standard library only: no pandas, numpy or Pillow to import at DAG-build time.
from lokiml.export_files import export_state, find_tables, table_bytes  # noqa: E402
from snakemake.logging import logger  # noqa: E402

_LIBRARY = Library(
    LIBRARY_DIR, read=_read_library_source, cache=".snakemake/lokiml/code_digests.json"
)


def library_code(script):
    """Digest of the library code that workflow/scripts/{script}.py runs (lokiml/codedigest.py).

    Each of the rules gets it as `params: code=...`. Snakemake's `code` trigger sees only the script;
    this makes a change of the lokiml code the script reaches rerun the rule, and only then.
    """
    path = os.path.join(LIBRARY_DIR, f"{script}.py")
    if _read_library_source is not None:
        _LIBRARY.imported(
            path
        )  # a remote module: fetch every module the script's imports load
    return _LIBRARY.digest(path)


# A config given with --configfile starts from a clean slate of experiments: the experiments of the
# files given there (and of --config), not those shipped in config/config.yaml (which Snakemake's
# `configfile:` loaded first and merged the files into), unless `keep_shipped_experiments: true`
# (config/demo.yaml). A module given `config:` skips its `configfile:`: that config is its user's own,
# nothing shipped to drop (skip_configfile; the root workflow's modifier also says is_module).
_module_config = getattr(workflow.modifier, "skip_configfile", False)
if (
    workflow.overwrite_configfiles
    and not _module_config
    and not config.get("keep_shipped_experiments")
):
    _given = workflow.config_settings.overwrite_config.get("experiments") or {}
    _dropped = sorted(set(config.get("experiments") or {}) - set(_given))
    config["experiments"] = copy.deepcopy(_given)
    if _dropped:
        logger.info(
            f"experiments: only those of the --configfile files ({', '.join(sorted(_given)) or 'none'}); "
            f"not run: {', '.join(_dropped)} (set keep_shipped_experiments: true to keep config/config.yaml's)"
        )
from lokiml.machine import local_gpu_count  # noqa: E402

try:
    _validated = validate_config(config)
except ConfigError as _err:
    raise WorkflowError(str(_err)) from None
config.clear()
config.update(_validated)

DATA = "results/data"
# Conda environment (--sdm conda) of the rules that ask for a GPU: config device.conda_env.
GPU_RULES_ENV = (
    "../envs/train-gpu.yaml"
    if config["device"]["conda_env"] == "gpu"
    else "../envs/train.yaml"
)
SIZES = image_sizes(config)
SHARDS = list(range(config["normalise"]["shards"]))

# Model jobs (training, evaluation, feature extraction, prediction): each runs TensorFlow on
# MODEL_THREADS threads (the rule's `threads:`, which the job's script passes on; change it per rule
# with `set-threads` in a profile; Snakemake caps it at --cores). Where this machine has GPUs, or jobs
# go to a cluster, each model job also holds a `gpu` slot (profiles/workstation offers one: a GPU is
# never shared); on a machine without GPUs it holds none, so model jobs run side by side, as many as
# the cores allow (benchmarks/bench_demo_parallel.py).
MODEL_THREADS = 4
LOCAL_GPUS = local_gpu_count()


def model_gpu(wildcards):
    """1 where jobs go to a cluster or this machine has GPUs, else 0. A function, evaluated when the DAG
    is built: while the Snakefile is parsed no executor is set yet, so workflow.local_exec is always true
    then (a SLURM run submitted its model jobs without --gpus, test_slurm_submit showed it).
    """
    return (
        1
        if (LOCAL_GPUS > 0 or not workflow.local_exec or dry_run_for_a_cluster())
        else 0
    )


def dry_run_for_a_cluster():
    """True in a dry run (-n) of a profile with a cluster executor (profiles/slurm -n).

    A dry run replaces the executor by the local `dryrun` one, so workflow.local_exec is true there too,
    and the dry run would show gpu=0 where the real run asks for one (tests/slurm: test_cluster_profile_
    gives_the_gpu_rules_a_gpu). Snakemake keeps no public record of the intended executor; what it does
    keep is execution_settings.use_threads, which it forces on (on POSIX) exactly when the intended
    executor is not local (snakemake.api.DAGApi.execute_workflow), or when --force-use-threads is given.
    """
    settings = getattr(workflow, "execution_settings", None)
    return bool(
        workflow.dryrun
        and settings is not None
        and settings.use_threads
        and os.name == "posix"
    )


wildcard_constraints:
    size=r"\d+",
    shard=r"\d+",
    experiment=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    prediction=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    # no wildcard may start with a dot: lokiml.io's temporary names (.<name>.<random><suffix>) never match a pattern
    model=r"[A-Za-z0-9][A-Za-z0-9_.-]*",


def gpus(rule):
    """The `gpu` resource of the GPU rules (1), or 0 when the profile asks for the GPU as `gres`.

    One GPU per job (profiles/workstation limits gpu=1, so GPU jobs run one at a time there). The SLURM
    executor plugin turns `gpu` into --gpus=N and `gres` into --gres=...; given both, it submits both and
    the job asks for its GPU twice. A cluster that wants --gres=gpu:1 sets `gres: "gpu:1"` for the rule
    under set-resources (README: SLURM), and this makes the rule's own `gpu` 0 so that only --gres is sent.
    """
    given = workflow.resource_settings.overwrite_resources.get(rule) or {}
    gres = given.get("gres") if hasattr(given, "get") else None
    gres = getattr(
        gres, "raw", gres
    )  # a parsed Resource (its text as given) or a plain value
    return 0 if gres and "gpu" in str(gres) else model_gpu


def get_display_normalisation():
    """How images are normalised where the report shows them (class gallery, mistakes of descriptor
    experiments): the config's `normalise:` at the smallest image size of the CNN experiments (at most
    256 px; 128 px without CNN experiments)."""
    n = config["normalise"]
    size = min(min(SIZES), 256) if SIZES else 128
    return {
        "size": size,
        **{k: n[k] for k in ("threshold", "polarity", "bottom_crop", "max_pixels")},
    }


def get_export():
    """The export to read: the configured one, or the built-in demo export."""
    if config["export"]:
        return config["export"]
    return "resources/demo_export"


if config["export"] and not os.path.lexists(config["export"]):
    raise WorkflowError(
        f"config key export: {config['export']!r} does not exist (relative paths are taken from "
        f"{os.getcwd()}); give the path of an EcoTaxa export: a .tsv/.txt table, a folder or a .zip"
    )


_EXPORT_TABLES = []


def get_export_tables():
    """For an export that is a folder: the table files its reader reads.

    Snakemake sees a folder input change only when the folder itself changes, not
    when a table inside it is rewritten or appended to; listing the tables makes a
    data update rerun read_export. The list comes from the reader's own rule
    (lokiml.ecotaxa.find_tables: ecotaxa*.tsv/.txt in any case, else every .tsv),
    so that every table it reads is an input. A listing only: nothing is read.
    """
    export = config["export"]
    if not export or not os.path.isdir(export):
        return []
    if not _EXPORT_TABLES:
        _EXPORT_TABLES.append(find_tables(export))
    return _EXPORT_TABLES[0]


def get_export_state():
    """A token that changes when an image (or table) read_export looked at last time changed on disk.

    Images are not inputs (an export of 100 000 images would make a DAG of 100 000 files): the
    image manifest read_export writes lists each with its size and modification time, and this
    compares them with the files (one stat each, nothing read). See lokiml.manifest.export_state.
    """
    return export_state(get_export(), f"{DATA}/images.tsv")


def images_needed():
    """Whether read_export looks at the images: required, optional or ignored (lokiml.objects.select_objects).

    Required by a CNN (deep_features experiments have one) and by descriptors measured on the images
    (features: morphometrics or both); optional for descriptors with features: auto (the images' when
    the export has them, else the export's descriptors only); ignored with descriptors of the export only.
    """
    exps = list(config["experiments"].values())
    if any(
        e["kind"] != "descriptors" or e.get("features") in ("morphometrics", "both")
        for e in exps
    ):
        return "required"
    if any(e.get("features") == "auto" for e in exps):
        return "optional"
    return "ignored"


def get_read_export_mem_mb(wildcards, input):
    """Memory of read_export: its tables (about 12 times their size, parsed) and at least one large image.

    The images take turns within what is left (lokiml.memory), so the job stays under this whatever
    they are; an image that alone would need more is counted as image_too_large.
    """
    export = get_export()
    tables = get_export_tables()
    tables_mb = (
        sum(os.path.getsize(t) for t in tables if os.path.isfile(t))
        if tables
        else table_bytes(export)
    ) / 2**20
    return int(max(2000, 1300 + 12 * tables_mb))


def get_all_shard_indexes():
    """The indexes of every image store (every image size): what normalisation could not use is counted."""
    return [index for size in SIZES for index in get_shards(size)["index"]]


def get_class_mapping():
    return [config["class_mapping"]] if config["class_mapping"] else []


def get_shards(size):
    return {
        "npy": expand(f"{DATA}/images/{size}px/shard{{shard}}.npy", shard=SHARDS),
        "index": expand(f"{DATA}/images/{size}px/shard{{shard}}.tsv", shard=SHARDS),
    }


def get_all_targets():
    targets = [f"{DATA}/split.tsv"] + list(rules.summarise_data.output)
    targets += get_all_shard_indexes()
    targets += expand(f"{EXP}/{{experiment}}/model.keras", experiment=CNN_EXPERIMENTS)
    # Every output of the evaluation rules is a target (not only one per job), so that a deleted
    # figure or table is made again. rules.* exist here: rule all is parsed after the includes.
    targets += list(rules.plot_data_summary.output)
    targets += expand(list(rules.evaluate_model.output), experiment=CNN_EXPERIMENTS)
    targets += expand(
        list(rules.evaluate_descriptors.output), experiment=DESCRIPTOR_EXPERIMENTS
    )
    targets += expand(
        list(rules.evaluate_deep_features.output), experiment=DEEP_FEATURE_EXPERIMENTS
    )
    targets += expand(
        list(rules.estimate_descriptors.output),
        experiment=ESTIMATED_DESCRIPTOR_EXPERIMENTS,
    )
    targets += expand(
        list(rules.estimate_deep_features.output),
        experiment=ESTIMATED_DEEP_FEATURE_EXPERIMENTS,
    )
    if EVALUATED_EXPERIMENTS:
        targets += list(rules.make_leaderboard.output) + list(
            rules.compare_classes.output
        )
    targets += list(rules.plot_class_gallery.output)
    # the decisions of every experiment: thresholds, natural frequencies, abundances, unknowns (lokiml.decisions)
    targets += expand(
        list(rules.evaluate_decisions.output), experiment=EVALUATED_EXPERIMENTS
    )
    targets += expand(
        f"{EXP}/{{experiment}}/normalisation.json", experiment=EVALUATED_EXPERIMENTS
    )
    if PREDICTIONS:
        targets += expand(list(rules.predict_images.output), prediction=PREDICTIONS)
        targets += expand(list(rules.report_prediction.output), prediction=PREDICTIONS)
    return targets


EXP = "results/experiments"
EVAL = "results/evaluation"
CNN_EXPERIMENTS = sorted(
    n for n, e in config["experiments"].items() if e["kind"] == "cnn"
)
DESCRIPTOR_EXPERIMENTS = sorted(
    n for n, e in config["experiments"].items() if e["kind"] == "descriptors"
)
DEEP_FEATURE_EXPERIMENTS = sorted(
    n for n, e in config["experiments"].items() if e["kind"] == "deep_features"
)
# The CNN experiments whose features a deep_features experiment uses (lokiml.config checks that they are CNNs).
DEEP_FEATURE_CNNS = sorted(
    {config["experiments"][n]["cnn"] for n in DEEP_FEATURE_EXPERIMENTS}
)
# Every experiment with evaluation outputs (results/evaluation/{experiment}/...): on the leaderboard.
EVALUATED_EXPERIMENTS = sorted(
    CNN_EXPERIMENTS + DESCRIPTOR_EXPERIMENTS + DEEP_FEATURE_EXPERIMENTS
)
# The scikit-learn experiments with a repeated estimate (estimate: not null), and those that use morphometrics.
ESTIMATED_DESCRIPTOR_EXPERIMENTS = sorted(
    n for n in DESCRIPTOR_EXPERIMENTS if config["experiments"][n]["estimate"]
)
ESTIMATED_DEEP_FEATURE_EXPERIMENTS = sorted(
    n for n in DEEP_FEATURE_EXPERIMENTS if config["experiments"][n]["estimate"]
)
ESTIMATED_EXPERIMENTS = sorted(
    ESTIMATED_DESCRIPTOR_EXPERIMENTS + ESTIMATED_DEEP_FEATURE_EXPERIMENTS
)
MORPHOMETRIC_EXPERIMENTS = sorted(
    n
    for n in DESCRIPTOR_EXPERIMENTS
    if config["experiments"][n]["features"] in ("auto", "morphometrics", "both")
)


# Report categories. Snakemake's report lists categories in alphabetical order; the numbers put the
# leaderboard first, then the data and the predictions, then one category per experiment.
REPORT_LEADERBOARD = "1. Leaderboard"
REPORT_DATA = "2. Data"
REPORT_PREDICTIONS = "3. Predictions"


def one_of(names):
    """A wildcard constraint matching exactly these experiment names (none: matches nothing).

    Both kinds write results/experiments/{experiment}/classes.txt and the same evaluation files,
    so each rule is constrained to the experiments of its kind.
    """
    return "|".join(re.escape(n) for n in names) if names else "(?!)"


PRED = "results/predictions"
PREDICTIONS = sorted(config["predict"])
for _name, _job in config["predict"].items():
    if _job["experiment"] not in EVALUATED_EXPERIMENTS:
        raise WorkflowError(
            f"config key predict.{_name}.experiment: {_job['experiment']!r} is not an experiment of "
            f"`experiments:` (known: {', '.join(EVALUATED_EXPERIMENTS) or 'none'})"
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


FEAT = "results/features"


def base_features_key(experiment):
    """The frozen-base features an experiment's head trains on (rule compute_base_features), or None.

    A CNN experiment with a pre-trained frozen base and no augmentation, unless cache_features is
    false (then the full network runs every epoch). The key names backbone, weights and image size:
    experiments that share all three share the features.
    """
    exp = config["experiments"][experiment]
    if (
        exp["kind"] != "cnn"
        or exp["weights"] == "none"
        or exp["augment"]
        or exp["cache_features"] is False
    ):
        return None
    if exp["weights"] == "imagenet":
        tag = "imagenet"
    else:
        stem = (
            re.sub(r"[^A-Za-z0-9_.-]", "_", Path(exp["weights"]).name.split(".")[0])
            or "weights"
        )
        tag = f"{stem}-{hashlib.sha1(str(exp['weights']).encode()).hexdigest()[:8]}"
    return f"{exp['model'].lower()}-{tag}-{exp['image_size']}px"


def base_features_reused(experiment):
    """Whether evaluation and deep-feature extraction read the base features too: yes when the frozen
    base is never fine-tuned, so that the best checkpoint's base is the one the features came from, and
    no test-time augmentation (`tta`) is built into the saved model (its views are not in the features).
    """
    exp = config["experiments"][experiment]
    return (
        base_features_key(experiment) is not None
        and not exp["fine_tune"]
        and not exp.get("tta")
    )


# key -> what rule compute_base_features computes, and for which experiments
BASE_FEATURES = {}
for _name in CNN_EXPERIMENTS:
    _key = base_features_key(_name)
    if _key:
        BASE_FEATURES.setdefault(_key, {"experiments": []})["experiments"].append(_name)
for _key, _entry in BASE_FEATURES.items():
    _exps = [config["experiments"][n] for n in _entry["experiments"]]
    _mixed = {e["mixed_precision"] for e in _exps}
    _entry.update(
        model=_exps[0]["model"].lower(),
        weights=get_weights_file(_entry["experiments"][0]),
        image_size=_exps[0]["image_size"],
        # the smallest training batch size of its experiments: known to fit the device's memory
        batch_size=min(e["batch_size"] for e in _exps),
        mixed_precision=_mixed.pop() if len(_mixed) == 1 else "auto",
    )


def get_base_features_inputs(wildcards):
    """Inputs of compute_base_features: the base's weights and the image store of its size."""
    entry = BASE_FEATURES[wildcards.features]
    shards = get_shards(entry["image_size"])
    return {
        "weights": entry["weights"],
        "npys": shards["npy"],
        "indexes": shards["index"],
    }


def get_base_features_params(wildcards):
    entry = BASE_FEATURES[wildcards.features]
    return {
        k: entry[k] for k in ("model", "image_size", "batch_size", "mixed_precision")
    }


def base_features_inputs(experiment):
    key = base_features_key(experiment)
    return (
        {
            "base_features": f"{FEAT}/{key}/base.npy",
            "base_index": f"{FEAT}/{key}/base.tsv",
        }
        if key
        else {}
    )


def get_training_inputs(wildcards):
    exp = config["experiments"][wildcards.experiment]
    size = exp["image_size"]
    shards = get_shards(size)
    inputs = {
        "split": f"{DATA}/split.tsv",
        "npys": shards["npy"],
        "indexes": shards["index"],
    }
    weights = get_weights_file(wildcards.experiment)
    if weights:
        inputs["weights"] = weights
    inputs.update(base_features_inputs(wildcards.experiment))
    return inputs


def get_experiment_params(wildcards):
    return config["experiments"][wildcards.experiment]


def get_state_dir(wildcards):
    """Resume state of a training job: outside the declared outputs, so Snakemake keeps it."""
    return f"resources/train_state/{wildcards.experiment}"


def get_evaluation_inputs(wildcards):
    """Inputs of evaluate_model (the best checkpoint and training records, the split and the image store).

    Only outputs of train_model and the data rules: evaluating never asks for retraining. The objects
    training never saw (capped out, of no configured class) are predicted too, from their own store.
    """
    exp_dir = f"{EXP}/{wildcards.experiment}"
    size = config["experiments"][wildcards.experiment]["image_size"]
    shards = get_shards(size)
    return {
        "model": f"{exp_dir}/best.keras",
        "classes": f"{exp_dir}/classes.txt",
        "history": f"{exp_dir}/history.tsv",
        "info": f"{exp_dir}/train_info.json",
        "split": f"{DATA}/split.tsv",
        "npys": shards["npy"],
        "indexes": shards["index"],
        **get_extra_store(size),
        **(
            base_features_inputs(wildcards.experiment)
            if base_features_reused(wildcards.experiment)
            else {}
        ),
    }


def get_extra_store(size):
    """The objects training never saw (lokiml.extra_objects) and their images normalised at ``size``."""
    return {
        "extra_objects": f"{DATA}/extra_objects.tsv",
        "extra_npy": f"{DATA}/extra_images/{size}px.npy",
        "extra_index": f"{DATA}/extra_images/{size}px.tsv",
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
        name: {
            k: config["experiments"][name][k]
            for k in ("model", "weights", "image_size")
        }
        for name in CNN_EXPERIMENTS
    }
    for name in DESCRIPTOR_EXPERIMENTS:
        settings[name] = {
            "model": config["experiments"][name]["classifier"],
            "weights": "descriptors",
        }
    for name in DEEP_FEATURE_EXPERIMENTS:
        exp = config["experiments"][name]
        settings[name] = {
            "model": exp["classifier"],
            "weights": f"features of {exp['cnn']}{' and descriptors' if exp['descriptors'] else ''}",
            "image_size": config["experiments"][exp["cnn"]]["image_size"],
        }
    return settings


SKLEARN_KEYS = (
    "kind",
    "classifier",
    "param_grid",
    "max_missing",
    "exclude_columns",
    "include_columns",
    "refit",
    "early_stopping_rounds",
    "seed",
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
    return {
        **get_descriptor_params(wildcards),
        "estimate": config["experiments"][wildcards.experiment]["estimate"],
    }


def get_deep_features_estimate_params(wildcards):
    """The keys the estimate of a deep_features experiment uses: its training keys and `estimate`."""
    return {
        **get_deep_features_params(wildcards),
        "estimate": config["experiments"][wildcards.experiment]["estimate"],
    }


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
        **{
            k: f"{exp_dir}/{f}"
            for k, f in (
                ("model", "model.pkl"),
                ("classes", "classes.txt"),
                ("columns", "columns.tsv"),
                ("grid", "grid.tsv"),
                ("info", "train_info.json"),
                ("valid", "valid_probabilities.tsv"),
            )
        },
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
    size = config["experiments"][wildcards.experiment]["image_size"]
    shards = get_shards(size)
    return {
        "model": f"{EXP}/{wildcards.experiment}/best.keras",
        "split": f"{DATA}/split.tsv",
        "npys": shards["npy"],
        "indexes": shards["index"],
        **get_extra_store(size),
        **(
            base_features_inputs(wildcards.experiment)
            if base_features_reused(wildcards.experiment)
            else {}
        ),
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
        "extra_objects": f"{DATA}/extra_objects.tsv",
        "extra_features": f"{EXP}/{cnn}/penultimate_extra.npy",
        "extra_features_index": f"{EXP}/{cnn}/penultimate_extra.tsv",
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


def get_demo_weights_normalisation(wildcards):
    """How the demo weights' calibration images are normalised: as the store's, at the smallest image size
    of the experiments that load these weights (a backbone's pre-trained experiments; else any of its).
    """
    mine = [
        e
        for e in config["experiments"].values()
        if e["kind"] == "cnn" and e["model"].lower() == wildcards.model
    ]
    loading = [
        e
        for e in mine
        if f"demo_weights/{wildcards.model}_seeded_random" in str(e.get("weights"))
    ]
    sizes = [e["image_size"] for e in (loading or mine)]
    n = config["normalise"]
    return {
        "size": min(sizes) if sizes else min(SIZES),
        **{k: n[k] for k in ("threshold", "polarity", "bottom_crop", "max_pixels")},
    }


def get_demo_weights_pretext_size(wildcards):
    """The image size the demo weights' pretext task trains at: the smallest of the backbone's experiments
    (the weights of a convolutional base fit any size; the smaller, the cheaper)."""
    sizes = [
        e["image_size"]
        for e in config["experiments"].values()
        if e["kind"] == "cnn" and e["model"].lower() == wildcards.model
    ]
    return min(sizes) if sizes else min(SIZES)


def get_normalisation_params(wildcards):
    """How the training images of an experiment were normalised: recorded next to its model.

    A deep_features experiment records its CNN's image size (the CNN gives it features); a descriptors
    experiment reads no image, its record says so (image_size null).
    """
    n = config["normalise"]
    exp = config["experiments"][wildcards.experiment]
    size = exp["image_size"]
    if exp["kind"] == "deep_features":
        size = config["experiments"][exp["cnn"]]["image_size"]
    elif exp["kind"] == "descriptors":
        size = None
    return {
        "kind": exp["kind"],
        "image_size": size,
        "threshold": n["threshold"],
        "polarity": n["polarity"],
        "bottom_crop": n["bottom_crop"],
        "max_pixels": n["max_pixels"],
        "canvas": n["canvas"],
        "img_rank": config["img_rank"],
    }


def get_model_files(experiment):
    """The files that classify for an experiment: its model, and a deep_features experiment's CNN."""
    exp = config["experiments"][experiment]
    if exp["kind"] == "cnn":
        return {"model": f"{EXP}/{experiment}/best.keras"}
    files = {
        "model": f"{EXP}/{experiment}/model.pkl",
        "columns": f"{EXP}/{experiment}/columns.tsv",
    }
    if exp["kind"] == "deep_features":
        files["cnn_model"] = f"{EXP}/{exp['cnn']}/best.keras"
    return files


def get_record_inputs(wildcards):
    """Inputs of record_normalisation: the experiment's model files, its classes and the objects."""
    return {
        **get_model_files(wildcards.experiment),
        "classes": f"{EXP}/{wildcards.experiment}/classes.txt",
        "objects": f"{DATA}/objects.tsv",
    }


def get_prediction_inputs(wildcards):
    """The images to classify, the model with its normalisation record (never the config's `normalise:`),
    and the experiment's decisions (per-class trust thresholds, lokiml.decisions)."""
    job = config["predict"][wildcards.prediction]
    exp_dir = f"{EXP}/{job['experiment']}"
    return {
        "images": job["input"],
        **get_model_files(job["experiment"]),
        "record": f"{exp_dir}/normalisation.json",
        "decisions": f"{EVAL}/{job['experiment']}/decisions/decisions.json",
    }


def get_prediction_params(wildcards):
    """Threshold, kept statuses and batch size of one prediction job."""
    job = config["predict"][wildcards.prediction]
    return {k: job[k] for k in ("threshold", "statuses_to_keep", "batch_size")}


def get_decision_inputs(wildcards):
    """Inputs of evaluate_decisions: what the experiment's evaluation wrote, and the data tables."""
    ev = f"{EVAL}/{wildcards.experiment}"
    return {
        "classes": f"{EXP}/{wildcards.experiment}/classes.txt",
        "valid_predictions": f"{ev}/valid/predictions.tsv",
        "valid_probabilities": f"{ev}/valid/probabilities.npy",
        "test_predictions": f"{ev}/test/predictions.tsv",
        "test_probabilities": f"{ev}/test/probabilities.npy",
        "extra_predictions": f"{ev}/extra/predictions.tsv",
        "extra_probabilities": f"{ev}/extra/probabilities.npy",
        "extra_objects": f"{DATA}/extra_objects.tsv",
        "counts": f"{DATA}/natural_counts.tsv",
        "objects": f"{DATA}/objects.tsv",
    }


def evaluation_outputs(
    curves_caption="../report/training_curves.rst",
    curves_label="training curves",
    kind="cnn",
):
    """The outputs of evaluate_model and evaluate_descriptors, the same files for every kind of experiment.

    Keys: summary, summary_html, curves, {split}_{key} for lokiml.evaluate.SPLITS x SPLIT_OUTPUTS, and
    extra_predictions, extra_probabilities (lokiml.extra_objects).
    `kind` chooses the captions of the summary and of the mistakes: a CNN has epochs, checkpoints and
    sees the normalised images; a descriptors or deep_features experiment has a grid search and a
    classifier that sees numbers.
    """
    summary_caption = (
        "../report/summary.rst" if kind == "cnn" else "../report/summary_features.rst"
    )
    mistakes_caption = (
        "../report/mistakes.rst" if kind == "cnn" else "../report/mistakes_features.rst"
    )
    return {
        "summary_html": report(
            f"{EVAL}/{{experiment}}/summary.html",
            caption=summary_caption,
            category="{experiment}",
            subcategory="summary",
            labels={
                "result": "summary (model, results, training, data)",
                "type": "table",
            },
        ),
        "summary": report(
            f"{EVAL}/{{experiment}}/summary.txt",
            caption=summary_caption,
            category="{experiment}",
            subcategory="summary",
            labels={
                "result": "summary (model, results, training, data)",
                "type": "text (download)",
            },
        ),
        "curves": report(
            f"{EVAL}/{{experiment}}/training_curves.svg",
            caption=curves_caption,
            category="{experiment}",
            subcategory="training",
            labels={"result": curves_label, "type": "figure"},
        ),
        "test_probabilities": f"{EVAL}/{{experiment}}/test/probabilities.npy",
        "valid_probabilities": f"{EVAL}/{{experiment}}/valid/probabilities.npy",
        # the objects training never saw (capped out, of no configured class): for lokiml.decision_report
        "extra_predictions": f"{EVAL}/{{experiment}}/extra/predictions.tsv",
        "extra_probabilities": f"{EVAL}/{{experiment}}/extra/probabilities.npy",
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
            caption=mistakes_caption,
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
            caption=mistakes_caption,
            category="{experiment}",
            subcategory="valid",
            labels={"result": "the most confident mistakes (images)", "type": "figure"},
        ),
    }
