"""Configuration: JSON-Schema validation with defaults, and checks a schema cannot express.

Used by ``workflow/rules/common.smk`` before the DAG is built, and by the tests.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from pathlib import Path

import jsonschema
import yaml

from .errors import ConfigError

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "config.schema.yaml"


def _extend_with_defaults(validator_class):
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _extend_with_defaults(jsonschema.Draft7Validator)


def load_schema(path=SCHEMA_PATH) -> dict:
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _where(error) -> str:
    path = ".".join(str(p) for p in error.absolute_path)
    return path or "(top level)"


def validate_config(config: dict, schema: dict | None = None) -> dict:
    """Return a validated copy of ``config`` with defaults filled in.

    Raises :class:`ConfigError` naming the offending key.
    """
    schema = schema or load_schema()
    cfg = copy.deepcopy(config)
    # An experiment set to null is switched off: a config file given with
    # --configfile is merged key by key into config/config.yaml, and this is how
    # it removes an experiment it does not want.
    if isinstance(cfg.get("experiments"), dict):
        cfg["experiments"] = {k: v for k, v in cfg["experiments"].items() if v is not None}
    validator = _Validator(schema)
    # Defaults are filled while validating; run twice so that defaults inside
    # defaults (an object that was itself defaulted) are filled too.
    for _ in range(2):
        errors = sorted(validator.iter_errors(cfg), key=lambda e: list(e.absolute_path))
        if errors:
            lines = []
            for e in errors[:10]:
                msg = e.message
                if e.validator == "additionalProperties":
                    msg = msg.replace("Additional properties are not allowed", "unknown key")
                lines.append(f"  config key {_where(e)}: {msg}")
            raise ConfigError("invalid configuration:\n" + "\n".join(lines) + "\n(see config/README.md)")
    _check_semantics(cfg)
    return cfg


def _check_semantics(cfg: dict) -> None:
    s = cfg["split"]
    total = s["train"] + s["valid"] + s["test"]
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        raise ConfigError(
            f"config key split: train + valid + test must sum to 1, got "
            f"{s['train']} + {s['valid']} + {s['test']} = {total:g}"
        )
    seen = {}
    for i, name in enumerate(cfg["classes"]):
        if name != name.strip() or any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
            raise ConfigError(
                f"config key classes[{i}]: {name!r} starts or ends with a space, or holds a tab, newline or other "
                "control character; write the EcoTaxa name exactly, without them"
            )
        # Compared without case: on macOS and Windows 'Calanoida' and 'calanoida' are the same file.
        key = class_slug(name).lower()
        if key in seen:
            raise ConfigError(
                f"config key classes: {name!r} and {seen[key]!r} map to the same file name {class_slug(name)!r} "
                "(letters compared without case); rename one"
            )
        seen[key] = name
    cnns = sorted(n for n, e in cfg["experiments"].items() if e["kind"] == "cnn")
    for name, exp in cfg["experiments"].items():
        if exp["kind"] != "descriptors" and exp.get("features") is not None:
            raise ConfigError(
                f"config key experiments.{name}.features: only a descriptors experiment has it "
                f"({'deep_features uses `descriptors: true/false`' if exp['kind'] == 'deep_features' else 'a CNN sees the images'})"
            )
        if exp.get("early_stopping_rounds") is not None and exp.get("classifier") != "hist_gradient_boosting":
            raise ConfigError(
                f"config key experiments.{name}.early_stopping_rounds: only classifier hist_gradient_boosting "
                f"stops early (this experiment's classifier is {exp.get('classifier')!r})"
            )
        if exp["kind"] == "deep_features" and exp["cnn"] not in cnns:
            what = (f"a {cfg['experiments'][exp['cnn']]['kind']} experiment, not a CNN one"
                    if exp["cnn"] in cfg["experiments"] else "not an experiment of `experiments:` (or it is switched off)")
            raise ConfigError(
                f"config key experiments.{name}.cnn: {exp['cnn']!r} is {what}; a deep_features experiment takes the "
                f"features of a CNN experiment of the same config (CNN experiments: {', '.join(cnns) or 'none'})"
            )


def class_slug(name: str) -> str:
    """A safe, distinct, readable file-name form of a class name.

    ASCII letters, digits, '-', '_' and '.' are kept; anything else becomes '_'; a
    short hash of the original name is appended whenever anything was changed,
    so that 'a/b' and 'a_b' stay distinct. A slug starts with a letter or digit
    (never '.', '-' or '_': no hidden files, no names read as options), so it
    matches the wildcard constraint ``[A-Za-z0-9][A-Za-z0-9_.-]*`` of
    ``workflow/rules/common.smk``.
    """
    slug = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    if slug != name or not slug[:1].isalnum():
        digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:8]
        slug = f"{slug.strip('._-') or 'class'}-{digest}"
    return slug


def params_hash(obj) -> str:
    """A stable short hash of a JSON-able object (for cache keys)."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def image_sizes(cfg: dict) -> list[int]:
    """Every image size that some experiment needs, sorted."""
    return sorted({int(e["image_size"]) for e in cfg["experiments"].values() if e.get("kind", "cnn") == "cnn"})
