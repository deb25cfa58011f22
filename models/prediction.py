"""Single-image prediction through a loaded pyfunc of a stemreg denoiser.

The registered models are signed for stacks `(N, H, W)`; a lone image `(H, W)`
goes as a stack of one and comes back `(H, W)`. Every caller (the CLI, the
server, the benchmark, :func:`stemreg.denoise`) predicts through here. Loading a
stored model is the platform's (:mod:`stemreg.platform.registry.loading`): this
layer knows networks, not MLflow stores.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np


def takes_stacks_only(pyfunc: Any) -> bool:
    """True when the pyfunc's signature declares one rank-3 tensor `(N, H, W)` input."""
    metadata = getattr(pyfunc, "metadata", None)
    schema = metadata.get_input_schema() if metadata is not None else None
    if schema is None or not getattr(schema, "is_tensor_spec", lambda: False)():
        return False
    shapes = [tuple(getattr(spec, "shape", ()) or ()) for spec in schema.inputs]
    return len(shapes) == 1 and len(shapes[0]) == 3


def network_of(pyfunc: Any) -> Any:
    """The torch network behind a stemreg pyfunc (loaded or bare :class:`DenoiserModel`); None if unknown."""
    try:
        return pyfunc.get_raw_model()
    except (AttributeError, NotImplementedError):
        return None


def request_options(pyfunc: Any, params: dict | None) -> dict:
    """The options ``pyfunc.predict(data, params)`` runs with: the signature's param defaults (what
    MLflow fills in for a missing param; None in models registered now, 256 / 16 px tiles in older
    ones) overridden by ``params``, checked (:func:`stemreg.models.mlflow_model.resolve_params`)."""
    from stemreg.models.mlflow_model import resolve_params

    metadata = getattr(pyfunc, "metadata", None)
    schema = metadata.get_params_schema() if metadata is not None else None
    defaults = {spec.name: spec.default for spec in schema.params} if schema is not None else {}
    return resolve_params({**defaults, **(params or {})})


def predict(pyfunc: Any, data: Any, params: dict | None = None) -> Any:
    """Run the pyfunc on `data`; a lone `(H, W)` array comes back `(H, W)` even from a stack-signed model.

    Other inputs (stacks, DataFrames) go to the pyfunc unchanged and come back as it answers.
    """
    lone = isinstance(data, np.ndarray) and data.ndim == 2 and takes_stacks_only(pyfunc)
    batch = data[None] if lone else data
    out = pyfunc.predict(batch, params=params) if params else pyfunc.predict(batch)
    return np.asarray(out)[0] if lone else out


def predict_fn(pyfunc: Any) -> Callable[[np.ndarray], np.ndarray]:
    """`(H, W) -> (H, W)` float32 through :func:`predict` (what the scorer times)."""
    def run(image: np.ndarray) -> np.ndarray:
        image = np.asarray(image, dtype=np.float32)
        return np.asarray(predict(pyfunc, image), dtype=np.float32).reshape(image.shape)

    return run
