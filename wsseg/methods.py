"""The weakly supervised methods wsseg implements, by name, each a set of config overrides (METHODS.md §1).

A method is a config switch, not a code path of its own: `method_config(config, name)` is the run's config with
the method's settings merged in, so a method combines with any preset, model or dataset, and an ablation is
the same pipeline run once per name.
"""
from __future__ import annotations

import copy

from wsseg.config import merge_overrides
from wsseg.errors import ConfigError

METHODS = {
    "cam": "CAM (Zhou et al., CVPR'16): the plain pipeline",
    "gradcam": "Grad-CAM (Selvaraju et al., ICCV'17) maps from the same classifier",
    "has": "Hide-and-Seek (Singh & Lee, ICCV'17): random grid patches hidden in training",
    "acol": "ACoL (Zhang et al., CVPR'18): a second head trained on features erased where the first fires",
    "mdc": "MDC (Wei et al., CVPR'18): classifiers on dilated convolutions of several rates",
    "mixup": "Mixup (Zhang et al., ICLR'18) of training images and their labels",
    "aepsl": "AE-PSL (Wei et al., CVPR'17): adversarial erasing, the union of successive classifiers' maps",
    "seam": "SEAM (Wang et al., CVPR'20): equivariance and pixel-correlation losses",
    "sec": "SEC (Kolesnikov & Lampert, ECCV'16): the segmenter trained with seed, expand and constrain losses",
    "saliency": "saliency guidance (Oh et al., CVPR'17): salient segments take the class of the CAM seed inside",
    "affinity": "AffinityNet (Ahn & Kwak, CVPR'18; IRN's random walk): CAMs walked over affinities learned from "
                "the pseudo masks, then refined again",
}


def method_overrides(name: str, preset: str) -> dict:
    """The config settings that turn the plain pipeline into method `name`."""
    small = preset != "gpu"
    overrides = {
        "cam": {},
        "gradcam": {"cams": {"method": "gradcam"}},
        "has": {"classifier": {"hide_and_seek": {"enabled": True}}},
        "acol": {"classifier": {"model": {"type": "ACoLClassifier"}}},
        # The paper's rates 1, 3, 6, 9 span a 41x41 feature map; the CPU presets' crops give 8x8 maps, where
        # rates past 3 would read mostly padding.
        "mdc": {"classifier": {"model": {"type": "MDCClassifier",
                                         "dilations": [1, 2, 3] if small else [1, 3, 6, 9]}}},
        "mixup": {"classifier": {"mixup": {"enabled": True}}},
        "aepsl": {"classifier": {"adversarial_erasing": {"enabled": True}}},
        # The paper rescales 448 px crops by 0.3; the CPU presets' 128 px crops would leave a 2x2 feature map.
        "seam": {"classifier": {"model": {"type": "SEAMClassifier", "backbone": {"out_indices": [2, 3]},
                                          "transform_scale": 0.5 if small else 0.3}}},
        "sec": {"segmenter": {"mode": "sec"}},
        "saliency": {"crf": {"saliency_guidance": True}},
        "affinity": {"affinity": {"enabled": True}},
    }
    if name not in overrides:
        raise ConfigError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    return overrides[name]


def method_config(config: dict, name: str) -> dict:
    """A copy of `config` running method `name`."""
    configured = copy.deepcopy(config)
    merge_overrides(configured, method_overrides(name, config["preset"]), source=f"method {name!r}")
    return configured


def parse_methods(text: str) -> list[str]:
    """Method names from "cam,has,acol"; unknown or repeated names are errors."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise ConfigError(f"no method named in {text!r}; choose from {', '.join(METHODS)}")
    for name in names:
        if name not in METHODS:
            raise ConfigError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"a method is named twice in {text!r}")
    return names
