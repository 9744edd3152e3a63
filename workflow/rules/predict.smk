# Prediction: classify new images with a trained CNN experiment and write an EcoTaxa import bundle.
# One job per entry of config `predict:`. The normalisation of the training images travels with the
# model in results/experiments/{experiment}/normalisation.json (rule record_normalisation, made next to
# every trained model); predict_images reads only that file and the model, never the current config's
# `normalise:` keys. The record carries the SHA-1 of best.keras: a mismatch stops prediction.
# Snakemake sees changes of the scripts below, not of lokiml/predict.py: after changing the library,
# rerun with --forcerun predict_images.


rule record_normalisation:
    input:
        model=f"{EXP}/{{experiment}}/best.keras",
        classes=f"{EXP}/{{experiment}}/classes.txt",
        objects=f"{DATA}/objects.tsv",
    output:
        record=f"{EXP}/{{experiment}}/normalisation.json",
    params:
        normalisation=get_normalisation_params,
    conda:
        "../envs/data.yaml"
    log:
        "logs/record_normalisation/{experiment}.log",
    localrule: True
    script:
        "../scripts/record_normalisation.py"


rule predict_images:
    input:
        unpack(get_prediction_inputs),
    output:
        table=f"{PRED}/{{prediction}}/ecotaxa_{{prediction}}.tsv",
        bundle=f"{PRED}/{{prediction}}/ecotaxa_{{prediction}}.zip",
        top3=f"{PRED}/{{prediction}}/top3.csv",
        summary=f"{PRED}/{{prediction}}/summary.json",
    params:
        job=get_prediction_params,
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=4 * 60,
    conda:
        GPU_RULES_ENV
    log:
        "logs/predict_images/{prediction}.log",
    benchmark:
        "benchmarks/out/predict_images/{prediction}.tsv"
    script:
        "../scripts/predict_images.py"
