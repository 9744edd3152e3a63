"""Rule plot_class_gallery: example images of each class, as exported and as normalised."""

from lokiml.logs import redirect_to_log


def main(smk):
    redirect_to_log(smk.log[0])
    from lokiml.gallery import class_gallery

    class_gallery(
        objects_path=smk.input.objects,
        split_path=smk.input.split,
        export_path=smk.input.export,
        classes=list(smk.params.classes),
        out_figure=smk.output.figure,
        **dict(smk.params.images),
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
