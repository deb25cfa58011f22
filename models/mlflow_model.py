"""The MLflow model: a models-from-code pyfunc around weights + architecture JSON.

No pickled code enters the registry: the model directory holds
``weights.pt`` (a state_dict, loaded with ``weights_only=True``),
``architecture.json`` and the code file ``pyfunc_entry.py``, which imports
:class:`DenoiserPyfunc` from the installed stemreg. Normalisation and tiling
live inside :meth:`DenoiserPyfunc.predict` (through ``denoise_array``), so
``mlflow.pyfunc.load_model``, ``mlflow models serve`` and ``stemreg serve``
all answer the same array.

Logging, in the platform layer::

    mlflow.pyfunc.log_model(name="model", python_model=models_from_code_path(),
                            artifacts=save_artifacts(model, tmpdir),
                            signature=model_signature(), input_example=input_example(),
                            pip_requirements=pip_requirements())
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np

WEIGHTS_FILE = "weights.pt"
ARCHITECTURE_FILE = "architecture.json"

#: Inference options a caller may pass as ``params`` (also declared in the signature).
DEFAULT_PARAMS: dict[str, int] = {"tile_px": 256, "overlap_px": 16, "batch_size": 8}


def models_from_code_path() -> str:
    """Path of ``pyfunc_entry.py``, the file MLflow logs as the model's code."""
    return str(Path(__file__).with_name("pyfunc_entry.py"))


def save_artifacts(model: Any, directory: str | Path) -> dict[str, str]:
    """Write ``weights.pt`` (state_dict) and ``architecture.json`` into ``directory``.

    Returns
    -------
    dict
        ``{"weights": path, "architecture": path}``, the ``artifacts`` argument
        of ``mlflow.pyfunc.log_model``.
    """
    import torch

    from stemreg.models.architectures import architecture_of

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / WEIGHTS_FILE
    architecture = directory / ARCHITECTURE_FILE
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save(state, weights)
    architecture.write_text(json.dumps(architecture_of(model), indent=2, sort_keys=True))
    return {"weights": str(weights), "architecture": str(architecture)}


def load_denoiser(weights_path: str | Path, architecture_path: str | Path, *, device: Any = None) -> Any:
    """Rebuild a network from the two artifacts (weights loaded with ``weights_only=True``)."""
    import torch

    from stemreg.models.architectures import build_model
    from stemreg.models.training import pick_device

    arch = json.loads(Path(architecture_path).read_text())
    model = build_model(arch)
    dev = pick_device("auto" if device is None else device)
    state = torch.load(weights_path, map_location=dev, weights_only=True)
    model.load_state_dict(state)
    return model.to(dev).eval()


def pip_requirements() -> list[str]:
    """Pinned requirements of the pyfunc, for ``log_model(pip_requirements=...)``.

    Passing them skips MLflow's requirement inference, which loads the model in
    a subprocess (seconds to tens of seconds per log). stemreg itself is not on
    a package index: serve with ``--env-manager local`` where it is installed.
    """
    from importlib.metadata import PackageNotFoundError, version

    names = ["mlflow", "torch", "numpy", "scikit-image", "pandas", "pydantic"]
    out = []
    for name in names:
        try:
            out.append(f"{name}=={version(name)}")
        except PackageNotFoundError:  # pragma: no cover - all are dependencies of stemreg
            out.append(name)
    return out


def model_signature() -> Any:
    """Signature: float32 tensor stacks ``(-1, -1, -1)`` in and out, plus the tiling params.

    A single image travels as a stack of one, ``(1, H, W)``: this is what
    ``mlflow models serve`` builds from JSON ``{"inputs": [[[...]]]}``.
    """
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec, Schema, TensorSpec

    tensor = Schema([TensorSpec(np.dtype(np.float32), (-1, -1, -1))])
    params = ParamSchema([ParamSpec(name, "long", default) for name, default in DEFAULT_PARAMS.items()])
    return ModelSignature(inputs=tensor, outputs=tensor, params=params)


def input_example(size_px: int = 32, *, seed: int = 0) -> np.ndarray:
    """A small float32 stack ``(1, size_px, size_px)`` for ``log_model(input_example=...)``."""
    rng = np.random.default_rng(seed)
    return rng.poisson(20.0, size=(1, size_px, size_px)).astype(np.float32)


def as_image_array(model_input: Any) -> np.ndarray:
    """Turn what MLflow hands to ``predict`` into a float32 ``(H, W)`` or ``(N, H, W)`` array.

    Accepts ndarrays, nested lists, a dict with one array (named tensor
    input), or a pandas DataFrame: either one image (rows x columns of
    numbers) or one image per cell (cells holding 2-D arrays/nested lists).
    """
    import pandas as pd

    if isinstance(model_input, dict):
        if len(model_input) != 1:
            raise ValueError(f"expected one image array, got a dict with keys {sorted(model_input)}")
        model_input = next(iter(model_input.values()))
    if isinstance(model_input, pd.DataFrame):
        values = model_input.to_numpy()
        if values.dtype == object and values.size and np.ndim(values.flat[0]) >= 1:
            model_input = np.stack([np.asarray(v, dtype=np.float32) for v in values.ravel()])
        else:
            model_input = values
    try:
        arr = np.asarray(model_input, dtype=np.float32)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"input is not a numeric (H, W) or (N, H, W) array: {exc}") from exc
    return arr


class DenoiserPyfunc(mlflow.pyfunc.PythonModel):
    """Pyfunc that denoises ``(H, W)`` or ``(N, H, W)`` float arrays with a stored network."""

    def __init__(self) -> None:
        self.model = None

    def load_context(self, context) -> None:  # noqa: ANN001 - mlflow's PythonModelContext
        """Rebuild the network from the ``weights`` and ``architecture`` artifacts."""
        self.model = load_denoiser(context.artifacts["weights"], context.artifacts["architecture"])

    # model_input is hinted np.ndarray (MLflow then infers nothing from the hint and leaves
    # the input as given); lists and DataFrames are accepted too.
    def predict(self, context, model_input: np.ndarray,  # noqa: ANN001 - mlflow's PythonModelContext
                params: dict[str, Any] | None = None) -> np.ndarray:
        """Denoise; returns a float32 array of the input's shape.

        ``params`` may set ``tile_px``, ``overlap_px`` and ``batch_size``.
        """
        from stemreg.models.inference import denoise_array

        if self.model is None:
            raise RuntimeError("DenoiserPyfunc has no network: load it through mlflow.pyfunc.load_model")
        options = dict(DEFAULT_PARAMS)
        options.update({k: int(v) for k, v in (params or {}).items() if k in DEFAULT_PARAMS and v is not None})
        arr = as_image_array(model_input)
        return denoise_array(self.model, arr, **options)
