"""`wsseg export`: the exported TorchScript and ONNX models (run by torch.jit and onnxruntime) give the mmseg
model's logits on the same normalised inputs, and the repository is laid out as Triton reads it."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from wsseg.errors import ConfigError
from wsseg.serving.export import export_segmenter
from wsseg.store import open_store

# Several threads spin against the other processes of a 2-core machine and slow each step several times.
pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOLERANCE = 1e-3


def mmseg_logits(model, images: torch.Tensor) -> torch.Tensor:
    """What mmseg's whole-image inference gives for normalised `images`."""
    shape = tuple(images.shape[-2:])
    meta = dict(img_shape=shape, ori_shape=shape, pad_shape=shape, padding_size=[0, 0, 0, 0])
    with torch.no_grad():
        return model.inference(images, [meta] * len(images))


@pytest.fixture(scope="module")
def model(tiny_segmenter):
    from wsseg.segmenter.inference import load_segmenter

    return load_segmenter(tiny_segmenter, device="cpu")


def test_torchscript_export_gives_the_mmseg_logits_at_any_batch_and_size(tiny_segmenter, model, tmp_path):
    out = open_store(tmp_path)
    metadata = export_segmenter(tiny_segmenter, out, "torchscript")
    exported = torch.jit.load(str(tmp_path / metadata["model"]))
    generator = torch.Generator().manual_seed(0)
    for shape in ((1, 3, 64, 64), (2, 3, 48, 80)):
        images = torch.randn(shape, generator=generator)
        with torch.no_grad():
            logits = exported(images)
        assert logits.shape == (shape[0], 21, *shape[2:])
        torch.testing.assert_close(logits, mmseg_logits(model, images), atol=TOLERANCE, rtol=0)
    assert metadata["input_shape"] == [-1, 3, -1, -1]
    assert 'platform: "pytorch_libtorch"' in out.get_bytes("wsseg-segmenter/config.pbtxt").decode()


def test_onnx_export_gives_the_mmseg_logits_in_onnxruntime(tiny_segmenter, model, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    out = open_store(tmp_path)
    metadata = export_segmenter(tiny_segmenter, out, "onnx", input_size=(48, 80))
    session = onnxruntime.InferenceSession(str(tmp_path / "wsseg-segmenter/1/model.onnx"))
    images = torch.randn(1, 3, 48, 80, generator=torch.Generator().manual_seed(1))
    (logits,) = session.run(["OUTPUT__0"], {"INPUT__0": images.numpy()})
    np.testing.assert_allclose(logits, mmseg_logits(model, images).numpy(), atol=TOLERANCE, rtol=0)

    stored = json.loads(out.get_bytes("export.json"))
    assert stored == metadata and stored["input_shape"] == [1, 3, 48, 80]
    assert stored["mean"] == pytest.approx([123.675, 116.28, 103.53]) and stored["channels"] == "RGB"
    assert stored["classes"][0] == "background" and stored["test_scale"] == [256, 64]
    config = out.get_bytes("wsseg-segmenter/config.pbtxt").decode()
    assert 'platform: "onnxruntime_onnx"' in config and "dims: [ 1, 21, 48, 80 ]" in config


def test_an_unknown_format_is_refused_with_the_choices(tiny_segmenter, tmp_path):
    with pytest.raises(ConfigError, match="choose one of torchscript, onnx"):
        export_segmenter(tiny_segmenter, open_store(tmp_path), "tflite")
