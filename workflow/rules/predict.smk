# Prediction: classify new images with a trained experiment of any kind (CNN, descriptors, deep features) and
# write an EcoTaxa import bundle. One job per entry of config `predict:`. Each object is trusted or to check
# by the experiment's per-class thresholds (results/evaluation/{experiment}/decisions/decisions.json, rule
# evaluate_decisions), and the outputs are sorted so that the objects most worth a look come first.
# The normalisation of the training images travels with the model in
# results/experiments/{experiment}/normalisation.json (rule record_normalisation, made next to every trained model); predict_images reads only that file and the model, never the current config's
# `normalise:` keys. The record carries the SHA-1 of the model (and of a deep_features experiment's CNN): a
# mismatch stops prediction.
# Snakemake sees changes of the scripts below, not of lokiml/predict.py: after changing the library,
# rerun with --forcerun predict_images.


rule record_normalisation:
    input:
        unpack(get_record_inputs),
    output:
        record=f"{EXP}/{{experiment}}/normalisation.json",
    log:
        "logs/record_normalisation/{experiment}.log",
    localrule: True
    conda:
        "../envs/data.yaml"
    params:
        code=library_code("record_normalisation"),
        normalisation=get_normalisation_params,
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
        trusted=f"{PRED}/{{prediction}}/trusted.tsv",
        to_check=f"{PRED}/{{prediction}}/to_check.tsv",
    log:
        "logs/predict_images/{prediction}.log",
    benchmark:
        "benchmarks/out/predict_images/{prediction}.tsv"
    conda:
        GPU_RULES_ENV
    threads: MODEL_THREADS
    resources:
        gpu=gpus("predict_images"),
        mem_mb=8000,
        runtime=4 * 60,
    params:
        code=library_code("predict_images"),
        job=get_prediction_params,
    script:
        "../scripts/predict_images.py"
