"""Reading a PASCAL VOC 2012-layout folder exactly as VOC ships it.

Image-level labels come from the `<object><name>` entries of `Annotations/<id>.xml` (as PSA and IRN derive
them); pixel ground truth, where present, from the palette PNGs in `SegmentationClass/`, and instances from those in
`SegmentationObject/`.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from xml.etree import ElementTree

from wsseg.classes import ClassList
from wsseg.data.samples import ObjectAnnotation, Problem, Sample, class_indices
from wsseg.errors import DataError

# Segmentation lists come first: they name the images that have pixel masks. Main's lists are the fallback
# for folders that only carry image-level annotations.
SPLIT_FOLDERS = ("ImageSets/Segmentation", "ImageSets/Main")
STANDARD_SPLITS = ("train", "val")
# Annotation files of a stored VOC folder read at once: one small GET each, so latency, not bandwidth, bounds them.
ANNOTATION_READERS = 16


def is_voc_root(root: Path) -> bool:
    return (root / "JPEGImages").is_dir() and (root / "ImageSets").is_dir()


def voc_splits(root: Path) -> list[str]:
    """The standard splits that have a list file in this folder."""
    return [split for split in STANDARD_SPLITS if _find_split_file(root, split)]


def split_file(root: Path, split: str) -> Path:
    found = _find_split_file(root, split)
    if found is None:
        expected = " or ".join(f"{folder}/{split}.txt" for folder in SPLIT_FOLDERS)
        raise DataError(root, f"no list for split {split!r}: expected {expected}")
    return found


def read_split_ids(path: Path) -> list[str]:
    return split_ids(path.read_text())


def split_ids(text: str) -> list[str]:
    # Main's per-class lists carry a second column (the presence flag); the id is always the first token.
    return [line.split()[0] for line in text.splitlines() if line.strip()]


def parse_annotation(xml_path: Path) -> tuple[ObjectAnnotation, ...]:
    """The objects of one annotation file; `<part>` entries nested in a person are not objects."""
    try:
        return parse_annotation_bytes(xml_path.read_bytes(), xml_path)
    except FileNotFoundError:
        raise DataError(xml_path, "annotation not found") from None


def parse_annotation_bytes(data: bytes, xml_path) -> tuple[ObjectAnnotation, ...]:
    """The objects of an annotation file's bytes; `xml_path` names it in errors."""
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as error:
        raise DataError(xml_path, f"not valid XML: {error}") from None
    objects = []
    for element in root.findall("object"):
        name = (element.findtext("name") or "").strip()
        if not name:
            raise DataError(xml_path, "an <object> has no <name>")
        objects.append(ObjectAnnotation(name=name, difficult=_flag(element, "difficult"),
                                        truncated=_flag(element, "truncated"), bbox=_bbox(element, xml_path)))
    return tuple(objects)


def scan_voc(root: Path, split: str, classes: ClassList,
             keep: Callable[[str], bool] | None = None) -> tuple[list[Sample], list[Problem]]:
    """Every readable sample of `split` (whose id `keep` accepts), and a problem for each missing file or unknown
    class name."""
    list_path = split_file(root, split)
    samples, problems = [], []
    for image_id in _kept(read_split_ids(list_path), keep):
        image_path = root / "JPEGImages" / f"{image_id}.jpg"
        if not image_path.is_file():
            problems.append(Problem(str(list_path), f"names image {image_id!r} but {image_path} does not exist"))
            continue
        xml_path = root / "Annotations" / f"{image_id}.xml"
        try:
            objects = parse_annotation(xml_path)
        except DataError as error:
            problems.append(Problem(error.path, error.problem))
            continue
        labels, unknown = class_indices((obj.name for obj in objects), classes)
        problems.extend(Problem(str(xml_path), message) for message in unknown)
        mask_path = root / "SegmentationClass" / f"{image_id}.png"
        object_mask_path = root / "SegmentationObject" / f"{image_id}.png"
        samples.append(Sample(image_id, image_path, labels, mask_path if mask_path.is_file() else None, objects,
                              object_mask_path if object_mask_path.is_file() else None))
    return samples, problems


def scan_stored_voc(uri: str, split: str, classes: ClassList, threads: int = ANNOTATION_READERS,
                    keep: Callable[[str], bool] | None = None) -> tuple[list[Sample], list[Problem]]:
    """`scan_voc` of a VOC folder in a store (`s3://bucket/prefix`): which images and masks exist comes from
    listing the prefix (a request per thousand keys, not one per file), and the annotations (of the images `keep`
    accepts) are read `threads` at a time; images and masks stay in the store as `StoredFile`s."""
    from wsseg.data.locations import StoredFile
    from wsseg.runtime.read_ahead import read_ahead
    from wsseg.store import StoreNotFound, open_store

    store = open_store(uri)
    list_key = _stored_split_key(store, split)
    images, masks = set(store.list("JPEGImages/")), set(store.list("SegmentationClass/"))
    object_masks = set(store.list("SegmentationObject/"))
    samples, problems, present = [], [], []
    for image_id in _kept(split_ids(store.get_bytes(list_key).decode()), keep):
        if f"JPEGImages/{image_id}.jpg" in images:
            present.append(image_id)
        else:
            problems.append(Problem(f"{store.uri}/{list_key}", f"names image {image_id!r} but "
                                                              f"{store.uri}/JPEGImages/{image_id}.jpg does not exist"))

    def annotation(image_id: str) -> tuple[ObjectAnnotation, ...]:
        where = f"{store.uri}/Annotations/{image_id}.xml"
        try:
            return parse_annotation_bytes(store.get_bytes(f"Annotations/{image_id}.xml"), where)
        except StoreNotFound:
            raise DataError(where, "annotation not found") from None

    for image_id, objects in read_ahead(annotation, present, threads):
        if isinstance(objects, DataError):
            problems.append(Problem(objects.path, objects.problem))
            continue
        if isinstance(objects, Exception):
            raise objects
        labels, unknown = class_indices((obj.name for obj in objects), classes)
        problems.extend(Problem(f"{store.uri}/Annotations/{image_id}.xml", message) for message in unknown)
        mask_key, object_mask_key = f"SegmentationClass/{image_id}.png", f"SegmentationObject/{image_id}.png"
        samples.append(Sample(image_id, StoredFile(f"{store.uri}/JPEGImages/{image_id}.jpg"), labels,
                              StoredFile(f"{store.uri}/{mask_key}") if mask_key in masks else None, objects,
                              StoredFile(f"{store.uri}/{object_mask_key}") if object_mask_key in object_masks
                              else None))
    return samples, problems


def stored_split_ids(uri: str, split: str) -> list[str]:
    """The ids a stored VOC folder's list of `split` names, in its order."""
    from wsseg.store import open_store

    store = open_store(uri)
    return split_ids(store.get_bytes(_stored_split_key(store, split)).decode())


def _stored_split_key(store, split: str) -> str:
    list_key = next((f"{folder}/{split}.txt" for folder in SPLIT_FOLDERS if store.exists(f"{folder}/{split}.txt")),
                    None)
    if list_key is None:
        raise DataError(store.uri, f"no list for split {split!r}: expected "
                                   + " or ".join(f"{folder}/{split}.txt" for folder in SPLIT_FOLDERS))
    return list_key


def _kept(image_ids: list[str], keep: Callable[[str], bool] | None) -> list[str]:
    return image_ids if keep is None else [image_id for image_id in image_ids if keep(image_id)]


def stored_voc_splits(uri: str) -> list[str]:
    from wsseg.store import open_store

    store = open_store(uri)
    return [split for split in STANDARD_SPLITS
            if any(store.exists(f"{folder}/{split}.txt") for folder in SPLIT_FOLDERS)]


def _find_split_file(root: Path, split: str) -> Path | None:
    for folder in SPLIT_FOLDERS:
        path = root / folder / f"{split}.txt"
        if path.is_file():
            return path
    return None


def _flag(element: ElementTree.Element, tag: str) -> bool:
    return (element.findtext(tag) or "0").strip() not in ("", "0")


def _bbox(element: ElementTree.Element, xml_path: Path) -> tuple[int, int, int, int] | None:
    box = element.find("bndbox")
    if box is None:
        return None
    try:
        # A few VOC-style exporters write "48.0"; VOC itself writes integers.
        return tuple(int(float(box.findtext(side))) for side in ("xmin", "ymin", "xmax", "ymax"))
    except (TypeError, ValueError):
        raise DataError(xml_path, "a <bndbox> lacks a numeric xmin, ymin, xmax or ymax") from None
