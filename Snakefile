# lokiml: from an EcoTaxa export to trained, evaluated plankton image classifiers.
# See README.md. Configuration: config/config.yaml, documented in config/README.md.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/baselines.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/predict.smk"


rule all:
    input:
        get_all_targets(),
    default_target: True
