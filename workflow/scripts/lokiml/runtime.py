"""The runtime seam: Keras backend, devices, precision, compilation, determinism and distribution.

This is the one module of lokiml that speaks to a backend (TensorFlow, JAX or PyTorch) directly;
model, training loop and data pipeline are written against Keras 3 APIs, so that training,
evaluation, feature extraction and prediction run with ``KERAS_BACKEND`` set to ``tensorflow``
(the default), ``jax`` or ``torch``.

* :func:`inspect` says what this process sees without changing anything: backend and its version,
  whether the backend is a CUDA build, the GPUs it sees, ``CUDA_VISIBLE_DEVICES``, what
  ``nvidia-smi`` lists. ``python -m lokiml.runtime`` prints it (run it on a compute node:
  ``srun --gpus=1 ...``).
* :func:`configure` sets a job up once, before any model is built: threads, the device check, the
  dtype policy (``keras.mixed_precision``), XLA / jit compilation, op determinism and the
  distribution (``tf.distribute.MirroredStrategy`` or ``keras.distribution.DataParallel`` over
  several GPUs). It returns a :class:`Runtime` that says what was chosen.
* A job that asks for a GPU (its Snakemake ``gpu`` resource > 0) and cannot see one stops at once
  with a :class:`DeviceError` that says why (a CPU-only build, ``CUDA_VISIBLE_DEVICES`` hiding every
  GPU, no driver, or a driver the build cannot use), unless the config allows CPU fallback
  (``device: {cpu_fallback: true}``).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass, field

from .errors import LokimlError

log = logging.getLogger(__name__)

BACKENDS = ("tensorflow", "jax", "torch")
#: Pinned versions of the GPU builds (keep in step with requirements.txt and workflow/envs/).
TENSORFLOW_VERSION = "2.21.0"
JAX_VERSION = "0.10.2"
PRECISIONS = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
#: Values of CUDA_VISIBLE_DEVICES that hide every GPU (SLURM writes NoDevFiles when it gave none).
_HIDDEN = ("", "-1", "none", "NoDevFiles", "void")


class DeviceError(LokimlError):
    """A job asked for a GPU and cannot see one."""


# --------------------------------------------------------------------------------------
# What this process sees
# --------------------------------------------------------------------------------------


def backend_name() -> str:
    """The Keras backend of this process (``KERAS_BACKEND``, else ~/.keras/keras.json, else tensorflow)."""
    import keras

    return keras.config.backend()


def cuda_visible_devices() -> str | None:
    return os.environ.get("CUDA_VISIBLE_DEVICES")


def _hides_all_gpus(cvd: str | None) -> bool:
    return cvd is not None and cvd.strip() in _HIDDEN


def nvidia_smi() -> dict:
    """What the NVIDIA driver lists: {'found': bool, 'gpus': [...], 'driver': str|None, 'error': str|None}."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return {"found": False, "gpus": [], "driver": None, "error": "nvidia-smi not found (no NVIDIA driver here)"}
    try:
        out = subprocess.run([exe, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"found": True, "gpus": [], "driver": None, "error": f"nvidia-smi failed: {exc}"}
    if out.returncode != 0:
        msg = (out.stderr or out.stdout).strip().splitlines()
        return {"found": True, "gpus": [], "driver": None,
                "error": f"nvidia-smi failed: {msg[0] if msg else 'exit ' + str(out.returncode)}"}
    gpus, driver = [], None
    for line in out.stdout.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if parts and parts[0]:
            gpus.append(f"{parts[0]} ({parts[2]})" if len(parts) > 2 else parts[0])
            driver = parts[1] if len(parts) > 1 else driver
    return {"found": True, "gpus": gpus, "driver": driver, "error": None}


def _dist_installed(prefixes) -> list[str]:
    names = []
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if any(name.startswith(p) for p in prefixes):
            names.append(f"{name}=={dist.version}")
    return sorted(set(names))


def _inspect_tensorflow() -> dict:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    names, caps = [], []
    for g in gpus:
        try:
            d = tf.config.experimental.get_device_details(g)
        except Exception:  # noqa: BLE001 - details are optional
            d = {}
        names.append(d.get("device_name") or g.name)
        cc = d.get("compute_capability")
        caps.append(f"{cc[0]}.{cc[1]}" if cc else None)
    cuda = bool(tf.test.is_built_with_cuda())
    info = tf.sysconfig.get_build_info() if hasattr(tf.sysconfig, "get_build_info") else {}
    return {"backend_version": tf.__version__, "built_with_cuda": cuda,
            "build": f"CUDA {info.get('cuda_version', '?')}, cuDNN {info.get('cudnn_version', '?')}" if cuda
            else "CPU only (tensorflow-cpu, or a build without CUDA)",
            "gpus": names, "compute_capability": caps, "device_handles": [g.name for g in gpus]}


def _inspect_jax() -> dict:
    import jax

    plugins = _dist_installed(("jax-cuda", "jax-rocm", "jaxlib-cuda"))
    try:
        gpus = [d for d in jax.devices() if d.platform in ("gpu", "cuda", "rocm")]
    except RuntimeError:
        gpus = []
    return {"backend_version": jax.__version__, "built_with_cuda": bool(plugins),
            "build": f"with {', '.join(plugins)}" if plugins else "CPU only (jax without a jax-cuda*-plugin)",
            "gpus": [d.device_kind for d in gpus],
            "compute_capability": [getattr(d, "compute_capability", None) for d in gpus],
            "device_handles": [str(d) for d in gpus]}


def _inspect_torch() -> dict:
    import torch

    cuda = torch.version.cuda is not None
    n = torch.cuda.device_count() if cuda and torch.cuda.is_available() else 0
    names = [torch.cuda.get_device_name(i) for i in range(n)]
    caps = ["{}.{}".format(*torch.cuda.get_device_capability(i)) for i in range(n)]
    return {"backend_version": torch.__version__, "built_with_cuda": cuda,
            "build": f"CUDA {torch.version.cuda}" if cuda else "CPU only (torch without CUDA)",
            "gpus": names, "compute_capability": caps, "device_handles": [f"cuda:{i}" for i in range(n)]}


def inspect(backend: str | None = None, driver: bool = True) -> dict:
    """What this process sees: backend, its build, GPUs, CUDA_VISIBLE_DEVICES, the driver (nvidia-smi).

    Importing the backend initialises it: call :func:`configure` first where the thread pools matter.
    """
    import keras

    backend = backend or backend_name()
    probe = {"tensorflow": _inspect_tensorflow, "jax": _inspect_jax, "torch": _inspect_torch}.get(backend)
    if probe is None:
        raise DeviceError(f"Keras backend {backend!r} is not supported by lokiml: use one of {', '.join(BACKENDS)} "
                          "(environment variable KERAS_BACKEND)")
    seen = {"backend": backend, "keras": keras.__version__, **probe(),
            "cuda_visible_devices": cuda_visible_devices(), "python": platform.python_version(),
            "host": platform.node()}
    if driver:
        seen["nvidia_smi"] = nvidia_smi()
    seen["scheduler_job"] = scheduler_job()
    return seen


def gpu_install_hint(backend: str) -> str:
    if backend == "tensorflow":
        return (f"install the CUDA build: .venv/bin/pip install 'tensorflow[and-cuda]=={TENSORFLOW_VERSION}' "
                "(`make install GPU=1` does it), or use the conda environment workflow/envs/train-gpu.yaml "
                "(--sdm conda with the config's device: {conda_env: gpu}; README, 'GPUs, backends, precision')")
    if backend == "jax":
        return f"install JAX's CUDA plugin: .venv/bin/pip install 'jax[cuda12]=={JAX_VERSION}'"
    return "install a CUDA build of torch (https://pytorch.org/get-started/locally/)"


def why_no_gpu(seen: dict) -> list[str]:
    """The reasons, as far as they can be told, why ``seen`` (from :func:`inspect`) holds no GPU."""
    reasons = []
    cvd = seen.get("cuda_visible_devices")
    if _hides_all_gpus(cvd):
        where = (" (the scheduler gave this job no GPU: check --gpus / --gres of the rule)"
                 if seen.get("scheduler_job") else "")
        reasons.append(f"CUDA_VISIBLE_DEVICES={cvd!r} hides every GPU from this process{where}")
    if not seen.get("built_with_cuda"):
        reasons.append(f"{seen['backend']} {seen.get('backend_version', '')} here is a CPU-only build "
                       f"({seen.get('build')}): {gpu_install_hint(seen['backend'])}")
    smi = seen.get("nvidia_smi") or {}
    if smi.get("error") and not _hides_all_gpus(cvd):
        reasons.append(f"no NVIDIA GPU on this machine: {smi['error']}")
    elif smi.get("gpus") and seen.get("built_with_cuda") and not _hides_all_gpus(cvd):
        reasons.append(f"nvidia-smi lists {len(smi['gpus'])} GPU(s) ({', '.join(smi['gpus'])}; driver "
                       f"{smi.get('driver')}) but {seen['backend']} sees none: its CUDA libraries do not fit this "
                       "driver, or they are missing (check the install and LD_LIBRARY_PATH)")
    if not reasons:
        reasons.append(f"{seen['backend']} sees no GPU")
    return reasons


#: Environment variables that batch schedulers set inside a job (SLURM, PBS/Torque, LSF, Grid Engine).
SCHEDULER_JOB_VARIABLES = ("SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID", "JOB_ID")


def scheduler_job() -> str | None:
    """'SLURM_JOB_ID=123' when this process runs inside a batch scheduler's job, else None."""
    for var in SCHEDULER_JOB_VARIABLES:
        if os.environ.get(var):
            return f"{var}={os.environ[var]}"
    return None


def check_gpu(seen: dict, requested: int, cpu_fallback: bool = False, what: str = "this job") -> str | None:
    """Stop (:class:`DeviceError`) when ``requested`` > 0 GPUs were asked for and ``seen`` holds none.

    Returns None when the job runs as asked, else why it runs on the CPU without the GPU it asked for:

    * ``cpu_fallback``: the config allows it (device.cpu_fallback: true); a warning says why no GPU was seen.
    * ``no GPU on this machine``: a job outside any batch scheduler, on a machine with no NVIDIA driver
      (nvidia-smi not found) and CUDA_VISIBLE_DEVICES unset. There the ``gpu`` resource of the workstation
      profile is a lock that keeps two GPU jobs apart, not a request that anything could grant.

    Everywhere else (a scheduler's job that asked for a GPU, a machine with an NVIDIA GPU that the
    backend cannot use, CUDA_VISIBLE_DEVICES hiding every GPU) it raises, saying why.
    """
    if int(requested or 0) <= 0 or seen.get("gpus"):
        return None
    smi = seen.get("nvidia_smi") or {}
    job = seen.get("scheduler_job")
    if not job and not smi.get("found", True) and seen.get("cuda_visible_devices") is None:
        log.info("%s asked for a GPU (resources gpu=%d) on a machine without one (no nvidia-smi, no scheduler "
                 "job): the workstation's gpu resource is a lock here; running on the CPU", what, int(requested))
        return "no GPU on this machine"
    reasons = why_no_gpu(seen)
    if cpu_fallback:
        log.warning("%s asked for %d GPU(s) but sees none, and runs on the CPU (device.cpu_fallback: true): %s",
                    what, int(requested), "; ".join(reasons))
        return "device.cpu_fallback"
    raise DeviceError(
        f"{what} asked for {int(requested)} GPU(s) (resources gpu={int(requested)}"
        + (f"; scheduler job {job}" if job else "") + ") but cannot see one, so it stops here rather than run "
        "for days on the CPU:\n  - " + "\n  - ".join(reasons)
        + "\nTo run it on the CPU anyway: set `device: {cpu_fallback: true}` in the config, or give Snakemake "
        "--resources gpu=0 (workstation) so that jobs ask for no GPU. `python -m lokiml.runtime` (from "
        "workflow/scripts) prints what a node sees."
    )


# --------------------------------------------------------------------------------------
# Set-up of a job
# --------------------------------------------------------------------------------------


@dataclass
class Runtime:
    """What was chosen for this process: backend, devices, precision, compilation, distribution."""

    backend: str
    backend_version: str
    build: str
    gpus: list
    precision: str  # Keras dtype policy: float32, mixed_bfloat16 or mixed_float16
    jit_compile: bool
    determinism: bool
    threads: int
    distribution: str
    replicas: int
    gpu_requested: int = 0
    cpu_fallback: str | None = None  # why it runs on the CPU although it asked for a GPU (check_gpu)
    strategy: object = None  # tf.distribute strategy (TensorFlow backend), else None
    seen: dict = field(default_factory=dict, repr=False)

    @property
    def device(self) -> str:
        return f"GPU: {', '.join(self.gpus)}" if self.gpus else "CPU"

    @property
    def mixed_precision(self) -> bool:
        return self.precision != "float32"

    @property
    def xla(self) -> bool:  # the experiment key's name
        return self.jit_compile

    def scope(self):
        """The context in which models and optimizers are built (a tf.distribute strategy's scope)."""
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def describe(self) -> dict:
        return {
            "backend": self.backend,
            "backend_version": self.backend_version,
            "build": self.build,
            "device": "GPU" if self.gpus else "CPU",
            "gpus": list(self.gpus),
            "cuda_visible_devices": self.seen.get("cuda_visible_devices"),
            "precision": self.precision,
            "mixed_precision": self.mixed_precision,
            "xla": self.jit_compile,
            "op_determinism": self.determinism,
            "threads": self.threads,
            "distribution": self.distribution,
            "replicas": self.replicas,
            "gpu_requested": self.gpu_requested,
            "cpu_fallback": self.cpu_fallback,
        }

    def versions(self) -> dict:
        import keras
        import numpy as np

        return {"python": platform.python_version(), self.backend: self.backend_version,
                "keras": keras.__version__, "numpy": np.__version__}


def _auto(value, default):
    return default if value in ("auto", None) else value


def _supports_bf16(seen: dict) -> bool:
    caps = [c for c in seen.get("compute_capability") or [] if c]
    try:
        return bool(caps) and all(float(c) >= 8.0 for c in caps)
    except ValueError:
        return False


def choose_precision(setting, on_gpu: bool, seen: dict) -> str:
    """Keras dtype policy for the experiment's ``mixed_precision`` setting.

    auto: mixed bfloat16 on GPUs that compute in it (compute capability 8.0 and up: A100, H100, ...),
    mixed float16 on older GPUs, float32 on a CPU. true: the same as auto on a GPU, and mixed bfloat16
    on a CPU. 'bfloat16' / 'float16': that one. false: float32.
    """
    if setting in (False, "false", "float32"):
        return "float32"
    if setting in ("bfloat16", "float16"):
        return PRECISIONS[setting]
    if setting in ("auto", None) and not on_gpu:
        return "float32"
    if not on_gpu:
        return "mixed_bfloat16"
    return "mixed_bfloat16" if _supports_bf16(seen) else "mixed_float16"


def _prepare_jax_flags(threads: int, deterministic: bool) -> None:
    """XLA flags of the JAX backend. JAX reads them once, when it initialises its backend (the first
    device query or array), not at import: set them before :func:`inspect`."""
    flags = os.environ.get("XLA_FLAGS", "")
    add = []
    if deterministic and "xla_gpu_deterministic_ops" not in flags:
        add.append("--xla_gpu_deterministic_ops=true")
    if threads == 1 and "xla_cpu_multi_thread_eigen" not in flags:
        add.append("--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    if add:
        os.environ["XLA_FLAGS"] = " ".join([flags, *add]).strip()


def configure(threads: int = 1, params: dict | None = None, gpu_request: int = 0, cpu_fallback: bool = False,
              what: str = "this job") -> Runtime:
    """Set this process up for Keras work; call once, before any model is built.

    ``params``: the experiment's ``mixed_precision``, ``xla`` and ``deterministic`` settings
    (missing keys: auto). ``gpu_request``: GPUs the job asked for (its ``gpu`` resource); with none
    visible it stops with :class:`DeviceError` unless ``cpu_fallback``.

    Determinism (auto): on on a CPU (exact, resumable results), off on GPUs, whose deterministic
    kernels cost speed and where some ops have none.
    """
    params = dict(params or {})
    threads = max(1, int(threads))
    backend = backend_name()
    det_setting = params.get("deterministic", "auto")
    if backend == "jax":
        _prepare_jax_flags(threads, det_setting is True)
    seen = inspect(backend, driver=False)
    if int(gpu_request or 0) > 0 and not seen["gpus"]:
        seen["nvidia_smi"] = nvidia_smi()
    fallback = check_gpu(seen, gpu_request, cpu_fallback, what)
    gpus = list(seen["gpus"])
    on_gpu = bool(gpus)
    determinism = bool(_auto(det_setting, not on_gpu))
    precision = choose_precision(params.get("mixed_precision", "auto"), on_gpu, seen)
    xla_setting = params.get("xla", "auto")
    strategy, distribution, replicas = None, "single device", 1

    if backend == "tensorflow":
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(2 if threads >= 2 else 1)
        except RuntimeError:
            log.warning("TensorFlow is already initialised in this process: its thread pools stay as they are")
        for gpu in tf.config.list_physical_devices("GPU"):
            try:
                tf.config.experimental.set_memory_growth(gpu, True)
            except RuntimeError:
                log.warning("TensorFlow is already initialised: memory growth of %s unchanged", gpu.name)
        jit = bool(_auto(xla_setting, on_gpu))
        if determinism:
            tf.config.experimental.enable_op_determinism()
            if jit and not on_gpu:
                log.warning("xla: true is not used on a CPU: Keras compiles nothing with XLA while op determinism "
                            "is on (which exact resumes need)")
                jit = False
        if len(gpus) > 1:
            strategy = tf.distribute.MirroredStrategy()
            distribution, replicas = "tf.distribute.MirroredStrategy", int(strategy.num_replicas_in_sync)
    elif backend == "jax":
        # The JAX backend compiles every step with XLA; xla: false runs them op by op (slow, for debugging).
        jit = bool(_auto(xla_setting, True))
        if len(gpus) > 1:
            import keras

            devices = keras.distribution.list_devices("gpu")
            keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
            distribution, replicas = "keras.distribution.DataParallel", len(devices)
    else:  # torch
        import torch

        torch.set_num_threads(threads)
        if determinism:
            torch.use_deterministic_algorithms(True, warn_only=True)
        # torch.compile (jit_compile=True) compiles for minutes and is still marked experimental in Keras.
        jit = bool(_auto(xla_setting, False))
        if len(gpus) > 1:
            log.warning("the torch backend trains on one GPU of the %d it sees (Keras has no multi-GPU training "
                        "for torch): use KERAS_BACKEND=jax or tensorflow to use them all", len(gpus))
            gpus = gpus[:1]

    import keras

    keras.mixed_precision.set_global_policy(precision)
    rt = Runtime(backend=backend, backend_version=seen["backend_version"], build=seen["build"], gpus=gpus,
                 precision=precision, jit_compile=jit, determinism=determinism, threads=threads,
                 distribution=distribution, replicas=replicas, gpu_requested=int(gpu_request or 0),
                 cpu_fallback=fallback, strategy=strategy, seen=seen)
    log.info("runtime: Keras %s on %s %s (%s); device %s; precision %s; XLA/jit %s; op determinism %s; threads %d; "
             "%s (%d replica(s)); CUDA_VISIBLE_DEVICES=%s", keras.__version__, backend, rt.backend_version, rt.build,
             rt.device, precision, "on" if jit else "off", "on" if determinism else "off", threads, distribution,
             replicas, seen.get("cuda_visible_devices"))
    if rt.mixed_precision and not on_gpu:
        log.warning("mixed precision (%s) was asked for on a CPU: it is slow there unless the CPU computes in "
                    "bfloat16 (AMX, AVX512-BF16)", precision)
    return rt


def job_settings(smk) -> dict:
    """The GPU request and the fallback setting of a Snakemake job (for the rule scripts).

    The request is the job's ``gpu`` resource (after Snakemake's ``--resources`` cap); the fallback
    comes from the config's ``device.cpu_fallback``. Neither is a ``params:`` entry on purpose: where a
    job runs does not make its outputs stale.
    """
    resources = getattr(smk, "resources", {}) or {}
    try:
        gpu = int(resources.get("gpu", 0) or 0)
    except (TypeError, ValueError):
        gpu = 0
    device = (getattr(smk, "config", {}) or {}).get("device") or {}
    return {"gpu_request": gpu, "cpu_fallback": bool(device.get("cpu_fallback", False)),
            "what": f"rule {getattr(smk, 'rule', 'job')}"}


# --------------------------------------------------------------------------------------
# python -m lokiml.runtime
# --------------------------------------------------------------------------------------


def _report(seen: dict, rt: Runtime | None) -> str:
    smi = seen.get("nvidia_smi") or {}
    lines = [
        f"Keras backend     {seen['backend']} {seen['backend_version']} (Keras {seen['keras']}, Python {seen['python']}); "
        "set KERAS_BACKEND=tensorflow|jax|torch to change it",
        f"build             {seen['build']}",
        f"GPUs it sees      {', '.join(seen['gpus']) if seen['gpus'] else 'none'}"
        + (f" (compute capability {', '.join(str(c) for c in seen['compute_capability'])})" if seen['gpus'] else ""),
        f"CUDA_VISIBLE_DEVICES  {seen['cuda_visible_devices']!r}" + ("  <- hides every GPU"
                                                                     if _hides_all_gpus(seen['cuda_visible_devices'])
                                                                     else ""),
        f"nvidia-smi        {', '.join(smi.get('gpus') or []) or smi.get('error') or 'no GPU listed'}"
        + (f" (driver {smi['driver']})" if smi.get("driver") else ""),
        f"host              {seen['host']}" + (f", scheduler job {seen['scheduler_job']}"
                                                 if seen.get("scheduler_job") else ""),
    ]
    if rt is not None:
        lines += [f"training would use  device {rt.device}; precision {rt.precision} (mixed_precision: auto); "
                  f"XLA/jit {'on' if rt.jit_compile else 'off'}; op determinism {'on' if rt.determinism else 'off'}; "
                  f"{rt.distribution}"]
    if not seen["gpus"]:
        lines += ["no GPU: " + "; ".join(why_no_gpu(seen))]
    return "\n".join(lines)


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m lokiml.runtime",
                                 description="What this machine offers lokiml: Keras backend, build, GPUs, precision.")
    ap.add_argument("--require-gpu", action="store_true", help="exit 1 when no GPU is visible (for job scripts)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of text")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        rt = configure(args.threads, {}, gpu_request=1 if args.require_gpu else 0, what="this check")
        seen = rt.seen
        if "nvidia_smi" not in seen:
            seen["nvidia_smi"] = nvidia_smi()
    except DeviceError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({**seen, "runtime": rt.describe()}, indent=2, default=str))
    else:
        print(_report(seen, rt))
    return 0


if __name__ == "__main__":
    sys.exit(main())
