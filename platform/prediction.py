"""The one prediction path: denoise arrays, files or HyperSpy signals with a loaded model.

:func:`stemreg.denoise` is :func:`denoise`; `stemreg denoise` and the server predict through it
too. Models are loaded by :mod:`stemreg.platform.registry.loading` (:func:`stemreg.load_model`).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np

from stemreg.acquisition import ImageWithCalibration, read_image
from stemreg.models.mlflow_model import as_image_array
# Loading lives in one module; these names are re-exported for the callers that import them from here.
from stemreg.platform.registry.loading import LoadedModel, load_model, load_shipped_base, load_version  # noqa: F401
from stemreg.platform.registry.naming import CHAMPION


def trained_pixel_range_pm(model: LoadedModel) -> tuple[float, float] | None:
    """The samplings (pm/px) a loaded model was trained on, from its tags; None when unknown."""
    tags = model.tags or {}
    raw = tags.get("trained_pixel_size_pm") or tags.get("condition.pixel_size_pm")
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        return None
    if isinstance(value, (int, float)):
        return float(value), float(value)
    if isinstance(value, list) and len(value) == 2:
        return float(value[0]), float(value[1])
    return None


def sampling_warning(model: LoadedModel, pixel_size_pm: float | None) -> str | None:
    """A one-line warning when an image's pixel size lies outside the model's trained samplings."""
    span = trained_pixel_range_pm(model)
    if not pixel_size_pm or span is None:
        return None
    low, high = span
    if low * 0.999 <= pixel_size_pm <= high * 1.001:
        return None
    return (f"the image's pixel size {pixel_size_pm:.3g} pm lies outside the {low:g}-{high:g} pm/px this model "
            f"was trained on; it is denoised anyway, but expect less (resample it into that range for the best result)")


def _is_signal(image: Any) -> bool:
    return hasattr(image, "data") and hasattr(image, "axes_manager")


def denoise(image: Any, *, condition: Any = None, alias: str = CHAMPION, model: LoadedModel | None = None,
            tracking_uri: str | None = None, params: dict | None = None, report: bool = False) -> Any:
    """Denoise an image with a condition's registered model.

    Parameters
    ----------
    image
        A float array `(H, W)` or stack `(N, H, W)`; a file path (any format
        :func:`stemreg.acquisition.read_image` reads); an
        :class:`~stemreg.acquisition.ImageWithCalibration`; or a HyperSpy
        `Signal2D` (or a stack of them).
    condition, alias, tracking_uri
        Which registered model (see :func:`load_model`); ignored when ``model`` is given.
    model
        A model loaded once by :func:`load_model`, for many calls.
    params
        Tiling options for the model (`tile_px`, `overlap_px`, `batch_size`).
    report
        Also judge the output from its input alone: return ``(denoised, trust)`` with a
        :class:`~stemreg.models.trust.TrustReport` (a list of them for a stack) whose ``verdict``
        is ``ok``, ``doubtful`` or ``out of range`` and whose ``map`` shows where.

    Returns
    -------
    numpy.ndarray, ImageWithCalibration or Signal2D
        The same kind as ``image``: an array for an array; for a path or an
        `ImageWithCalibration`, an `ImageWithCalibration` keeping the
        calibration; for a `Signal2D`, a copy with the denoised data and the
        same axes and metadata. With ``report=True``, a pair ``(denoised, trust)``.

    Raises
    ------
    stemreg.acquisition.ImageReadError
        An unreadable file.
    ValueError
        An array of the wrong rank, empty, or holding NaN/Inf.
    """
    model = model or load_model(condition, alias=alias, tracking_uri=tracking_uri)
    if isinstance(image, (str, Path)):
        image = read_image(image, allow_stack=True)
    pixel_size_pm, data = None, image
    if isinstance(image, ImageWithCalibration):
        out = _run(model, image.data, params)
        result, pixel_size_pm, data = ImageWithCalibration(out, image.calibration, image.format), \
            image.calibration.pixel_size_pm(), image.data
    elif _is_signal(image):
        result = image.deepcopy() if hasattr(image, "deepcopy") else copy.deepcopy(image)
        result.data = out = _run(model, image.data, params)
        data = image.data
    else:
        result = out = _run(model, image, params)
    if not report:
        return result
    from stemreg.platform.trust import report_for

    return result, report_for(model, np.asarray(data, np.float32), out, pixel_size_pm=pixel_size_pm, with_map=True)


def _run(model: LoadedModel, data: Any, params: dict | None) -> np.ndarray:
    data = as_image_array(data)  # the one rule: no booleans, complex numbers or float32 overflow
    return np.asarray(model.predict(data, params), dtype=np.float32).reshape(data.shape)
