"""The weakly supervised methods wsseg implements, by name, each a set of config overrides (docs/METHODS.md §1).

A method is a config switch, not a code path of its own: `method_config(config, name)` is the run's config with
the method's settings merged in, so a method combines with any preset, model or dataset, and an ablation is
the same pipeline run once per name. Every method is measured against plain CAM, one classifier, though the
presets train the `ensemble` method's five by default: a method that names no classifier count runs one.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

from wsseg.config import merge_overrides
from wsseg.errors import ConfigError


@dataclass(frozen=True)
class Method:
    description: str
    overrides: dict
    # Merged over `overrides` on the CPU presets, whose 128 px crops give 8x8 feature maps where the papers had
    # 41x41 (MDC, 321 px at stride 8) or 28x28 (SEAM, 448 px at stride 16).
    small_input_overrides: dict = field(default_factory=dict)


METHODS = {
    "cam": Method("CAM (Zhou et al., CVPR'16) from one classifier: the plain pipeline", {}),
    "gradcam": Method("Grad-CAM (Selvaraju et al., ICCV'17) maps from the same classifier",
                      {"cams": {"method": "gradcam"}}),
    "advcam": Method("AdvCAM (Lee et al., CVPR'21): maps summed over an anti-adversarial climb of the image",
                     {"cams": {"method": "advcam"}}),
    "has": Method("Hide-and-Seek (Singh & Lee, ICCV'17): random grid patches hidden in training",
                  {"classifier": {"hide_and_seek": {"enabled": True}}}),
    "acol": Method("ACoL (Zhang et al., CVPR'18): a second head trained on features erased where the first fires",
                   {"classifier": {"model": {"type": "ACoLClassifier"}}}),
    # Rates past 3 would read mostly padding on an 8x8 map.
    "mdc": Method("MDC (Wei et al., CVPR'18): classifiers on dilated convolutions of several rates",
                  {"classifier": {"model": {"type": "MDCClassifier", "dilations": [1, 3, 6, 9]}}},
                  {"classifier": {"model": {"dilations": [1, 2, 3]}}}),
    "mixup": Method("Mixup (Zhang et al., ICLR'18) of training images and their labels",
                    {"classifier": {"mixup": {"enabled": True}}}),
    "aepsl": Method("AE-PSL (Wei et al., CVPR'17): adversarial erasing, the union of successive classifiers' maps",
                    {"classifier": {"adversarial_erasing": {"enabled": True}}}),
    # The paper's pseudo masks are its CAMs random-walked over an AffinityNet: its code runs AffinityNet's
    # training and walk after its own steps. The paper's 0.3 rescaling of a 128 px crop would leave a 2x2 feature
    # map.
    "seam": Method("SEAM (Wang et al., CVPR'20): equivariance and pixel-correlation losses, then AffinityNet's "
                   "random walk",
                   {"classifier": {"model": {"type": "SEAMClassifier", "backbone": {"out_indices": [2, 3]},
                                             "transform_scale": 0.3}},
                    "affinity": {"enabled": True}},
                   {"classifier": {"model": {"transform_scale": 0.5}}}),
    "sec": Method("SEC (Kolesnikov & Lampert, ECCV'16): the segmenter trained with seed, expand and constrain "
                  "losses", {"segmenter": {"mode": "sec"}}),
    "saliency": Method("saliency guidance (Oh et al., CVPR'17): salient segments take the class of the CAM seed "
                       "inside", {"crf": {"saliency_guidance": True}}),
    # Five members, not three: on the tuning look five made masks of 86.64 where three made 84.31 (seed 0).
    "ensemble": Method("an ensemble of five classifiers trained alike from seeds seed to seed + 4 "
                       "(deep ensembles, Lakshminarayanan et al., NeurIPS'17): the mean of their maps",
                       {"classifier": {"ensemble_members": 5}}),
    "band": Method("the segmenter's cross-entropy on the masks, and on their uncertain band the partial-label loss "
                   "of the background and the image's labels (Cour et al., JMLR'11)", {"segmenter": {"mode": "band"}}),
    "affinity": Method("AffinityNet (Ahn & Kwak, CVPR'18; IRN's random walk): CAMs walked over affinities learned "
                       "from the pseudo masks, then refined again", {"affinity": {"enabled": True}}),
}


# What every method is measured against: plain CAM, one classifier, whatever the preset's default recipe.
ONE_CLASSIFIER = {"classifier": {"ensemble_members": 1}}

# "cam@2": method cam at seed 2, one of an ablation's repeats of a method.
SEED_MARK = "@"
# "advcam+affinity": both methods' settings at once, as papers feed one method's maps to another's refinement.
COMBINE_MARK = "+"


def method_config(config: dict, name: str) -> dict:
    """A copy of `config` running method `name`; "A+B" runs methods A and B together, "NAME@SEED" at that seed."""
    method_names, seed = known_method(name)
    configured = copy.deepcopy(config)
    merge_overrides(configured, ONE_CLASSIFIER, source="plain CAM, every method's baseline")
    settings_by = {method_name: _settings(method_name, config["preset"]) for method_name in method_names}
    _refuse_conflicts(settings_by)
    for method_name, settings in settings_by.items():
        for overrides in settings:
            merge_overrides(configured, overrides, source=f"method {method_name!r}")
    if seed is not None:
        configured["seed"] = seed
    return configured


def known_method(name: str) -> tuple[list[str], int | None]:
    """The methods `name` combines, each one of METHODS, and its seed: (["advcam", "affinity"], 1) from
    "advcam+affinity@1"."""
    combined, seed = split_seed(name)
    method_names = combined.split(COMBINE_MARK)
    for method_name in method_names:
        if method_name not in METHODS:
            raise ConfigError(f"unknown method {method_name!r}; choose from {', '.join(METHODS)}, or join them "
                              f"with {COMBINE_MARK!r}")
    if len(set(method_names)) != len(method_names):
        raise ConfigError(f"{name!r} names a method twice")
    return method_names, seed


def _settings(method_name: str, preset: str) -> list[dict]:
    method = METHODS[method_name]
    return [method.overrides] if preset == "gpu" else [method.overrides, method.small_input_overrides]


def _refuse_conflicts(settings_by: dict[str, list[dict]]) -> None:
    """Methods combined must not set one setting to two values (acol and mdc each choose the classifier)."""
    set_by: dict[str, tuple[str, object]] = {}
    for method_name, settings in settings_by.items():
        for overrides in settings:
            for key, value in _flattened(overrides):
                other, other_value = set_by.setdefault(key, (method_name, value))
                if other != method_name and other_value != value:
                    raise ConfigError(f"methods {other!r} and {method_name!r} set {key} to {other_value!r} and "
                                      f"{value!r}; they cannot run together")


def _flattened(overrides: dict, trail: str = ""):
    for key, value in overrides.items():
        if isinstance(value, dict):
            yield from _flattened(value, f"{trail}{key}.")
        else:
            yield f"{trail}{key}", value


def split_seed(name: str) -> tuple[str, int | None]:
    """("cam", 2) from "cam@2", ("cam", None) from "cam"."""
    method_name, marked, seed = name.partition(SEED_MARK)
    if not marked:
        return name, None
    if not seed.isdigit():
        raise ConfigError(f"{name!r}: after {SEED_MARK!r} comes a seed, a whole number (e.g. cam{SEED_MARK}1)")
    return method_name, int(seed)


def parse_methods(text: str) -> list[str]:
    """Method names from "cam,has,acol" (each may name its seed, "cam@1"); unknown or repeated names are errors."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise ConfigError(f"no method named in {text!r}; choose from {', '.join(METHODS)}")
    for name in names:
        known_method(name)
    if len(set(names)) != len(names):
        raise ConfigError(f"a method is named twice in {text!r}")
    return names


def over_seeds(names: list[str], seeds: list[int]) -> list[str]:
    """Every method once per seed: ["cam@0", "cam@1", "has@0", "has@1"] from ["cam", "has"] and [0, 1]."""
    for name in names:
        if split_seed(name)[1] is not None:
            raise ConfigError(f"method {name!r} names its seed and --seeds gives seeds too; use one or the other")
    return [f"{name}{SEED_MARK}{seed}" for name in names for seed in seeds]


def parse_seeds(text: str) -> list[int]:
    """Seeds from "0,1,2": whole numbers, none repeated."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts or not all(part.isdigit() for part in parts):
        raise ConfigError(f"{text!r}: give whole numbers separated by commas, e.g. 0,1,2")
    seeds = [int(part) for part in parts]
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{text!r} names a seed twice")
    return seeds
