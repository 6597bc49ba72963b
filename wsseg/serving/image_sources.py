"""The images `wsseg predict` labels: a folder (searched recursively), a CSV/JSONL manifest (every row, whatever
its split) or a store prefix (`s3://bucket/prefix`, `file://...`). Each image has an id, its path relative to the
source without the suffix, under which its outputs are stored."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from wsseg.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class SourceImage:
    image_id: str
    location: str  # a path or store URI, what errors name
    read: Callable[[], bytes]


def list_images(source: str) -> list[SourceImage]:
    """Every image of `source`, sorted by id; a DataError names a source that is none of the three kinds."""
    if len(urlsplit(source).scheme) > 1:
        return _store_images(source)
    path = Path(source)
    if path.is_dir():
        return _folder_images(path)
    from wsseg.data.manifest import is_manifest

    if is_manifest(path):
        return _manifest_images(path)
    raise DataError(source, "not a folder of images, a .csv/.jsonl manifest or a store URI (s3://bucket/prefix)")


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def _folder_images(folder: Path) -> list[SourceImage]:
    paths = sorted(path for path in folder.rglob("*") if path.is_file() and _is_image(path.name))
    return [SourceImage(path.relative_to(folder).with_suffix("").as_posix(), str(path), path.read_bytes)
            for path in paths]


def _manifest_images(manifest: Path) -> list[SourceImage]:
    from wsseg.data.manifest import read_manifest

    images, seen = [], {}
    for row in read_manifest(manifest):
        path = manifest.parent / row.image
        image_id = row.image_id or path.stem
        if image_id in seen:
            raise DataError(row.where, f"image id {image_id!r} repeats {seen[image_id]}; give rows an 'id' column")
        seen[image_id] = row.where
        images.append(SourceImage(image_id, str(path), path.read_bytes))
    return sorted(images, key=lambda image: image.image_id)


def _store_images(uri: str) -> list[SourceImage]:
    from wsseg.store import open_store

    store = open_store(uri)
    return [SourceImage(str(PurePosixPath(key).with_suffix("")), f"{store.uri}/{key}",
                        lambda key=key: store.get_bytes(key))
            for key in sorted(store.list()) if _is_image(key)]
