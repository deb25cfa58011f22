"""napari plugin for stemreg: denoise an image layer with a registered model; read microscope files.

Installed as the import package `stemreg_napari` (folder `napari_stemreg/`,
mapped in pyproject.toml; a folder named `napari` would shadow napari itself)
and found by napari through the `napari.manifest` entry point (`napari.yaml`).
Install with `pip install "stemreg[napari]"`.
"""
from __future__ import annotations

from stemreg_napari._denoise import DenoiseResult, denoise_image
from stemreg_napari._reader import get_reader, read_layers

__all__ = ["DenoiseResult", "denoise_image", "get_reader", "read_layers"]
