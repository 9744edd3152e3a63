# Training: one job per experiment. ImageNet weights are resolved by a local rule first,
# so that training jobs (on compute nodes without internet) never download anything.


rule resolve_weights:
    output:
        "resources/weights/{model}_imagenet_notop.weights.h5",
    conda:
        "../envs/train.yaml"
    log:
        "logs/resolve_weights/{model}.log",
    localrule: True
    script:
        "../scripts/resolve_weights.py"


rule make_demo_weights:
    """Stand-in 'pre-trained' weights for the offline demo (see lokiml/demo_weights.py).

    A seeded random base whose BatchNorm statistics are calibrated on the demo's
    training images. The demo's pre-trained experiments point `weights:` at these
    files, so that the frozen-base (cached features) path runs without internet.
    Real runs use `weights: imagenet` (rule resolve_weights) or a path of your own.
    """
    input:
        unpack(get_demo_weights_inputs),
    output:
        "resources/demo_weights/{model}_seeded_random.weights.h5",
    conda:
        "../envs/train.yaml"
    log:
        "logs/make_demo_weights/{model}.log",
    localrule: True
    script:
        "../scripts/make_demo_weights.py"


rule train_model:
    input:
        unpack(get_training_inputs),
    output:
        model=f"{EXP}/{{experiment}}/model.keras",
        best=f"{EXP}/{{experiment}}/best.keras",
        classes=f"{EXP}/{{experiment}}/classes.txt",
        history=f"{EXP}/{{experiment}}/history.tsv",
        summary=f"{EXP}/{{experiment}}/model_summary.txt",
        info=f"{EXP}/{{experiment}}/train_info.json",
    params:
        experiment=get_experiment_params,
        classes=config["classes"],
        state_dir=get_state_dir,
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=24 * 60,
    conda:
        "../envs/train.yaml"
    log:
        "logs/train_model/{experiment}.log",
    benchmark:
        "benchmarks/out/train_model/{experiment}.tsv"
    script:
        "../scripts/train_model.py"
