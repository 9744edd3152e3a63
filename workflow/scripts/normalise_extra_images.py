"""Rule normalise_extra_images: the images of the objects training never saw, normalised at one size."""

from lokiml.logs import redirect_to_log


def main(smk):
    redirect_to_log(smk.log[0])
    from lokiml.extra_objects import normalise_extra_images

    normalise_extra_images(
        export_path=smk.input.export,
        extra_path=smk.input.extra,
        out_npy=smk.output.npy,
        out_index=smk.output.index,
        size=int(smk.wildcards.size),
        threads=smk.threads,
        mem_mb=smk.resources.get("mem_mb"),
        **{k: v for k, v in smk.params.items() if k != "code"},  # code: the library digest (common.smk)
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
