"""The one call from napari into stemreg: denoise an array with a condition's registered model.

Kept in one small function so that it can be pointed at the public API
(`stemreg.denoise`) once that exists; today it takes the same path as
`stemreg denoise`: resolve the alias in the registry, load that version's
pyfunc, predict a stack of one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: Aliases the widget offers (see docs/CONTRACTS.md, "Names in MLflow").
ALIASES = ("champion", "challenger")


@dataclass(frozen=True)
class DenoiseResult:
    """A denoised image and the registered version that made it."""

    data: np.ndarray        # float32, the input's shape
    condition: str
    alias: str
    model_name: str
    version: str
    #: The trust report(s) (:class:`stemreg.models.trust.TrustReport`, one per image of a stack),
    #: judged from the input and the output alone; each holds a ``map``.
    trust: Any = None


_MODELS: dict[tuple[str, str], Any] = {}


def _load(tracking_uri: str, model_uri: str) -> Any:
    import mlflow.pyfunc

    key = (tracking_uri, model_uri)
    if key not in _MODELS:  # a version's model never changes: load it once per session
        _MODELS[key] = mlflow.pyfunc.load_model(model_uri)
    return _MODELS[key]


def denoise_image(image: np.ndarray, *, condition: str, alias: str = "champion") -> DenoiseResult:
    """Denoise one image (H, W) or a stack (N, H, W) with `stem-denoiser-<condition>@<alias>`.

    Parameters
    ----------
    image
        Finite numbers, 2-D or 3-D.
    condition
        Built-in condition name (see `stemreg conditions`) or a condition YAML file.
    alias
        Registry alias (`champion`, `challenger`) or a version number.

    Returns
    -------
    DenoiseResult

    Raises
    ------
    ValueError
        The image is not 2-D/3-D numbers.
    stemreg.acquisition.UnknownConditionError
        Not a built-in condition name nor a condition file.
    stemreg.platform.registry.NotRegisteredError
        No model registered for the condition, or nothing behind the alias.
    """
    import mlflow

    from stemreg.acquisition import load_condition
    from stemreg.platform import registry
    from stemreg.platform.store import tracking_uri

    data = np.asarray(image)
    if data.ndim not in (2, 3) or not np.issubdtype(data.dtype, np.number):
        raise ValueError(f"expected a 2-D image (H, W) or a stack (N, H, W) of numbers; "
                         f"got shape {data.shape}, dtype {data.dtype}")
    data = data.astype(np.float32, copy=False)
    cond = load_condition(condition)
    uri = tracking_uri()  # read only: no experiment is created, nothing is logged
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    version = registry.resolve(cond, alias)
    model = _load(uri, registry.model_uri(cond, str(version.version)))
    denoised = np.asarray(model.predict(data[None] if data.ndim == 2 else data), dtype=np.float32)
    denoised = denoised.reshape(data.shape)
    from types import SimpleNamespace

    from stemreg.platform.trust import report_for

    trust = report_for(SimpleNamespace(tags=dict(version.tags or {}), condition=cond.name), data, denoised,
                       with_map=True)
    return DenoiseResult(data=denoised, condition=cond.name, alias=alias,
                         model_name=registry.model_name(cond), version=str(version.version), trust=trust)
