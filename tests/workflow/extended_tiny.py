"""The shared tiny run (test_workflow.py) with a descriptors experiment and a prediction added: the report
then has a page of every kind. Run once per session, in its own copy."""

import shutil

from test_workflow import shared_tiny_run, snakemake

EXTENDED = """experiments:
  tiny_descriptors:
    kind: descriptors
    param_grid: {n_estimators: [20]}
predict:
  tiny_predict:
    input: resources/demo_export
    experiment: tiny
    statuses_to_keep: []
"""
CONFIG = ("--configfile", "config/config.yaml", "tiny.yaml", "extended.yaml")

_RUN = {}


def extended_tiny_run(project_root, tmp_path_factory):
    if "wd" not in _RUN:
        wd = shared_tiny_run(project_root, tmp_path_factory)
        copy = tmp_path_factory.mktemp("extended") / "wd"
        shutil.copytree(wd, copy, symlinks=True)
        (copy / "extended.yaml").write_text(EXTENDED)
        snakemake(copy, *CONFIG)
        _RUN["wd"] = copy
    return _RUN["wd"]
