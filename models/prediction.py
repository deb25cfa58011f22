"""Single-image prediction through a loaded MLflow pyfunc of a stemreg denoiser.

The registered models are signed for stacks `(N, H, W)`; a lone image `(H, W)`
goes as a stack of one and comes back `(H, W)`. Every caller (the CLI, the
server, the benchmark, :func:`stemreg.denoise`) predicts through here.
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


def load_pyfunc(model_uri: str) -> Any:
    """`mlflow.pyfunc.load_model(model_uri)`: a file URI or path needs no tracking store."""
    import mlflow.pyfunc  # heavy: only when a model is loaded

    return mlflow.pyfunc.load_model(model_uri)


def pyfunc_predict_fn(model_uri: str) -> Callable[[np.ndarray], np.ndarray]:
    """A predict function from an MLflow model URI (loads the pyfunc once)."""
    return predict_fn(load_pyfunc(model_uri))
