# The scikit-learn baselines' own stages: morphometric descriptors measured on the images (for the
# descriptors experiments whose `features` use them), and the honest estimates of the descriptors and
# deep_features experiments (repeated k-fold, and leave one group out with split.group_by).
# Their training and evaluation rules are in train.smk and evaluate.smk.


rule compute_morphometrics:
    """Shape and grey-level descriptors of every original object, measured on its image (lokiml/morphometrics.py).

    One job per shard (normalise.shards), threads inside; cached per image by content under
    resources/cache/morphometrics/, so a data update measures only new images.
    """
    input:
        export=get_export(),
        balanced=f"{DATA}/balanced.tsv",
    output:
        table=f"{DATA}/morphometrics/shard{{shard}}.tsv",
    log:
        "logs/compute_morphometrics/shard{shard}.log",
    benchmark:
        "benchmarks/out/compute_morphometrics/shard{shard}.tsv"
    conda:
        "../envs/data.yaml"
    threads: 2
    resources:
        mem_mb=2000,
        runtime=120,
    params:
        **get_morphometrics_params(),
        code=library_code("compute_morphometrics"),
        shards=config["normalise"]["shards"],
        cache_dir="resources/cache/morphometrics",
    script:
        "../scripts/compute_morphometrics.py"


rule estimate_descriptors:
    """Repeated stratified k-fold (and leave-one-group-out) estimate of a descriptors experiment, grid chosen per fold."""
    input:
        unpack(get_descriptor_estimate_inputs),
    output:
        table=f"{EVAL}/{{experiment}}/estimate.tsv",
        summary=f"{EVAL}/{{experiment}}/estimate.json",
    log:
        "logs/estimate_descriptors/{experiment}.log",
    benchmark:
        "benchmarks/out/estimate_descriptors/{experiment}.tsv"
    wildcard_constraints:
        experiment=one_of(ESTIMATED_DESCRIPTOR_EXPERIMENTS),
    conda:
        "../envs/train.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        code=library_code("estimate_descriptors"),
        experiment=get_descriptor_estimate_params,
        classes=config["classes"],
        split=get_estimate_split_params(),
    script:
        "../scripts/estimate_descriptors.py"


rule estimate_deep_features:
    """Repeated k-fold (and leave-one-group-out) estimate of a deep_features experiment.

    Only objects its CNN did not train on (valid and test) are tested.
    """
    input:
        unpack(get_deep_features_estimate_inputs),
    output:
        table=f"{EVAL}/{{experiment}}/estimate.tsv",
        summary=f"{EVAL}/{{experiment}}/estimate.json",
    log:
        "logs/estimate_deep_features/{experiment}.log",
    benchmark:
        "benchmarks/out/estimate_deep_features/{experiment}.tsv"
    wildcard_constraints:
        experiment=one_of(ESTIMATED_DEEP_FEATURE_EXPERIMENTS),
    conda:
        "../envs/train.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        code=library_code("estimate_deep_features"),
        experiment=get_deep_features_estimate_params,
        classes=config["classes"],
        split=get_estimate_split_params(),
    script:
        "../scripts/estimate_deep_features.py"
