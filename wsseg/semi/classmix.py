"""ClassMix with a mean teacher (Olsson et al., WACV'21; docs/METHODS.md §3), as an mmseg segmentor.

`ClassMixSegmentor` is mmseg's EncoderDecoder, the student, with a teacher whose weights are the exponential
moving average of the student's (Tarvainen & Valpola, NeurIPS'17), kept by mmengine's
`ExponentialMovingAverage`. Each training batch holds labelled samples (a `gt_sem_seg`) and unlabelled ones
(none; `wsseg.semi.sampler` puts both in one batch). The labelled ones get EncoderDecoder's own losses. Each
unlabelled image A is paired with the next one in the batch, B: the teacher labels both (argmax), the pixels of A
whose label is one of a random half of the classes in A's labelling are pasted onto B, image and labels alike, and
the student learns the mixed labels on the mixed image after colour jitter and Gaussian blur. Its cross-entropy
counts as much as the share of the mixed pixels the teacher labelled with confidence above τ, ramped up from 0.
`confidence_weighting` "pixel" (the paper's code's "threshold", not its VOC recipe) counts instead only the
confident pixels, each as much, so that the pixels the teacher doubts teach nothing.
`distribution_alignment` (not in ClassMix) rescales the teacher's probabilities before it labels, as ReMixMatch
(Berthelot et al., ICLR'20) does: by the labelled pixels' class distribution over the running mean of its own
predictions on the unlabelled images, so that a class the teacher rarely predicts is not erased by its own labels.
Prediction is the student's (EncoderDecoder's own); the checkpoint holds the teacher too.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from mmengine.logging import MessageHub
from mmengine.model import ExponentialMovingAverage
from mmseg.models.segmentors import EncoderDecoder
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from torch import nn

from wsseg.classes import IGNORE_INDEX

# RGB to YIQ: a hue turn is a rotation of the (I, Q) chroma plane.
RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
# Luma weights (ITU-R BT.601) for saturation and contrast.
LUMA = RGB_TO_YIQ[0]
# ReMixMatch's distribution alignment averages the model's predictions over its last 128 batches.
ALIGNMENT_WINDOW = 128


def sigmoid_rampup(iteration: int, rampup_iterations: int) -> float:
    """exp(-5 (1 - t)^2) with t = iteration / rampup_iterations, 1 from then on: the ramp-up of the unsupervised
    weight in Laine & Aila (ICLR'17) and the mean teacher. It starts near 0 (0.0067), when the teacher's labels are
    still noise."""
    if iteration >= rampup_iterations:
        return 1.0
    progress = max(iteration, 0) / rampup_iterations
    return math.exp(-5.0 * (1.0 - progress) ** 2)


def confidence_weights(confidence: torch.Tensor, valid: torch.Tensor, threshold: float) -> torch.Tensor:
    """(N,) per image: the share of its `valid` pixels whose teacher confidence (N, H, W) exceeds `threshold`,
    ClassMix's weight of the unsupervised loss (τ = 0.968 in the paper)."""
    confident = (confidence > threshold) & valid
    return confident.sum((1, 2)) / valid.sum((1, 2)).clamp(min=1)


def confident_targets(targets: torch.Tensor, confidence: torch.Tensor, threshold: float) -> torch.Tensor:
    """`targets` (N, H, W) with IGNORE_INDEX where the teacher's `confidence` is not above `threshold`."""
    return targets.masked_fill(confidence <= threshold, IGNORE_INDEX)


def classmix_masks(labels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """(N, H, W) bool: for each labelling (N, H, W), its pixels in a random half of the classes present
    (rounded up, as in ClassMix's code, so that an image of one class is pasted whole). IGNORE_INDEX is no class."""
    masks = torch.zeros_like(labels, dtype=torch.bool)
    for mask, labelling in zip(masks, labels, strict=True):
        present = labelling.unique()
        present = present[present != IGNORE_INDEX]
        order = torch.randperm(len(present), generator=generator).to(present.device)
        chosen = present[order[:math.ceil(len(present) / 2)]]
        mask[:] = torch.isin(labelling, chosen)
    return masks


def mix(masks: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """M ⊙ first + (1 - M) ⊙ second, per pixel; `masks` (N, H, W), the others (N, H, W) or (N, C, H, W)."""
    if first.dim() == masks.dim() + 1:
        masks = masks.unsqueeze(1)
    return torch.where(masks, first, second)


def mix_pairs(masks: torch.Tensor, *batches: torch.Tensor) -> list[torch.Tensor]:
    """Each batch's ClassMix of image i (its pixels under mask i) over image i + 1 (the rest), the last over the
    first: the pairs (A, B) of ClassMix's code, so that every unlabelled image is pasted once and pasted on once."""
    partners = torch.arange(1, len(masks) + 1, device=masks.device) % len(masks)
    return [mix(masks, batch, batch[partners]) for batch in batches]


def colour_jitter(image: torch.Tensor, settings: dict, generator: torch.Generator | None = None) -> torch.Tensor:
    """`image` (3, H, W) RGB in [0, 1] with brightness, contrast, saturation and hue each moved by up to its
    setting (hue in turns), with probability `settings["probability"]`, as ClassMix's strong augmentation."""
    if _uniform(0, 1, generator) >= settings["probability"]:
        return image
    image = image * _factor(settings["brightness"], generator)
    mean_gray = _gray(image).mean()
    image = (image - mean_gray) * _factor(settings["contrast"], generator) + mean_gray
    gray = _gray(image)
    image = (image - gray) * _factor(settings["saturation"], generator) + gray
    return _turn_hue(image, 2 * math.pi * _uniform(-settings["hue"], settings["hue"], generator)).clamp(0, 1)


def gaussian_blur(image: torch.Tensor, settings: dict, generator: torch.Generator | None = None) -> torch.Tensor:
    """`image` (3, H, W) blurred with probability `settings["probability"]` by a Gaussian of a random sigma in
    `settings["sigma"]`, its kernel about a tenth of the image's side (odd), as in ClassMix's code."""
    if _uniform(0, 1, generator) >= settings["probability"]:
        return image
    sigma = _uniform(*settings["sigma"], generator)
    for dim in (1, 2):
        image = _blur_along(image, dim, _odd_kernel(image.shape[dim]), sigma)
    return image


class DistributionAlignment(nn.Module):
    """ReMixMatch's distribution alignment: p ↦ normalise(p · p(y) / p̃), with p(y) the labelled pixels' class
    distribution and p̃ the mean of the teacher's probabilities on the unlabelled pixels, each a running mean over
    ReMixMatch's window of batches (a plain mean until the window fills, so that the uniform start is forgotten).
    Both are buffers: a resumed training keeps them."""

    def __init__(self, num_classes: int, window: int = ALIGNMENT_WINDOW):
        super().__init__()
        self.window = window
        self.register_buffer("labelled", torch.full((num_classes,), 1 / num_classes))
        self.register_buffer("predicted", torch.full((num_classes,), 1 / num_classes))
        self.register_buffer("labelled_batches", torch.zeros((), dtype=torch.long))
        self.register_buffer("predicted_batches", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def observe_labels(self, labels: torch.Tensor) -> None:
        """Fold the class distribution of `labels` (any shape; IGNORE_INDEX skipped) into p(y)."""
        labels = labels[labels != IGNORE_INDEX]
        if labels.numel():
            counts = torch.bincount(labels, minlength=len(self.labelled))[:len(self.labelled)]
            self._fold(self.labelled, self.labelled_batches, counts.float() / counts.sum())

    @torch.no_grad()
    def align(self, probabilities: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """`probabilities` (N, C, H, W) rescaled and renormalised per pixel, after folding their mean over the
        `valid` pixels (N, H, W) into p̃."""
        if valid.any():
            self._fold(self.predicted, self.predicted_batches, probabilities.permute(0, 2, 3, 1)[valid].mean(0))
        aligned = probabilities * (self.labelled / self.predicted.clamp(min=1e-6)).view(1, -1, 1, 1)
        return aligned / aligned.sum(1, keepdim=True).clamp(min=1e-12)

    def _fold(self, running: torch.Tensor, batches: torch.Tensor, batch_mean: torch.Tensor) -> None:
        batches += 1
        share = max(1 / int(batches), 1 / self.window)
        running.mul_(1 - share).add_(batch_mean.to(running), alpha=share)


@MODELS.register_module()
class ClassMixSegmentor(EncoderDecoder):
    """EncoderDecoder trained on a labelled batch and on ClassMix's mixes of an unlabelled one.

    ema_momentum: α, the teacher's share of itself in each update (0.99); confidence: τ; rampup_iterations:
    iterations of the sigmoid ramp-up; unsupervised_weight: λ; color_jitter, blur: the mixed images' augmentation
    (`colour_jitter`, `gaussian_blur` settings); distribution_alignment: align the teacher's probabilities
    (`DistributionAlignment`) before it labels; confidence_weighting: "image", each mixed image's loss weighted by
    its confident share (ClassMix), or "pixel", only its confident pixels counted (`confident_targets`).
    """

    def __init__(self, ema_momentum: float, confidence: float, rampup_iterations: int,
                 unsupervised_weight: float, color_jitter: dict, blur: dict, distribution_alignment: bool = False,
                 confidence_weighting: str = "image", **kwargs):
        super().__init__(**kwargs)
        self.alignment = DistributionAlignment(self.decode_head.num_classes) if distribution_alignment else None
        # mmengine's momentum is the student's share of each update: 1 - α. Its copy gets no gradient.
        self.teacher = ExponentialMovingAverage(self._student(), momentum=1 - ema_momentum)
        self.confidence = confidence
        self.confidence_weighting = confidence_weighting
        self.rampup_iterations = rampup_iterations
        self.unsupervised_weight = unsupervised_weight
        self.augmentation = dict(color_jitter=color_jitter, blur=blur)

    def train(self, mode: bool = True) -> ClassMixSegmentor:
        super().train(mode)
        # The teacher labels with its batch-norm statistics and without dropout, whatever the student does.
        self.teacher.eval()
        return self

    def update_teacher(self) -> None:
        """θ' ← α θ' + (1 - α) θ; the first update copies the student, whose weights the runner initialised or
        loaded: a checkpoint without a teacher (a standard segmenter's, the semi pipeline's warm start) leaves the
        teacher's step count at 0, so that it starts as the loaded student."""
        self.teacher.update_parameters(self._student())

    def loss(self, inputs: torch.Tensor, data_samples: list) -> dict:
        # The update before each step's loss follows the previous step's optimizer step; in the loss, it runs the
        # same in one process and inside DistributedDataParallel's forward.
        self.update_teacher()
        labelled = [index for index, sample in enumerate(data_samples) if "gt_sem_seg" in sample]
        unlabelled = [index for index, sample in enumerate(data_samples) if "gt_sem_seg" not in sample]
        labelled_samples = [data_samples[index] for index in labelled]
        if self.alignment is not None:
            self.alignment.observe_labels(torch.stack([sample.gt_sem_seg.data for sample in labelled_samples]))
        losses = super().loss(inputs[labelled], labelled_samples)
        losses.update(self.classmix_loss(inputs[unlabelled], [data_samples[index] for index in unlabelled]))
        return losses

    def classmix_loss(self, inputs: torch.Tensor, data_samples: list) -> dict:
        """λ · ramp · mean over mixed images of (their confident share × their cross-entropy on the mixed labels, or
        on the confident ones alone with "pixel" weighting: their summed cross-entropy over the image's pixels)."""
        valid = _unpadded(data_samples, inputs.shape[-2:], inputs.device)
        confidence, labels = self.teacher_predictions(inputs, valid)
        labels = labels.masked_fill(~valid, IGNORE_INDEX)
        images, targets, confidence = mix_pairs(classmix_masks(labels), inputs, labels, confidence)
        share = confidence_weights(confidence, targets != IGNORE_INDEX, self.confidence)
        if self.confidence_weighting == "pixel":
            targets = confident_targets(targets, confidence, self.confidence)
        ramp = sigmoid_rampup(MessageHub.get_current_instance().get_info("iter", 0), self.rampup_iterations)
        cross_entropy = self._pixel_cross_entropy(self.strong_augment(images), targets)
        loss = self.unsupervised_weight * ramp * (share * cross_entropy).mean()
        return dict(loss_classmix=loss, classmix_confident_share=share.mean(),
                    classmix_rampup=torch.tensor(ramp, device=inputs.device))

    @torch.no_grad()
    def teacher_predictions(self, inputs: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(confidence, labels), each (N, H, W): the teacher's top softmax probability and its class, aligned
        where `distribution_alignment` is on, from the statistics of the `valid` pixels (N, H, W)."""
        teacher = self.teacher.module
        features = teacher["backbone"](inputs)
        if "neck" in teacher:
            features = teacher["neck"](features)
        logits = resize(teacher["decode_head"](features), inputs.shape[-2:], mode="bilinear",
                        align_corners=self.align_corners)
        probabilities = logits.float().softmax(1)
        if self.alignment is not None:
            probabilities = self.alignment.align(probabilities, valid)
        return probabilities.max(1)

    def strong_augment(self, images: torch.Tensor) -> torch.Tensor:
        """Colour jitter and Gaussian blur on each normalised image, in RGB pixels in [0, 1]."""
        preprocessor = self.data_preprocessor
        pixels = (images * preprocessor.std + preprocessor.mean) / 255
        augmented = torch.stack([gaussian_blur(colour_jitter(image, self.augmentation["color_jitter"]),
                                               self.augmentation["blur"]) for image in pixels])
        return (augmented * 255 - preprocessor.mean) / preprocessor.std

    def _pixel_cross_entropy(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(N,) the student's cross-entropy on `targets`, averaged over each image's labelled pixels."""
        logits = resize(self.decode_head(self.extract_feat(images)), targets.shape[-2:], mode="bilinear",
                        align_corners=self.align_corners)
        per_pixel = F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX, reduction="none")
        labelled = targets != IGNORE_INDEX
        return per_pixel.sum((1, 2)) / labelled.sum((1, 2)).clamp(min=1)

    def _student(self) -> nn.ModuleDict:
        """The student's networks, named as the teacher's copy names them."""
        parts = dict(backbone=self.backbone, decode_head=self.decode_head)
        if self.with_neck:
            parts["neck"] = self.neck
        return nn.ModuleDict(parts)


def _unpadded(data_samples: list, size: tuple[int, int], device: torch.device) -> torch.Tensor:
    """(N, H, W) bool: each sample's image before the preprocessor padded it (at the bottom and right) to `size`."""
    valid = torch.zeros(len(data_samples), *size, dtype=torch.bool, device=device)
    for mask, sample in zip(valid, data_samples, strict=True):
        height, width = sample.metainfo["img_shape"][:2]
        mask[:height, :width] = True
    return valid


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _factor(strength: float, generator: torch.Generator | None) -> float:
    return _uniform(1 - strength, 1 + strength, generator)


def _gray(image: torch.Tensor) -> torch.Tensor:
    return torch.einsum("c,chw->hw", LUMA.to(image), image)


def _turn_hue(image: torch.Tensor, angle: float) -> torch.Tensor:
    cos, sin = math.cos(angle), math.sin(angle)
    turn = torch.tensor([[1, 0, 0], [0, cos, -sin], [0, sin, cos]], dtype=image.dtype, device=image.device)
    to_yiq = RGB_TO_YIQ.to(image)
    matrix = torch.linalg.inv(to_yiq) @ turn @ to_yiq
    return torch.einsum("dc,chw->dhw", matrix, image)


def _odd_kernel(side: int) -> int:
    size = max(3, math.ceil(0.1 * side))
    return size if size % 2 else size + 1


def _blur_along(image: torch.Tensor, dim: int, size: int, sigma: float) -> torch.Tensor:
    offsets = torch.arange(size, dtype=image.dtype, device=image.device) - size // 2
    kernel = torch.exp(-offsets ** 2 / (2 * sigma ** 2))
    kernel = (kernel / kernel.sum()).view(1, 1, *((1, size) if dim == 2 else (size, 1)))
    padding = (size // 2, size // 2, 0, 0) if dim == 2 else (0, 0, size // 2, size // 2)
    padded = F.pad(image.unsqueeze(1), padding, mode="reflect")
    return F.conv2d(padded, kernel).squeeze(1)
