"""The one prediction path: load a condition's registered model, denoise arrays, files or HyperSpy signals.

:func:`stemreg.denoise` and :func:`stemreg.load_model` are these functions;
`stemreg denoise` and the server predict through them too.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from mlflow import MlflowClient

from stemreg.acquisition import ImageWithCalibration, read_image
from stemreg.models import pretrained
from stemreg.models.mlflow_model import DenoiserModel
from stemreg.models.prediction import ModelLoadError, load_pyfunc, predict
from stemreg.platform.errors import BadInputError, StemregError
from stemreg.platform.registry.loading import open_version
from stemreg.platform.registry.naming import CHAMPION, NotRegisteredError, condition_name
from stemreg.platform.registry.versions import resolve
from stemreg.platform.store import tracking_uri as default_tracking_uri


@dataclass
class LoadedModel:
    """A registered denoiser, loaded: call :meth:`predict` or pass it to :func:`denoise` as ``model=``."""

    pyfunc: Any
    model_uri: str
    name: str | None = None
    version: str | None = None
    alias: str | None = None
    condition: str | None = None
    tags: dict[str, str] | None = None
    run_id: str | None = None

    def predict(self, data: Any, params: dict | None = None) -> Any:
        """Denoise `(H, W)` or `(N, H, W)` (float); a lone image comes back `(H, W)`."""
        return predict(self.pyfunc, data, params)


def load_version(client: MlflowClient, version: Any, *, alias: str | None = None,
                 loader: Any = None) -> LoadedModel:
    """Load a registered `ModelVersion` without touching MLflow's global tracking/registry URIs.

    ``loader`` (``model_uri -> pyfunc``) receives `models:/<name>/<version>` when given (the server's
    hook); by default the version's artifacts are loaded from their own location.
    """
    uri = f"models:/{version.name}/{version.version}"
    if loader is not None:
        pyfunc = loader(uri)
    else:
        try:
            pyfunc = open_version(client, version)  # its own artifacts, sha256 verified
        except ModelLoadError as exc:  # one line naming the version and the way back
            condition = (version.tags or {}).get("condition") or str(version.name).removeprefix("stem-denoiser-")
            raise StemregError(f"{version.name} version {version.version} cannot be loaded: {exc}; point the "
                               f"alias back to a good version with `stemreg rollback --condition {condition}`") from None
    name = str(version.name)
    return LoadedModel(pyfunc=pyfunc, model_uri=uri, name=name, version=str(version.version), alias=alias,
                       condition=(version.tags or {}).get("condition"), tags=dict(version.tags or {}),
                       run_id=version.run_id)


def load_model(condition: Any = None, *, alias: str = CHAMPION, model_uri: str | None = None,
               tracking_uri: str | None = None, fallback_pretrained: bool = True) -> LoadedModel:
    """Load a condition's registered denoiser (its champion by default), or any model URI.

    Parameters
    ----------
    condition
        Condition name or `Condition`; the model is `stem-denoiser-<condition>`.
    alias
        Alias (`champion`, `challenger`) or version number.
    model_uri
        Instead of ``condition``: any MLflow model URI or local path of a stemreg pyfunc.
    tracking_uri
        The MLflow store; default `MLFLOW_TRACKING_URI`, else `sqlite:///mlflow.db`.
    fallback_pretrained
        When nothing is registered for the condition and the champion is asked for, use the
        pretrained base that ships with stemreg (its ``name`` says so) instead of failing.

    Returns
    -------
    LoadedModel

    Raises
    ------
    BadInputError
        Neither or both of ``condition`` and ``model_uri``; nothing registered behind the alias
        (:class:`~stemreg.platform.registry.NotRegisteredError`).
    """
    if (condition is None) == (model_uri is None):
        raise BadInputError("give a condition (and alias) or a model_uri, not both or neither")
    if model_uri is not None:
        return LoadedModel(pyfunc=load_pyfunc(model_uri), model_uri=model_uri)
    uri = tracking_uri or default_tracking_uri()
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        version = resolve(condition, alias, client=client)
    except NotRegisteredError:
        # A fresh install: nothing trained yet, but the package ships a pretrained base.
        if not fallback_pretrained or alias != CHAMPION or not pretrained.available():
            raise
        return load_shipped_base(condition_name(condition))
    loaded = load_version(client, version, alias=alias)
    loaded.condition = condition_name(condition)
    return loaded


def load_shipped_base(condition: str | None = None) -> LoadedModel:
    """The pretrained base that ships with stemreg, as a :class:`LoadedModel` (``name`` says so).

    Wrapped in the same :class:`~stemreg.models.mlflow_model.DenoiserModel` a registered model loads
    into: the same params, checks, defaults and tiling, only not read from an MLflow model folder.
    """
    network, card = pretrained.load_pretrained()
    return LoadedModel(pyfunc=DenoiserModel(network), model_uri=f"pretrained:{card['name']}",
                       name=f"pretrained base '{card['name']}' (shipped with stemreg)", version=None,
                       alias=None, condition=condition, tags={"pretrained": "true",
                                                             "trained_pixel_size_pm": json.dumps(
                                                                 card["condition"]["pixel_size_pm"])})


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
            tracking_uri: str | None = None, params: dict | None = None) -> Any:
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

    Returns
    -------
    numpy.ndarray, ImageWithCalibration or Signal2D
        The same kind as ``image``: an array for an array; for a path or an
        `ImageWithCalibration`, an `ImageWithCalibration` keeping the
        calibration; for a `Signal2D`, a copy with the denoised data and the
        same axes and metadata. A Dask array or a lazy signal gives a lazy
        result of the same kind and shape, computed only when asked
        (:mod:`stemreg.platform.lazy`: whole frames per chunk, the model
        loaded once per worker through the verified path).

    Raises
    ------
    stemreg.acquisition.ImageReadError
        An unreadable file.
    ValueError
        An array of the wrong rank, empty, or holding NaN/Inf.
    """
    model = model or load_model(condition, alias=alias, tracking_uri=tracking_uri)
    from stemreg.platform.lazy import denoise_lazy_input, is_lazy

    if is_lazy(image):  # a Dask array or lazy signal: a lazy result, the model loaded once per worker
        return denoise_lazy_input(image, model, params=params, tracking_uri=tracking_uri)
    if isinstance(image, (str, Path)):
        image = read_image(image, allow_stack=True)
    if isinstance(image, ImageWithCalibration):
        out = _run(model, image.data, params)
        return ImageWithCalibration(out, image.calibration, image.format)
    if _is_signal(image):
        result = image.deepcopy() if hasattr(image, "deepcopy") else copy.deepcopy(image)
        result.data = _run(model, image.data, params)
        return result
    return _run(model, image, params)


def _run(model: LoadedModel, data: Any, params: dict | None) -> np.ndarray:
    data = np.asarray(data, dtype=np.float32)
    return np.asarray(model.predict(data, params), dtype=np.float32).reshape(data.shape)
