# Training: one job per experiment. ImageNet weights are resolved by a local rule first,
# so that training jobs (on compute nodes without internet) never download anything.


rule resolve_weights:
    output:
        "resources/weights/{model}_imagenet_notop.weights.h5",
    log:
        "logs/resolve_weights/{model}.log",
    localrule: True
    conda:
        "../envs/train.yaml"
    script:
        "../scripts/resolve_weights.py"


rule make_demo_weights:
    """Stand-in 'pre-trained' weights for the offline demo (see lokiml/demo_weights.py).

    The base pre-trained for a few epochs on a pretext task (geometric primitives, not the
    demo's shapes), its BatchNorm statistics then calibrated on the demo's training images
    (split and normalised here as split_dataset and normalise_images do, so that this job
    runs beside them, not after). The demo's pre-trained experiments point `weights:` at
    these files, so that the frozen-base (cached features) path runs without internet.
    Real runs use `weights: imagenet` (rule resolve_weights) or a path of your own.
    """
    input:
        balanced=f"{DATA}/balanced.tsv",
        objects=f"{DATA}/objects.tsv",
        export=get_export(),
    output:
        "resources/demo_weights/{model}_seeded_random.weights.h5",
    log:
        "logs/make_demo_weights/{model}.log",
    localrule: True
    conda:
        "../envs/train.yaml"
    params:
        code=library_code("make_demo_weights"),
        split=config["split"],
        normalisation=get_demo_weights_normalisation,
        pretext_size=get_demo_weights_pretext_size,
    script:
        "../scripts/make_demo_weights.py"


rule compute_base_features:
    """The pooled output of a frozen pre-trained base for every image of the store, computed once.

    One job per (backbone, weights, image size) that a CNN experiment with a frozen base and no
    augmentation uses (lokiml/base_features.py): its head trains on these features, and, where the
    base is not fine-tuned, its evaluation and deep-feature extraction read them too.
    """
    input:
        unpack(get_base_features_inputs),
    output:
        features=f"{FEAT}/{{features}}/base.npy",
        index=f"{FEAT}/{{features}}/base.tsv",
    log:
        "logs/compute_base_features/{features}.log",
    benchmark:
        "benchmarks/out/compute_base_features/{features}.tsv"
    wildcard_constraints:
        features=one_of(BASE_FEATURES),
    conda:
        "../envs/train.yaml"
    threads: MODEL_THREADS
    resources:
        gpu=gpus("compute_base_features"),
        mem_mb=8000,
        runtime=4 * 60,
    params:
        code=library_code("compute_base_features"),
        settings=get_base_features_params,
    script:
        "../scripts/compute_base_features.py"


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
    log:
        "logs/train_model/{experiment}.log",
    benchmark:
        "benchmarks/out/train_model/{experiment}.tsv"
    wildcard_constraints:
        experiment=one_of(CNN_EXPERIMENTS),
    conda:
        GPU_RULES_ENV
    threads: MODEL_THREADS
    resources:
        gpu=gpus("train_model"),
        mem_mb=16000,
        runtime=24 * 60,
    params:
        code=library_code("train_model"),
        experiment=get_experiment_params,
        classes=config["classes"],
        state_dir=get_state_dir,
    script:
        "../scripts/train_model.py"


rule train_descriptors:
    """A scikit-learn classifier on the export's object_* descriptors and/or the morphometrics (lokiml/descriptors.py).

    Hyper-parameters chosen on the valid split only (fitted on train), then refitted on train + valid (refit: true).
    """
    input:
        unpack(get_descriptor_training_inputs),
    output:
        model=f"{EXP}/{{experiment}}/model.pkl",
        classes=f"{EXP}/{{experiment}}/classes.txt",
        columns=f"{EXP}/{{experiment}}/columns.tsv",
        grid=f"{EXP}/{{experiment}}/grid.tsv",
        info=f"{EXP}/{{experiment}}/train_info.json",
        valid=f"{EXP}/{{experiment}}/valid_probabilities.tsv",
    log:
        "logs/train_descriptors/{experiment}.log",
    benchmark:
        "benchmarks/out/train_descriptors/{experiment}.tsv"
    wildcard_constraints:
        experiment=one_of(DESCRIPTOR_EXPERIMENTS),
    conda:
        "../envs/train.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        code=library_code("train_descriptors"),
        experiment=get_descriptor_params,
        classes=config["classes"],
        morphometrics=get_morphometrics_params(),
    script:
        "../scripts/train_descriptors.py"


rule extract_deep_features:
    """Penultimate-layer (avg_pool) features of a CNN experiment's best checkpoint, for every original object.

    One job per CNN experiment that a deep_features experiment names (lokiml/deep_features.py).
    """
    input:
        unpack(get_feature_extraction_inputs),
    output:
        features=f"{EXP}/{{experiment}}/penultimate.npy",
        index=f"{EXP}/{{experiment}}/penultimate.tsv",
        # the same for the objects training never saw (lokiml.extra_objects), for evaluate_decisions
        extra_features=f"{EXP}/{{experiment}}/penultimate_extra.npy",
        extra_index=f"{EXP}/{{experiment}}/penultimate_extra.tsv",
    log:
        "logs/extract_deep_features/{experiment}.log",
    benchmark:
        "benchmarks/out/extract_deep_features/{experiment}.tsv"
    wildcard_constraints:
        experiment=one_of(DEEP_FEATURE_CNNS),
    conda:
        GPU_RULES_ENV
    threads: MODEL_THREADS
    resources:
        # a network runs even where the base features are read: the extra objects (issue 16) have none
        gpu=gpus("extract_deep_features"),
        mem_mb=8000,
        runtime=4 * 60,
    params:
        code=library_code("extract_deep_features"),
        batch_size=get_evaluation_batch_size,
    script:
        "../scripts/extract_deep_features.py"


rule train_deep_features:
    """A scikit-learn classifier on a CNN's penultimate-layer features plus the descriptors (lokiml/deep_features.py).

    PCA and classifier fitted on the train split's original objects; hyper-parameters chosen on the valid split only;
    then both refitted on train + valid (refit: true).
    """
    input:
        unpack(get_deep_features_inputs),
    output:
        model=f"{EXP}/{{experiment}}/model.pkl",
        classes=f"{EXP}/{{experiment}}/classes.txt",
        columns=f"{EXP}/{{experiment}}/columns.tsv",
        grid=f"{EXP}/{{experiment}}/grid.tsv",
        info=f"{EXP}/{{experiment}}/train_info.json",
        valid=f"{EXP}/{{experiment}}/valid_probabilities.tsv",
    log:
        "logs/train_deep_features/{experiment}.log",
    benchmark:
        "benchmarks/out/train_deep_features/{experiment}.tsv"
    wildcard_constraints:
        experiment=one_of(DEEP_FEATURE_EXPERIMENTS),
    conda:
        "../envs/train.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        code=library_code("train_deep_features"),
        experiment=get_deep_features_params,
        classes=config["classes"],
    script:
        "../scripts/train_deep_features.py"
