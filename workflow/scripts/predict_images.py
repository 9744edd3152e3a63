"""Rule predict_images: classify new images with a trained experiment; EcoTaxa import table + zip bundle."""

from lokiml.logs import redirect_to_log


def main(smk):
    redirect_to_log(smk.log[0])  # before TensorFlow is imported, so its messages land in the log
    from lokiml.predict import predict_job
    from lokiml.runtime import configure, job_settings

    # Threads, the device check (the job's gpu resource, config device.cpu_fallback), float32 inference.
    configure(smk.threads, {"mixed_precision": False}, **job_settings(smk))

    job = dict(smk.params.job)
    predict_job(
        input_path=smk.input.images,
        model_path=smk.input.model,
        record_path=smk.input.record,
        name=smk.wildcards.prediction,
        out_table=smk.output.table,
        out_zip=smk.output.bundle,
        out_top3=smk.output.top3,
        out_summary=smk.output.summary,
        threshold=job["threshold"],
        statuses_to_keep=job["statuses_to_keep"],
        batch_size=job["batch_size"],
        threads=smk.threads,
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
