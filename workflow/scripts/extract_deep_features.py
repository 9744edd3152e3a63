"""Rule extract_deep_features: penultimate-layer features of a CNN experiment for every original object,
and for the objects training never saw (for the decisions of its deep_features experiments)."""

from lokiml.logs import redirect_to_log


def main(smk):
    redirect_to_log(smk.log[0])  # before TensorFlow is imported, so its messages land in the log
    from lokiml.deep_features import extract_deep_features, penultimate_model
    from lokiml.evaluate import load_classifier
    from lokiml.extra_objects import extract_extra_features
    from lokiml.runtime import configure, job_settings

    # Threads, the device check (the job's gpu resource, config device.cpu_fallback), float32 inference;
    # before the model is loaded.
    configure(smk.threads, {"mixed_precision": False}, **job_settings(smk))
    model = load_classifier(smk.input.model)
    extract_deep_features(
        model_path=smk.input.model,
        split_path=smk.input.split,
        store_npys=list(smk.input.npys),
        store_indexes=list(smk.input.indexes),
        out_features=smk.output.features,
        out_index=smk.output.index,
        batch_size=smk.params.batch_size,
        model=model,
        # the frozen base's features, computed once (rule compute_base_features), where they apply
        base_features=(smk.input.base_features, smk.input.base_index) if "base_features" in smk.input.keys() else None,
    )
    extract_extra_features(penultimate_model(model), smk.input.extra_objects, smk.input.extra_npy,
                           smk.input.extra_index, smk.output.extra_features, smk.output.extra_index,
                           batch_size=smk.params.batch_size)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
