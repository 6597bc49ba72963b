"""The segmenter's model: one of mmseg's model families scaled by the preset, or the model of a user's mmseg config.

`segmenter.model` names a family (`FAMILIES`) or an mmseg config file (a path or a store URI, fetched first by
the step; `is_config_file`). The families follow mmseg's `configs/_base_/models/*` heads and losses, scaled by
`depth` and `width` the way mmseg's r18 variants scale the r50 ones:

- `fcn` (Long et al., CVPR'15): FCNHead, two 3x3 convolutions over the last stage, input concatenated;
- `pspnet` (Zhao et al., CVPR'17): PSPHead, pyramid pooling at 1, 2, 3 and 6 bins;
- `deeplabv3plus` (Chen et al., ECCV'18): DepthwiseSeparableASPPHead with the stride-4 decoder;
- `upernet` (Xiao et al., ECCV'18): UPerHead, a feature pyramid over all four stages of an undilated ResNet;
- `segformer` (Xie et al., NeurIPS'21): MixVisionTransformer with SegformerHead, MiT-B0's layout with embedding
  width `width / 2` (MiT-B0 itself at the gpu preset's width 64).

The ResNet families put ResNetV1c under the head (output stride `output_stride`, 8 or 16; UPerNet's pyramid
wants the undilated 32) and an FCNHead on the third stage as auxiliary head, weighted 0.4. From a user's config
wsseg keeps the model and fills in what depends on the data: the class count of every head, the ignore index
(cross-entropy averaged over labelled pixels, as in the families), the data preprocessor (normalisation and the
crop it pads to), BN for SyncBN where that cannot run, and, unless `segmenter.pretrained` names other weights,
keeps the ones the config names. Its bases may be mmseg's own configs (`_base_ = 'mmseg::_base_/models/...'`).
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from mmengine.config import Config

from wsseg.classes import IGNORE_INDEX
from wsseg.errors import ConfigError

MEAN_RGB = [123.675, 116.28, 103.53]
STD_RGB = [58.395, 57.12, 57.375]
# `segmenter.pretrained: imagenet`: the ImageNet weights mmseg's own configs start each family from.
IMAGENET = "imagenet"
RESNET_IMAGENET = {50: "open-mmlab://resnet50_v1c", 101: "open-mmlab://resnet101_v1c"}
MIT_B0_IMAGENET = ("https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segformer/"
                   "mit_b0_20220624-7e0fe6dd.pth")
IMAGENET_WIDTH = 64
# MiT-B0 (SegFormer, Table 6): attention heads and blocks per stage.
MIT_HEADS = (1, 2, 5, 8)
MIT_LAYERS = (2, 2, 2, 2)
CONFIG_SUFFIX = ".py"
# The heads' cross-entropy: softmax over the classes, or a sigmoid per class (mmseg's use_sigmoid).
LOSSES = ("cross_entropy", "binary_cross_entropy")
MMSEG_BASE_PREFIX = "mmseg::"


def is_config_file(model: str) -> bool:
    """Whether `segmenter.model` names an mmseg config file rather than a family."""
    return isinstance(model, str) and (model.endswith(CONFIG_SUFFIX) or "://" in model)


def model_config(settings: dict, num_classes: int, crop: tuple[int, int], norm: str) -> dict:
    """The mmseg model dict `settings["model"]` names, its heads' cross-entropy as `settings["loss"]` says; `norm`
    is the normalisation layer type (BN or SyncBN)."""
    name = settings["model"]
    if name in FAMILIES:
        return _with_loss(FAMILIES[name](settings, num_classes, crop, norm), settings["loss"])
    if is_config_file(name):
        return _with_loss(user_model(settings, num_classes, crop, norm), settings["loss"])
    raise ConfigError(f"segmenter.model is {name!r}; choose one of {', '.join(FAMILIES)}, or give an mmseg "
                      "config file (a path ending in .py or a store URI such as s3://bucket/configs/model.py)")


def pretrained_weights(settings: dict) -> str | None:
    """The backbone weights `segmenter.pretrained` names, `imagenet` resolved."""
    return imagenet_weights(settings) if settings["pretrained"] == IMAGENET else settings["pretrained"]


def imagenet_weights(settings: dict) -> str | None:
    """What `pretrained: imagenet` stands for with this model: mmseg's ImageNet backbone weights (None for a
    user's config, which keeps the weights it names)."""
    name, depth, width = settings["model"], settings["depth"], settings["width"]
    if is_config_file(name):
        return None
    if name == "segformer" and width == IMAGENET_WIDTH:
        return MIT_B0_IMAGENET
    if name != "segformer" and width == IMAGENET_WIDTH and depth in RESNET_IMAGENET:
        return RESNET_IMAGENET[depth]
    backbone = "MiT-B0" if name == "segformer" else f"ResNetV1c-{depth}"
    raise ConfigError(f"segmenter.pretrained is {IMAGENET!r}, but there are no ImageNet weights for a {backbone} of "
                      f"width {width} (only width {IMAGENET_WIDTH}); set segmenter.pretrained to null to train from "
                      "scratch, or to a checkpoint (a local path or an s3:// URI)")


def deeplabv3plus(settings: dict, num_classes: int, crop: tuple[int, int], norm: str) -> dict:
    """mmseg's deeplabv3plus_r50-d8 model, scaled by depth and width (as its r18 variant scales the heads)."""
    channels = _resnet_channels(settings)
    # ASPP rates double with the output stride halved (DeepLabV3, sec. 3.3).
    aspp_rates = (1, 12, 24, 36) if settings["output_stride"] == 8 else (1, 6, 12, 18)
    return _resnet_model(settings, num_classes, crop, norm, channels, dict(
        type="DepthwiseSeparableASPPHead", in_channels=channels.stages[3], in_index=3, channels=channels.head,
        dilations=aspp_rates, c1_in_channels=channels.stages[0],
        c1_channels=max(12, channels.stages[0] * 48 // 256)))


def fcn(settings: dict, num_classes: int, crop: tuple[int, int], norm: str) -> dict:
    """mmseg's fcn_r50-d8 model, scaled by depth and width."""
    channels = _resnet_channels(settings)
    return _resnet_model(settings, num_classes, crop, norm, channels, dict(
        type="FCNHead", in_channels=channels.stages[3], in_index=3, channels=channels.head, num_convs=2,
        concat_input=True))


def pspnet(settings: dict, num_classes: int, crop: tuple[int, int], norm: str) -> dict:
    """mmseg's pspnet_r50-d8 model, scaled by depth and width."""
    channels = _resnet_channels(settings)
    return _resnet_model(settings, num_classes, crop, norm, channels, dict(
        type="PSPHead", in_channels=channels.stages[3], in_index=3, channels=channels.head,
        pool_scales=(1, 2, 3, 6)))


def upernet(settings: dict, num_classes: int, crop: tuple[int, int], norm: str) -> dict:
    """mmseg's upernet_r50 model, scaled by depth and width; its pyramid reads every stage of an undilated ResNet."""
    channels = _resnet_channels(settings)
    return _resnet_model(settings, num_classes, crop, norm, channels, dict(
        type="UPerHead", in_channels=list(channels.stages), in_index=[0, 1, 2, 3], pool_scales=(1, 2, 3, 6),
        channels=channels.head), dilated=False)


def _resnet_model(settings: dict, num_classes: int, crop: tuple[int, int], norm: str, channels: _ResNetChannels,
                  decode_head: dict, dilated: bool = True) -> dict:
    """An EncoderDecoder on the scaled ResNetV1c: `decode_head` (its type and shape) with the heads' common
    settings, and the FCN auxiliary head on stage 3 that every mmseg ResNet model carries."""
    norm_cfg = dict(type=norm, requires_grad=True)
    return _encoder_decoder(
        settings, crop, _resnet(settings, norm_cfg, dilated=dilated),
        decode_head=dict(decode_head, **_head_common(num_classes, norm_cfg)),
        auxiliary_head=_auxiliary_head(channels, num_classes, norm_cfg))


def segformer(settings: dict, num_classes: int, crop: tuple[int, int], norm: str) -> dict:
    """mmseg's segformer_mit-b0 model with embedding width `width / 2`; the head's width scales with it."""
    embed_dims = settings["width"] // 2
    backbone = dict(type="MixVisionTransformer", in_channels=3, embed_dims=embed_dims, num_stages=4,
                    num_layers=list(MIT_LAYERS), num_heads=list(MIT_HEADS), patch_sizes=[7, 3, 3, 3],
                    sr_ratios=[8, 4, 2, 1], out_indices=(0, 1, 2, 3), mlp_ratio=4, qkv_bias=True, drop_rate=0.0,
                    attn_drop_rate=0.0, drop_path_rate=0.1)
    head = dict(type="SegformerHead", in_channels=[embed_dims * heads for heads in MIT_HEADS],
                in_index=[0, 1, 2, 3], channels=256 * settings["width"] // IMAGENET_WIDTH,
                **_head_common(num_classes, dict(type=norm, requires_grad=True)))
    return _encoder_decoder(settings, crop, backbone, decode_head=head)


FAMILIES: dict[str, Callable[..., dict]] = {
    "fcn": fcn, "pspnet": pspnet, "deeplabv3plus": deeplabv3plus, "upernet": upernet, "segformer": segformer}


def user_model(settings: dict, num_classes: int, crop: tuple[int, int], norm: str) -> dict:
    """The `model` of the mmseg config file `settings["model"]` (a local path by now), fitted to this data."""
    path = Path(settings["model"])
    if not path.is_file():
        raise ConfigError(f"segmenter.model: no mmseg config at {path}; give a .py file (a path, or a store URI "
                          "such as s3://bucket/configs/model.py), or a family: " + ", ".join(FAMILIES))
    try:
        model = copy.deepcopy(_read_config(path).get("model"))
    except Exception as error:  # mmengine raises whatever the config's Python or its _base_ files raise
        raise ConfigError(f"segmenter.model: cannot read the mmseg config {path}: {error}") from None
    if not isinstance(model, dict) or "decode_head" not in model:
        raise ConfigError(f"segmenter.model: {path} defines no `model` with a decode_head; wsseg trains mmseg "
                          "segmentors (EncoderDecoder, CascadeEncoderDecoder)")
    model = _to_dict(model)
    for head in _heads(model):
        head.update(num_classes=num_classes, ignore_index=IGNORE_INDEX)
        for loss in listed(head.get("loss_decode")):
            if loss.get("type") == "CrossEntropyLoss":
                loss["avg_non_ignore"] = True
    model["data_preprocessor"] = _data_preprocessor(crop)
    if settings["pretrained"] not in (None, IMAGENET):
        model["backbone"].pop("init_cfg", None)
        model["backbone"].pop("pretrained", None)
        model["pretrained"] = settings["pretrained"]
    return _with_norm(model, norm)


def _read_config(path: Path) -> Config:
    """The config at `path`, its `mmseg::` bases (mmseg's own configs, e.g. `mmseg::_base_/models/fcn_r50-d8.py`)
    read from the installed package: mmengine looks packages up through pkg_resources, which setuptools no
    longer ships, so they are spelled as paths in a copy beside the file (where its relative bases resolve)."""
    import mmseg

    text = path.read_text()
    if MMSEG_BASE_PREFIX not in text:
        return Config.fromfile(str(path))
    configs = Path(mmseg.__file__).parent / ".mim" / "configs"
    resolved = path.with_name(f".{path.stem}.wsseg-resolved{CONFIG_SUFFIX}")
    resolved.write_text(text.replace(MMSEG_BASE_PREFIX, f"{configs}/"))
    try:
        return Config.fromfile(str(resolved))
    finally:
        resolved.unlink()


def _with_loss(model: dict, loss: str) -> dict:
    """`model` with each head's CrossEntropyLoss softmax (`cross_entropy`) or per-class sigmoid
    (`binary_cross_entropy`, mmseg's use_sigmoid)."""
    if loss not in LOSSES:
        raise ConfigError(f"segmenter.loss is {loss!r}; choose cross_entropy (softmax over classes) or "
                          "binary_cross_entropy (a sigmoid per class: WILSON's step 0, whose scores it reads)")
    for head in _heads(model):
        for head_loss in listed(head.get("loss_decode")):
            if head_loss.get("type") == "CrossEntropyLoss":
                head_loss["use_sigmoid"] = loss == "binary_cross_entropy"
    return model


def _heads(model: dict) -> list[dict]:
    """Every decode and auxiliary head: each is one dict, or a list of them (cascades, several auxiliaries)."""
    return [head for key in ("decode_head", "auxiliary_head") for head in listed(model.get(key))]


def listed(value) -> list:
    """A config entry that is one dict or a list of them (heads, losses, datasets to concatenate) as a list; [] for
    none."""
    return value if isinstance(value, list) else [value] if value else []


def _with_norm(node, norm: str):
    """`node` with every SyncBN replaced by `norm`: SyncBN needs CUDA and several processes."""
    if isinstance(node, dict):
        node = {key: _with_norm(value, norm) for key, value in node.items()}
        return dict(node, type=norm) if node.get("type") == "SyncBN" else node
    if isinstance(node, list):
        return [_with_norm(value, norm) for value in node]
    return node


def _to_dict(node):
    """Plain dicts and lists from mmengine's ConfigDict and tuples, as the family builders write them."""
    if isinstance(node, dict):
        return {key: _to_dict(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_to_dict(value) for value in node]
    return node


class _ResNetChannels(NamedTuple):
    stages: list[int]  # each stage's output channels
    head: int  # the decode head's channels; the auxiliary head has half


def _resnet_channels(settings: dict) -> _ResNetChannels:
    width = settings["width"]
    expansion = 4 if settings["depth"] >= 50 else 1
    stages = [width * expansion * 2 ** stage for stage in range(4)]
    return _ResNetChannels(stages, 512 * width // 64 if expansion == 4 else 128 * width // 64)


def _resnet(settings: dict, norm_cfg: dict, dilated: bool) -> dict:
    width = settings["width"]
    # Output stride 8 dilates the last two stages; 16 only the last (DeepLabV3, Table 1 of Chen et al.).
    if not dilated:
        strides, dilations = (1, 2, 2, 2), (1, 1, 1, 1)
    elif settings["output_stride"] == 8:
        strides, dilations = (1, 2, 1, 1), (1, 1, 2, 4)
    else:
        strides, dilations = (1, 2, 2, 1), (1, 1, 1, 2)
    return dict(type="ResNetV1c", depth=settings["depth"], stem_channels=width, base_channels=width,
                num_stages=4, out_indices=(0, 1, 2, 3), dilations=dilations, strides=strides,
                norm_cfg=norm_cfg, norm_eval=False, style="pytorch", contract_dilation=True)


def _loss(weight: float = 1.0) -> dict:
    # Averaged over labelled pixels only: pseudo masks leave many pixels at 255, which must not dilute it.
    return dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=weight, avg_non_ignore=True)


def _head_common(num_classes: int, norm_cfg: dict, loss_weight: float = 1.0) -> dict:
    return dict(dropout_ratio=0.1, num_classes=num_classes, norm_cfg=norm_cfg, align_corners=False,
                ignore_index=IGNORE_INDEX, loss_decode=_loss(loss_weight))


def _auxiliary_head(channels: _ResNetChannels, num_classes: int, norm_cfg: dict) -> dict:
    return dict(type="FCNHead", in_channels=channels.stages[2], in_index=2, channels=channels.head // 2,
                num_convs=1, concat_input=False, **_head_common(num_classes, norm_cfg, loss_weight=0.4))


def _data_preprocessor(crop: tuple[int, int]) -> dict:
    return dict(type="SegDataPreProcessor", mean=MEAN_RGB, std=STD_RGB, bgr_to_rgb=True, pad_val=0,
                seg_pad_val=IGNORE_INDEX, size=crop)


def _encoder_decoder(settings: dict, crop: tuple[int, int], backbone: dict, **heads) -> dict:
    return dict(type="EncoderDecoder", data_preprocessor=_data_preprocessor(crop),
                pretrained=pretrained_weights(settings), backbone=backbone, **heads, train_cfg=dict(),
                test_cfg=dict(mode="whole"))
