# Evaluation: one job per CNN experiment (the best checkpoint on the valid and test splits) and per
# descriptors or deep_features experiment (the same files), a leaderboard over all experiments, and figures of the data
# stage. Everything a user looks at is in the report:
#   snakemake --report report.html    (or report.zip)
# Nothing here is an input of train_model: changing evaluation settings or code never retrains a model.
# The evaluation settings are the params below (not in config.yaml): originals only, 15 calibration bins,
# the experiment's training batch size.


rule evaluate_model:
    input:
        unpack(get_evaluation_inputs),
    output:
        **evaluation_outputs(),
    wildcard_constraints:
        experiment=one_of(CNN_EXPERIMENTS),
    params:
        classes=config["classes"],
        experiment=get_experiment_params,
        batch_size=get_evaluation_batch_size,
        include_augmented=False,
        ece_bins=15,
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=4 * 60,
    conda:
        GPU_RULES_ENV
    log:
        "logs/evaluate_model/{experiment}.log",
    benchmark:
        "benchmarks/out/evaluate_model/{experiment}.tsv"
    script:
        "../scripts/evaluate_model.py"


rule evaluate_descriptors:
    """The evaluate_model outputs for a descriptors experiment; training_curves.svg shows its grid search."""
    input:
        unpack(get_descriptor_evaluation_inputs),
    output:
        **evaluation_outputs("../report/grid_search.rst", "hyper-parameter search"),
    wildcard_constraints:
        experiment=one_of(DESCRIPTOR_EXPERIMENTS),
    params:
        classes=config["classes"],
        ece_bins=15,
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/train.yaml"
    log:
        "logs/evaluate_descriptors/{experiment}.log",
    benchmark:
        "benchmarks/out/evaluate_descriptors/{experiment}.tsv"
    script:
        "../scripts/evaluate_descriptors.py"


rule evaluate_deep_features:
    """The evaluate_model outputs for a deep_features experiment; training_curves.svg shows its grid search."""
    input:
        unpack(get_deep_features_evaluation_inputs),
    output:
        **evaluation_outputs("../report/grid_search.rst", "hyper-parameter search"),
    wildcard_constraints:
        experiment=one_of(DEEP_FEATURE_EXPERIMENTS),
    params:
        classes=config["classes"],
        cnn=get_deep_features_cnn,
        ece_bins=15,
    threads: 1
    resources:
        mem_mb=8000,
        runtime=30,
    conda:
        "../envs/train.yaml"
    log:
        "logs/evaluate_deep_features/{experiment}.log",
    benchmark:
        "benchmarks/out/evaluate_deep_features/{experiment}.tsv"
    script:
        "../scripts/evaluate_deep_features.py"


rule make_leaderboard:
    input:
        test_metrics=expand(f"{EVAL}/{{experiment}}/test/metrics.json", experiment=EVALUATED_EXPERIMENTS),
        valid_metrics=expand(f"{EVAL}/{{experiment}}/valid/metrics.json", experiment=EVALUATED_EXPERIMENTS),
        infos=expand(f"{EXP}/{{experiment}}/train_info.json", experiment=EVALUATED_EXPERIMENTS),
        estimates=expand(f"{EVAL}/{{experiment}}/estimate.json", experiment=ESTIMATED_EXPERIMENTS),
    output:
        html=report(
            f"{EVAL}/leaderboard.html",
            caption="../report/leaderboard.rst",
            category="Leaderboard",
            labels={"result": "leaderboard", "type": "table"},
        ),
        tsv=report(
            f"{EVAL}/leaderboard.tsv",
            caption="../report/leaderboard.rst",
            category="Leaderboard",
            labels={"result": "leaderboard", "type": "TSV (download)"},
        ),
        figure=report(
            f"{EVAL}/leaderboard.svg",
            caption="../report/leaderboard_figure.rst",
            category="Leaderboard",
            labels={"result": "scores per experiment", "type": "figure"},
        ),
    params:
        experiments=EVALUATED_EXPERIMENTS,
        estimated=ESTIMATED_EXPERIMENTS,
        settings=get_leaderboard_settings(),
    conda:
        "../envs/train.yaml"
    log:
        "logs/make_leaderboard.log",
    localrule: True
    script:
        "../scripts/make_leaderboard.py"


rule plot_data_summary:
    input:
        summary=f"{DATA}/summary.tsv",
        split=f"{DATA}/split.tsv",
    output:
        table=report(
            f"{DATA}/report/summary.html",
            caption="../report/data_summary.rst",
            category="Data",
            labels={"result": "objects per class at each step", "type": "table"},
        ),
        objects=report(
            f"{DATA}/report/objects_per_class.svg",
            caption="../report/objects_per_class.rst",
            category="Data",
            labels={"result": "objects per class, before and after balancing", "type": "figure"},
        ),
        dropped=report(
            f"{DATA}/report/dropped_rows.svg",
            caption="../report/dropped_rows.rst",
            category="Data",
            labels={"result": "rows of the export: used or dropped, by reason", "type": "figure"},
        ),
        splits=report(
            f"{DATA}/report/split_sizes.svg",
            caption="../report/split_sizes.rst",
            category="Data",
            labels={"result": "train / validation / test split per class", "type": "figure"},
        ),
    params:
        classes=config["classes"],
        cap=config["balance"]["cap"],
    conda:
        "../envs/train.yaml"
    log:
        "logs/plot_data_summary.log",
    localrule: True
    script:
        "../scripts/plot_data_summary.py"
