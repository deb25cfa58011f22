"""What a file says about itself, checked before it is believed: calibration keys, channels, value range.

The readers of :mod:`stemreg.acquisition.io` call these; each problem is one
:class:`~stemreg.acquisition.errors.ImageReadError` naming the file and what is accepted, never a
silent wrong answer (palette indices, channels read as a stack, float32 overflow to Inf).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from stemreg.acquisition.errors import ImageReadError

#: PIL modes of grey-level PNGs, read as they are.
PNG_GREY_MODES = ("L", "I;16", "I;16B", "I;16L", "I", "F")
#: The largest magnitude a float32 pixel holds; larger values would become Inf.
FLOAT32_MAX = float(np.finfo(np.float32).max)
#: Length units a file may give its pixel size in, as picometres.
UNIT_TO_PM = {"pm": 1.0, "nm": 1e3, "Å": 1e2, "A": 1e2, "angstrom": 1e2, "µm": 1e6, "um": 1e6, "μm": 1e6,
              "micron": 1e6, "mm": 1e9, "cm": 1e10, "m": 1e12}
#: Pixel sizes a file may claim, in pm: from a thousandth of a picometre to a millimetre (a STEM overview
#: scan's pixels are micrometres); beyond that the calibration is corrupt, not a microscope's.
PIXEL_SIZE_BOUNDS_PM = (1e-3, 1e9)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def checked_calibration(meta: Any, path: Path | BinaryIO, where: str) -> tuple[float | None, str | None]:
    """``(pixel_size, unit)`` as a sidecar or PNG chunk holds them, checked: a positive finite ``pixel_size`` (or none)
    and a text ``unit`` (or none); anything else is one line naming the file and the key."""
    name = path if isinstance(path, Path) else Path("image")
    if not isinstance(meta, dict):
        raise ImageReadError(name, f"its {where} is a {type(meta).__name__}, not an object with pixel_size and unit")
    size, unit = meta.get("pixel_size"), meta.get("unit")
    if size is not None and (not _number(size) or size <= 0):
        raise ImageReadError(name, f"its {where} has pixel_size {size!r}; a positive number (or none) is accepted")
    if unit is not None and not isinstance(unit, str):
        raise ImageReadError(name, f"its {where} has unit {unit!r}; a unit name such as \"pm\" or \"nm\" is accepted")
    low, high = PIXEL_SIZE_BOUNDS_PM
    if size is not None and unit in UNIT_TO_PM and not low <= size * UNIT_TO_PM[unit] <= high:
        raise ImageReadError(name, f"its {where} has pixel_size {size!r} {unit}; a pixel size from {low:g} pm to "
                                   f"{high / 1e9:g} mm is accepted")
    return (None if size is None else float(size)), unit


def value_range(meta: dict, path: Path | BinaryIO, where: str) -> tuple[float, float] | None:
    """``(data_min, data_max)`` a PNG chunk maps its integer levels onto, checked; None when absent."""
    if "data_min" not in meta or "data_max" not in meta:
        return None
    low, high = meta["data_min"], meta["data_max"]
    if not (_number(low) and _number(high) and abs(low) <= FLOAT32_MAX and abs(high) <= FLOAT32_MAX
            and low <= high):
        raise ImageReadError(path if isinstance(path, Path) else Path("image"),
                             f"its {where} has data_min {low!r}, data_max {high!r}; numbers with "
                             f"data_min <= data_max within +-{FLOAT32_MAX:.3g} are accepted")
    return float(low), float(high)


def one_channel(data: np.ndarray, axes: str, path: Path | BinaryIO) -> np.ndarray:
    """A TIFF series as grey levels: RGB(A) samples averaged (a grey image saved as colour, as for PNG);
    any other channel count (2 samples, an ImageJ C axis) refused rather than read as a stack."""
    name = path if isinstance(path, Path) else Path("image.tiff")
    for axis in "SC":
        if axis not in axes or data.shape[axes.index(axis)] == 1:
            continue
        count = data.shape[axes.index(axis)]
        if axis == "S" and count in (3, 4):
            data = np.moveaxis(data, axes.index(axis), -1)
            return data[..., :3].astype(np.float64).mean(axis=-1)
        raise ImageReadError(name, f"holds {count} channels per pixel (axes {axes}, shape {list(data.shape)}); "
                                   "stemreg denoises one channel: save each channel as its own file")
    return data


def check_float32_range(data: np.ndarray, path: Path) -> None:
    """Refuse finite values that float32, the pixels' type everywhere after reading, cannot hold."""
    if data.dtype.kind == "f" and data.dtype.itemsize > 4 and data.size and np.abs(data).max() > FLOAT32_MAX:
        raise ImageReadError(path, f"holds values up to {float(np.abs(data).max()):.3g}, beyond float32's range "
                                   f"(+-{FLOAT32_MAX:.3g}); rescale it (e.g. divide by its maximum)")
