"""Predicting with a trained segmenter: load it from its store, label an image, optionally with test-time
augmentation (multi-scale inputs and horizontal flips, softmax averaged as mmseg's `SegTTAModel` merges them).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from wsseg.store import ArtifactStore

CHECKPOINT = "checkpoint.pth"
MMSEG_CONFIG = "mmseg_config.py"
# DeepLab's multi-scale inference uses 0.5-1.75; three scales around 1 keep most of the gain at half the cost.
TTA_SCALES = (0.75, 1.0, 1.25)
# The segmentor modules that issue 49's layout moved, by their names before it. A segmenter stored before the move
# names the old modules in its mmseg config's `custom_imports`, which register its segmentor when the config is
# loaded; `stored_config` imports them by their names now, so that such segmenters (a registry's versions
# included) still load.
MOVED_MODULES = {"wsseg.segmenter.sec": "wsseg.wsss.sec", "wsseg.segmenter.band": "wsseg.wsss.band",
                 "wsseg.segmenter.classmix": "wsseg.semi.classmix", "wsseg.segmenter.sampler": "wsseg.semi.sampler",
                 "wsseg.segmenter.wilson": "wsseg.incremental.wilson"}


def load_segmenter(store: ArtifactStore, device: str | torch.device | None = None) -> torch.nn.Module:
    """The model train-segmenter stored in `store`, in eval mode on `device` (CUDA when there is one)."""
    from mmseg.apis import init_model  # mmseg's inferencer stack is slow to import

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory(prefix="wsseg-segmenter-") as folder:
        config_path, checkpoint_path = Path(folder, MMSEG_CONFIG), Path(folder, CHECKPOINT)
        store.get_file(MMSEG_CONFIG, config_path)
        store.get_file(CHECKPOINT, checkpoint_path)
        return init_model(stored_config(config_path), str(checkpoint_path), device=str(device))


def stored_config(path: str | Path):
    """The mmseg config train-segmenter stored at `path` (an mmengine `Config`), with the modules its
    `custom_imports` names imported, under their current names (`MOVED_MODULES`)."""
    from mmengine.config import Config
    from mmengine.utils import import_modules_from_strings

    config = Config.fromfile(str(path), import_custom_modules=False)
    custom = config.get("custom_imports")
    if custom:
        names = custom.get("imports", [])
        names = [names] if isinstance(names, str) else names
        config.custom_imports = dict(custom, imports=[MOVED_MODULES.get(name, name) for name in names])
        import_modules_from_strings(**config.custom_imports)
    return config


def predict(model: torch.nn.Module, image: np.ndarray, multi_scale: bool = False,
            flip: bool = False) -> np.ndarray:
    """(H, W) uint8 class indices for an (H, W, 3) uint8 RGB image."""
    return class_probabilities(model, image, multi_scale, flip).argmax(dim=0).numpy().astype(np.uint8)


@torch.no_grad()
def class_probabilities(model: torch.nn.Module, image: np.ndarray, multi_scale: bool = False,
                        flip: bool = False) -> torch.Tensor:
    """(K, H, W) class probabilities on the CPU for an (H, W, 3) uint8 RGB image, summed over the test-time
    augmentations (so they rank classes, and sum to the number of views)."""
    height, width = image.shape[:2]
    base = prediction_scale(model, height, width)
    probabilities = torch.zeros(())
    for scale in view_scales(multi_scale):
        size = (max(1, round(width * base * scale)), max(1, round(height * base * scale)))
        scaled = image if size == (width, height) else cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        for mirrored in (False, True) if flip else (False,):
            logits = class_logits(model, scaled[:, ::-1] if mirrored else scaled)
            if mirrored:
                logits = logits.flip(-1)
            logits = F.interpolate(logits[None], (height, width), mode="bilinear", align_corners=False)[0]
            probabilities = probabilities + logits.softmax(dim=0).cpu()
    return probabilities


def view_scales(multi_scale: bool) -> tuple[float, ...]:
    """The factors on the model's input scale that a prediction averages over."""
    return TTA_SCALES if multi_scale else (1.0,)


def prediction_scale(model: torch.nn.Module, height: int, width: int) -> float:
    """The factor the model's test pipeline resizes an image by, as mmseg's evaluation does: a model trained
    on downscaled images labels them at the scale it learned. 1 for configs without a test pipeline."""
    import mmcv

    resize = next((step for step in model.cfg.get("test_pipeline", []) if step["type"] == "Resize"), None)
    if resize is None:
        return 1.0
    _, factor = mmcv.rescale_size((width, height), tuple(resize["scale"]), return_scale=True)
    return factor


def class_logits(model: torch.nn.Module, image: np.ndarray) -> torch.Tensor:
    """(K, H, W) logits for one RGB image, normalised by the model's own data preprocessor."""
    height, width = image.shape[:2]
    # The preprocessor expects what mmcv's LoadImageFromFile yields: uint8 BGR, channels first.
    bgr = torch.from_numpy(np.ascontiguousarray(image[..., ::-1])).permute(2, 0, 1)
    inputs = model.data_preprocessor(dict(inputs=[bgr]), training=False)["inputs"]
    shape = (height, width)
    meta = dict(img_shape=shape, ori_shape=shape, pad_shape=shape, padding_size=[0, 0, 0, 0])
    return model.inference(inputs, [meta])[0]
