"""The rule graph of the report shows each rule once.

Snakemake's report draws one node per rule *per level* of the job DAG (report/rulegraph_spec.py keeps
one job of each rule per toposort layer), so jobs of one rule at different depths show that rule
twice. The demo's stand-in weights used to sit after the image store, putting the training of its
pre-trained experiments one level below the self-trained ones (and their evaluation and normalisation
record with them). Checked on the demo config's dry-run DAG, with Snakemake's own layering.
"""

import collections
import re
import subprocess
import sys

import pytest

from project_copy import local_env, make_copy

pytestmark = pytest.mark.workflow


def _levels_per_rule(wd, *configfiles):
    """Rule -> the DAG layers its jobs are in (layer = longest path from a job without dependencies, as
    snakemake.dag.toposorted layers them), from `snakemake --dag` (a dry run)."""
    cmd = [sys.executable, "-m", "snakemake", "--dag", "--cores", "1", "--configfile", *configfiles]
    res = subprocess.run(cmd, cwd=wd, capture_output=True, text=True, timeout=600, env=local_env())
    assert res.returncode == 0, res.stderr[-4000:]
    nodes = {m.group(1): m.group(2) for m in re.finditer(r'^\s*(\d+)\[label = "([^"\\]+)', res.stdout, re.M)}
    deps = collections.defaultdict(set)
    for a, b in re.findall(r"^\s*(\d+) -> (\d+)", res.stdout, re.M):
        deps[b].add(a)
    layer = {}

    def depth(n):
        if n not in layer:
            layer[n] = 1 + max((depth(d) for d in deps[n]), default=-1)
        return layer[n]

    levels = collections.defaultdict(set)
    for n, rule in nodes.items():
        levels[rule].add(depth(n))
    return levels


@pytest.mark.xfail(strict=True, reason="known defect: since the frozen bases' features are computed once "
                   "(compute_base_features, issue 20), the pre-trained experiments' training sits one layer below "
                   "the self-trained ones, so the report's rule graph shows train_model, record_normalisation and "
                   "evaluate_decisions twice (measured on main after the merges: train_model at layers 4 and 5)")
def test_each_rule_is_one_node_of_the_demo_rule_graph(project_root, tmp_path):
    wd = make_copy(project_root, tmp_path)
    levels = _levels_per_rule(wd, "config/config.yaml", "config/demo.yaml")
    assert {"train_model", "evaluate_model", "record_normalisation", "make_demo_weights"} <= set(levels), levels
    twice = {rule: ls for rule, ls in levels.items() if len(ls) > 1}
    assert not twice, twice
