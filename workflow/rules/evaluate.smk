# Evaluation: one job per CNN experiment (the best checkpoint on the valid and test splits) and per
# descriptors or deep_features experiment (the same files), a leaderboard over all experiments, and figures of the data
# stage. Each evaluation job also predicts the objects training never saw (capped out by the balancing, or of no
# configured class: rule collect_extra_objects), from which evaluate_decisions (a light job per experiment, no
# model) chooses per-class trust thresholds and measures them at natural frequencies, with abundances and unknowns. Everything a user looks at is in the report:
#   snakemake --report report.html    (or report.zip)
# Nothing here is an input of train_model: changing evaluation settings or code never retrains a model.
# The evaluation settings are the params below (not in config.yaml): originals only, 15 calibration bins,
# the experiment's training batch size.


rule evaluate_model:
    input:
        unpack(get_evaluation_inputs),
    output:
        **evaluation_outputs(),
    log:
        "logs/evaluate_model/{experiment}.log",
    benchmark:
        "benchmarks/out/evaluate_model/{experiment}.tsv"
    wildcard_constraints:
        experiment=one_of(CNN_EXPERIMENTS),
    conda:
        GPU_RULES_ENV
    threads: MODEL_THREADS
    resources:
        gpu=gpus("evaluate_model"),
        mem_mb=8000,
        runtime=4 * 60,
    params:
        code=library_code("evaluate_model"),
        classes=config["classes"],
        experiment=get_experiment_params,
        batch_size=get_evaluation_batch_size,
        include_augmented=False,
        ece_bins=15,
    script:
        "../scripts/evaluate_model.py"


rule evaluate_descriptors:
    """The evaluate_model outputs for a descriptors experiment; training_curves.svg shows its grid search.

    The export is read for the images of the most confident mistakes (the classifier saw none).
    """
    input:
        unpack(get_descriptor_evaluation_inputs),
        export=get_export(),
        extra_objects=f"{DATA}/extra_objects.tsv",
    output:
        **evaluation_outputs(
            "../report/grid_search.rst", "hyper-parameter search", kind="features"
        ),
    log:
        "logs/evaluate_descriptors/{experiment}.log",
    benchmark:
        "benchmarks/out/evaluate_descriptors/{experiment}.tsv"
    wildcard_constraints:
        experiment=one_of(DESCRIPTOR_EXPERIMENTS),
    conda:
        "../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        images=get_display_normalisation(),
        code=library_code("evaluate_descriptors"),
        classes=config["classes"],
        ece_bins=15,
    script:
        "../scripts/evaluate_descriptors.py"


rule evaluate_deep_features:
    """The evaluate_model outputs for a deep_features experiment; training_curves.svg shows its grid search."""
    input:
        unpack(get_deep_features_evaluation_inputs),
    output:
        **evaluation_outputs(
            "../report/grid_search.rst", "hyper-parameter search", kind="features"
        ),
    log:
        "logs/evaluate_deep_features/{experiment}.log",
    benchmark:
        "benchmarks/out/evaluate_deep_features/{experiment}.tsv"
    wildcard_constraints:
        experiment=one_of(DEEP_FEATURE_EXPERIMENTS),
    conda:
        "../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=30,
    params:
        code=library_code("evaluate_deep_features"),
        classes=config["classes"],
        cnn=get_deep_features_cnn,
        ece_bins=15,
    script:
        "../scripts/evaluate_deep_features.py"


rule make_leaderboard:
    input:
        test_metrics=expand(
            f"{EVAL}/{{experiment}}/test/metrics.json",
            experiment=EVALUATED_EXPERIMENTS,
        ),
        valid_metrics=expand(
            f"{EVAL}/{{experiment}}/valid/metrics.json",
            experiment=EVALUATED_EXPERIMENTS,
        ),
        infos=expand(
            f"{EXP}/{{experiment}}/train_info.json", experiment=EVALUATED_EXPERIMENTS
        ),
        estimates=expand(
            f"{EVAL}/{{experiment}}/estimate.json", experiment=ESTIMATED_EXPERIMENTS
        ),
    output:
        html=report(
            f"{EVAL}/leaderboard.html",
            caption="../report/leaderboard.rst",
            category=REPORT_LEADERBOARD,
            labels={"result": "leaderboard", "type": "table"},
        ),
        tsv=report(
            f"{EVAL}/leaderboard.tsv",
            caption="../report/leaderboard.rst",
            category=REPORT_LEADERBOARD,
            labels={"result": "leaderboard", "type": "TSV (download)"},
        ),
        figure=report(
            f"{EVAL}/leaderboard.svg",
            caption="../report/leaderboard_figure.rst",
            category=REPORT_LEADERBOARD,
            labels={"result": "scores per experiment", "type": "figure"},
        ),
    log:
        "logs/make_leaderboard.log",
    localrule: True
    conda:
        "../envs/train.yaml"
    params:
        code=library_code("make_leaderboard"),
        experiments=EVALUATED_EXPERIMENTS,
        estimated=ESTIMATED_EXPERIMENTS,
        settings=get_leaderboard_settings(),
    script:
        "../scripts/make_leaderboard.py"


rule plot_data_summary:
    input:
        summary=f"{DATA}/summary.tsv",
        split=f"{DATA}/split.tsv",
        manifest=f"{DATA}/images.tsv",
    output:
        table=report(
            f"{DATA}/report/summary.html",
            caption="../report/data_summary.rst",
            category=REPORT_DATA,
            labels={"result": "objects per class at each step", "type": "table"},
        ),
        objects=report(
            f"{DATA}/report/objects_per_class.svg",
            caption="../report/objects_per_class.rst",
            category=REPORT_DATA,
            labels={
                "result": "objects per class, before and after balancing",
                "type": "figure",
            },
        ),
        dropped=report(
            f"{DATA}/report/dropped_rows.svg",
            caption="../report/dropped_rows.rst",
            category=REPORT_DATA,
            labels={
                "result": "rows of the export: used or dropped, by reason",
                "type": "figure",
            },
        ),
        splits=report(
            f"{DATA}/report/split_sizes.svg",
            caption="../report/split_sizes.rst",
            category=REPORT_DATA,
            labels={
                "result": "train / validation / test split per class",
                "type": "figure",
            },
        ),
    log:
        "logs/plot_data_summary.log",
    # what a user should read first: before any training job that is ready at the same time
    priority: 100
    localrule: True
    conda:
        "../envs/train.yaml"
    params:
        code=library_code("plot_data_summary"),
        classes=config["classes"],
        cap=config["balance"]["cap"],
        polarity=config["normalise"]["polarity"],
    script:
        "../scripts/plot_data_summary.py"


# ------------------------------------------------------------------------------------------------------------
# From scores to decisions (lokiml.extra_objects, lokiml.decisions, lokiml.decision_report, lokiml.abundance)
# ------------------------------------------------------------------------------------------------------------


rule collect_extra_objects:
    """The objects training never saw: capped out by the balancing cap, and of no configured class (unknowns)."""
    input:
        export=get_export(),
        tables=get_export_tables(),
        ledger=f"{DATA}/ledger.tsv",
        objects=f"{DATA}/objects.tsv",
        split=f"{DATA}/split.tsv",
    output:
        extra=f"{DATA}/extra_objects.tsv",
        counts=f"{DATA}/natural_counts.tsv",
    log:
        "logs/collect_extra_objects.log",
    benchmark:
        "benchmarks/out/collect_extra_objects.tsv"
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        code=library_code("collect_extra_objects"),
        max_per_class=config["decisions"]["max_capped_per_class"],
        max_unknowns=config["decisions"]["max_unknowns"],
        seed=config["split"]["seed"],
        group_by=config["split"]["group_by"],
        holdout=config["split"]["holdout"],
    script:
        "../scripts/collect_extra_objects.py"


rule normalise_extra_images:
    """The images of the objects training never saw, normalised like the training images (one job per size)."""
    input:
        export=get_export(),
        extra=f"{DATA}/extra_objects.tsv",
    output:
        npy=f"{DATA}/extra_images/{{size}}px.npy",
        index=f"{DATA}/extra_images/{{size}}px.tsv",
    log:
        "logs/normalise_extra_images/{size}px.log",
    benchmark:
        "benchmarks/out/normalise_extra_images/{size}px.tsv"
    conda:
        "../envs/data.yaml"
    threads: 2
    resources:
        mem_mb=2000,
        runtime=120,
    params:
        code=library_code("normalise_extra_images"),
        threshold=config["normalise"]["threshold"],
        polarity=config["normalise"]["polarity"],
        bottom_crop=config["normalise"]["bottom_crop"],
        max_pixels=config["normalise"]["max_pixels"],
        max_bytes=config["normalise"]["max_bytes"],
        canvas=config["normalise"]["canvas"],
        cache_dir="resources/cache/normalised",
    script:
        "../scripts/normalise_extra_images.py"


rule evaluate_decisions:
    """Per-class trust thresholds (validation), checked at natural frequencies; abundances per sample; unknowns."""
    input:
        unpack(get_decision_inputs),
    output:
        page=report(
            f"{EVAL}/{{experiment}}/decisions/decisions.html",
            caption="../report/decisions.rst",
            category="{experiment}",
            subcategory="decisions",
            labels={
                "result": "decisions: trust thresholds, natural frequencies, abundances, unknowns",
                "type": "page",
            },
        ),
        rule=f"{EVAL}/{{experiment}}/decisions/decisions.json",
        thresholds=report(
            f"{EVAL}/{{experiment}}/decisions/thresholds.tsv",
            caption="../report/thresholds.rst",
            category="{experiment}",
            subcategory="decisions",
            labels={"result": "trust thresholds per class", "type": "TSV (download)"},
        ),
        curves=report(
            f"{EVAL}/{{experiment}}/decisions/precision_recall.svg",
            caption="../report/precision_recall.rst",
            category="{experiment}",
            subcategory="decisions",
            labels={
                "result": "precision and recall per class, chosen thresholds",
                "type": "figure",
            },
        ),
        natural_metrics=f"{EVAL}/{{experiment}}/decisions/natural_metrics.json",
        natural_report=f"{EVAL}/{{experiment}}/decisions/natural_classification_report.tsv",
        natural_confusion=f"{EVAL}/{{experiment}}/decisions/natural_confusion.tsv",
        natural_confusion_fig=report(
            f"{EVAL}/{{experiment}}/decisions/natural_confusion.svg",
            caption="../report/natural_confusion.rst",
            category="{experiment}",
            subcategory="decisions",
            labels={
                "result": "confusion matrix at natural proportions",
                "type": "figure",
            },
        ),
        abundance=report(
            f"{EVAL}/{{experiment}}/decisions/abundance.tsv",
            caption="../report/abundance.rst",
            category="{experiment}",
            subcategory="decisions",
            labels={
                "result": "abundances per sample: true, predicted, adjusted",
                "type": "TSV (download)",
            },
        ),
        abundance_errors=f"{EVAL}/{{experiment}}/decisions/abundance_errors.tsv",
        abundance_fig=report(
            f"{EVAL}/{{experiment}}/decisions/abundance.svg",
            caption="../report/abundance.rst",
            category="{experiment}",
            subcategory="decisions",
            labels={
                "result": "abundances per sample: errors of the counts",
                "type": "figure",
            },
        ),
        open_set=f"{EVAL}/{{experiment}}/decisions/open_set.tsv",
        open_set_fig=report(
            f"{EVAL}/{{experiment}}/decisions/open_set.svg",
            caption="../report/open_set.rst",
            category="{experiment}",
            subcategory="decisions",
            labels={
                "result": "objects of no configured class (open set)",
                "type": "figure",
            },
        ),
    log:
        "logs/evaluate_decisions/{experiment}.log",
    benchmark:
        "benchmarks/out/evaluate_decisions/{experiment}.tsv"
    wildcard_constraints:
        experiment=one_of(EVALUATED_EXPERIMENTS),
    localrule: True
    conda:
        "../envs/train.yaml"
    params:
        code=library_code("evaluate_decisions"),
        decisions={
            k: config["decisions"][k]
            for k in (
                "target_precision",
                "class_precision",
                "confidence",
                "abundance_by",
                "lineage",
            )
        },
    script:
        "../scripts/evaluate_decisions.py"
