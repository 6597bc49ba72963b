"""train-segmenter and segmenter inference on the tiny synthetic VOC set: real mmseg, real Runner, stores on
tmp dirs (and a moto S3 server for the dataset). Torch runs on one thread: the test box is shared, and
OpenMP threads spinning against other processes make a step several times slower than one thread."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from wsseg.classes import IGNORE_INDEX, voc_palette
from wsseg.config import default_config
from wsseg.data import load_samples, read_image, read_mask
from wsseg.errors import ConfigError, DataError
from wsseg.store import open_store

# Several threads spin against the other processes of a 2-core machine and slow each step several times.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_config(**segmenter) -> dict:
    config = default_config("cpu-tiny")
    config["segmenter"].update(segmenter)
    return config


def write_pseudo_masks(store, data_root, classes, uncertain_rows: int = 8) -> dict[str, np.ndarray]:
    """Ground truth with the top rows marked uncertain, stored as palette PNGs the way refine writes them."""
    written = {}
    for sample in load_samples(data_root, "train", classes):
        mask = read_mask(sample.mask_path).copy()
        mask[:uncertain_rows] = IGNORE_INDEX
        image = Image.fromarray(mask, mode="P")
        image.putpalette(voc_palette())
        with store.open_write(f"{sample.image_id}.png") as file:
            image.save(file, format="PNG")
        written[sample.image_id] = mask
    return written


@pytest.fixture(scope="module")
def pseudo_masks(tiny_voc, classes, tmp_path_factory):
    store = open_store(tmp_path_factory.mktemp("pseudo_masks"))
    write_pseudo_masks(store, tiny_voc, classes)
    return store


@pytest.fixture(scope="module")
def trained(tiny_voc, pseudo_masks, classes, tmp_path_factory):
    """A cpu-tiny segmenter trained on the pseudo masks: (out store, summary)."""
    from wsseg.steps.train_segmenter import train_segmenter

    out = open_store(tmp_path_factory.mktemp("segmenter"))
    return out, train_segmenter(tiny_voc, pseudo_masks, out, tiny_config(), classes)


def build_dataset(data_root, classes, mask_store, strict=False, pipeline=None, **options):
    from mmseg.registry import DATASETS
    from mmseg.utils import register_all_modules

    import wsseg.segmenter.dataset  # noqa: F401
    from wsseg.segmenter.configs import after_loading_masks, metainfo
    from wsseg.segmenter.store_files import STORE_BACKEND_ARGS

    register_all_modules()
    pipeline = pipeline or after_loading_masks([dict(type="LoadImageFromFile", backend_args=STORE_BACKEND_ARGS),
                                                dict(type="LoadAnnotations", backend_args=STORE_BACKEND_ARGS),
                                                dict(type="PackSegInputs")], "CheckMask")
    return DATASETS.build(dict(type="WssegDataset", dataset_root=str(data_root), split="train",
                               mask_store=mask_store, strict=strict,
                               metainfo=metainfo(classes), pipeline=pipeline, **options))


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_dataset_reads_pseudo_masks_from_the_store_with_255_where_uncertain(
        backend, tiny_voc, classes, tmp_path, request):
    uri = request.getfixturevalue("s3_env") if backend == "s3" else str(tmp_path / "masks")
    written = write_pseudo_masks(open_store(uri), tiny_voc, classes)
    dataset = build_dataset(tiny_voc, classes, uri)
    assert len(dataset) == len(written)
    for index in (0, len(dataset) - 1):
        item = dataset[index]
        image_id = item["data_samples"].img_path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        labels = item["data_samples"].gt_sem_seg.data[0].numpy()
        np.testing.assert_array_equal(labels, written[image_id])
        assert (labels[:8] == IGNORE_INDEX).all()
    assert dataset.metainfo["classes"] == classes.names


def test_dataset_without_a_store_yields_the_ground_truth(tiny_voc, classes, tmp_path):
    dataset = build_dataset(tiny_voc, classes, None)
    sample = load_samples(tiny_voc, "train", classes)[0]
    labels = dataset[0]["data_samples"].gt_sem_seg.data[0].numpy()
    np.testing.assert_array_equal(labels, read_mask(sample.mask_path))


def test_dataset_skips_and_records_missing_masks_and_corrupt_images_or_raises_when_strict(
        tiny_voc, classes, pseudo_masks, tmp_path):
    data_root = shutil.copytree(tiny_voc, tmp_path / "voc")
    samples = load_samples(data_root, "train", classes)
    samples[0].image_path.write_bytes(samples[0].image_path.read_bytes()[:100])
    masks = open_store(tmp_path / "masks")
    for key in pseudo_masks.list():
        masks.put_bytes(key, pseudo_masks.get_bytes(key))
    masks.delete(f"{samples[1].image_id}.png")
    skips = open_store(tmp_path / "skipped")

    dataset = build_dataset(data_root, classes, masks.uri, skip_store=skips.uri)
    # The missing mask is known from the listing; the corrupt image when a batch fetches it, which then gets another.
    assert list(dataset.skipped) == [samples[1].image_id] and len(dataset) == len(samples) - 1
    fetched = [dataset[index]["data_samples"].img_path for index in range(len(dataset))]
    assert str(samples[0].image_path) not in fetched and len(fetched) == len(dataset)
    assert sorted(dataset.skipped) == sorted([samples[0].image_id, samples[1].image_id])
    assert sorted(skips.list()) == sorted(f"{sample.image_id}.txt" for sample in samples[:2])
    with pytest.raises(DataError, match=f"{samples[1].image_id}.png: no pseudo mask"):
        build_dataset(data_root, classes, masks.uri, strict=True)
    masks.put_bytes(f"{samples[1].image_id}.png", pseudo_masks.get_bytes(f"{samples[1].image_id}.png"))
    strict = build_dataset(data_root, classes, masks.uri, strict=True)
    with pytest.raises(DataError, match=samples[0].image_id):
        for index in range(len(strict)):
            strict[index]


def test_a_validation_set_checks_every_pair_before_scoring(tiny_voc, classes, tmp_path):
    data_root = shutil.copytree(tiny_voc, tmp_path / "voc")
    samples = load_samples(data_root, "train", classes)
    samples[0].image_path.write_bytes(samples[0].image_path.read_bytes()[:100])
    dataset = build_dataset(data_root, classes, None, test_mode=True)
    assert list(dataset.skipped) == [samples[0].image_id] and len(dataset) == len(samples) - 1
    with pytest.raises(DataError, match=samples[0].image_id):
        build_dataset(data_root, classes, None, strict=True, test_mode=True)


def test_dataset_rejects_a_mask_of_the_wrong_size_when_a_batch_fetches_it(tiny_voc, classes, pseudo_masks,
                                                                          tmp_path):
    sample = load_samples(tiny_voc, "train", classes)[0]
    masks = open_store(tmp_path / "masks")
    for key in pseudo_masks.list():
        masks.put_bytes(key, pseudo_masks.get_bytes(key))
    with masks.open_write(f"{sample.image_id}.png") as file:
        Image.fromarray(np.zeros((10, 10), np.uint8), mode="L").save(file, format="PNG")
    dataset = build_dataset(tiny_voc, classes, masks.uri, strict=True)
    with pytest.raises(DataError, match="mask is 10x10"):
        dataset[0]


def test_building_a_training_set_in_a_store_reads_no_image(tiny_voc, classes, pseudo_masks, s3_env):
    from wsseg.store.traffic import since, traffic

    stored = open_store(s3_env).child("data")
    for path in tiny_voc.rglob("*"):
        if path.is_file():
            stored.put_file(str(path.relative_to(tiny_voc)), path)
    train_ids = (tiny_voc / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    before = traffic()
    dataset = build_dataset(stored.uri, classes, pseudo_masks.uri)
    read = since(before)
    # The split's list and each image's annotation: no image, no mask, until a batch fetches one.
    assert len(dataset) == len(train_ids) and read["gets"] == 1 + len(train_ids)


def test_training_writes_checkpoint_config_and_metrics_to_the_store(trained):
    out, summary = trained
    assert {"checkpoint.pth", "mmseg_config.py", "metrics.json", "last.pth"} <= set(out.list())
    metrics = json.loads(out.get_bytes("metrics.json"))
    assert metrics["iterations"] == 4 and metrics["resumed_from_iteration"] == 0
    assert metrics["supervised"] is False and metrics["skipped_images"] == 0
    assert metrics["training_time_s"] > 0 and metrics["images_per_s"] > 0
    assert 0 <= metrics["val_miou"] <= 100
    assert summary["iterations"] == 4
    checkpoint = torch.load(out.open_read("checkpoint.pth"), map_location="cpu", weights_only=False)
    assert "optimizer" not in checkpoint and checkpoint["meta"]["iter"] == 4
    assert "WssegDataset" in out.get_bytes("mmseg_config.py").decode()


def test_rerun_resumes_from_the_stored_checkpoint_not_from_zero(trained, tiny_voc, pseudo_masks, classes,
                                                                 tmp_path):
    from wsseg.steps.train_segmenter import train_segmenter

    # A fresh store holding only what the first run left there; its work dir (a temp dir) is long gone,
    # so the stored `last.pth` is the only state a resumed run can pick up.
    first, _ = trained
    out = open_store(tmp_path / "out")
    out.put_bytes("last.pth", first.get_bytes("last.pth"))
    summary = train_segmenter(tiny_voc, pseudo_masks, out, tiny_config(iterations=6), classes)
    assert summary["resumed_from_iteration"] == 4
    assert summary["iterations"] == 6
    checkpoint = torch.load(out.open_read("checkpoint.pth"), map_location="cpu", weights_only=False)
    assert checkpoint["meta"]["iter"] == 6


def test_a_killed_and_rerun_training_ends_at_the_weights_of_an_uninterrupted_one(
        tiny_voc, pseudo_masks, classes, tmp_path, dies_in_iteration):
    from wsseg.steps.train_segmenter import train_segmenter

    config = tiny_config(validate=False)
    uninterrupted = open_store(tmp_path / "uninterrupted")
    train_segmenter(tiny_voc, pseudo_masks, uninterrupted, config, classes)
    killed = open_store(tmp_path / "killed")
    # Iteration 3 is trained, but only the checkpoint of iteration 2 reached the store.
    with dies_in_iteration(4):
        train_segmenter(tiny_voc, pseudo_masks, killed, config, classes)
    summary = train_segmenter(tiny_voc, pseudo_masks, killed, config, classes)
    assert summary["resumed_from_iteration"] == 2 and summary["iterations"] == 4
    resumed, whole = stored_state(killed), stored_state(uninterrupted)
    assert resumed.keys() == whole.keys()
    for name, value in whole.items():
        torch.testing.assert_close(resumed[name], value, rtol=0, atol=0, msg=name)


def stored_state(store) -> dict[str, torch.Tensor]:
    return torch.load(store.open_read("checkpoint.pth"), map_location="cpu", weights_only=False)["state_dict"]


def test_a_finished_run_is_not_trained_again(trained, tiny_voc, pseudo_masks, classes):
    from wsseg.steps.train_segmenter import train_segmenter

    out, _ = trained
    before = out.get_bytes("checkpoint.pth")
    summary = train_segmenter(tiny_voc, pseudo_masks, out, tiny_config(), classes)
    assert summary["iterations"] == 4
    assert out.get_bytes("checkpoint.pth") == before


def test_supervised_mode_trains_on_the_ground_truth(tiny_voc, classes, tmp_path):
    from wsseg.steps.train_segmenter import train_segmenter

    out = open_store(tmp_path / "out")
    summary = train_segmenter(tiny_voc, None, out, tiny_config(iterations=2, validate=False), classes)
    assert summary["supervised"] is True and summary["iterations"] == 2
    assert "val_miou" not in summary
    assert "mask_store=None" in out.get_bytes("mmseg_config.py").decode()


def test_prediction_labels_every_pixel_at_the_image_size(trained, tiny_voc, classes):
    from wsseg.segmenter.inference import load_segmenter, predict

    model = load_segmenter(trained[0], device="cpu")
    image = read_image(load_samples(tiny_voc, "val", classes)[0].image_path)[:50, :37]
    labels = predict(model, image)
    assert labels.shape == (50, 37) and labels.dtype == np.uint8
    assert labels.max() < len(classes)


def test_multi_scale_and_flip_prediction_runs_and_keeps_the_image_size(trained, tiny_voc, classes):
    from wsseg.segmenter.inference import load_segmenter, predict

    model = load_segmenter(trained[0], device="cpu")
    image = read_image(load_samples(tiny_voc, "val", classes)[0].image_path)
    labels = predict(model, image, multi_scale=True, flip=True)
    assert labels.shape == image.shape[:2]
    assert labels.max() < len(classes)


def test_prediction_runs_at_the_scale_of_the_models_test_pipeline(trained, tiny_voc, classes):
    from wsseg.segmenter.inference import load_segmenter, predict

    model = load_segmenter(trained[0], device="cpu")
    resize = next(step for step in model.cfg.test_pipeline if step["type"] == "Resize")
    assert tuple(resize["scale"]) == (256, 64)  # the tiny preset's 64 px crops
    resize["scale"] = (128, 32)
    seen = []
    model.backbone.register_forward_pre_hook(lambda module, inputs: seen.append(tuple(inputs[0].shape[-2:])))
    image = read_image(load_samples(tiny_voc, "val", classes)[0].image_path)
    labels = predict(model, image)
    assert image.shape[:2] == (64, 64) and seen == [(32, 32)]
    assert labels.shape == (64, 64)


@pytest.mark.parametrize(("distributed", "cuda", "norm", "wrapper"), [
    (True, True, "SyncBN", "AmpOptimWrapper"), (False, True, "BN", "AmpOptimWrapper"),
    (True, False, "BN", "OptimWrapper"), (False, False, "BN", "OptimWrapper")])
def test_gpu_preset_uses_syncbn_when_distributed_and_bf16_only_on_cuda(distributed, cuda, norm, wrapper,
                                                                       classes):
    from wsseg.segmenter.configs import build_mmseg_config

    datasets = dict(train=dict(type="WssegDataset", dataset_root="voc"))
    config = build_mmseg_config(default_config("gpu")["segmenter"], classes, datasets, "work", "out",
                                distributed=distributed, cuda=cuda, seed=0)
    assert config.model.backbone.norm_cfg.type == norm
    assert config.optim_wrapper.type == wrapper
    assert config.optim_wrapper.get("dtype") == ("bfloat16" if cuda else None)
    # DDP on CPU must not be handed a device id.
    assert ("model_wrapper_cfg" in config) == (distributed and not cuda)


@pytest.mark.parametrize(("mode", "segmentor"), [("sec", "SECSegmentor"), ("band", "BandSegmentor")])
def test_a_mode_with_its_own_segmentor_writes_a_model_that_loads_alone_and_predicts(tiny_voc, classes, tmp_path,
                                                                                     mode, segmentor):
    from wsseg.steps.train_segmenter import train_segmenter

    pseudo_masks = open_store(tmp_path / "pseudo_masks")
    write_pseudo_masks(pseudo_masks, tiny_voc, classes)
    out = open_store(tmp_path / "segmenter")
    config = default_config("cpu-tiny")
    config["segmenter"].update(mode=mode, iterations=3)
    summary = train_segmenter(tiny_voc, pseudo_masks, out, config, classes)

    assert {"checkpoint.pth", "mmseg_config.py", "metrics.json"} <= set(out.list())
    metrics = json.loads(out.get_bytes("metrics.json"))
    assert metrics["iterations"] == summary["iterations"] == 3 and 0 <= metrics["val_miou"] <= 100
    stored_config = out.get_bytes("mmseg_config.py").decode()
    assert segmentor in stored_config and "image_labels" in stored_config
    # A fresh interpreter, as the evaluate step is: the stored config alone must register the segmentor.
    image = load_samples(tiny_voc, "val", classes)[0].image_path
    script = ("import sys; from wsseg.data import read_image; from wsseg.store import open_store;"
              "from wsseg.segmenter.inference import load_segmenter, predict;"
              "model = load_segmenter(open_store(sys.argv[1]), device='cpu');"
              "labels = predict(model, read_image(sys.argv[2]));"
              "print(type(model).__name__, labels.shape, labels.dtype, int(labels.max()))")
    result = subprocess.run([sys.executable, "-c", script, out.uri, str(image)], capture_output=True, text=True,
                            timeout=300, check=False, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stderr[-3000:]
    name, *shape, dtype, top = result.stdout.strip().splitlines()[-1].split()
    assert name == segmentor and " ".join(shape) == "(64, 64)" and dtype == "uint8"
    assert int(top) < len(classes)


def test_uncertain_pixels_as_background_relabels_pseudo_masks_band_as_background(tiny_voc, classes, tmp_path):
    from wsseg.segmenter.configs import after_loading_masks

    written = write_pseudo_masks(open_store(tmp_path / "masks"), tiny_voc, classes)
    from wsseg.segmenter.store_files import STORE_BACKEND_ARGS

    pipeline = after_loading_masks([dict(type="LoadImageFromFile", backend_args=STORE_BACKEND_ARGS),
                                    dict(type="LoadAnnotations", backend_args=STORE_BACKEND_ARGS),
                                    dict(type="PackSegInputs")], "CheckMask", "UncertainAsBackground")
    dataset = build_dataset(tiny_voc, classes, str(tmp_path / "masks"), pipeline=pipeline)
    item = dataset[0]
    image_id = item["data_samples"].img_path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    labels = item["data_samples"].gt_sem_seg.data[0].numpy()
    expected = np.where(written[image_id] == IGNORE_INDEX, 0, written[image_id])
    np.testing.assert_array_equal(labels, expected)
    assert (labels[8:] > 0).any()


@pytest.mark.parametrize("uncertain", ["ignored", "background"])
def test_only_pseudo_masks_are_relabelled_never_a_ground_truths_void(uncertain, classes):
    from wsseg.segmenter.configs import build_mmseg_config

    settings = dict(default_config("cpu-tiny")["segmenter"], uncertain_pixels=uncertain)
    common = dict(type="WssegDataset", dataset_root="voc")
    datasets = dict(train=[dict(common, mask_store=None), dict(common, mask_store="masks")])
    config = build_mmseg_config(settings, classes, datasets, "work", "out", distributed=False, cuda=False, seed=0)
    ground_truth, pseudo = ([step["type"] for step in part.pipeline]
                            for part in config.train_dataloader.dataset.datasets)
    assert "UncertainAsBackground" not in ground_truth
    assert ("UncertainAsBackground" in pseudo) == (uncertain == "background")
    if uncertain == "background":
        assert pseudo.index("LoadAnnotations") < pseudo.index("UncertainAsBackground") < pseudo.index("RandomCrop")
    for pipeline in (ground_truth, pseudo):
        assert pipeline.index("CheckMask") == pipeline.index("LoadAnnotations") + 1


@pytest.mark.parametrize(("settings", "named"), [(dict(uncertain_pixels="bg"), "choose one of ignored, background"),
                                                 (dict(uncertain_pixels="background", mode="band"), "mode: standard")])
def test_uncertain_pixels_refuses_an_unknown_value_and_the_band_loss(settings, named, classes):
    from wsseg.segmenter.configs import build_mmseg_config

    with pytest.raises(ConfigError, match=named):
        build_mmseg_config(dict(default_config("cpu-tiny")["segmenter"], **settings), classes,
                           dict(train=dict(type="WssegDataset", dataset_root="voc", mask_store="masks")),
                           "work", "out", distributed=False, cuda=False, seed=0)
