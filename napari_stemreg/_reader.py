"""napari reader for the microscope formats stemreg reads, with the pixel size as the layer's scale."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

#: Suffixes handed to :func:`stemreg.acquisition.read_image` (same list as napari.yaml).
SUFFIXES = (".dm3", ".dm4", ".emd", ".hspy", ".tif", ".tiff", ".npy")

LayerData = tuple[Any, dict[str, Any], str]


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """napari's reader hook: :func:`read_layers` for files stemreg reads, else None (another reader tries)."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if not paths or not all(str(p).lower().endswith(SUFFIXES) for p in paths):
        return None
    return read_layers


def read_layers(path: str | list[str]) -> list[LayerData]:
    """One image layer per file; scale in nm from the file's pixel size (none when the file has none).

    Raises
    ------
    stemreg.acquisition.ImageReadError
        The file cannot be read as an image (message names the file and the problem).
    """
    from stemreg.acquisition import read_image

    paths = [path] if isinstance(path, (str, Path)) else list(path)
    layers: list[LayerData] = []
    for p in paths:
        image = read_image(p, allow_stack=True)
        kwargs: dict[str, Any] = {"name": Path(p).stem,
                                  "metadata": {"source": str(p), "format": image.format,
                                               "calibration": image.calibration.to_dict()}}
        pixel_pm = image.calibration.pixel_size_pm()
        if pixel_pm is not None:
            lead = (1.0,) * (image.data.ndim - 2)
            kwargs["scale"] = (*lead, pixel_pm / 1000.0, pixel_pm / 1000.0)
            kwargs["units"] = (*(("pixel",) * len(lead)), "nm", "nm")
        layers.append((image.data, kwargs, "image"))
    return layers
