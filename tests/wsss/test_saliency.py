"""Saliency maps: the built-in methods on scenes with a known salient region, user PNGs in every mode, and
`SaliencySource` reading a folder or an S3 store, falling back to a built-in map where one is missing."""
import io
import pickle

import numpy as np
import pytest
from PIL import Image

from wsseg.classes import IGNORE_INDEX, ClassList
from wsseg.data import load_samples, make_synthetic_voc, read_image, read_mask
from wsseg.errors import ConfigError, DataError
from wsseg.store import open_store
from wsseg.wsss.saliency import (
    BUILTIN_SALIENCY,
    SaliencySource,
    default_config,
    frequency_tuned,
    read_saliency_png,
    spectral_residual,
)

METHODS = sorted(BUILTIN_SALIENCY)


def disc_scene(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A saturated red disc on a muted grey-blue background that brightens smoothly left to right; returns
    the image and the disc's mask."""
    rows, cols = np.mgrid[:height, :width]
    ramp = (cols / width)[..., None]
    image = np.array([120, 125, 135]) * (1 - ramp) + np.array([150, 145, 140]) * ramp
    disc = (rows - 0.4 * height) ** 2 + (cols - 0.6 * width) ** 2 < (0.18 * min(height, width)) ** 2
    image[disc] = (220, 30, 40)
    return image.astype(np.uint8), disc


def grating_scene(height=192, width=256, period=12, radius=16) -> tuple[np.ndarray, np.ndarray]:
    """A vertical sine grating with one small patch of the same grating turned horizontal: the patch differs
    from the texture only in orientation, so neither colour nor brightness gives it away."""
    rows, cols = np.mgrid[:height, :width]
    patch = (rows - 70) ** 2 + (cols - 170) ** 2 < radius**2
    texture = np.where(patch, np.sin(2 * np.pi * rows / period), np.sin(2 * np.pi * cols / period))
    grey = (128 + 60 * texture).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2), patch


def encode(picture: Image.Image, format="PNG") -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format=format)
    return buffer.getvalue()


def grey_png(levels: np.ndarray) -> bytes:
    return encode(Image.fromarray(levels.astype(np.uint8), mode="L"))


def source_config(source, fallback=True, builtin="frequency_tuned") -> dict:
    return {**default_config(), "source": str(source), "fallback": fallback, "builtin": builtin}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shape", [(96, 160), (150, 97)])
def test_builtin_saliency_is_higher_on_a_saturated_disc_than_on_the_muted_background(method, shape):
    image, disc = disc_scene(*shape)

    saliency = BUILTIN_SALIENCY[method](image)

    assert saliency.shape == shape and saliency.dtype == np.float32
    assert saliency[disc].mean() > saliency[~disc].mean() + 0.25


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shape", [(40, 30), (17, 300), (301, 19)])
def test_builtin_saliency_spans_the_unit_range_at_the_image_size(method, shape):
    image, _ = disc_scene(*shape)

    saliency = BUILTIN_SALIENCY[method](image)

    assert saliency.shape == shape and saliency.dtype == np.float32
    assert saliency.min() == 0.0 and saliency.max() == 1.0


@pytest.mark.parametrize("method", METHODS)
def test_builtin_saliency_of_a_flat_image_is_zero_everywhere(method):
    saliency = BUILTIN_SALIENCY[method](np.full((50, 70, 3), 90, dtype=np.uint8))

    assert saliency.shape == (50, 70) and saliency.dtype == np.float32
    assert not saliency.any()


def test_spectral_residual_singles_out_an_odd_patch_in_a_repeating_texture():
    image, patch = grating_scene()

    saliency = spectral_residual(image)

    assert saliency[patch].mean() > 0.5
    assert saliency[patch].mean() > 5 * saliency[~patch].mean()


def test_frequency_tuned_saliency_covers_the_objects_of_the_synthetic_dataset(tmp_path):
    root = make_synthetic_voc(tmp_path, train=20, val=0, seed=0, size=128)
    inside, outside = [], []
    for sample in load_samples(root, "train", ClassList()):
        saliency, mask = frequency_tuned(read_image(sample.image_path)), read_mask(sample.mask_path)
        inside.append(saliency[(mask > 0) & (mask != IGNORE_INDEX)].mean())
        outside.append(saliency[mask == 0].mean())

    # Measured 0.42 inside and 0.14 outside: the scenes hold unlabelled shapes that are salient too.
    assert np.mean(inside) > np.mean(outside) + 0.15


@pytest.mark.parametrize("mode, pixels", [
    ("L", np.array([[0, 128, 255]], dtype=np.uint8)),
    ("RGB", np.array([[[0, 0, 0], [128, 128, 128], [255, 255, 255]]], dtype=np.uint8)),
    ("RGBA", np.array([[[0, 0, 0, 255], [128, 128, 128, 0], [255, 255, 255, 90]]], dtype=np.uint8)),
])
def test_a_png_saliency_map_reads_as_its_grey_level_over_255(mode, pixels):
    data = encode(Image.fromarray(pixels, mode=mode))

    saliency = read_saliency_png(data, (1, 3), "maps/a.png")

    assert saliency.dtype == np.float32
    np.testing.assert_allclose(saliency, [[0.0, 128 / 255, 1.0]], atol=1e-6)


def test_a_palette_saliency_map_reads_through_its_palette_colours():
    picture = Image.fromarray(np.array([[0, 2, 1]], dtype=np.uint8), mode="P")
    picture.putpalette([0, 0, 0, 255, 255, 255, 128, 128, 128])

    saliency = read_saliency_png(encode(picture), (1, 3), "maps/a.png")

    np.testing.assert_allclose(saliency, [[0.0, 128 / 255, 1.0]], atol=1e-6)


def test_a_16_bit_saliency_map_reads_as_its_level_over_65535():
    data = encode(Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.uint16)))
    assert Image.open(io.BytesIO(data)).mode == "I;16"

    saliency = read_saliency_png(data, (1, 3), "maps/a.png")

    np.testing.assert_allclose(saliency, [[0.0, 32768 / 65535, 1.0]], atol=1e-6)


def test_a_jpeg_saliency_map_reads_as_its_grey_levels():
    levels = np.zeros((32, 48), dtype=np.uint8)
    levels[:, 24:] = 255

    saliency = read_saliency_png(encode(Image.fromarray(levels), "JPEG"), (32, 48), "maps/a.jpg")

    np.testing.assert_allclose(saliency[:, :20], 0.0, atol=0.02)
    np.testing.assert_allclose(saliency[:, 28:], 1.0, atol=0.02)


def test_a_saliency_map_of_another_size_than_its_image_names_the_file_and_both_sizes():
    with pytest.raises(DataError) as caught:
        read_saliency_png(grey_png(np.zeros((30, 40))), (30, 50), "maps/img7.png")

    assert caught.value.path == "maps/img7.png"
    assert "40x30" in caught.value.problem and "50x30" in caught.value.problem


def truncated_png() -> bytes:
    data = grey_png(np.random.default_rng(0).integers(0, 256, (30, 40)))
    return data[: len(data) // 2]


@pytest.mark.parametrize("data", [truncated_png(), b"not an image at all"], ids=["truncated", "garbage"])
def test_an_undecodable_saliency_map_names_the_file(data):
    with pytest.raises(DataError, match="cannot decode") as caught:
        read_saliency_png(data, (30, 40), "maps/img7.png")

    assert caught.value.path == "maps/img7.png"
    assert " object at 0x" not in str(caught.value)


def test_saliency_source_reads_user_maps_from_a_folder(tmp_path):
    image = np.zeros((2, 3, 3), dtype=np.uint8)
    (tmp_path / "cat.png").write_bytes(grey_png(np.array([[0, 255, 51], [102, 0, 255]])))
    source = SaliencySource(source_config(tmp_path))

    saliency, origin = source.saliency("cat", image)

    np.testing.assert_allclose(saliency, [[0.0, 1.0, 0.2], [0.4, 0.0, 1.0]], atol=1e-6)
    assert origin == "user"


def test_saliency_source_reads_user_maps_from_s3_and_survives_pickling(s3_env):
    image, _ = disc_scene(24, 32)
    levels = np.arange(24 * 32).reshape(24, 32) % 256
    open_store(s3_env).put_bytes("maps/dog.png", grey_png(levels))
    source = SaliencySource(source_config(f"{s3_env}/maps"))

    copy = pickle.loads(pickle.dumps(source))

    for reader in (source, copy):
        user_map, user_origin = reader.saliency("dog", image)
        fallback_map, fallback_origin = reader.saliency("cat", image)
        np.testing.assert_allclose(user_map, levels / 255, atol=1e-6)
        np.testing.assert_array_equal(fallback_map, frequency_tuned(image))
        assert (user_origin, fallback_origin) == ("user", "builtin_fallback")


def test_saliency_source_falls_back_to_the_builtin_map_and_says_so(tmp_path):
    image, _ = disc_scene(40, 60)
    (tmp_path / "cat.png").write_bytes(grey_png(np.zeros((40, 60))))
    source = SaliencySource(source_config(tmp_path, builtin="spectral_residual"))

    saliency, origin = source.saliency("dog", image)

    np.testing.assert_array_equal(saliency, spectral_residual(image))
    assert origin == "builtin_fallback"


def test_saliency_source_without_fallback_names_the_missing_map_and_the_option(tmp_path):
    source = SaliencySource(source_config(tmp_path, fallback=False))

    with pytest.raises(DataError, match="fallback") as caught:
        source.saliency("dog", np.zeros((8, 8, 3), dtype=np.uint8))

    assert caught.value.path.endswith("/dog.png")


def test_saliency_source_rejects_a_user_map_of_the_wrong_size_naming_it(tmp_path):
    (tmp_path / "cat.png").write_bytes(grey_png(np.zeros((10, 10))))
    source = SaliencySource(source_config(tmp_path))

    with pytest.raises(DataError, match="10x10") as caught:
        source.saliency("cat", np.zeros((12, 10, 3), dtype=np.uint8))

    assert caught.value.path.endswith("/cat.png")


@pytest.mark.parametrize("method", METHODS)
def test_saliency_source_computes_the_named_builtin_map_without_a_source(method):
    image, _ = disc_scene(40, 60)
    source = SaliencySource({**default_config(), "builtin": method})

    saliency, origin = source.saliency("dog", image)

    np.testing.assert_array_equal(saliency, BUILTIN_SALIENCY[method](image))
    assert origin == "builtin"


def test_an_unknown_builtin_method_is_a_config_error_listing_the_choices():
    with pytest.raises(ConfigError, match="spectral_residual, frequency_tuned"):
        SaliencySource({**default_config(), "builtin": "itti_koch"})


def test_a_missing_source_folder_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no such folder"):
        SaliencySource(source_config(tmp_path / "salency"))
