"""Rule resolve_weights (local): put a backbone's ImageNet weights into resources/ for training jobs."""

from lokiml.logs import redirect_to_log


def main(smk):
    redirect_to_log(smk.log[0])
    from lokiml.models import resolve_imagenet_weights

    resolve_imagenet_weights(smk.wildcards.model, smk.output[0])


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
