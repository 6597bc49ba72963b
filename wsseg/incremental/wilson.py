"""WILSON, incremental learning of new classes from image-level labels without the old data (Cermelli et al.,
CVPR'22; docs/METHODS.md §2), as mmseg modules.

A step adds new classes to the segmenter of the previous step, the old model, from new images that carry image-level
labels of the new classes only. `WILSONSegmentor` is mmseg's EncoderDecoder with the old model's architecture and
weights, its decode head grown by the new classes, plus the frozen old model and a localizer
(`WILSONLocalizerHead`) on the encoder's last stage. The localizer learns the new classes from the image labels
(L_CLS on its nGWP-pooled scores with the focal size penalty) and keeps background and old classes where the old
model puts them (L_LOC). Its maps and the old model's scores make the soft pseudo label that the decode head learns
with a per-class BCE (L_SEG). Prediction is EncoderDecoder's own: neither the localizer nor the old model takes part.
The checkpoint holds both, so that a stored step loads alone; the next step reads this step's encoder and decoder
back as its old model (`old_encoder_decoder`), so that steps chain (15-1: five of them).

Where the paper says less than WILSON's code (github.com/fcdl94/WILSON), the code decides (docs/METHODS.md §2.5):
the localizer's soft maps keep only the background and the image's labelled new classes before they make a pseudo
label (an image's pixels are never labelled with a class it does not show), and new classes start from the
background's classifier with MiB's balanced bias (`grow_classifier`). With `localizer_self_training`, the localizer
also learns, from the pseudo-label start on, from its own maps refined by PAMR (`wsseg.incremental.pamr`) where they
are confident, as that code does. With `old_model_image_labels` (the default; beyond the paper, whose L_CLS `false`
gives), L_CLS covers every class, not only the new ones: the background is present in every image and an old class
where the old model predicts it (`old_model_image_labels`), so that a new class has competitors to its pixels even
when every image of a batch shows it (15-1), and the old classes have images without them.

With `old_model_prior` false, a step is the fine-tuning baseline of WILSON's tables (the forgetting lower bound): it
starts from the old model as always, but the localizer learns from L_CLS alone and the pseudo label is the
localizer's, so nothing holds the old classes in place.
"""
from __future__ import annotations

import inspect
import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmengine.logging import MessageHub
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.segmentors import EncoderDecoder
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from torch import nn

from wsseg.classes import ClassList
from wsseg.data import load_samples
from wsseg.data.splits import step_samples
from wsseg.errors import ConfigError
from wsseg.incremental.pamr import refine_with_pamr
from wsseg.incremental.wilson_losses import (
    all_classes_image_loss,
    balanced_localizer_loss,
    confident_localizer_targets,
    focal_size_penalty,
    ngwp_scores,
    old_model_image_labels,
    pseudo_labels,
    shown_classes,
)
from wsseg.runtime.weights import load_fitting_weights
from wsseg.segmenter.dataset import IMAGE_LABELS
from wsseg.segmenter.inference import CHECKPOINT, MMSEG_CONFIG, stored_config
from wsseg.segmenter.models import _with_norm

log = logging.getLogger(__name__)

# WILSON's localizer: three convolutions, the first two 3x3 with batch norm and leaky ReLU (its InPlaceABN's).
LOCALIZER_ACTIVATION = dict(type="LeakyReLU", negative_slope=0.01)
# The arguments of the old model: what EncoderDecoder takes, without the auxiliary head (no step after the first
# has pixel labels for it) and without a mode's own (a WILSON step's localizer, old model, ...).
ENCODER_DECODER_KEYS = set(inspect.signature(EncoderDecoder.__init__).parameters) - {"self", "auxiliary_head"}
@torch.no_grad()
def grow_classifier(new: nn.Conv2d, old: nn.Conv2d) -> None:
    """`new` (1x1, more classes) from `old`: the old classes' weights and biases copied; each new class and the
    background take the background's weights with bias b_bg - log(N + 1) for N new classes (MiB's initialisation,
    Cermelli et al., CVPR'20, WILSON's `init_balanced`): the background's score is shared among itself and the
    new classes, which are at first indistinguishable from it."""
    old_count = old.out_channels
    balanced_bias = old.bias[0] - math.log(new.out_channels - old_count + 1)
    new.weight[:old_count] = old.weight
    new.weight[old_count:] = old.weight[0]
    new.bias[:old_count] = old.bias
    new.bias[old_count:] = balanced_bias
    new.bias[0] = balanced_bias


@MODELS.register_module()
class WILSONLocalizerHead(BaseDecodeHead):
    """WILSON's localizer: scores z for background, old and new classes from the encoder's last stage, and its two
    losses. epsilon: nGWP's ε; focal_gamma, focal_lambda: the focal size penalty's γ and λ; cls_weight,
    loc_weight: the weights of L_CLS and L_LOC; old_model_image_labels: L_CLS over every class, with the background
    and old classes' labels read from the old model."""

    def __init__(self, epsilon: float, focal_gamma: float, focal_lambda: float, cls_weight: float,
                 loc_weight: float, old_model_image_labels: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.old_model_image_labels = old_model_image_labels
        self.convs = nn.Sequential(*(
            ConvModule(channels, self.channels, 3, padding=1, norm_cfg=self.norm_cfg, act_cfg=LOCALIZER_ACTIVATION)
            for channels in (self.in_channels, self.channels)))
        self.pooling = dict(epsilon=epsilon, gamma=focal_gamma, lam=focal_lambda)
        self.weights = dict(cls=cls_weight, loc=loc_weight)

    def forward(self, inputs) -> torch.Tensor:
        return self.cls_seg(self.convs(self._transform_inputs(inputs)))

    def image_scores(self, maps: torch.Tensor) -> torch.Tensor:
        """ŷ before the sigmoid: nGWP plus the focal size penalty, (B, C)."""
        pooling = self.pooling
        return ngwp_scores(maps, pooling["epsilon"]) + focal_size_penalty(maps, pooling["gamma"], pooling["lam"])

    def loss_by_maps(self, maps: torch.Tensor, new_labels: torch.Tensor, old_logits: torch.Tensor | None) -> dict:
        """L_CLS: BCE of the pooled scores of the new classes against the image labels, averaged over classes and
        images (the old classes have no labels here); with `old_model_image_labels`, of every class's
        (`all_classes_image_loss`), the background's and old classes' labels read from old_logits. L_LOC: BCE of
        σ(z) of the background and old classes against the old model's σ scores, averaged over pixels and classes:
        sigmoids, since a pixel's classes are judged independently; none when old_logits is None (fine-tuning).
        maps (B, C, H, W) and old_logits (B, C_old, H, W) on one grid; new_labels (B, C - C_old)."""
        old_count = maps.shape[1] - new_labels.shape[1]
        scores = self.image_scores(maps)
        if self.old_model_image_labels:
            classification = all_classes_image_loss(scores, old_model_image_labels(old_logits), new_labels)
        else:
            classification = F.binary_cross_entropy_with_logits(scores[:, old_count:], new_labels)
        losses = dict(loss_cls=self.weights["cls"] * classification)
        if old_logits is not None:
            localization = F.binary_cross_entropy_with_logits(maps[:, :old_count], old_logits.sigmoid())
            losses["loss_loc"] = self.weights["loc"] * localization
        return losses

    def self_training_loss(self, maps: torch.Tensor, inputs: torch.Tensor, shown: torch.Tensor) -> torch.Tensor:
        """The localizer learning from its own refined maps, as WILSON's code does after its pseudo-label epoch:
        softmax of the maps z (B, C, h, w, on the localizer's grid), refined by PAMR along the colours of `inputs`
        (B, 3, H, W), kept for the classes `shown` (B, C) and made `confident_localizer_targets`, which z learns by
        `balanced_localizer_loss`. The targets carry no gradient."""
        with torch.no_grad():
            # Each grid cell's mean colour (WILSON's code samples the image bilinearly), left in the preprocessor's
            # normalised colours, with which PAMR refines as with pixels (wsseg.incremental.pamr).
            image = F.interpolate(inputs.float(), maps.shape[-2:], mode="area")
            refined = refine_with_pamr(image, maps.detach().softmax(1)) * shown[:, :, None, None]
            targets = confident_localizer_targets(refined)
        return balanced_localizer_loss(maps, targets, shown)


@MODELS.register_module()
class WILSONSegmentor(EncoderDecoder):
    """EncoderDecoder learning new classes with WILSON. localizer: the `WILSONLocalizerHead` dict; old_model: the
    previous step's EncoderDecoder dict; old_checkpoint: its weights, loaded by `init_weights` (training only: a
    stored step's checkpoint holds the old model already); alpha: the pseudo label's share of hard labels;
    old_model_prior: false trains without the old model's scores (no L_LOC, the localizer's pseudo label alone);
    true by default, as the steps stored before the setting existed were trained; encoder_distillation: the weight
    of L_DE; pseudo_label_start: the iteration from which L_SEG counts; localizer_self_training: from that iteration
    on, the localizer also learns from its own refined maps (`WILSONLocalizerHead.self_training_loss`)."""

    def __init__(self, localizer: dict, old_model: dict, old_checkpoint: str | None, alpha: float,
                 old_model_prior: bool = True, encoder_distillation: float = 0.0, pseudo_label_start: int = 0,
                 localizer_self_training: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.encoder_distillation = encoder_distillation
        self.pseudo_label_start = pseudo_label_start
        self.localizer_self_training = localizer_self_training
        self.localizer = MODELS.build(localizer)
        self.old_model = MODELS.build(old_model)
        self.old_model.requires_grad_(False)
        self.old_checkpoint = old_checkpoint
        self.alpha = alpha
        self.old_model_prior = old_model_prior

    def train(self, mode: bool = True) -> WILSONSegmentor:
        super().train(mode)
        # The old model is a fixed reference: its batch-norm statistics and dropout stay as they were trained.
        self.old_model.eval()
        return self

    def init_weights(self) -> None:
        """The old model from `old_checkpoint`, and this model started from it (the decode head grown)."""
        super().init_weights()
        if self.old_checkpoint:
            self._load_old_model(self.old_checkpoint)
            self._start_from_old_model()

    def loss(self, inputs: torch.Tensor, data_samples: list) -> dict:
        features = self.extract_feat(inputs)
        # float32 losses: under bf16 autocast, sigmoids near 0 or 1 would lose their precision.
        logits = self.decode_head(features).float()
        old_features, old_logits = self.old_outputs(inputs, logits.shape[-2:]) if self.old_model_prior else (None, None)
        localizer_maps = self.localizer(features).float()
        maps = resize(localizer_maps, logits.shape[-2:], mode="bilinear", align_corners=self.align_corners)
        new_labels = self._new_class_labels(data_samples, self.old_model.decode_head.num_classes, logits.device)
        losses = self.localizer.loss_by_maps(maps, new_labels, old_logits)
        if old_features is not None and self.encoder_distillation:
            # L_DE of WILSON's code (ILT's, Michieli & Zanuttigh): the encoder stays near the old one, whose features
            # the old classes need, while the new images pull it towards the new classes.
            losses["loss_de"] = self.encoder_distillation * F.mse_loss(features[-1].float(), old_features[-1].float())
        # The pseudo label is a target: L_SEG trains the decode head, not the localizer. Summed over classes and
        # averaged over pixels, as WILSON's code does; zero until the localizer had time to learn the new classes.
        targets = pseudo_labels(maps.detach(), old_logits, new_labels, self.alpha)
        per_pixel = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(1)
        started = self._pseudo_labels_started()
        losses["loss_seg"] = float(started) * per_pixel.mean()
        if self.localizer_self_training and started:
            # On the localizer's own grid, as in WILSON's code, with targets from these maps, as L_SEG's are, where
            # that code runs the localizer again in eval mode. With no dropout in the localizer, that pass would
            # differ only by batch norm's running statistics in place of the batch's, for another localizer forward
            # per batch: little on the CPU presets' grids (8x8 at most), a 3x3 convolution from 2048 to 512 channels
            # at stride 8 on the GPU preset's.
            shown = shown_classes(new_labels, self.num_classes)
            losses["loss_self"] = self.localizer.self_training_loss(localizer_maps, inputs, shown)
        return losses

    @torch.no_grad()
    def old_outputs(self, inputs: torch.Tensor, size: tuple[int, int]) -> tuple[tuple, torch.Tensor]:
        """The old model's encoder features and its decode-head scores (B, C_old, h, w), these on the grid `size` of
        the new decode head's."""
        features = self.old_model.extract_feat(inputs)
        logits = self.old_model.decode_head(features).float()
        if logits.shape[-2:] != size:
            logits = resize(logits, size, mode="bilinear", align_corners=self.align_corners)
        return features, logits

    def _pseudo_labels_started(self) -> bool:
        return MessageHub.get_current_instance().get_info("iter", 0) >= self.pseudo_label_start

    def _new_class_labels(self, data_samples: list, old_count: int, device: torch.device) -> torch.Tensor:
        """(B, C - C_old) float: 1 where an image is labelled with that new class; old labels are not read, nor those
        of classes after the step's, which an image of protocol overlap may show and which it leaves to later steps
        (the background until then, as MiB's protocol has it)."""
        labels = torch.zeros(len(data_samples), self.num_classes - old_count, device=device)
        for row, sample in zip(labels, data_samples, strict=True):
            row[[label - old_count for label in sample.metainfo[IMAGE_LABELS]
                 if old_count <= label < self.num_classes]] = 1
        return labels

    def _load_old_model(self, path: str) -> None:
        # The previous step's own output (train-segmenter's weights and meta), as the step publishes it.
        state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
        parts = {name for name, _ in self.old_model.named_children()}
        kept = {key: value for key, value in state.items() if key.split(".", 1)[0] in parts}
        load_fitting_weights(self.old_model, kept, f"segmenter.wilson.old_checkpoint: {path}",
                             "name the output of the previous step's train-segmenter, whose mmseg_config.py "
                             "describes this model")

    def _start_from_old_model(self) -> None:
        old = self.old_model
        self.backbone.load_state_dict(old.backbone.state_dict())
        if self.with_neck:
            self.neck.load_state_dict(old.neck.state_dict())
        head_state = {key: value for key, value in old.decode_head.state_dict().items()
                      if not key.startswith("conv_seg.")}
        self.decode_head.load_state_dict(head_state, strict=False)
        grow_classifier(self.decode_head.conv_seg, old.decode_head.conv_seg)


def wilson_model(family_model: dict, wilson: dict, iterations: int) -> dict:
    """The WILSONSegmentor dict of a step: the old model's architecture, read from the mmseg config in the folder
    `wilson["old_checkpoint"]` (the previous step's train-segmenter output, made local), its decode head grown to
    `family_model`'s classes, with `family_model`'s data preprocessor and normalisation layers."""
    folder = Path(wilson["old_checkpoint"])
    norm = family_model["decode_head"]["norm_cfg"]["type"]
    old = _with_norm(old_encoder_decoder(_stored_model(folder / MMSEG_CONFIG)), norm)
    num_classes = family_model["decode_head"]["num_classes"]
    _check_settings(wilson, old["decode_head"]["num_classes"], num_classes)
    if wilson["old_model_prior"] and not _sigmoid_trained(old["decode_head"]):
        log.warning("segmenter.wilson.old_checkpoint %s was trained with softmax cross-entropy; WILSON reads the old "
                    "model's sigmoid scores (L_LOC, the pseudo labels), which only a model trained per class means: "
                    "train step 0 with segmenter.loss: binary_cross_entropy, as WILSON does", folder)
    new = dict(old, data_preprocessor=family_model["data_preprocessor"],
               decode_head=dict(old["decode_head"], num_classes=num_classes))
    return dict(new, type="WILSONSegmentor", old_model=old, old_checkpoint=str(folder / CHECKPOINT),
                alpha=wilson["alpha"], old_model_prior=wilson["old_model_prior"],
                encoder_distillation=wilson["encoder_distillation"],
                pseudo_label_start=round(wilson["pseudo_label_start"] * iterations),
                localizer_self_training=wilson["localizer_self_training"],
                localizer=localizer_config(new["decode_head"], wilson))


def old_encoder_decoder(model: dict) -> dict:
    """The EncoderDecoder of a stored segmenter's model dict (any mode's: a WILSON step's own old model and localizer
    are left out), without auxiliary head or backbone weights to fetch: the checkpoint holds them all."""
    if model["type"] == "CascadeEncoderDecoder" or isinstance(model["decode_head"], list):
        raise ConfigError("segmenter.wilson.old_checkpoint names a segmenter with a cascade of decode heads; "
                          "WILSON grows a single decode head, so train the first step with an EncoderDecoder")
    encoder_decoder = {key: value for key, value in model.items() if key in ENCODER_DECODER_KEYS}
    encoder_decoder["backbone"] = dict(encoder_decoder["backbone"], init_cfg=None)
    return dict(encoder_decoder, type="EncoderDecoder", pretrained=None)


def localizer_config(decode_head: dict, wilson: dict) -> dict:
    """The localizer on the encoder's last stage, as wide as the decode head, scoring the same classes."""
    in_channels = decode_head["in_channels"]
    last_stage = in_channels[-1] if isinstance(in_channels, list) else in_channels
    return dict(type="WILSONLocalizerHead", in_channels=last_stage, in_index=-1, channels=decode_head["channels"],
                num_classes=decode_head["num_classes"], dropout_ratio=0.0, norm_cfg=decode_head["norm_cfg"],
                align_corners=decode_head["align_corners"],
                epsilon=wilson["epsilon"], focal_gamma=wilson["focal_gamma"], focal_lambda=wilson["focal_lambda"],
                cls_weight=wilson["cls_weight"], loc_weight=wilson["loc_weight"],
                old_model_image_labels=wilson["old_model_image_labels"] and wilson["old_model_prior"])


def seen_classes(classes: ClassList, wilson: dict) -> ClassList:
    """The background, the old and the new classes: the first 1 + old_classes + new_classes of `classes`."""
    old, new = wilson["old_classes"], wilson["new_classes"]
    for name, count in (("old_classes", old), ("new_classes", new)):
        if not isinstance(count, int) or count < 1:
            raise ConfigError(f"segmenter.wilson.{name} is {count!r}; set it to the number of foreground classes the "
                              f"{'old model segments' if name == 'old_classes' else 'step adds'} (VOC 15-5: 15, 5)")
    if 1 + old + new > len(classes):
        raise ConfigError(f"segmenter.wilson.old_classes {old} + new_classes {new} exceed the dataset's "
                          f"{len(classes) - 1} foreground classes; lower them")
    return ClassList(classes.names[:1 + old + new])


def step_image_ids(data_root, classes: ClassList, wilson: dict) -> list[str]:
    """The train images of the step, as WILSON's protocols pick them (`wsseg.data.splits`): each shows a new class;
    with `protocol: disjoint` none shows a class beyond them."""
    old, new = wilson["old_classes"], wilson["new_classes"]
    try:
        samples = step_samples(load_samples(data_root, "train", classes), tuple(range(old + 1, old + new + 1)),
                               old + new, wilson["protocol"])
    except ConfigError as error:
        raise ConfigError(f"segmenter.wilson (old_classes {old}, new_classes {new}, protocol "
                          f"{wilson['protocol']!r}): {error}") from None
    if not samples:
        raise ConfigError(f"segmenter.wilson: no train image of {data_root} shows one of the new classes "
                          f"{', '.join(classes.names[1 + old:1 + old + new])} under protocol {wilson['protocol']!r}; "
                          "check old_classes and new_classes, or try protocol: overlap")
    return [sample.image_id for sample in samples]


def _stored_model(path: Path) -> dict:
    return stored_config(path).model.to_dict()


def _sigmoid_trained(decode_head: dict) -> bool:
    losses = decode_head.get("loss_decode") or []
    return any(loss.get("use_sigmoid") for loss in (losses if isinstance(losses, list) else [losses]))


def _check_settings(wilson: dict, old_model_classes: int, num_classes: int) -> None:
    old, new = wilson["old_classes"], wilson["new_classes"]
    if old_model_classes != 1 + old:
        raise ConfigError(f"segmenter.wilson.old_classes is {old}, but the old model in "
                          f"{wilson['old_checkpoint']} segments {old_model_classes - 1} foreground classes; set "
                          f"old_classes: {old_model_classes - 1}")
    if num_classes != 1 + old + new:
        raise ConfigError(f"segmenter.wilson: old_classes {old} + new_classes {new} and the background make "
                          f"{1 + old + new} classes, but the run has {num_classes}; give the step the classes seen "
                          "so far, the first 1 + old_classes + new_classes of the dataset's")
    if not 0 <= wilson["alpha"] <= 1:
        raise ConfigError(f"segmenter.wilson.alpha is {wilson['alpha']}; it mixes hard and soft pseudo labels, so it "
                          "lies between 0 and 1 (WILSON: 0.5)")
    if not 0 <= wilson["pseudo_label_start"] < 1:
        raise ConfigError(f"segmenter.wilson.pseudo_label_start is {wilson['pseudo_label_start']}; it is the share of "
                          "the step's iterations before L_SEG counts, from 0 up to below 1 (WILSON: 5 of 40 epochs)")
    if not wilson["lr_factor"] > 0:
        raise ConfigError(f"segmenter.wilson.lr_factor is {wilson['lr_factor']}; a step's learning rate is the "
                          "preset's times this factor, so it must be above 0 (WILSON: 0.1)")
    if not isinstance(wilson["old_model_prior"], bool):
        raise ConfigError(f"segmenter.wilson.old_model_prior is {wilson['old_model_prior']!r}; set true (WILSON) or "
                          "false (fine-tuning without the old model's scores, WILSON's lower bound)")
    if not isinstance(wilson["localizer_self_training"], bool):
        raise ConfigError(f"segmenter.wilson.localizer_self_training is {wilson['localizer_self_training']!r}; set "
                          "true (the localizer also learns from its own PAMR-refined maps, as WILSON's code does) or "
                          "false")
    if not isinstance(wilson["old_model_image_labels"], bool):
        raise ConfigError(f"segmenter.wilson.old_model_image_labels is {wilson['old_model_image_labels']!r}; set true "
                          "(L_CLS over every class, the old ones labelled by the old model) or false (WILSON's, over "
                          "the new classes)")
