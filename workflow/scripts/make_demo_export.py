"""Rule make_demo_export: write the built-in synthetic EcoTaxa export."""

from lokiml.logs import redirect_to_log


def main(smk):
    redirect_to_log(smk.log[0])
    from lokiml.demo import make_demo_export

    make_demo_export(smk.output[0], seed=smk.params.seed, scale=smk.params.scale)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
