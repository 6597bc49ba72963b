"""HTML reports from the Jinja2 templates in `templates/`: `base.html.j2`, the layout and style every report shares,
`macros.html.j2`, its tables, figures and overlays, and one template per report kind.

A page is self-contained: every image is a PNG embedded as a base64 data URI, since KFP's HTML viewer shows the one
file a step outputs. Autoescaping is on, so names from a dataset or a store cannot inject markup.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass
from functools import cache

# An overlay strip's panels are shown at most this wide (px): a strip of three is not blown up to the width of five.
PANEL_PX = 220


@dataclass(frozen=True)
class Chart:
    """A PNG with the text a reader without the image gets (alt) and the line under it (caption)."""

    png: bytes
    alt: str
    caption: str = ""


def render_page(template: str, **context) -> str:
    """The page `template` (a file name in `templates/`) renders from `context`."""
    return _environment().get_template(template).render(**context)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def png_width(png: bytes) -> int:
    """A PNG's width, read from its header (bytes 16-19 of the IHDR chunk); 0 for bytes that are no PNG."""
    return int.from_bytes(png[16:20], "big") if png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) >= 24 else 0


@cache
def _environment():
    from jinja2 import Environment, PackageLoader, StrictUndefined

    environment = Environment(loader=PackageLoader("wsseg.evaluation", "templates"), autoescape=True,
                              undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    environment.filters["data_uri"] = data_uri
    environment.globals["panel_px"] = PANEL_PX
    environment.tests["upscaled"] = upscaled
    return environment


def upscaled(overlay) -> bool:
    """Whether the page shows the overlay strip larger than it is: then pixel for pixel, so masks keep sharp edges
    (a smoothed mask would show colours of no class)."""
    return png_width(overlay.png) < PANEL_PX * len(overlay.panels)
