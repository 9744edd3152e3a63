"""Rule make_demo_weights: a seeded base with calibrated BatchNorm statistics (offline demo only)."""

from lokiml.logs import redirect_to_log


def main(smk):
    redirect_to_log(smk.log[0])
    from lokiml.demo_weights import calibration_images, make_demo_weights

    images = calibration_images(smk.input.balanced, smk.input.objects, smk.input.export, dict(smk.params.split),
                                dict(smk.params.normalisation), seed=1)
    make_demo_weights(smk.wildcards.model, smk.output[0], images, seed=1, pretext_size=smk.params.pretext_size)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
