"""The conda environments of the rules pin the same versions as requirements.txt."""

import re

import yaml


def test_conda_envs_match_requirements(project_root):
    pins = {}
    for line in (project_root / "requirements.txt").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)$", line.strip())
        if m:
            pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    envs = sorted((project_root / "workflow" / "envs").glob("*.yaml"))
    assert envs
    for env in envs:
        spec = yaml.safe_load(env.read_text())
        pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict) and "pip" in d)
        for req in pip:
            name, version = req.split("==")
            key = name.lower().replace("_", "-")
            assert key in pins, f"{env.name}: {name} is not pinned in requirements.txt"
            assert pins[key] == version, f"{env.name}: {name}=={version} but requirements.txt pins {pins[key]}"
