"""The one call from napari into stemreg: denoise an array with a condition's registered model.

It takes the path of `stemreg denoise` and :func:`stemreg.load_model`: resolve the alias in the
registry, load that version through :mod:`stemreg.platform.registry.loading` (sha256 verified,
stemreg's own loader only: no code from the artifact store runs in napari), predict.
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


#: Loaded versions, by (store, model, version): a version's model never changes, so it loads once a session.
_MODELS: dict[tuple[str, str, str], Any] = {}


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
    from mlflow import MlflowClient

    from stemreg.acquisition import load_condition
    from stemreg.platform import registry
    from stemreg.platform.registry.loading import load_version
    from stemreg.platform.store import check_store, tracking_uri

    data = np.asarray(image)
    if data.ndim not in (2, 3) or not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)):
        raise ValueError(f"expected a 2-D image (H, W) or a stack (N, H, W) of real numbers; "
                         f"got shape {data.shape}, dtype {data.dtype}")
    data = data.astype(np.float32, copy=False)
    cond = load_condition(condition)
    uri = tracking_uri()  # read only: no experiment is created, nothing is logged
    check_store(uri, must_exist=False)  # a copied or moved project reads its own mlruns/
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    version = registry.resolve(cond, alias, client=client)
    key = (uri, str(version.name), str(version.version))
    if key not in _MODELS:
        _MODELS[key] = load_version(client, version, alias=alias)
    denoised = np.asarray(_MODELS[key].predict(data), dtype=np.float32).reshape(data.shape)
    from stemreg.platform.trust import report_for

    trust = report_for(_MODELS[key], data, denoised, with_map=True)  # its tags and condition set the range
    return DenoiseResult(data=denoised, condition=cond.name, alias=alias,
                         model_name=registry.model_name(cond), version=str(version.version), trust=trust)
