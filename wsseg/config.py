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

# The short side, in pixels, to which the classifier, CAM mining and the CRF scale larger images down (None:
# native resolution). On a CPU a VOC-sized image (500x375) costs 9x what it costs at 128 px, while the CAMs,
# computed at 1/16 of the input, gain little from it; the segmenter's scale is its crop size (see
# wsseg.segmenter.configs.resize_scale).
WORKING_SIZES = {"cpu-tiny": 64, "cpu": 128, "gpu": None}

STEP_SECTIONS = {
    "classifier": "wsseg.steps.train_classifier",
    "cams": "wsseg.steps.mine_cams",
    "crf": "wsseg.steps.refine",
    "affinity": "wsseg.steps.train_affinity",
    "instances": "wsseg.steps.train_irn",
    "segmenter": "wsseg.steps.train_segmenter",
    "semi": "wsseg.semi.labelled",
    "evaluate": "wsseg.steps.evaluate",
    "predict": "wsseg.steps.predict",
    "registry": "wsseg.incremental.registry",
}


def default_config(preset: str = "cpu") -> dict:
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    # strict: fail on the first bad input (corrupt image, ...) instead of skipping and counting it. shards: the tasks
    # each per-image step (mine-cams, refine, propagate, evaluate, predict) is split into (wsseg.runtime.shards).
    config = {"preset": preset, "classes": list(VOC_CLASSES), "seed": 0, "strict": False,
              "working_size": WORKING_SIZES[preset], "shards": 1}
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
    merge_overrides(config, overrides, source=str(path))
    return config


def load_config_text(text: str) -> dict:
    """A config from YAML text (as components receive it), merged over its preset's defaults."""
    overrides = parse_mapping(text, source="config text")
    config = default_config(overrides.pop("preset", "cpu"))
    merge_overrides(config, overrides, source="config text")
    return config


def dump_config(config: dict) -> str:
    return yaml.safe_dump(config, sort_keys=False)


def _read_yaml(path: str | Path) -> dict:
    """A config file at a path or a store URI (how a PyTorchJob's pods receive the run's config)."""
    if "://" in str(path):
        from wsseg.store import open_store

        folder, _, key = str(path).rpartition("/")
        return parse_mapping(open_store(folder).get_bytes(key).decode(), source=str(path))
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    return parse_mapping(text, source=str(path))


def parse_mapping(text: str, source: str) -> dict:
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: not valid YAML: {error}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{source}: the config must be a mapping of sections, got {type(loaded).__name__}")
    return loaded


def merge_overrides(config: dict, overrides: dict, source: str) -> None:
    """Merge `overrides` into `config` in place, refusing unknown settings (the error names `source`)."""
    _merge(config, overrides, source, trail="")


def _merge(base: dict, overrides: dict, source: str, trail: str) -> None:
    for key, value in overrides.items():
        where = f"{trail}{key}"
        if key not in base and not _takes_options(base):
            raise ConfigError(f"{source}: unknown setting {where!r}; known here: {', '.join(map(str, base))}")
        if key not in base:
            base[key] = copy.deepcopy(value)
            continue
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {where!r} must be a mapping")
            _merge(base[key], value, source, f"{where}.")
        else:
            base[key] = copy.deepcopy(value)


def _takes_options(section: dict) -> bool:
    """A section with a `type` is built by a registry (mmseg's MODELS, torch.optim): which options it takes depends
    on the type chosen, and building it reports any it does not take."""
    return "type" in section
