"""Saliency guidance (Oh et al., CVPR'17): a salient segment takes the class of the CAM seed it holds."""
import io

import numpy as np
import pytest
from PIL import Image

from tests.wsss.test_refine import CAT, iou, refinement
from wsseg.classes import ClassList
from wsseg.data import make_synthetic_voc
from wsseg.steps.refine import default_config, refine_with_crf
from wsseg.store import open_store
from wsseg.wsss.refinement import refine_image
from wsseg.wsss.saliency_guidance import guided_by_saliency, segment_owners

DOG = 12
OBJECT = (slice(20, 100), slice(10, 70))      # a cat's body
KEY_PART = (slice(30, 45), slice(25, 40))     # its head: where the CAM fires
DISTRACTOR = (slice(40, 90), slice(90, 120))  # a salient shape that is no labelled class


def scene():
    """A muted image with a saturated object and a saturated distractor; a CAM on the object's key part only."""
    rng = np.random.default_rng(0)
    image = np.full((128, 128, 3), (110, 120, 115), np.float32)
    image[OBJECT] = (200, 40, 40)
    image[DISTRACTOR] = (40, 60, 210)
    image = np.clip(image + rng.normal(0, 5, image.shape), 0, 255).astype(np.uint8)
    rows, cols = np.mgrid[:128, :128]
    cam = np.exp(-((rows - 37) ** 2 + (cols - 32) ** 2) / (2 * 8 ** 2)).astype(np.float32)
    saliency = np.zeros((128, 128), np.float32)
    saliency[OBJECT] = saliency[DISTRACTOR] = 0.9
    truth = np.zeros((128, 128), bool)
    truth[OBJECT] = True
    return image, cam[None], saliency, truth


def guided(saliency_guidance: bool):
    return refinement(0.5, 0.25, saliency_guidance=saliency_guidance)


def test_the_salient_segment_holding_the_seed_becomes_the_class_and_the_seedless_one_stays_background():
    image, cams, saliency, truth = scene()
    mask = refine_image(image, cams, np.array([CAT]), guided(True), saliency)
    assert iou(mask == CAT, truth) > 0.9
    assert not (mask[DISTRACTOR] == CAT).any()


def test_without_saliency_the_mask_stays_on_the_key_part():
    image, cams, saliency, truth = scene()
    mask = refine_image(image, cams, np.array([CAT]), guided(False))
    assert iou(mask == CAT, truth) < 0.5


def test_each_segment_goes_to_the_class_whose_seed_it_holds_most_of():
    segments = np.array([[1, 1, 0, 2, 2, 3]])
    scores = np.array([[[1.5, 1.2, 0, 0.5, 0.5, 0]],     # class slot 0: seed in segment 1
                       [[0.2, 1.1, 0, 3.0, 0.2, 0]]])    # class slot 1: seed in segments 1 (less) and 2
    assert segment_owners(scores, segments, 3).tolist() == [0, 1, -1]


def test_guided_scores_raise_only_the_owner_inside_its_segment():
    scores = np.ones((3, 1, 6), np.float32) * np.array([1.0, 0.2, 0.2])[:, None, None]
    scores[1, 0, 0] = 2.0                                  # class slot 0 has a seed at pixel 0
    saliency = np.array([[0.9, 0.9, 0.9, 0.1, 0.9, 0.9]], np.float32)
    extended = guided_by_saliency(scores, saliency)
    assert (extended[1, 0, :3] > 1).all() and (extended[1, 0, 3:] == 0.2).all()
    assert (extended[2] == scores[2]).all()


@pytest.fixture(scope="module")
def dataset_with_cams(tmp_path_factory):
    root = make_synthetic_voc(tmp_path_factory.mktemp("voc"), train=3, val=0, seed=4, size=64)
    cams = open_store(tmp_path_factory.mktemp("cams"))
    from wsseg.data import load_samples

    for sample in load_samples(root, "train", ClassList()):
        maps = np.random.default_rng(0).random((len(sample.labels), 64, 64)).astype(np.float32)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, cams=maps.astype(np.float16), labels=np.array(sample.labels, np.int16))
        cams.put_bytes(f"{sample.image_id}.npz", buffer.getvalue())
    return root, cams


def test_the_step_reads_user_saliency_maps_and_counts_the_builtin_fallbacks(dataset_with_cams, tmp_path):
    root, cams = dataset_with_cams
    from wsseg.data import load_samples

    samples = load_samples(root, "train", ClassList())
    folder = tmp_path / "saliency"
    folder.mkdir()
    Image.fromarray(np.full((64, 64), 200, np.uint8)).save(folder / f"{samples[0].image_id}.png")
    settings = {**default_config("cpu-tiny"), "processes": 1, "saliency_guidance": True,
                "saliency": {"source": str(folder), "builtin": "frequency_tuned", "fallback": True}}
    summary = refine_with_crf(root, cams, open_store(tmp_path / "out"), {"crf": settings, "working_size": None},
                              ClassList())
    assert summary["saliency_user"] == 1 and summary["saliency_builtin_fallback"] == len(samples) - 1
