"""The PyTorch dense CRF against pydensecrf, the reference: the same marginals, label maps and pseudo masks."""
import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from wsseg.classes import IGNORE_INDEX, ClassList
from wsseg.data import load_samples, make_synthetic_voc, read_image, read_mask
from wsseg.errors import ConfigError
from wsseg.evaluation.metrics import ConfusionMatrix
from wsseg.steps.refine import default_config
from wsseg.wsss.crf import CrfParams, crf_marginals, resolve_backend
from wsseg.wsss.crf_torch import crf_marginals_batch
from wsseg.wsss.refinement import Refinement, refine_image
from wsseg.wsss.thresholds import PassLevels


def two_region_scene(height=72, width=96, seed=0):
    """A noisy bright disc on a dark ground and blurry, offset scores for [background, disc]: the CRF has to
    move the boundary to the disc's edge."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:height, :width]
    disc = (rows - height / 2) ** 2 + (cols - width / 2) ** 2 < (height / 3) ** 2
    image = np.clip(np.where(disc[..., None], 200.0, 40.0) + rng.normal(0, 10, (height, width, 3)), 0, 255)
    blob = gaussian_filter(np.roll(disc, 6, axis=1).astype(np.float32), 6)
    return image.astype(np.uint8), np.stack([1 - blob, blob]).astype(np.float32)


def test_label_maps_agree_with_pydensecrf_on_a_simple_scene():
    image, scores = two_region_scene()
    params = CrfParams()
    reference = crf_marginals(image, scores, params)
    ported = crf_marginals_batch([image], [scores], params, device="cpu")[0]
    assert ported.shape == reference.shape and ported.dtype == np.float32
    assert (ported.argmax(0) == reference.argmax(0)).mean() >= 0.99
    # Same algorithm, same lattice: only float rounding separates the marginals (3e-5 when written).
    np.testing.assert_allclose(ported, reference, atol=1e-3)
    # The CRF moved the boundary: its labelling is not the scores' own.
    assert (reference.argmax(0) != scores.argmax(0)).sum() > 100


def test_a_batch_with_different_label_counts_gives_each_image_its_own_marginals():
    first, first_scores = two_region_scene(seed=1)
    second, second_scores = two_region_scene(seed=2)
    third_scores = np.concatenate([second_scores, gaussian_filter(second_scores[:1], 3)])  # three labels
    params = CrfParams(iterations=5)
    batched = crf_marginals_batch([first, second, second], [first_scores, second_scores, third_scores], params,
                                  device="cpu")
    assert [len(marginals) for marginals in batched] == [2, 2, 3]
    for image, scores, marginals in zip([first, second, second], [first_scores, second_scores, third_scores],
                                        batched, strict=True):
        np.testing.assert_allclose(marginals, crf_marginals_batch([image], [scores], params, device="cpu")[0],
                                   atol=1e-5)


def test_a_batch_of_images_of_different_sizes_is_refused():
    small, small_scores = two_region_scene(48, 64)
    large, large_scores = two_region_scene()
    with pytest.raises(ValueError, match="one size"):
        crf_marginals_batch([small, large], [small_scores, large_scores], CrfParams(), device="cpu")


@pytest.fixture(scope="module")
def blurred_truth_cams(tmp_path_factory):
    """Eight synthetic 96-px train images with CAMs made by blurring each labelled class's ground truth."""
    root = make_synthetic_voc(tmp_path_factory.mktemp("voc"), train=8, val=0, seed=5, size=96)
    scenes = []
    for sample in load_samples(root, "train", ClassList()):
        truth = read_mask(sample.mask_path)
        cams = np.stack([gaussian_filter((truth == label).astype(np.float32), 5) for label in sample.labels])
        cams /= cams.max(axis=(1, 2), keepdims=True)
        scenes.append((read_image(sample.image_path), cams, np.array(sample.labels), truth))
    return scenes


def pseudo_mask_miou(scenes, backend: str) -> tuple[float, list[np.ndarray]]:
    levels = PassLevels(dict.fromkeys(range(1, 21), 0.4), dict.fromkeys(range(1, 21), 0.1), "test")
    refinement = Refinement({**default_config("cpu"), "backend": backend}, levels, working_size=None)
    matrix, masks = ConfusionMatrix(21), []
    for image, cams, labels, truth in scenes:
        masks.append(refine_image(image, cams, labels, refinement))
        matrix.update(np.where(masks[-1] == IGNORE_INDEX, 0, masks[-1]), truth)
    return 100 * matrix.miou(), masks


def test_pseudo_masks_from_the_torch_crf_are_within_half_a_point_of_pydensecrf(blurred_truth_cams):
    reference, reference_masks = pseudo_mask_miou(blurred_truth_cams, "pydensecrf")
    ported, ported_masks = pseudo_mask_miou(blurred_truth_cams, "torch")
    assert abs(ported - reference) <= 0.5, (ported, reference)
    assert reference > 50  # the CRF did its work on these CAMs
    agreement = np.mean([(a == b).mean() for a, b in zip(ported_masks, reference_masks, strict=True)])
    assert agreement >= 0.99


def test_auto_backend_is_torch_only_where_cuda_is():
    assert resolve_backend("auto") == ("torch" if torch.cuda.is_available() else "pydensecrf")
    assert resolve_backend("pydensecrf") == "pydensecrf"
    with pytest.raises(ConfigError, match="crf.backend"):
        resolve_backend("densecrf")
