"""Rule make_demo_weights: a seeded base with calibrated BatchNorm statistics (offline demo only)."""

from lokiml.logs import redirect_to_log


def main(smk):
    redirect_to_log(smk.log[0])
    from lokiml.demo_weights import make_demo_weights

    make_demo_weights(smk.wildcards.model, smk.output[0], smk.input.split, list(smk.input.npys),
                      list(smk.input.indexes), seed=1)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
