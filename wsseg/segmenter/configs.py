"""mmsegmentation configs for the segmenter, one set of knobs per preset.

The YAML section (`default_config`) holds what a user tunes; `build_mmseg_config` turns it into a full mmseg
config: the model `model` names (`wsseg.segmenter.models`: a family, by default DeepLabV3+ (Chen et al., ECCV'18)
with a ResNetV1c backbone, or a user's mmseg config), mmseg's VOC augmentation (random resize 0.5-2x, crop, flip,
photometric distortion), SGD (AdamW when training from scratch) with a poly schedule, ignore index 255.
`pretrained` (backbone weights; `imagenet`: the family's ImageNet weights) and `init_checkpoint` (a whole
segmenter to start from) are local paths or URLs here: the step fetches store URIs first (`wsseg.weights`).

`mode` picks the training objective: "standard" is cross-entropy on the pseudo masks; "sec" trains the same
model with SEC's seed, expand and constrain losses (`wsseg.segmenter.sec`, METHODS.md §1).
"""
from __future__ import annotations

import copy
import inspect

from mmengine.config import Config
from mmengine.utils import import_modules_from_strings

from wsseg.classes import ClassList, voc_palette
from wsseg.crf import REFERENCE_SIDE
from wsseg.errors import ConfigError
from wsseg.segmenter.dataset import IMAGE_LABELS
from wsseg.segmenter.models import IMAGENET, model_config

# mmseg's schedule for an ImageNet-initialised backbone.
SGD = dict(type="SGD", lr=0.01, momentum=0.9, weight_decay=0.0005)
# From scratch (no pretrained weights on the CPU presets). On 300 synthetic images, 800 iterations reached
# val mIoU 49.7 at this rate against 39.3 at 0.004 and 42.0 at 0.016.
ADAMW = dict(type="AdamW", lr=0.008, weight_decay=0.0001)


# mmseg's PhotoMetricDistortion turns hues by up to 18 of OpenCV's 180 steps. The synthetic classes the CPU
# presets train on are told apart by colour, so there it only shifts brightness, contrast and saturation a little.
GENTLE_PHOTOMETRIC = dict(brightness_delta=16, contrast_range=[0.8, 1.2], saturation_range=[0.8, 1.2],
                          hue_delta=2)

MODES = ("standard", "sec")
# SEC's network outputs 41x41 scores for its 321x321 inputs; its decays and CRF widths are for that grid.
SEC_OUTPUT_SIDE = 41
# SEC's CRF (its pylayers' CRFLayer and krahenbuhl2013 wrapper): 10 iterations, bilateral compat 10, srgb 13,
# Gaussian compat 3, spatial widths 80/12 and 3/12 px on the 41x41 grid. Written in wsseg.crf's units (widths
# for a 500x375 image, scaled to the grid the CRF runs on), so that on a 41x41 grid they are SEC's own.
SEC_CRF = dict(iterations=10, gaussian_sxy=round(3 / 12 * REFERENCE_SIDE / SEC_OUTPUT_SIDE, 2),
               gaussian_compat=3.0, bilateral_sxy=round(80 / 12 * REFERENCE_SIDE / SEC_OUTPUT_SIDE, 2),
               bilateral_srgb=13.0, bilateral_compat=10.0, scale_sxy_to_image=True)
# SEC's decays of global weighted rank pooling (METHODS.md §1, expand loss) for present classes, absent ones
# (0: max pooling) and background, for its 41x41 grid (`decay_reference_pixels`; see sec.scaled_decay).
SEC_DEFAULTS = dict(decay_present=0.996, decay_absent=0.0, decay_background=0.999,
                    decay_reference_pixels=SEC_OUTPUT_SIDE ** 2, crf=SEC_CRF)
SEC_MODULE = "wsseg.segmenter.sec"


def default_config(preset: str) -> dict:
    """The `segmenter` section of a run's config for `preset`. `depth`, `width` and `output_stride` scale every
    model family the same way (`wsseg.segmenter.models`); `model` may also name a user's mmseg config."""
    return dict(model="deeplabv3plus", **_preset(preset), init_checkpoint=None,
                photometric={} if preset == "gpu" else dict(GENTLE_PHOTOMETRIC), mode="standard",
                sec=copy.deepcopy(SEC_DEFAULTS))


def _preset(preset: str) -> dict:
    if preset == "gpu":
        # mmseg's deeplabv3plus_r50-d8 on VOC: output stride 8, 512 crops, 20k iterations.
        return dict(depth=50, width=64, output_stride=8, pretrained=IMAGENET,
                    crop_size=512, batch_size=8, iterations=20000, optimizer=dict(SGD),
                    checkpoint_interval=2000, log_interval=50, num_workers=4, bf16=True, validate=True)
    if preset == "cpu":
        # Trained from scratch, the segmenter's val mIoU on 300 synthetic images (ground truth) rises late:
        # width 32 reached 59 after 1000 iterations and 87 after 2000; per second of a 2-core CPU, width 24
        # (0.26-0.31 s per batch of 8 at 128 px, 67 after 1250 iterations) learned fastest. Loading in the
        # training process beats worker processes, which take the cores from the model (0.36 s against
        # 0.42 s per iteration with two workers at width 32).
        return dict(depth=18, width=24, output_stride=16, pretrained=None,
                    crop_size=128, batch_size=8, iterations=2000, optimizer=dict(ADAMW),
                    checkpoint_interval=250, log_interval=50, num_workers=0, bf16=False, validate=True)
    return dict(depth=18, width=16, output_stride=16, pretrained=None,
                crop_size=64, batch_size=2, iterations=4, optimizer=dict(ADAMW), checkpoint_interval=2,
                log_interval=1, num_workers=0, bf16=False, validate=True)


def build_mmseg_config(settings: dict, classes: ClassList, datasets: dict, work_dir: str, out_uri: str, *,
                       distributed: bool, cuda: bool, seed: int) -> Config:
    """The full mmseg config; `datasets` maps "train" (and "val" when validating) to dataset dicts, and
    checkpoints go to `work_dir` and, for resuming, to the store at `out_uri`."""
    if settings["mode"] not in MODES:
        raise ConfigError(f"segmenter.mode is {settings['mode']!r}; choose one of {', '.join(MODES)}")
    sec = settings["mode"] == "sec"
    crop = (settings["crop_size"], settings["crop_size"])
    iterations = settings["iterations"]
    testing = test_pipeline(crop)
    model = model_config(settings, len(classes), crop, norm="SyncBN" if distributed and cuda else "BN")
    if sec and model["type"] != "EncoderDecoder":
        raise ConfigError(f"segmenter.mode: sec trains an EncoderDecoder with SEC's losses, but segmenter.model "
                          f"{settings['model']} is a {model['type']}; choose a family or an EncoderDecoder config")
    training = (sec_train_pipeline if sec else train_pipeline)(crop, settings["photometric"])
    config = dict(
        default_scope="mmseg",
        work_dir=work_dir,
        randomness=dict(seed=seed),
        model=dict(model, type="SECSegmentor", **settings["sec"]) if sec else model,
        train_dataloader=_dataloader(datasets["train"], training, settings, train=True),
        optim_wrapper=_optim_wrapper(settings, bf16=settings["bf16"] and cuda),
        param_scheduler=[dict(type="PolyLR", eta_min=settings["optimizer"]["lr"] / 100, power=0.9, begin=0,
                              end=iterations, by_epoch=False)],
        # Validation runs once, after training and outside its timing (the step calls `runner.val()`).
        train_cfg=dict(type="IterBasedTrainLoop", max_iters=iterations, val_begin=iterations + 1),
        default_hooks=dict(
            timer=dict(type="IterTimerHook"),
            logger=dict(type="LoggerHook", interval=settings["log_interval"], log_metric_by_epoch=False),
            param_scheduler=dict(type="ParamSchedulerHook"),
            checkpoint=dict(type="StoreCheckpointHook", store_uri=out_uri, by_epoch=False,
                            interval=settings["checkpoint_interval"], max_keep_ckpts=1, save_last=True),
            sampler_seed=dict(type="DistSamplerSeedHook")),
        log_processor=dict(by_epoch=False),
        log_level="INFO",
        env_cfg=dict(cudnn_benchmark=cuda, mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
                     dist_cfg=dict(backend="nccl" if cuda else "gloo")),
        # A whole segmenter to start from; resuming from the store (a retried step) takes precedence.
        load_from=settings["init_checkpoint"],
        resume=False,
        # Where mmseg's own inference (and wsseg.segmenter.inference) finds the scale to predict at: the
        # pipeline validation scores with, so that both label images at one scale.
        test_pipeline=testing,
    )
    if distributed and not cuda:
        # DDP on CPU takes no device ids; mmengine would otherwise pass [LOCAL_RANK].
        config["model_wrapper_cfg"] = dict(type="MMDistributedDataParallel", device_ids=None)
    if "val" in datasets:
        config.update(val_dataloader=_dataloader(datasets["val"], testing, settings, train=False),
                      val_cfg=dict(type="ValLoop"),
                      val_evaluator=dict(type="IoUMetric", iou_metrics=["mIoU"]))
    if sec:
        # Config.fromfile imports these when the stored config is loaded (wsseg.segmenter.inference), which
        # registers SECSegmentor there; mmengine's Runner does not, so it is imported here for training.
        config["custom_imports"] = dict(imports=[SEC_MODULE], allow_failed_imports=False)
        import_modules_from_strings(**config["custom_imports"])
    return Config(config)


def train_pipeline(crop: tuple[int, int], photometric: dict) -> list[dict]:
    return [
        dict(type="LoadImageFromFile"),
        dict(type="LoadAnnotations"),
        dict(type="RandomResize", scale=resize_scale(crop), ratio_range=(0.5, 2.0), keep_ratio=True),
        dict(type="RandomCrop", crop_size=crop, cat_max_ratio=0.75),
        dict(type="RandomFlip", prob=0.5),
        dict(type="PhotoMetricDistortion", **photometric),
        dict(type="PackSegInputs"),
    ]


def sec_train_pipeline(crop: tuple[int, int], photometric: dict) -> list[dict]:
    """SEC's training input: the whole image resized to the crop (as SEC resizes to 321x321), flipped. A random
    crop could cut a labelled object out of view, and the expand loss would then demand a class that is not
    there; each sample carries its image-level labels for that loss."""
    from mmseg.datasets.transforms import PackSegInputs  # its default meta keys, to which the labels are added

    meta_keys = inspect.signature(PackSegInputs).parameters["meta_keys"].default
    return [
        dict(type="LoadImageFromFile"),
        dict(type="LoadAnnotations"),
        dict(type="Resize", scale=crop, keep_ratio=False),
        dict(type="RandomFlip", prob=0.5),
        dict(type="PhotoMetricDistortion", **photometric),
        dict(type="PackSegInputs", meta_keys=(*meta_keys, IMAGE_LABELS)),
    ]


def test_pipeline(crop: tuple[int, int]) -> list[dict]:
    # Masks are loaded after the resize: predictions are scored at the image's own resolution.
    return [dict(type="LoadImageFromFile"), dict(type="Resize", scale=resize_scale(crop), keep_ratio=True),
            dict(type="LoadAnnotations"), dict(type="PackSegInputs")]


def resize_scale(crop: tuple[int, int]) -> tuple[int, int]:
    """mmseg's VOC scale (2048, 512) for a 512 crop: short side at the crop size, long side capped at 4x."""
    return (4 * crop[0], crop[0])


def metainfo(classes: ClassList) -> dict:
    palette = voc_palette()
    return dict(classes=tuple(classes.names), palette=[palette[3 * i:3 * i + 3] for i in range(len(classes))])


def _dataloader(dataset: dict, pipeline: list[dict], settings: dict, train: bool) -> dict:
    workers = settings["num_workers"] if train else 0
    return dict(batch_size=settings["batch_size"] if train else 1, num_workers=workers,
                persistent_workers=workers > 0,
                sampler=dict(type="InfiniteSampler" if train else "DefaultSampler", shuffle=train),
                dataset=dict(dataset, pipeline=pipeline))


def _optim_wrapper(settings: dict, bf16: bool) -> dict:
    optimizer = dict(settings["optimizer"])
    if bf16:
        return dict(type="AmpOptimWrapper", dtype="bfloat16", optimizer=optimizer, clip_grad=None)
    return dict(type="OptimWrapper", optimizer=optimizer, clip_grad=None)
