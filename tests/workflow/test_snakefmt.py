"""The workflow's Snakemake files are formatted as snakefmt formats them (the catalog checks it)."""

import subprocess
import sys

import pytest

pytestmark = pytest.mark.workflow


def test_snakefmt_finds_nothing_to_change(project_root):
    res = subprocess.run([sys.executable, "-m", "snakefmt", "--check", "--diff", "workflow"], cwd=project_root,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"run `.venv/bin/snakefmt workflow` (snakefmt {res.returncode}):\n" \
                                f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
