# Data preparation: export -> objects + ledger -> balanced -> split, and normalised image shards.


rule make_demo_export:
    output:
        directory("resources/demo_export"),
    log:
        "logs/make_demo_export.log",
    localrule: True
    conda:
        "../envs/data.yaml"
    params:
        code=library_code("make_demo_export"),
        seed=config["demo"]["seed"],
        scale=config["demo"]["scale"],
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
        manifest=f"{DATA}/images.tsv",
    log:
        "logs/read_export.log",
    benchmark:
        "benchmarks/out/read_export.tsv"
    conda:
        "../envs/data.yaml"
    threads: 2
    resources:
        mem_mb=get_read_export_mem_mb,
        runtime=60,
    params:
        code=library_code("read_export"),
        classes=config["classes"],
        statuses=config["statuses"],
        img_rank=config["img_rank"],
        images=images_needed(),
        max_pixels=config["normalise"]["max_pixels"],
        max_bytes=config["normalise"]["max_bytes"],
        threshold=config["normalise"]["threshold"],
        polarity=config["normalise"]["polarity"],
        bottom_crop=config["normalise"]["bottom_crop"],
        state=get_export_state(),
        cache_dir="resources/cache/read_export",
    script:
        "../scripts/read_export.py"


rule balance_classes:
    input:
        objects=f"{DATA}/objects.tsv",
    output:
        balanced=f"{DATA}/balanced.tsv",
    log:
        "logs/balance_classes.log",
    benchmark:
        "benchmarks/out/balance_classes.tsv"
    localrule: True
    conda:
        "../envs/data.yaml"
    params:
        **config["balance"],
        code=library_code("balance_classes"),
        classes=config["classes"],
    script:
        "../scripts/balance_classes.py"


rule split_dataset:
    input:
        balanced=f"{DATA}/balanced.tsv",
        objects=f"{DATA}/objects.tsv",
    output:
        split=f"{DATA}/split.tsv",
    log:
        "logs/split_dataset.log",
    benchmark:
        "benchmarks/out/split_dataset.tsv"
    localrule: True
    conda:
        "../envs/data.yaml"
    params:
        **config["split"],
        code=library_code("split_dataset"),
    script:
        "../scripts/split_dataset.py"


rule normalise_images:
    input:
        export=get_export(),
        balanced=f"{DATA}/balanced.tsv",
    output:
        npy=f"{DATA}/images/{{size}}px/shard{{shard}}.npy",
        index=f"{DATA}/images/{{size}}px/shard{{shard}}.tsv",
    log:
        "logs/normalise_images/{size}px_shard{shard}.log",
    benchmark:
        "benchmarks/out/normalise_images/{size}px_shard{shard}.tsv"
    conda:
        "../envs/data.yaml"
    threads: 2
    resources:
        mem_mb=2000,
        runtime=120,
    params:
        code=library_code("normalise_images"),
        shards=config["normalise"]["shards"],
        threshold=config["normalise"]["threshold"],
        polarity=config["normalise"]["polarity"],
        bottom_crop=config["normalise"]["bottom_crop"],
        max_pixels=config["normalise"]["max_pixels"],
        max_bytes=config["normalise"]["max_bytes"],
        canvas=config["normalise"]["canvas"],
        cache_dir="resources/cache/normalised",
    script:
        "../scripts/normalise_images.py"


rule summarise_data:
    input:
        ledger=f"{DATA}/ledger.tsv",
        objects=f"{DATA}/objects.tsv",
        split=f"{DATA}/split.tsv",
        manifest=f"{DATA}/images.tsv",
        indexes=get_all_shard_indexes(),
    output:
        summary=f"{DATA}/summary.tsv",
        accounting=report(
            f"{DATA}/accounting.tsv",
            caption="../report/accounting.rst",
            category=REPORT_DATA,
            labels={
                "result": "accounting: every row of the export, used or dropped",
                "type": "TSV (download)",
            },
        ),
        accounting_html=report(
            f"{DATA}/report/accounting.html",
            caption="../report/accounting.rst",
            category=REPORT_DATA,
            labels={
                "result": "accounting: every row of the export, used or dropped",
                "type": "table",
            },
        ),
    log:
        "logs/summarise_data.log",
    # what a user should read first: before any training job that is ready at the same time
    priority: 100
    localrule: True
    conda:
        "../envs/data.yaml"
    params:
        code=library_code("summarise_data"),
        classes=config["classes"],
        polarity=config["normalise"]["polarity"],
    script:
        "../scripts/summarise_data.py"
