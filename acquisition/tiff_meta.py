"""The calibration a TIFF's tags carry: one rule for whole images (io.py) and streamed stacks (series_io.py)."""
from __future__ import annotations

from typing import Any


def tiff_pixel_size(tif: Any) -> tuple[float | None, str | None]:
    """``(pixel_size, unit)`` of an open ``tifffile.TiffFile`` from its resolution tags, in ImageJ's
    unit or the resolution unit (centimetres); ``(None, None)`` for inches or without tags."""
    tags = tif.pages[0].tags
    if "XResolution" not in tags:
        return None, None
    num, den = tags["XResolution"].value
    pixels_per_unit = num / den if den else 0.0
    unit = None
    if tif.imagej_metadata and tif.imagej_metadata.get("unit"):
        unit = str(tif.imagej_metadata["unit"])
        unit = {"micron": "µm", "\\u00B5m": "µm"}.get(unit, unit)
    elif "ResolutionUnit" in tags:
        unit = {2: "inch_", 3: "cm"}.get(int(tags["ResolutionUnit"].value))
    if pixels_per_unit > 0 and unit and unit != "inch_":
        return 1.0 / pixels_per_unit, unit
    return None, None
