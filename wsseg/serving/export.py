"""`wsseg export`: a trained segmenter as a TorchScript or ONNX model, laid out as a Triton model repository that
KServe serves (`manifests/examples/kserve-segmenter/`).

The exported function is the model's forward on a normalised input: (N, 3, H, W) float32 RGB, less `mean` and
over `std` (in `export.json`), to (N, K, H, W) logits at the input's size, as the mmseg model's `inference` gives
them. A client scales an image as the model's test pipeline does (`export.json`'s `test_scale`), normalises it,
and takes the argmax over K, resizing back as `wsseg.segmenter.inference.predict` does.

TorchScript is traced and takes any batch and size. ONNX is exported by torch's dynamo exporter at one input
shape (1, 3, H, W), by default the training crop, in one file (weights inside: a segmenter is well under ONNX's
2 GB): the adaptive pooling of PSPNet's and UPerNet's pyramids and SegFormer's attention reshapes do not export
with free sizes.
"""
from __future__ import annotations

import inspect
import json
import logging
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from wsseg.errors import ConfigError
from wsseg.store import ArtifactStore

log = logging.getLogger(__name__)

# format -> (model file, Triton platform)
FORMATS = {"torchscript": ("model.pt", "pytorch_libtorch"), "onnx": ("model.onnx", "onnxruntime_onnx")}
MODEL_NAME = "wsseg-segmenter"
# Triton's libtorch backend names tensors by position; the ONNX export uses the same names.
INPUT, OUTPUT = "INPUT__0", "OUTPUT__0"
VERSION = "1"
METADATA = "export.json"


class SegmenterLogits(torch.nn.Module):
    """An mmseg EncoderDecoder's whole-image inference as a plain tensor function: normalised images to logits at
    their size (EncoderDecoder.encode_decode without its image metadata)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.segmentor = model
        self.align_corners = model.align_corners

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.segmentor.decode_head(self.segmentor.extract_feat(images))
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=self.align_corners)


def export_segmenter(segmenter: ArtifactStore, out: ArtifactStore, export_format: str,
                     input_size: tuple[int, int] | None = None, name: str = MODEL_NAME) -> dict:
    """Write `<name>/1/model.{pt,onnx}`, `<name>/config.pbtxt` and `export.json` into `out`; returns the latter."""
    from wsseg.segmenter.inference import load_segmenter

    if export_format not in FORMATS:
        raise ConfigError(f"export format {export_format!r}; choose one of {', '.join(FORMATS)}")
    model = load_segmenter(segmenter, device="cpu")
    _check_exportable(model, segmenter.uri)
    function = SegmenterLogits(model).eval()
    height, width = input_size or tuple(model.data_preprocessor.size)
    example = torch.zeros(1, 3, height, width)
    filename, platform = FORMATS[export_format]
    with tempfile.TemporaryDirectory(prefix="wsseg-export-") as folder:
        path = Path(folder, filename)
        (_torchscript if export_format == "torchscript" else _onnx)(function, example, path)
        out.put_file(f"{name}/{VERSION}/{filename}", path)
    classes = list(model.dataset_meta["classes"])
    fixed = export_format == "onnx"
    out.put_bytes(f"{name}/config.pbtxt", triton_config(name, platform, len(classes),
                                                        (height, width) if fixed else None).encode())
    metadata = dict(format=export_format, model=f"{name}/{VERSION}/{filename}", input=INPUT, output=OUTPUT,
                    input_shape=[1, 3, height, width] if fixed else [-1, 3, -1, -1], channels="RGB",
                    mean=list(model.data_preprocessor.mean.flatten().tolist()),
                    std=list(model.data_preprocessor.std.flatten().tolist()), classes=classes,
                    test_scale=_test_scale(model), segmenter=segmenter.uri)
    out.put_bytes(METADATA, json.dumps(metadata, indent=2).encode())
    log.info("export: %s model of %s -> %s/%s", export_format, segmenter.uri, out.uri, name)
    return metadata


def _check_exportable(model: torch.nn.Module, uri: str) -> None:
    if isinstance(model.decode_head, torch.nn.ModuleList) or model.test_cfg.get("mode", "whole") != "whole":
        raise ConfigError(f"{uri}: export takes a segmentor with one decode head that predicts whole images "
                          "(every segmenter.model family is one); this model has a cascade or sliding-window test")


def _torchscript(function: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    with torch.no_grad():
        torch.jit.save(torch.jit.trace(function, example), str(path))


def _onnx(function: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    if "dynamo" not in inspect.signature(torch.onnx.export).parameters:
        raise ConfigError(f"ONNX export needs torch 2.5 or later (its dynamo exporter); this is torch "
                          f"{torch.__version__}: use --format torchscript")
    with torch.no_grad():
        torch.onnx.export(function, (example,), str(path), input_names=[INPUT], output_names=[OUTPUT],
                          dynamo=True, external_data=False, verbose=False)


def triton_config(name: str, platform: str, num_classes: int, size: tuple[int, int] | None) -> str:
    """Triton's config.pbtxt; `size` None: any batch and size (-1), else one (1, 3, H, W) image."""
    batch, height, width = (1, *size) if size else (-1, -1, -1)
    tensor = '{{ name: "{}" data_type: TYPE_FP32 dims: [ {}, {}, {}, {} ] }}'
    return (f'name: "{name}"\nplatform: "{platform}"\nmax_batch_size: 0\n'
            f"input [{tensor.format(INPUT, batch, 3, height, width)}]\n"
            f"output [{tensor.format(OUTPUT, batch, num_classes, height, width)}]\n")


def _test_scale(model: torch.nn.Module) -> list[int] | None:
    resize = next((step for step in model.cfg.get("test_pipeline", []) if step["type"] == "Resize"), None)
    return list(resize["scale"]) if resize else None


def register(subparsers) -> None:
    parser = subparsers.add_parser("export", help="a trained segmenter as TorchScript or ONNX, for serving")
    parser.add_argument("--segmenter", required=True, metavar="URI",
                        help="store holding checkpoint.pth and mmseg_config.py (train-segmenter's output)")
    parser.add_argument("--format", required=True, choices=sorted(FORMATS))
    parser.add_argument("--out", required=True, metavar="URI",
                        help="store for the Triton model repository (e.g. s3://wsseg/models)")
    parser.add_argument("--input-size", nargs=2, type=int, metavar=("HEIGHT", "WIDTH"),
                        help="the ONNX model's input size (default: the training crop)")
    parser.add_argument("--name", default=MODEL_NAME, help=f"the model's name in the repository ({MODEL_NAME})")
    parser.set_defaults(func=_run)


def _run(args) -> int:
    from wsseg.store import open_store

    metadata = export_segmenter(open_store(args.segmenter), open_store(args.out), args.format,
                                tuple(args.input_size) if args.input_size else None, args.name)
    print(json.dumps({key: metadata[key] for key in ("format", "model", "input_shape")}))
    return 0
