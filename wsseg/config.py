"""One YAML config holds every knob of a run; each step module owns the defaults of its own section.

A config is the preset's defaults (`default_config`) with the user's YAML merged over it. Unknown keys are
errors, not silently ignored settings.
"""
from __future__ import annotations

import copy
import importlib
from pathlib import Path

import yaml

from wsseg.classes import VOC_CLASSES
from wsseg.errors import ConfigError

PRESETS = ("cpu-tiny", "cpu", "gpu")

STEP_SECTIONS = {
    "classifier": "wsseg.steps.train_classifier",
    "cams": "wsseg.steps.mine_cams",
    "crf": "wsseg.steps.refine",
    "segmenter": "wsseg.steps.train_segmenter",
    "evaluate": "wsseg.steps.evaluate",
}


def default_config(preset: str = "cpu") -> dict:
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    # strict: fail on the first bad input (corrupt image, ...) instead of skipping and counting it.
    config = {"preset": preset, "classes": list(VOC_CLASSES), "seed": 0, "strict": False}
    for section, module in STEP_SECTIONS.items():
        config[section] = importlib.import_module(module).default_config(preset)
    return config


def load_config(path: str | Path | None = None, preset: str | None = None) -> dict:
    """The preset's defaults with the YAML file at `path` merged over them.

    The preset comes from the argument, else the file's `preset` key, else "cpu".
    """
    overrides = _read_yaml(path) if path else {}
    config = default_config(preset or overrides.get("preset", "cpu"))
    overrides.pop("preset", None)
    _merge(config, overrides, source=str(path), trail="")
    return config


def load_config_text(text: str) -> dict:
    """A config from YAML text (as components receive it), merged over its preset's defaults."""
    overrides = _parse_yaml(text, source="config text")
    config = default_config(overrides.pop("preset", "cpu"))
    _merge(config, overrides, source="config text", trail="")
    return config


def dump_config(config: dict) -> str:
    return yaml.safe_dump(config, sort_keys=False)


def _read_yaml(path: str | Path) -> dict:
    """A config file at a path or a store URI (how a PyTorchJob's pods receive the run's config)."""
    if "://" in str(path):
        from wsseg.store import open_store

        folder, _, key = str(path).rpartition("/")
        return _parse_yaml(open_store(folder).get_bytes(key).decode(), source=str(path))
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    return _parse_yaml(text, source=str(path))


def _parse_yaml(text: str, source: str) -> dict:
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: not valid YAML: {error}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{source}: the config must be a mapping of sections, got {type(loaded).__name__}")
    return loaded


def _merge(base: dict, overrides: dict, source: str, trail: str) -> None:
    for key, value in overrides.items():
        where = f"{trail}{key}"
        if key not in base:
            raise ConfigError(f"{source}: unknown setting {where!r}; known here: {', '.join(map(str, base))}")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {where!r} must be a mapping")
            _merge(base[key], value, source, f"{where}.")
        else:
            base[key] = copy.deepcopy(value)
