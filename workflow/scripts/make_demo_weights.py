"""Rule make_demo_weights: a seeded, randomly initialised base saved as a weights file (offline demo only)."""

from lokiml.logs import redirect_to_log


def main(smk):
    redirect_to_log(smk.log[0])
    from lokiml.models import save_seeded_base_weights

    save_seeded_base_weights(smk.wildcards.model, smk.output[0], seed=1)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
