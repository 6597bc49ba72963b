"""Reading a PASCAL VOC 2012-layout folder exactly as VOC ships it.

Image-level labels come from the `<object><name>` entries of `Annotations/<id>.xml` (as PSA and IRN derive
them); pixel ground truth, where present, from the palette PNGs in `SegmentationClass/`, and instances from those in
`SegmentationObject/`.
"""
from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree

from wsseg.classes import ClassList
from wsseg.data.samples import ObjectAnnotation, Problem, Sample, class_indices
from wsseg.errors import DataError

# Segmentation lists come first: they name the images that have pixel masks. Main's lists are the fallback
# for folders that only carry image-level annotations.
SPLIT_FOLDERS = ("ImageSets/Segmentation", "ImageSets/Main")
STANDARD_SPLITS = ("train", "val")


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
    # Main's per-class lists carry a second column (the presence flag); the id is always the first token.
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def parse_annotation(xml_path: Path) -> tuple[ObjectAnnotation, ...]:
    """The objects of one annotation file; `<part>` entries nested in a person are not objects."""
    try:
        tree = ElementTree.parse(xml_path)
    except FileNotFoundError:
        raise DataError(xml_path, "annotation not found") from None
    except ElementTree.ParseError as error:
        raise DataError(xml_path, f"not valid XML: {error}") from None
    objects = []
    for element in tree.getroot().findall("object"):
        name = (element.findtext("name") or "").strip()
        if not name:
            raise DataError(xml_path, "an <object> has no <name>")
        objects.append(ObjectAnnotation(name=name, difficult=_flag(element, "difficult"),
                                        truncated=_flag(element, "truncated"), bbox=_bbox(element, xml_path)))
    return tuple(objects)


def scan_voc(root: Path, split: str, classes: ClassList) -> tuple[list[Sample], list[Problem]]:
    """Every readable sample of `split`, and a problem for each missing file or unknown class name."""
    list_path = split_file(root, split)
    samples, problems = [], []
    for image_id in read_split_ids(list_path):
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
