"""lokiml used as a Snakemake module from another project's Snakefile, the way snakedeploy deploys it.

`snakedeploy deploy-workflow` copies the workflow's config/ into a fresh folder and writes a Snakefile
with `module lokiml: snakefile: github(...); config: config` and `use rule * from lokiml`. Here the
module's Snakefile is a local copy of the project (a path), and once a URL served on loopback (a
remote module: its files come through Snakemake's source cache, as with github()). The module's
common.smk used to build the library path from workflow.basedir, the *main* Snakefile's folder:
`No module named 'lokiml'`.
"""

import functools
import http.server
import shutil
import subprocess
import sys
import threading

import pandas as pd
import pytest

from project_copy import local_env, make_copy

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

SNAKEFILE = """configfile: "config/config.yaml"


module lokiml:
    snakefile:
        "{snakefile}"
    config:
        config


use rule * from lokiml
"""


def deploy(project_root, tmp_path, snakefile):
    """A fresh project folder holding a copy of config/ and a Snakefile that uses lokiml as a module."""
    dest = tmp_path / "myproject"
    dest.mkdir()
    shutil.copytree(project_root / "config", dest / "config")
    shutil.copy(project_root / "tests" / "workflow" / "tiny.yaml", dest / "tiny.yaml")
    (dest / "Snakefile").write_text(SNAKEFILE.format(snakefile=snakefile))
    return dest


def run(cwd, *args, timeout=1200):
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", "tiny.yaml", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=local_env())


def test_module_from_a_path_dry_runs_and_runs_the_data_stage(project_root, tmp_path):
    (tmp_path / "lokiml_checkout").mkdir()
    lokiml = make_copy(project_root, tmp_path / "lokiml_checkout")
    dest = deploy(project_root, tmp_path, str(lokiml / "workflow" / "Snakefile"))
    dry = run(dest, "-n")
    assert dry.returncode == 0, dry.stderr[-4000:]
    out = dry.stdout + dry.stderr
    for rule in ("read_export", "normalise_images", "train_model", "evaluate_model"):
        assert rule in out, rule
    targets = ["results/data/summary.tsv", "results/data/accounting.tsv", "results/data/images/48px/shard0.tsv"]
    res = run(dest, "--", *targets)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    # everything lands in the user's project, nothing in the module's folder
    summary = pd.read_csv(dest / "results" / "data" / "summary.tsv", sep="\t")
    total = summary[summary["class_name"] == "TOTAL"].iloc[0]
    assert total["used"] > 0 and total["train"] > 0
    assert (dest / "logs" / "read_export.log").read_text().count("ledger:") == 1
    assert not (lokiml / "results").exists() and not (lokiml / "logs").exists()


@pytest.fixture()
def served(project_root, tmp_path):
    """A copy of the project served over HTTP on loopback: a remote module's source."""
    (tmp_path / "served").mkdir()
    root = make_copy(project_root, tmp_path / "served")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_remote_module_fetches_its_library(project_root, tmp_path, served):
    dest = deploy(project_root, tmp_path, f"{served}/workflow/Snakefile")
    res = run(dest, "--", "results/data/split.tsv")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    split = pd.read_csv(dest / "results" / "data" / "split.tsv", sep="\t")
    assert set(split["split"]) == {"train", "valid", "test"}
