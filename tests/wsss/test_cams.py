"""CAM methods on a real mmseg-built CAM classifier: exact identities from the CAM and Grad-CAM papers."""
import pytest
import torch

from tests.wsss.test_classifier import tiny_classifier
from wsseg.steps.mine_cams import size_batches
from wsseg.wsss.cams import CAM, CAM_METHODS, NO_TARGET, AdvCAM, GradCAM
from wsseg.wsss.cams.augment import multiscale_maps

TARGETS = torch.tensor([[2, 7, NO_TARGET], [0, 4, 19]])


@pytest.fixture(scope="module")
def model_and_images():
    torch.manual_seed(0)
    model = tiny_classifier().eval()
    images = torch.rand(2, 3, 48, 64) * 255
    return model, images


def test_cam_is_the_classifier_weights_applied_to_each_feature_vector(model_and_images):
    model, images = model_and_images
    features = model.features(images)
    weights = model.classifier.weight[:, :, 0, 0]                             # w_{c,d}
    explicit = torch.einsum("kd,ndhw->nkhw", weights, features)               # Σ_d w_{c,d} F_d
    maps = CAM(model).class_maps(images, TARGETS)
    for image in range(2):
        for slot, target in enumerate(TARGETS[image]):
            if target != NO_TARGET:
                torch.testing.assert_close(maps[image, slot], explicit[image, target])


def test_global_average_of_the_cam_before_relu_is_the_logit(model_and_images):
    model, images = model_and_images
    with torch.no_grad():
        pooled = model.class_activation(model.features(images)).mean(dim=(2, 3))
        torch.testing.assert_close(pooled, model(images), rtol=1e-4, atol=1e-5)


def test_grad_cam_of_a_gap_linear_head_is_cam_over_the_feature_area(model_and_images):
    # For s_c = Σ_d w_{c,d} mean_i F_d(i), ∂s_c/∂F_d(i) = w_{c,d}/(h·w) at every i, so α_{c,d} = w_{c,d}/(h·w).
    model, images = model_and_images
    with torch.no_grad():
        features = model.features(images)
    area = features.shape[2] * features.shape[3]
    grad_maps = GradCAM(model).class_maps(images, TARGETS)
    cam_maps = CAM(model).class_maps(images, TARGETS)
    valid = TARGETS != NO_TARGET
    torch.testing.assert_close(grad_maps[valid] * area, cam_maps[valid], rtol=1e-4, atol=1e-5)
    assert not grad_maps[~valid].any()


@pytest.mark.parametrize("name", sorted(CAM_METHODS))
def test_maps_are_at_input_size_with_peak_one_and_padded_slots_empty(model_and_images, name):
    model, images = model_and_images
    with torch.no_grad():
        maps = CAM_METHODS[name](model)(images, TARGETS)
    assert maps.shape == (2, 3, 48, 64)
    assert maps.min() >= 0
    peaks = maps.amax(dim=(2, 3))
    valid = TARGETS != NO_TARGET
    torch.testing.assert_close(peaks[valid], torch.ones(int(valid.sum())))
    assert peaks[~valid].eq(0).all()


def test_multiscale_flip_maps_of_a_mirrored_image_are_the_mirrored_maps(model_and_images):
    model, images = model_and_images
    with torch.no_grad():
        maps = multiscale_maps(CAM(model), images, TARGETS, scales=[1.0, 0.5, 1.5], flip=True)
        mirrored = multiscale_maps(CAM(model), images.flip(-1), TARGETS, scales=[1.0, 0.5, 1.5], flip=True)
        unflipped_only = multiscale_maps(CAM(model), images.flip(-1), TARGETS, scales=[1.0], flip=False)
    assert maps.shape == (2, 3, 48, 64)
    torch.testing.assert_close(mirrored, maps.flip(-1), rtol=1e-4, atol=1e-4)
    # Without the flip half, the strided network is not mirror-symmetric: the check above has teeth.
    assert not torch.allclose(unflipped_only, maps.flip(-1), atol=1e-2)


def test_size_batches_groups_equal_sizes_and_pulls_lazily():
    shapes = [(4, 6, 3)] * 5 + [(6, 4, 3)] * 2 + [(4, 6, 3), (5, 5, 3)] * 4
    pulled = []

    def items():
        for index, shape in enumerate(shapes):
            pulled.append(index)
            yield index, torch.zeros(shape).numpy()

    emitted = []
    for batch in size_batches(items(), batch_size=3, max_pending=5):
        assert len({image.shape for _, image in batch}) == 1
        assert len(batch) in (1, 2, 3)
        emitted.extend(index for index, _ in batch)
        assert len(pulled) - len(emitted) <= 5, "more images waiting than max_pending"
    assert sorted(emitted) == list(range(len(shapes)))


class ColourMaps(torch.nn.Module):
    """Class maps linear in the pixels' colour, red for class 0 and green for class 1, so that what a climb does
    to the image shows in the maps."""

    std = torch.tensor(58.0)

    def localization_maps(self, images: torch.Tensor) -> torch.Tensor:
        return torch.stack([images[:, 0], images[:, 1]], dim=1) / 255


def red_object_and_its_faint_body():
    """A strongly red part and a faintly red body, side by side on black."""
    image = torch.zeros(1, 3, 8, 16)
    image[:, 0, :, :4] = 200.0
    image[:, 0, :, 4:10] = 40.0
    return image


def body_over_part(method, image) -> float:
    maps = method(image, torch.tensor([[0]]))[0, 0]
    return float(maps[:, 4:10].mean() / maps[:, :4].mean())


def test_adversarial_climbing_lifts_the_faint_body_towards_the_part():
    image = red_object_and_its_faint_body()
    plain = body_over_part(CAM(ColourMaps()), image)
    climbed = body_over_part(AdvCAM(ColourMaps()), image)
    assert plain == pytest.approx(0.2)
    assert climbed > plain + 0.1
    assert body_over_part(AdvCAM(ColourMaps(), steps=0), image) == pytest.approx(plain)


def test_the_restriction_holds_back_the_regions_already_strong():
    # The maps are summed over the climb's steps before normalising: their mean over the steps is where the part
    # stood on average, which the restriction keeps at its start and an unrestricted climb lets rise.
    image, target = red_object_and_its_faint_body(), torch.tensor([[0]])
    start = 200.0 / 255

    def part_over_the_climb(method):
        return float(method.rectified_maps(image, target)[0, 0, :, :4].mean()) / (method.steps + 1)

    assert part_over_the_climb(AdvCAM(ColourMaps())) == pytest.approx(start, rel=0.05)
    assert part_over_the_climb(AdvCAM(ColourMaps(), restriction=0.0)) > start * 1.2
