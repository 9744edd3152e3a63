# Data preparation: export -> objects + ledger -> balanced -> split, and normalised image shards.


rule make_demo_export:
    output:
        directory("resources/demo_export"),
    params:
        seed=config["demo"]["seed"],
        scale=config["demo"]["scale"],
    conda:
        "../envs/data.yaml"
    log:
        "logs/make_demo_export.log",
    localrule: True
    script:
        "../scripts/make_demo_export.py"


rule read_export:
    input:
        export=get_export(),
        tables=get_export_tables(),
        mapping=get_class_mapping(),
    output:
        objects=f"{DATA}/objects.tsv",
        ledger=f"{DATA}/ledger.tsv",
    params:
        classes=config["classes"],
        statuses=config["statuses"],
        img_rank=config["img_rank"],
        max_pixels=config["normalise"]["max_pixels"],
    threads: 2
    resources:
        mem_mb=2000,
        runtime=60,
    conda:
        "../envs/data.yaml"
    log:
        "logs/read_export.log",
    benchmark:
        "benchmarks/out/read_export.tsv"
    script:
        "../scripts/read_export.py"


rule balance_classes:
    input:
        objects=f"{DATA}/objects.tsv",
    output:
        balanced=f"{DATA}/balanced.tsv",
    params:
        classes=config["classes"],
        **config["balance"],
    conda:
        "../envs/data.yaml"
    log:
        "logs/balance_classes.log",
    benchmark:
        "benchmarks/out/balance_classes.tsv"
    localrule: True
    script:
        "../scripts/balance_classes.py"


rule split_dataset:
    input:
        balanced=f"{DATA}/balanced.tsv",
        objects=f"{DATA}/objects.tsv",
    output:
        split=f"{DATA}/split.tsv",
    params:
        **config["split"],
    conda:
        "../envs/data.yaml"
    log:
        "logs/split_dataset.log",
    benchmark:
        "benchmarks/out/split_dataset.tsv"
    localrule: True
    script:
        "../scripts/split_dataset.py"


rule normalise_images:
    input:
        export=get_export(),
        balanced=f"{DATA}/balanced.tsv",
    output:
        npy=f"{DATA}/images/{{size}}px/shard{{shard}}.npy",
        index=f"{DATA}/images/{{size}}px/shard{{shard}}.tsv",
    params:
        shards=config["normalise"]["shards"],
        threshold=config["normalise"]["threshold"],
        polarity=config["normalise"]["polarity"],
        bottom_crop=config["normalise"]["bottom_crop"],
        max_pixels=config["normalise"]["max_pixels"],
        canvas=config["normalise"]["canvas"],
        cache_dir="resources/cache/normalised",
    threads: 2
    resources:
        mem_mb=2000,
        runtime=120,
    conda:
        "../envs/data.yaml"
    log:
        "logs/normalise_images/{size}px_shard{shard}.log",
    benchmark:
        "benchmarks/out/normalise_images/{size}px_shard{shard}.tsv"
    script:
        "../scripts/normalise_images.py"


rule summarise_data:
    input:
        ledger=f"{DATA}/ledger.tsv",
        objects=f"{DATA}/objects.tsv",
        split=f"{DATA}/split.tsv",
    output:
        summary=f"{DATA}/summary.tsv",
        accounting=report(
            f"{DATA}/accounting.tsv",
            caption="../report/accounting.rst",
            category="Data",
            labels={"result": "accounting: every row of the export, used or dropped", "type": "TSV (download)"},
        ),
        accounting_html=report(
            f"{DATA}/report/accounting.html",
            caption="../report/accounting.rst",
            category="Data",
            labels={"result": "accounting: every row of the export, used or dropped", "type": "table"},
        ),
    params:
        classes=config["classes"],
    conda:
        "../envs/data.yaml"
    log:
        "logs/summarise_data.log",
    localrule: True
    script:
        "../scripts/summarise_data.py"
