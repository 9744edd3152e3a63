# Evaluation: one job per CNN experiment (the best checkpoint on the valid and test splits), a leaderboard
# over all experiments, and figures of the data stage. Everything a user looks at is in the report:
#   snakemake --report report.html    (or report.zip)
# Nothing here is an input of train_model: changing evaluation settings or code never retrains a model.
# The evaluation settings are the params below (not in config.yaml): originals only, 15 calibration bins,
# the experiment's training batch size.


rule evaluate_model:
    input:
        unpack(get_evaluation_inputs),
    output:
        summary_html=report(
            f"{EVAL}/{{experiment}}/summary.html",
            caption="../report/summary.rst",
            category="{experiment}",
            subcategory="summary",
            labels={"result": "summary (model, results, training, data)", "type": "table"},
        ),
        summary=report(
            f"{EVAL}/{{experiment}}/summary.txt",
            caption="../report/summary.rst",
            category="{experiment}",
            subcategory="summary",
            labels={"result": "summary (model, results, training, data)", "type": "text (download)"},
        ),
        curves=report(
            f"{EVAL}/{{experiment}}/training_curves.svg",
            caption="../report/training_curves.rst",
            category="{experiment}",
            subcategory="training",
            labels={"result": "training curves", "type": "figure"},
        ),
        test_predictions=report(
            f"{EVAL}/{{experiment}}/test/predictions.tsv",
            caption="../report/predictions.rst",
            category="{experiment}",
            subcategory="test",
            labels={"result": "predictions per object", "type": "TSV (download)"},
        ),
        test_metrics=f"{EVAL}/{{experiment}}/test/metrics.json",
        test_report=f"{EVAL}/{{experiment}}/test/classification_report.tsv",
        test_report_html=report(
            f"{EVAL}/{{experiment}}/test/classification_report.html",
            caption="../report/classification_report.rst",
            category="{experiment}",
            subcategory="test",
            labels={"result": "classification report and metrics", "type": "table"},
        ),
        test_confusion_counts=f"{EVAL}/{{experiment}}/test/confusion_counts.tsv",
        test_confusion_normalised=f"{EVAL}/{{experiment}}/test/confusion_normalised.tsv",
        test_confusion_counts_fig=report(
            f"{EVAL}/{{experiment}}/test/confusion_counts.svg",
            caption="../report/confusion_counts.rst",
            category="{experiment}",
            subcategory="test",
            labels={"result": "confusion matrix, objects", "type": "figure"},
        ),
        test_confusion_normalised_fig=report(
            f"{EVAL}/{{experiment}}/test/confusion_normalised.svg",
            caption="../report/confusion_normalised.rst",
            category="{experiment}",
            subcategory="test",
            labels={"result": "confusion matrix, % of true class", "type": "figure"},
        ),
        test_reliability=report(
            f"{EVAL}/{{experiment}}/test/reliability.svg",
            caption="../report/reliability.rst",
            category="{experiment}",
            subcategory="test",
            labels={"result": "reliability diagram (calibration)", "type": "figure"},
        ),
        test_mistakes=report(
            f"{EVAL}/{{experiment}}/test/mistakes.jpg",
            caption="../report/mistakes.rst",
            category="{experiment}",
            subcategory="test",
            labels={"result": "the most confident mistakes (images)", "type": "figure"},
        ),
        valid_predictions=report(
            f"{EVAL}/{{experiment}}/valid/predictions.tsv",
            caption="../report/predictions.rst",
            category="{experiment}",
            subcategory="valid",
            labels={"result": "predictions per object", "type": "TSV (download)"},
        ),
        valid_metrics=f"{EVAL}/{{experiment}}/valid/metrics.json",
        valid_report=f"{EVAL}/{{experiment}}/valid/classification_report.tsv",
        valid_report_html=report(
            f"{EVAL}/{{experiment}}/valid/classification_report.html",
            caption="../report/classification_report.rst",
            category="{experiment}",
            subcategory="valid",
            labels={"result": "classification report and metrics", "type": "table"},
        ),
        valid_confusion_counts=f"{EVAL}/{{experiment}}/valid/confusion_counts.tsv",
        valid_confusion_normalised=f"{EVAL}/{{experiment}}/valid/confusion_normalised.tsv",
        valid_confusion_counts_fig=report(
            f"{EVAL}/{{experiment}}/valid/confusion_counts.svg",
            caption="../report/confusion_counts.rst",
            category="{experiment}",
            subcategory="valid",
            labels={"result": "confusion matrix, objects", "type": "figure"},
        ),
        valid_confusion_normalised_fig=report(
            f"{EVAL}/{{experiment}}/valid/confusion_normalised.svg",
            caption="../report/confusion_normalised.rst",
            category="{experiment}",
            subcategory="valid",
            labels={"result": "confusion matrix, % of true class", "type": "figure"},
        ),
        valid_reliability=report(
            f"{EVAL}/{{experiment}}/valid/reliability.svg",
            caption="../report/reliability.rst",
            category="{experiment}",
            subcategory="valid",
            labels={"result": "reliability diagram (calibration)", "type": "figure"},
        ),
        valid_mistakes=report(
            f"{EVAL}/{{experiment}}/valid/mistakes.jpg",
            caption="../report/mistakes.rst",
            category="{experiment}",
            subcategory="valid",
            labels={"result": "the most confident mistakes (images)", "type": "figure"},
        ),
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
        "../envs/train.yaml"
    log:
        "logs/evaluate_model/{experiment}.log",
    benchmark:
        "benchmarks/out/evaluate_model/{experiment}.tsv"
    script:
        "../scripts/evaluate_model.py"


rule make_leaderboard:
    input:
        test_metrics=expand(f"{EVAL}/{{experiment}}/test/metrics.json", experiment=CNN_EXPERIMENTS),
        valid_metrics=expand(f"{EVAL}/{{experiment}}/valid/metrics.json", experiment=CNN_EXPERIMENTS),
        infos=expand(f"{EXP}/{{experiment}}/train_info.json", experiment=CNN_EXPERIMENTS),
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
        experiments=CNN_EXPERIMENTS,
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
