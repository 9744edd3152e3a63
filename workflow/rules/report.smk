# Report pages that no other rule makes: example images of each class (Data), the per-class F1 of
# every experiment (Leaderboard), and a page per prediction job (Predictions). Small local jobs.


rule plot_class_gallery:
    """Example objects of each class as exported (with the crop the normalisation makes) and as normalised."""
    input:
        objects=f"{DATA}/objects.tsv",
        split=f"{DATA}/split.tsv",
        export=get_export(),
    output:
        figure=report(
            f"{DATA}/report/class_gallery.jpg",
            caption="../report/class_gallery.rst",
            category=REPORT_DATA,
            labels={
                "result": "example images of each class, exported and normalised",
                "type": "figure",
            },
        ),
    log:
        "logs/plot_class_gallery.log",
    priority: 100
    localrule: True
    conda:
        "../envs/train.yaml"
    params:
        code=library_code("plot_class_gallery"),
        classes=config["classes"],
        images=get_display_normalisation(),
    script:
        "../scripts/plot_class_gallery.py"


rule compare_classes:
    """The F1 of every class in every experiment: one heat map (test split) and one table (test and validation)."""
    input:
        test_reports=expand(
            f"{EVAL}/{{experiment}}/test/classification_report.tsv",
            experiment=EVALUATED_EXPERIMENTS,
        ),
        valid_reports=expand(
            f"{EVAL}/{{experiment}}/valid/classification_report.tsv",
            experiment=EVALUATED_EXPERIMENTS,
        ),
        valid_metrics=expand(
            f"{EVAL}/{{experiment}}/valid/metrics.json",
            experiment=EVALUATED_EXPERIMENTS,
        ),
    output:
        figure=report(
            f"{EVAL}/per_class_f1.svg",
            caption="../report/per_class_f1.rst",
            category=REPORT_LEADERBOARD,
            labels={"result": "F1 per class and experiment", "type": "figure"},
        ),
        tsv=report(
            f"{EVAL}/per_class_f1.tsv",
            caption="../report/per_class_f1.rst",
            category=REPORT_LEADERBOARD,
            labels={"result": "F1 per class and experiment", "type": "TSV (download)"},
        ),
    log:
        "logs/compare_classes.log",
    localrule: True
    conda:
        "../envs/train.yaml"
    params:
        code=library_code("compare_classes"),
        experiments=EVALUATED_EXPERIMENTS,
        classes=config["classes"],
    script:
        "../scripts/compare_classes.py"


rule report_prediction:
    """The report page of one prediction job: every input row accounted for, objects per predicted class, examples."""
    input:
        summary=f"{PRED}/{{prediction}}/summary.json",
        bundle=f"{PRED}/{{prediction}}/ecotaxa_{{prediction}}.zip",
        table=f"{PRED}/{{prediction}}/ecotaxa_{{prediction}}.tsv",
    output:
        html=report(
            f"{PRED}/{{prediction}}/report/summary.html",
            caption="../report/prediction_summary.rst",
            category=REPORT_PREDICTIONS,
            subcategory="{prediction}",
            labels={
                "result": "summary: every input row, objects per class",
                "type": "table",
            },
        ),
        counts=report(
            f"{PRED}/{{prediction}}/report/predicted_classes.svg",
            caption="../report/prediction_counts.rst",
            category=REPORT_PREDICTIONS,
            subcategory="{prediction}",
            labels={"result": "objects per predicted class", "type": "figure"},
        ),
        examples=report(
            f"{PRED}/{{prediction}}/report/examples.jpg",
            caption="../report/prediction_examples.rst",
            category=REPORT_PREDICTIONS,
            subcategory="{prediction}",
            labels={
                "result": "most and least confident objects of each class",
                "type": "figure",
            },
        ),
    log:
        "logs/report_prediction/{prediction}.log",
    localrule: True
    conda:
        "../envs/train.yaml"
    params:
        code=library_code("report_prediction"),
    script:
        "../scripts/report_prediction.py"
