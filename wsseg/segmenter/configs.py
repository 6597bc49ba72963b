"""mmsegmentation configs for the segmenter, one set of knobs per preset.

The YAML section (`default_config`) holds what a user tunes; `build_mmseg_config` turns it into a full mmseg
config: the model `model` names (`wsseg.segmenter.models`: a family, by default DeepLabV3+ (Chen et al., ECCV'18)
with a ResNetV1c backbone, or a user's mmseg config), mmseg's VOC augmentation (random resize 0.5-2x, crop, flip,
photometric distortion), SGD (AdamW when training from scratch) with a poly schedule, ignore index 255.
`pretrained` (backbone weights; `imagenet`: the family's ImageNet weights) and `init_checkpoint` (a whole
segmenter to start from) are local paths or URLs here: the step fetches store URIs first (`wsseg.runtime.weights`).

`mode` picks the training objective: "standard" is cross-entropy on the pseudo masks; "sec" trains the same
model with SEC's seed, expand and constrain losses (`wsseg.wsss.sec`, docs/METHODS.md §1.16); "classmix" adds to the
cross-entropy on the labelled images ClassMix's loss on mixes of unlabelled ones, labelled by a mean teacher
(`wsseg.semi.classmix`, docs/METHODS.md §3; `datasets["unlabelled"]` holds those images); "wilson" adds classes to
the segmenter `segmenter.wilson.old_checkpoint` names, from image labels alone (`wsseg.incremental.wilson`,
docs/METHODS.md §2): the model is that segmenter's, grown by the new classes, and `segmenter.model` is not read;
"band" adds to the cross-entropy a loss that keeps the masks' uncertain pixels to the background and the image's
labels (`wsseg.wsss.band`).

`uncertain_pixels` says what pseudo masks' uncertain pixels (255) teach the modes that read masks: "ignored" (left
out of the loss) or "background" (`wsseg.segmenter.transforms.UncertainAsBackground`); a ground truth's 255 (VOC's
void outline) stays ignored. It is "ignored" on every preset: as background it lifted the shapes and herds looks'
segmenters by 1.9 and 1.0 points but cost the figures look 9.7, whose band covers parts of bodies (docs/RESULTS.md
§17).
"""
from __future__ import annotations

import copy
import inspect

from mmengine.config import Config
from mmengine.utils import import_modules_from_strings

from wsseg.classes import ClassList, voc_palette
from wsseg.errors import ConfigError
from wsseg.segmenter.dataset import IMAGE_LABELS
from wsseg.segmenter.models import IMAGENET, listed, model_config
from wsseg.wsss.crf import REFERENCE_SIDE

# mmseg's schedule for an ImageNet-initialised backbone.
SGD = dict(type="SGD", lr=0.01, momentum=0.9, weight_decay=0.0005)
# From scratch (no pretrained weights on the CPU presets). On 300 synthetic images, 800 iterations reached
# val mIoU 49.7 at this rate against 39.3 at 0.004 and 42.0 at 0.016.
ADAMW = dict(type="AdamW", lr=0.008, weight_decay=0.0001)


# mmseg's PhotoMetricDistortion turns hues by up to 18 of OpenCV's 180 steps. The synthetic classes the CPU
# presets train on are told apart by colour, so there it only shifts brightness, contrast and saturation a little.
GENTLE_PHOTOMETRIC = dict(brightness_delta=16, contrast_range=[0.8, 1.2], saturation_range=[0.8, 1.2],
                          hue_delta=2)

MODES = ("standard", "sec", "classmix", "wilson", "band")
UNCERTAIN_PIXELS = ("ignored", "background")
TRANSFORMS_MODULE = "wsseg.segmenter.transforms"
# SEC's network outputs 41x41 scores for its 321x321 inputs; its decays and CRF widths are for that grid.
SEC_OUTPUT_SIDE = 41
# SEC's CRF (its pylayers' CRFLayer and krahenbuhl2013 wrapper): 10 iterations, bilateral compat 10, srgb 13,
# Gaussian compat 3, spatial widths 80/12 and 3/12 px on the 41x41 grid. Written in wsseg.wsss.crf's units (widths
# for a 500x375 image, scaled to the grid the CRF runs on), so that on a 41x41 grid they are SEC's own.
SEC_CRF = dict(iterations=10, gaussian_sxy=round(3 / 12 * REFERENCE_SIDE / SEC_OUTPUT_SIDE, 2),
               gaussian_compat=3.0, bilateral_sxy=round(80 / 12 * REFERENCE_SIDE / SEC_OUTPUT_SIDE, 2),
               bilateral_srgb=13.0, bilateral_compat=10.0, scale_sxy_to_image=True)
# SEC's decays of global weighted rank pooling (docs/METHODS.md §1.16, expand loss) for present classes, absent ones
# (0: max pooling) and background, for its 41x41 grid (`decay_reference_pixels`; see sec.scaled_decay).
SEC_DEFAULTS = dict(decay_present=0.996, decay_absent=0.0, decay_background=0.999,
                    decay_reference_pixels=SEC_OUTPUT_SIDE ** 2, crf=SEC_CRF)
SEC_MODULE = "wsseg.wsss.sec"
# ClassMix (Olsson et al., WACV'21, sec. 4.1 and their code): teacher EMA α 0.99, confidence τ 0.968, λ 1, the
# mixed images jittered (strength 0.25, with probability 0.8) and blurred (sigma 0.15-1.15, probability 0.5).
# distribution_alignment (ReMixMatch's, not ClassMix's): off as in the paper, on at the CPU presets (_classmix_preset).
CLASSMIX_DEFAULTS = dict(ema_momentum=0.99, confidence=0.968, unsupervised_weight=1.0, distribution_alignment=False,
                         confidence_weighting="image",
                         color_jitter=dict(probability=0.8, brightness=0.25, contrast=0.25, saturation=0.25, hue=0.25),
                         blur=dict(probability=0.5, sigma=[0.15, 1.15]))
# The CPU presets' synthetic classes differ by colour: their jitter leaves hues nearly alone (as GENTLE_PHOTOMETRIC).
GENTLE_COLOR_JITTER = dict(probability=0.8, brightness=0.2, contrast=0.2, saturation=0.2, hue=0.01)
# "image": a mixed image's loss weighted by its confident share (the paper's VOC recipe); "pixel": its confident pixels.
CONFIDENCE_WEIGHTINGS = ("image", "pixel")
CLASSMIX_MODULES = ["wsseg.semi.classmix", "wsseg.semi.sampler"]
# WILSON (Cermelli et al., CVPR'22, and their code): α 0.5; L_CLS and L_LOC weighted 1; nGWP's ε 1; the focal
# penalty's γ 3 and λ 0.01. old_checkpoint: the previous step's train-segmenter output (a folder or store URI);
# old_classes, new_classes: foreground classes before the step and added by it (VOC 15-5: 15 and 5); protocol: the
# step's images (`wsseg.data.splits`: disjoint or overlap); old_model_prior false: WILSON's fine-tuning baseline;
# lr_factor: a step's learning rate as a share of the preset's (WILSON's run.sh: 0.01 at step 0, 0.001 after), so
# that a step adjusts the old model rather than retraining it; head_lr_mult: the decode head's and the localizer's
# rate against the encoder's (its --lr_head 10, --lr_pseudo 0.01); encoder_distillation: the weight of L_DE (MSE
# of the encoder's last stage to the old one's; --loss_de 1); pseudo_label_start: the share of a step's iterations
# before L_SEG counts (--pseudo_ep 5 of 40 epochs). These four are in WILSON's code, not in its paper
# (docs/METHODS.md §2.5).
# localizer_self_training: from pseudo_label_start on, the localizer also learns from its own maps, refined by PAMR
# and kept where confident, as WILSON's code does after its pseudo-label epoch; off, since the defaults above were
# measured without it. old_model_image_labels: L_CLS over every class, the background present in every image and an
# old class where the old model predicts it, so that a new class shown by every image of a batch cannot win L_CLS by
# claiming every pixel; on, since it kept more of the old classes in all nine 15-5 comparisons on semi400 (overlap
# and disjoint, several seeds; docs/RESULTS.md) and learned more of the new ones in six; false gives WILSON's L_CLS,
# over the new classes alone.
# Without the old model's prior (old_model_prior false) there is no old model to read the labels from: it is off.
WILSON_DEFAULTS = dict(old_checkpoint=None, old_classes=None, new_classes=None, protocol="disjoint", alpha=0.5,
                       cls_weight=1.0, loc_weight=1.0, epsilon=1.0, focal_gamma=3.0, focal_lambda=0.01,
                       old_model_prior=True, lr_factor=0.1, head_lr_mult=10.0, encoder_distillation=1.0,
                       pseudo_label_start=0.125, localizer_self_training=False,
                       old_model_image_labels=True)
MODE_SEGMENTORS = {"sec": ("SECSegmentor", "SEC's losses", [SEC_MODULE]),
                   "classmix": ("ClassMixSegmentor", "ClassMix's mean teacher", CLASSMIX_MODULES),
                   "wilson": ("WILSONSegmentor", "WILSON's localizer", ["wsseg.incremental.wilson"]),
                   "band": ("BandSegmentor", "the band's image-label loss", ["wsseg.wsss.band"])}


def default_config(preset: str) -> dict:
    """The `segmenter` section of a run's config for `preset`. `depth`, `width` and `output_stride` scale every
    model family the same way (`wsseg.segmenter.models`); `model` may also name a user's mmseg config.
    `self_training` trains a second segmenter on pseudo masks whose band the first one labelled
    (`wsseg.wsss.self_training`). It is off on every preset. At 2000 iterations the completed masks were better on
    ten of eleven rows measured on both looks (docs/RESULTS.md), and the segmenters trained on them moved -12.45 to
    +4.59, inside one training's seed noise then. At the cpu preset's 4000, on cam's masks, it lost 2.61 on the
    shapes look it is tuned on (85.58 once, 82.97 self-trained) and 3.61 and 4.16 on the held-out look (two mask
    sets), for twice the training time."""
    settings = _preset(preset)
    return dict(model="deeplabv3plus", **settings, init_checkpoint=None,
                photometric={} if preset == "gpu" else dict(GENTLE_PHOTOMETRIC), mode="standard", loss="cross_entropy",
                uncertain_pixels="ignored", self_training=False, sec=copy.deepcopy(SEC_DEFAULTS),
                classmix=_classmix_preset(preset, settings),
                wilson=dict(WILSON_DEFAULTS))


def _classmix_preset(preset: str, settings: dict) -> dict:
    """ClassMix's settings; the teacher's labels count fully after the first tenth of training, and each batch
    holds as many unlabelled images as labelled ones (ClassMix's VOC runs: 10 and 10)."""
    classmix = copy.deepcopy(CLASSMIX_DEFAULTS)
    if preset != "gpu":
        classmix["color_jitter"] = dict(GENTLE_COLOR_JITTER)
        # Trained from scratch, the warm start's teacher under-predicts some classes and its own labels erase them
        # (one seed of three at 1/8 on semi400); aligned, ClassMix at 1/8 rose on semi400 (3 seeds, 79.5 to 81.6
        # mIoU) and on the held-out figures look (26.1, below labelled-only 29.2, to 31.9).
        classmix["distribution_alignment"] = True
    return dict(classmix, rampup_iterations=settings["iterations"] // 10,
                unlabelled_batch_size=settings["batch_size"])


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
        # 2000 iterations stopped it mid-climb: on the shapes look's ground truth 4000 reached 91.4 against 84.4
        # (seed 0), WILSON's step 0 on semi400 86.3 against 68.4, and on the held-out figures look, whose classes
        # differ in a small part, 62.6 to 64.5 over three seeds where 2000 gave 28.9 to 46.7 over four.
        return dict(depth=18, width=24, output_stride=16, pretrained=None,
                    crop_size=128, batch_size=8, iterations=4000, optimizer=dict(ADAMW),
                    checkpoint_interval=250, log_interval=50, num_workers=0, bf16=False, validate=True)
    return dict(depth=18, width=16, output_stride=16, pretrained=None,
                crop_size=64, batch_size=2, iterations=4, optimizer=dict(ADAMW), checkpoint_interval=2,
                log_interval=1, num_workers=0, bf16=False, validate=True)


def build_mmseg_config(settings: dict, classes: ClassList, datasets: dict, work_dir: str, out_uri: str, *,
                       distributed: bool, cuda: bool, seed: int) -> Config:
    """The full mmseg config; `datasets` maps "train" (and "val" when validating) to dataset dicts; checkpoints go
    to the store at `out_uri` (`last.pth`, what a rerun resumes from), logs to `work_dir`. "train" may be a list of
    dataset dicts to concatenate (labelled images whose masks come from different stores); with ClassMix,
    "unlabelled" is the dataset dict of the unlabelled images."""
    mode = settings["mode"]
    if mode not in MODES:
        raise ConfigError(f"segmenter.mode is {mode!r}; choose one of {', '.join(MODES)}")
    crop = (settings["crop_size"], settings["crop_size"])
    iterations = settings["iterations"]
    testing = test_pipeline(crop)
    model = model_config(settings, len(classes), crop, norm="SyncBN" if distributed and cuda else "BN")
    if mode in MODE_SEGMENTORS and model["type"] != "EncoderDecoder":
        raise ConfigError(f"segmenter.mode: {mode} trains an EncoderDecoder with {MODE_SEGMENTORS[mode][1]}, but "
                          f"segmenter.model {settings['model']} is a {model['type']}; choose a family or an "
                          "EncoderDecoder config")
    config = dict(
        default_scope="mmseg",
        work_dir=work_dir,
        randomness=dict(seed=seed),
        model=_mode_model(model, settings),
        train_dataloader=_train_dataloader(datasets, crop, settings),
        optim_wrapper=_optim_wrapper(settings, bf16=settings["bf16"] and cuda),
        param_scheduler=[dict(type="PolyLR", eta_min=learning_rate(settings) / 100, power=0.9, begin=0,
                              end=iterations, by_epoch=False)],
        # Validation runs once, after training and outside its timing (the step calls `runner.val()`).
        train_cfg=dict(type="IterBasedTrainLoop", max_iters=iterations, val_begin=iterations + 1),
        default_hooks=dict(
            timer=dict(type="IterTimerHook"),
            logger=dict(type="LoggerHook", interval=settings["log_interval"], log_metric_by_epoch=False),
            param_scheduler=dict(type="ParamSchedulerHook"),
            checkpoint=dict(type="StoreCheckpointHook", store_uri=out_uri, by_epoch=False,
                            interval=settings["checkpoint_interval"], save_last=True),
            sampler_seed=dict(type="DistSamplerSeedHook")),
        custom_hooks=[dict(type="RandomStateHook")],
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
        config.update(val_dataloader=_dataloader(dict(datasets["val"], pipeline=testing), settings, train=False),
                      val_cfg=dict(type="ValLoop"),
                      val_evaluator=dict(type="IoUMetric", iou_metrics=["mIoU"]))
    if mode in MODE_SEGMENTORS:
        # Config.fromfile imports these when the stored config is loaded (wsseg.segmenter.inference), which
        # registers the mode's segmentor there; mmengine's Runner does not, so they are imported here for training.
        config["custom_imports"] = dict(imports=MODE_SEGMENTORS[mode][2], allow_failed_imports=False)
        import_modules_from_strings(**config["custom_imports"])
    return Config(config)


def _mode_model(model: dict, settings: dict) -> dict:
    """The model dict for `segmenter.mode`: the family's EncoderDecoder, or the mode's segmentor around it."""
    mode = settings["mode"]
    if mode == "sec":
        return dict(model, type="SECSegmentor", **settings["sec"])
    if mode == "classmix":
        segmentor_settings = {key: value for key, value in checked_classmix(settings).items()
                              if key != "unlabelled_batch_size"}
        return dict(model, type="ClassMixSegmentor", **segmentor_settings)
    if mode == "wilson":
        from wsseg.incremental.wilson import wilson_model

        return wilson_model(model, settings["wilson"], settings["iterations"])
    if mode == "band":
        return dict(model, type="BandSegmentor")
    return model


def checked_classmix(settings: dict) -> dict:
    """`segmenter.classmix`, refused where ClassMix cannot train with it."""
    classmix = settings["classmix"]
    if not 0 < classmix["ema_momentum"] < 1:
        raise ConfigError(f"segmenter.classmix.ema_momentum is {classmix['ema_momentum']}; the teacher keeps this "
                          "share of itself at each step, so it must lie between 0 and 1 (ClassMix: 0.99)")
    if classmix["confidence_weighting"] not in CONFIDENCE_WEIGHTINGS:
        raise ConfigError(f"segmenter.classmix.confidence_weighting is {classmix['confidence_weighting']!r}; choose "
                          "one of " + ", ".join(CONFIDENCE_WEIGHTINGS))
    if classmix["unlabelled_batch_size"] < 2:
        raise ConfigError(f"segmenter.classmix.unlabelled_batch_size is {classmix['unlabelled_batch_size']}; "
                          "ClassMix mixes pairs of unlabelled images, so set it to 2 or more")
    return classmix


def _train_dataloader(datasets: dict, crop: tuple[int, int], settings: dict) -> dict:
    """The labelled datasets `datasets["train"]` (a dict, or a list of them to concatenate) through the mode's
    training pipeline; with ClassMix, batches that add `datasets["unlabelled"]`'s images to them."""
    mode = settings["mode"]
    training = MODE_TRAIN_PIPELINES.get(mode, train_pipeline)(crop, settings["photometric"])
    relabelling = checked_uncertain_pixels(settings) == "background"
    # Only pseudo masks have uncertain pixels; a ground truth's 255 is VOC's void outline, not background.
    labelled = [dict(part, pipeline=after_loading_masks(training, *(("CheckMask", "UncertainAsBackground")
                     if relabelling and part.get("mask_store") else ("CheckMask",))))
                for part in listed(datasets["train"])]
    if mode != "classmix":
        dataset = labelled[0] if len(labelled) == 1 else dict(type="ConcatDataset", datasets=labelled)
        return _dataloader(dataset, settings, train=True)
    unlabelled = checked_classmix(settings)["unlabelled_batch_size"]
    loader = _dataloader(dict(type="ConcatDataset", datasets=[
        *labelled, dict(datasets["unlabelled"], pipeline=unlabelled_train_pipeline(crop))]), settings, train=True)
    return dict(loader, batch_size=settings["batch_size"] + unlabelled,
                sampler=dict(type="LabelledUnlabelledSampler", labelled=settings["batch_size"], unlabelled=unlabelled))


def checked_uncertain_pixels(settings: dict) -> str:
    """`segmenter.uncertain_pixels`, refused where it is unknown or where the mode's loss reads the uncertain pixels."""
    uncertain = settings["uncertain_pixels"]
    if uncertain not in UNCERTAIN_PIXELS:
        raise ConfigError(f"segmenter.uncertain_pixels is {uncertain!r}; choose one of {', '.join(UNCERTAIN_PIXELS)}")
    if uncertain == "background" and settings["mode"] == "band":
        raise ConfigError("segmenter.uncertain_pixels: background leaves segmenter.mode: band no uncertain pixels "
                          "for its loss; set uncertain_pixels: ignored, or mode: standard")
    return uncertain


def after_loading_masks(pipeline: list[dict], *transforms: str) -> list[dict]:
    """`pipeline` with `transforms` (`wsseg.segmenter.transforms`) applied to the masks as soon as they are loaded:
    `CheckMask`, and `UncertainAsBackground` to relabel the masks' uncertain pixels."""
    import_modules_from_strings(TRANSFORMS_MODULE)
    extended = []
    for step in pipeline:
        extended.append(step)
        if step["type"] == "LoadAnnotations":
            extended.extend(dict(type=name) for name in transforms)
    return extended


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


def band_train_pipeline(crop: tuple[int, int], photometric: dict) -> list[dict]:
    """The standard input, each sample with its image labels for the band's loss."""
    return [*train_pipeline(crop, photometric)[:-1], packing_image_labels()]


def packing_image_labels() -> dict:
    from mmseg.datasets.transforms import PackSegInputs  # its default meta keys, to which the labels are added

    meta_keys = inspect.signature(PackSegInputs).parameters["meta_keys"].default
    return dict(type="PackSegInputs", meta_keys=(*meta_keys, IMAGE_LABELS))


def sec_train_pipeline(crop: tuple[int, int], photometric: dict) -> list[dict]:
    """SEC's training input: the whole image resized to the crop (as SEC resizes to 321x321), flipped. A random
    crop could cut a labelled object out of view, and the expand loss would then demand a class that is not
    there; each sample carries its image-level labels for that loss."""
    return [
        dict(type="LoadImageFromFile"),
        dict(type="LoadAnnotations"),
        dict(type="Resize", scale=crop, keep_ratio=False),
        dict(type="RandomFlip", prob=0.5),
        dict(type="PhotoMetricDistortion", **photometric),
        packing_image_labels(),
    ]


def image_label_train_pipeline(crop: tuple[int, int], photometric: dict) -> list[dict]:
    """WILSON's training input: SEC's (the whole image, so that every labelled class stays in view, with its image
    labels), reading no mask: a new step has image labels alone."""
    return [step for step in sec_train_pipeline(crop, photometric) if step["type"] != "LoadAnnotations"]


MODE_TRAIN_PIPELINES = {"sec": sec_train_pipeline, "wilson": image_label_train_pipeline, "band": band_train_pipeline}


def unlabelled_train_pipeline(crop: tuple[int, int]) -> list[dict]:
    """ClassMix's unlabelled images: scaled, cropped and flipped as the labelled ones, with no mask and no
    photometric change (the teacher labels them as they are; the mixes are jittered after)."""
    return [
        dict(type="LoadImageFromFile"),
        dict(type="RandomResize", scale=resize_scale(crop), ratio_range=(0.5, 2.0), keep_ratio=True),
        dict(type="RandomCrop", crop_size=crop),
        dict(type="RandomFlip", prob=0.5),
        dict(type="PackSegInputs"),
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


def _dataloader(dataset: dict, settings: dict, train: bool) -> dict:
    workers = settings["num_workers"] if train else 0
    return dict(batch_size=settings["batch_size"] if train else 1, num_workers=workers,
                persistent_workers=workers > 0,
                sampler=dict(type="InfiniteSampler" if train else "DefaultSampler", shuffle=train),
                dataset=dataset)


def learning_rate(settings: dict) -> float:
    """The optimizer's starting learning rate: the preset's, scaled by `wilson.lr_factor` in a WILSON step."""
    factor = settings["wilson"]["lr_factor"] if settings["mode"] == "wilson" else 1.0
    return settings["optimizer"]["lr"] * factor


def _optim_wrapper(settings: dict, bf16: bool) -> dict:
    optimizer = dict(settings["optimizer"], lr=learning_rate(settings))
    wrapper = (dict(type="AmpOptimWrapper", dtype="bfloat16", optimizer=optimizer, clip_grad=None) if bf16 else
               dict(type="OptimWrapper", optimizer=optimizer, clip_grad=None))
    if settings["mode"] == "wilson":
        # The old model's parameters take no gradient, so its decode head matching the key changes nothing.
        head = dict(lr_mult=settings["wilson"]["head_lr_mult"])
        wrapper["paramwise_cfg"] = dict(custom_keys={"decode_head": head, "localizer": head})
    return wrapper
