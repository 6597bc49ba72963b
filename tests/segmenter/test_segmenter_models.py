"""Every segmenter model family, and a user's own mmseg config, in the weakly supervised pipeline on the tiny
synthetic set: the real classifier, CAMs and dense CRF once, then each model trained a few iterations with real
mmseg and scored by evaluate. Torch runs on one thread (the test box is shared)."""
from __future__ import annotations

import pytest
import torch

from tests.segmenter.test_segmenter import tiny_config
from wsseg.config import default_config
from wsseg.data import load_samples, read_image
from wsseg.errors import ConfigError
from wsseg.segmenter.models import FAMILIES
from wsseg.store import open_store

# Several threads spin against the other processes of a 2-core machine and slow each step several times.
pytestmark = pytest.mark.usefixtures("one_torch_thread")

HEADS = {"fcn": "FCNHead", "pspnet": "PSPHead", "deeplabv3plus": "DepthwiseSeparableASPPHead",
         "upernet": "UPerHead", "segformer": "SegformerHead"}
BACKBONES = {"segformer": "MixVisionTransformer"}
# A user's config: mmseg's own FCN, inherited from the installed package, shrunk to train in seconds. It keeps
# mmseg's 19 Cityscapes classes and SyncBN, which wsseg must replace.
SMALL_FCN_CONFIG = """
_base_ = 'mmseg::_base_/models/fcn_r50-d8.py'
model = dict(pretrained=None, backbone=dict(depth=18, stem_channels=16, base_channels=16),
             decode_head=dict(in_channels=128, channels=32), auxiliary_head=dict(in_channels=64, channels=16))
"""


@pytest.fixture(scope="module")
def wsss_stages(tiny_voc, classes, tmp_path_factory):
    """The pipeline up to the pseudo masks, run once for every model: (CAM store, pseudo-mask store)."""
    from wsseg.steps.mine_cams import mine_cams
    from wsseg.steps.refine import refine_with_crf
    from wsseg.steps.train_classifier import train_classifier

    config = tiny_config()
    classifier, cams, masks = (open_store(tmp_path_factory.mktemp(name)) for name in ("classifier", "cams", "masks"))
    train_classifier(tiny_voc, classifier, config, classes)
    mine_cams(tiny_voc, classifier, cams, config, classes)
    refine_with_crf(tiny_voc, cams, masks, config, classes)
    return cams, masks


@pytest.fixture(scope="module", params=list(FAMILIES))
def family_run(request, tiny_voc, wsss_stages, classes, tmp_path_factory):
    """(family, segmenter store, train-segmenter summary, evaluate headline) of one family."""
    from wsseg.steps.evaluate import evaluate
    from wsseg.steps.train_segmenter import train_segmenter

    cams, masks = wsss_stages
    config = tiny_config(model=request.param)
    segmenter = open_store(tmp_path_factory.mktemp(request.param))
    summary = train_segmenter(tiny_voc, masks, segmenter, config, classes)
    headline = evaluate(tiny_voc, cams, masks, segmenter, open_store(tmp_path_factory.mktemp("evaluate")), config,
                        classes)
    return request.param, segmenter, summary, headline


def test_the_wsss_pipeline_trains_and_scores_every_model_family(family_run):
    from wsseg.segmenter.inference import load_segmenter

    family, segmenter, summary, headline = family_run
    assert summary["iterations"] == 4 and 0 <= summary["val_miou"] <= 100
    assert 0 <= headline["segmenter_miou"] <= 100 and 0 <= headline["pseudo_mask_miou"] <= 100
    model = load_segmenter(segmenter, device="cpu")
    assert type(model.decode_head).__name__ == HEADS[family]
    assert type(model.backbone).__name__ == BACKBONES.get(family, "ResNetV1c")
    assert model.decode_head.num_classes == 21


def test_test_time_augmentation_labels_every_pixel_for_every_family(family_run, tiny_voc, classes):
    from wsseg.segmenter.inference import load_segmenter, predict

    model = load_segmenter(family_run[1], device="cpu")
    image = read_image(load_samples(tiny_voc, "val", classes)[0].image_path)[:61, :53]
    plain, augmented = predict(model, image), predict(model, image, multi_scale=True, flip=True)
    assert plain.shape == augmented.shape == (61, 53)
    assert augmented.max() < len(classes)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_sec_mode_trains_every_family(family, tiny_voc, wsss_stages, classes, tmp_path):
    from wsseg.segmenter.inference import load_segmenter
    from wsseg.steps.train_segmenter import train_segmenter

    out = open_store(tmp_path)
    config = tiny_config(model=family, mode="sec", iterations=2, validate=False)
    summary = train_segmenter(tiny_voc, wsss_stages[1], out, config, classes)
    assert summary["iterations"] == 2
    model = load_segmenter(out, device="cpu")
    assert type(model).__name__ == "SECSegmentor" and type(model.decode_head).__name__ == HEADS[family]


def test_a_user_mmseg_config_from_the_store_is_trained_on_wsseg_data_and_classes(s3_env, tiny_voc, wsss_stages,
                                                                                 classes, tmp_path):
    from wsseg.segmenter.inference import load_segmenter, predict
    from wsseg.steps.train_segmenter import train_segmenter

    open_store(s3_env).put_bytes("configs/small_fcn.py", SMALL_FCN_CONFIG.encode())
    out = open_store(tmp_path / "segmenter")
    config = tiny_config(model=f"{s3_env}/configs/small_fcn.py", iterations=2)
    summary = train_segmenter(tiny_voc, wsss_stages[1], out, config, classes)

    assert summary["iterations"] == 2 and 0 <= summary["val_miou"] <= 100
    model = load_segmenter(out, device="cpu")
    assert type(model.decode_head).__name__ == "FCNHead" and model.backbone.depth == 18
    for head in (model.decode_head, model.auxiliary_head):
        assert head.num_classes == 21 and head.conv_seg.out_channels == 21 and head.ignore_index == 255
    assert not any(isinstance(module, torch.nn.SyncBatchNorm) for module in model.modules())
    assert tuple(model.data_preprocessor.size) == (64, 64)
    image = read_image(load_samples(tiny_voc, "val", classes)[0].image_path)
    assert predict(model, image, multi_scale=True, flip=True).shape == image.shape[:2]


def test_a_user_config_without_a_segmentor_is_refused_naming_the_setting(tiny_voc, wsss_stages, classes, tmp_path):
    from wsseg.steps.train_segmenter import train_segmenter

    path = tmp_path / "not_a_model.py"
    path.write_text("learning_rate = 0.1\n")
    with pytest.raises(ConfigError, match=r"segmenter.model: .*not_a_model.py defines no `model`"):
        train_segmenter(tiny_voc, wsss_stages[1], open_store(tmp_path / "out"), tiny_config(model=str(path)), classes)
    with pytest.raises(ConfigError, match=r"segmenter.model: no file at .*missing.py"):
        train_segmenter(tiny_voc, wsss_stages[1], open_store(tmp_path / "out"),
                        tiny_config(model=str(tmp_path / "missing.py")), classes)


def test_an_unknown_family_is_refused_with_the_choices(classes):
    from wsseg.segmenter.configs import build_mmseg_config

    settings = tiny_config(model="resnet")["segmenter"]
    with pytest.raises(ConfigError, match="segmenter.model is 'resnet'; choose one of fcn, pspnet, deeplabv3plus"):
        build_mmseg_config(settings, classes, dict(train={}), "work", "out", distributed=False, cuda=False, seed=0)


@pytest.mark.parametrize("loss", ["cross_entropy", "binary_cross_entropy"])
def test_the_heads_loss_is_softmax_or_a_sigmoid_per_class_as_set(loss, classes):
    import torch.nn.functional as F
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    from mmseg.utils import register_all_modules

    from wsseg.segmenter.models import model_config

    register_all_modules()
    settings = dict(default_config("cpu-tiny")["segmenter"], loss=loss)
    model = MODELS.build(model_config(settings, len(classes), (32, 32), norm="BN")).eval()
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(1, 3, 32, 32, generator=generator)
    labels = torch.randint(0, len(classes), (32, 32), generator=generator)
    labels[:4] = 255
    sample = SegDataSample(metainfo=dict(img_shape=(32, 32), pad_shape=(32, 32)),
                           gt_sem_seg=PixelData(data=labels[None]))
    with torch.no_grad():
        losses = model.loss(inputs, [sample])
        logits = F.interpolate(model.decode_head(model.extract_feat(inputs)), (32, 32), mode="bilinear")
    valid = labels != 255
    if loss == "cross_entropy":
        expected = F.cross_entropy(logits[0].permute(1, 2, 0)[valid], labels[valid])
    else:
        one_hot = F.one_hot(labels[valid], len(classes)).float()
        expected = F.binary_cross_entropy_with_logits(logits[0].permute(1, 2, 0)[valid], one_hot)
    assert losses["decode.loss_ce"].item() == pytest.approx(expected.item(), rel=1e-4)


def test_an_unknown_loss_is_refused_with_the_choices(classes):
    from wsseg.segmenter.models import model_config

    settings = dict(default_config("cpu-tiny")["segmenter"], loss="focal")
    with pytest.raises(ConfigError, match="segmenter.loss is 'focal'; choose cross_entropy .* or binary_cross_entropy"):
        model_config(settings, len(classes), (32, 32), norm="BN")


@pytest.mark.parametrize("preset", ["cpu", "gpu"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_preset_models_of_every_family_build_and_label_every_pixel(preset, family, classes):
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    from wsseg.segmenter.models import model_config

    register_all_modules()
    settings = dict(default_config(preset)["segmenter"], model=family, pretrained=None)
    model = MODELS.build(model_config(settings, len(classes), (64, 64), norm="BN")).eval()
    with torch.no_grad():
        logits = model.encode_decode(torch.zeros(1, 3, 64, 64), [dict(img_shape=(64, 64), pad_shape=(64, 64))])
    assert logits.shape == (1, len(classes), 64, 64)
