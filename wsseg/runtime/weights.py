"""Where a run's starting weights come from: a local path, a store URI or a URL, made ready before training starts.

Clusters that train on private data seldom reach the internet, so weights can be staged in the run's bucket and
named by their store URI (`s3://wsseg/weights/resnet50_v1c.pth`): they are fetched into a local folder first,
since mmengine's loaders know nothing of wsseg's stores. A URL is left for mmengine to download (into torch's hub
cache, where a later run finds it), but tried at once, so that one the cluster cannot reach fails when the step
starts, in seconds, not after the data is loaded. Weights taken from another step's output are loaded whole or not
at all (`load_fitting_weights`).
"""
from __future__ import annotations

import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from wsseg.errors import ConfigError, StoreError

STORE_SCHEMES = ("s3", "file")
# mmengine's CheckpointLoader schemes wsseg resolves to a URL to try: open-mmlab's model zoo names.
MODEL_ZOO_PREFIXES = ("open-mmlab://", "openmmlab://")
REACH_TIMEOUT_S = 10
DEFAULT_FOLDER = Path(tempfile.gettempdir(), "wsseg-weights")


def local_weights(source: str | None, setting: str, work_dir: str | Path | None = None) -> str | None:
    """A path or URL mmengine can load `source` from; `setting` (e.g. `segmenter.pretrained`) names it in errors.

    A store URI is fetched into `work_dir` (default: a folder under the system's temp dir); a local path must
    exist; a URL (http(s)://, open-mmlab://) must answer. None stays None.
    """
    if not source:
        return None
    scheme = urlsplit(source).scheme
    if scheme in STORE_SCHEMES:
        return str(_fetch(source, setting, Path(work_dir or DEFAULT_FOLDER)))
    if source.startswith(MODEL_ZOO_PREFIXES) or scheme in ("http", "https"):
        _check_reachable(source, setting)
        return source
    if len(scheme) > 1:
        raise ConfigError(f"{setting}: {source!r} has a scheme wsseg cannot fetch from; {_alternatives(setting)}")
    path = Path(source).expanduser()
    if not path.is_file():
        raise ConfigError(f"{setting}: no file at {source}; {_alternatives(setting)}")
    return str(path)


def load_fitting_weights(module, weights: dict, source: str, fix: str) -> int:
    """Loads `weights` into `module` and returns how many tensors it took, or raises a ConfigError that names
    `source` and `fix` when they do not fit it tensor for tensor: a model started from part of its weights (or from
    none) trains on unnoticed, and torch's own error names no file."""
    try:
        result = module.load_state_dict(weights, strict=False)
    except RuntimeError as error:  # tensors of other shapes
        raise _unfit(source, len(weights), str(error).splitlines()[-1].strip(), fix) from None
    if result.missing_keys or result.unexpected_keys:
        unmatched = ", ".join(f"{len(keys)} {kind} (such as {keys[0]})" for kind, keys in
                              (("missing", result.missing_keys), ("unexpected", result.unexpected_keys)) if keys)
        raise _unfit(source, len(weights), unmatched, fix)
    return len(weights)


def _unfit(source: str, tensors: int, unmatched: str, fix: str) -> ConfigError:
    return ConfigError(f"{source} does not fit the model ({tensors} tensors; {unmatched}); {fix}")


def _fetch(uri: str, setting: str, folder: Path) -> Path:
    from wsseg.store import open_store

    prefix, _, key = uri.rstrip("/").rpartition("/")
    target = folder / key
    try:
        open_store(prefix).get_file(key, target)
    except StoreError as error:
        raise ConfigError(f"{setting}: cannot fetch {uri}: {error}; {_alternatives(setting)}") from None
    return target


def _check_reachable(source: str, setting: str) -> None:
    url = _zoo_url(source, setting) if source.startswith(MODEL_ZOO_PREFIXES) else source
    if _hub_cache(url).is_file():
        return
    try:
        # A one-byte range: the server answers as for the download, without sending the file.
        request = urllib.request.Request(url, headers={"Range": "bytes=0-0"})
        urllib.request.urlopen(request, timeout=REACH_TIMEOUT_S).close()
    except (OSError, ValueError) as error:  # urllib's URLError and HTTPError are OSErrors
        reason = f"HTTP {error.code}" if isinstance(error, urllib.error.HTTPError) else getattr(error, "reason", error)
        raise ConfigError(f"{setting}: cannot download {source} ({reason}); {_alternatives(setting)}") from None


def _zoo_url(source: str, setting: str) -> str:
    from mmengine.runner.checkpoint import get_external_models

    name = source.split("://", 1)[1]
    urls = get_external_models()
    if name not in urls:
        raise ConfigError(f"{setting}: {source} is not in mmengine's model zoo; {_alternatives(setting)}")
    return urls[name]


def _hub_cache(url: str) -> Path:
    """Where mmengine (through torch.hub) keeps a downloaded checkpoint; present, it needs no network."""
    import torch.hub

    return Path(torch.hub.get_dir(), "checkpoints", Path(urlsplit(url).path).name)


def _alternatives(setting: str) -> str:
    return (f"without internet access, copy the file into the run's bucket and set {setting} to its store URI "
            f"(e.g. s3://wsseg/weights/resnet50_v1c.pth), or set it to a local path the step can read "
            "(docs/KUBEFLOW.md, 'Weights without internet')")
