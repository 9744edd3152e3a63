"""The conda environments of the rules and requirements-gpu.txt pin the same versions as requirements.txt."""

import re

import yaml


def _key(name: str) -> str:
    """Distribution name without extras, normalised; the CUDA build of TensorFlow is pinned as tensorflow-cpu."""
    key = re.sub(r"\[.*\]$", "", name.strip()).lower().replace("_", "-")
    return "tensorflow-cpu" if key == "tensorflow" else key


def _pins(path) -> dict:
    pins = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\[\]-]+)==(\S+)$", line.strip())
        if m:
            pins[_key(m.group(1))] = m.group(2)
    return pins


def test_conda_envs_match_requirements(project_root):
    pins = _pins(project_root / "requirements.txt")
    envs = sorted((project_root / "workflow" / "envs").glob("*.yaml"))
    assert envs
    for env in envs:
        spec = yaml.safe_load(env.read_text())
        pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict) and "pip" in d)
        for req in pip:
            name, version = req.split("==")
            key = _key(name)
            assert key in pins, f"{env.name}: {name} is not pinned in requirements.txt"
            assert pins[key] == version, f"{env.name}: {name}=={version} but requirements.txt pins {pins[key]}"


def test_the_gpu_install_is_the_cpu_one_with_the_cuda_build(project_root):
    cpu = _pins(project_root / "requirements.txt")
    gpu_lines = [line for line in (project_root / "requirements-gpu.txt").read_text().splitlines()
                 if line.strip() and not line.startswith("#")]
    assert gpu_lines == [f"tensorflow[and-cuda]=={cpu['tensorflow-cpu']}"]
    gpu_env = yaml.safe_load((project_root / "workflow" / "envs" / "train-gpu.yaml").read_text())
    cpu_env = yaml.safe_load((project_root / "workflow" / "envs" / "train.yaml").read_text())
    pip = [next(d["pip"] for d in e["dependencies"] if isinstance(d, dict)) for e in (gpu_env, cpu_env)]
    assert [r for r in pip[0] if "tensorflow" not in r] == [r for r in pip[1] if "tensorflow" not in r]
    assert f"tensorflow[and-cuda]=={cpu['tensorflow-cpu']}" in pip[0]
    assert cpu["jax"] == cpu["jaxlib"]  # the JAX backend (KERAS_BACKEND=jax), CPU build
