"""Class lists and the VOC colour palette."""
from __future__ import annotations

IGNORE_INDEX = 255

VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)


def voc_palette() -> list[int]:
    """The 256-entry PASCAL VOC palette as a flat RGB list, the bit-interleaving scheme VOC ships with."""
    palette = []
    for index in range(256):
        r = g = b = 0
        code = index
        for bit in range(8):
            r |= ((code >> 0) & 1) << (7 - bit)
            g |= ((code >> 1) & 1) << (7 - bit)
            b |= ((code >> 2) & 1) << (7 - bit)
            code >>= 3
        palette.extend((r, g, b))
    return palette


class ClassList:
    """Background at index 0 followed by the foreground classes, with name lookup that names the culprit."""

    def __init__(self, names: tuple[str, ...] | list[str] = VOC_CLASSES):
        names = tuple(names)
        if not names or names[0] != "background":
            raise ValueError(f"the class list must start with 'background', got {names[:1]}")
        if len(set(names)) != len(names):
            raise ValueError(f"the class list repeats a name: {names}")
        if len(names) > IGNORE_INDEX:
            raise ValueError(f"at most {IGNORE_INDEX} classes fit in a PNG mask, got {len(names)}")
        self.names = names
        self._index = {name: i for i, name in enumerate(names)}

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: str) -> bool:
        return name in self._index

    @property
    def foreground(self) -> tuple[str, ...]:
        return self.names[1:]

    def index(self, name: str) -> int:
        try:
            return self._index[name]
        except KeyError:
            raise KeyError(f"unknown class name {name!r}; known: {', '.join(self.foreground)}") from None
