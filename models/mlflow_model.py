"""The MLflow model: a ``loader_module`` pyfunc around weights + architecture JSON.

No code enters the artifact store: the model directory holds only data,
``data/weights.pt`` (a state_dict, loaded with ``weights_only=True``) and
``data/architecture.json``. Its MLmodel names this installed module as the
``loader_module``; MLflow imports it and calls :func:`_load_pyfunc` with the
data directory. Normalisation and tiling live inside
:meth:`DenoiserModel.predict` (through ``denoise_array``), so
MLflow's own pyfunc loader, ``mlflow models serve`` and ``stemreg serve``
all answer the same array.

Logging, in the platform layer::

    mlflow.pyfunc.log_model(name="model", **log_model_args(network, tmpdir),
                            signature=model_signature(), input_example=input_example(),
                            pip_requirements=pip_requirements())
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np

from stemreg.errors import BadInputError

WEIGHTS_FILE = "weights.pt"
ARCHITECTURE_FILE = "architecture.json"

#: Inference options a caller may pass as ``params`` (also declared in the signature). A tiling left
#: at None is :func:`stemreg.models.inference.denoise_array`'s own: the whole image up to 1024 px with
#: a small reflect margin, larger images in 1024 px tiles overlapping by the receptive radius; so a
#: registered model answers what ``denoise_array(network, image)`` does, on every surface.
DEFAULT_PARAMS: dict[str, int | None] = {"tile_px": None, "overlap_px": None, "batch_size": 8}
#: Accepted range of each param (inclusive); a given tiling's overlap_px must also stay below tile_px / 4.
PARAM_RANGES: dict[str, tuple[int, int]] = {"tile_px": (16, 4096), "overlap_px": (0, 128),
                                            "batch_size": (1, 64)}
#: The smallest image side every surface accepts (files, CLI, /denoise, /invocations).
MIN_SIDE_PX = 2
#: A last axis this short under two longer ones holds channels (RGB(A), detector pairs), not image columns.
MAX_CHANNELS = 4
#: The largest magnitude a float32 pixel holds; larger float64 values would become Inf.
FLOAT32_MAX = float(np.finfo(np.float32).max)
#: The fixed cost of one forward pass, in pixel-equivalents (Python + framework overhead per batch).
PASS_COST_PX = 256 * 256
#: This module, named as the pyfunc's ``loader_module``.
LOADER_MODULE = "stemreg.models.mlflow_model"


def resolve_params(params: dict | None) -> dict[str, int | None]:
    """The inference options: defaults overridden by ``params``, each checked against its range.

    ``tile_px`` / ``overlap_px`` stay None unless given (the tiling then depends on the image:
    :func:`tiling_of`); a given None means the default.

    Raises
    ------
    ValueError
        A param that is no integer, out of its range, an unknown name, or an overlap of a quarter
        of the tile or more; one line naming the accepted range.
    """
    options = dict(DEFAULT_PARAMS)
    for key, value in (params or {}).items():
        if key not in DEFAULT_PARAMS:
            raise BadInputError(f"unknown param {key!r}; accepted: {', '.join(DEFAULT_PARAMS)}")
        if value is None:
            continue
        low, high = PARAM_RANGES[key]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer, float, str)):
            raise BadInputError(f"param {key}={value!r} is not an integer; accepted: {low}..{high}")
        try:
            number = int(value)
            exact = float(value) == number
        except (TypeError, ValueError, OverflowError):
            raise BadInputError(f"param {key}={value!r} is not an integer; accepted: {low}..{high}") from None
        if not exact or not low <= number <= high:
            raise BadInputError(f"param {key}={value!r} is out of range; accepted: integers {low}..{high}")
        options[key] = number
    if options["tile_px"] is not None and options["overlap_px"] is not None:
        _check_quarter(options["tile_px"], options["overlap_px"], "")
    return options


def _check_quarter(tile: int, overlap: int, note: str) -> None:
    if 4 * overlap >= tile:
        raise BadInputError(f"param overlap_px={overlap}{note} must be below a quarter of "
                         f"tile_px={tile}; accepted: 0..{max(0, (tile - 1) // 4)}")


def tiling_of(shape: tuple[int, ...], options: dict, network: Any = None) -> tuple[int, int]:
    """``(tile_px, overlap_px)`` a request on ``shape`` runs: given ones as given, missing ones as
    :func:`stemreg.models.inference.denoise_array` chooses for ``network`` (None: a network of
    unknown receptive radius, assumed as wide as the default allows).

    Raises
    ------
    ValueError
        A caller-given tiling whose overlap (given or default) is a quarter of the tile or more.
    """
    from stemreg.models.inference import resolve_tiling

    given_tile, given_overlap = options.get("tile_px"), options.get("overlap_px")
    tile, overlap = resolve_tiling(network, int(shape[-2]), int(shape[-1]), given_tile, given_overlap)
    if given_tile is not None or given_overlap is not None:
        _check_quarter(tile, overlap, " (the default for this image)" if given_overlap is None else "")
    return tile, overlap


def check_shape(shape: tuple[int, ...]) -> None:
    """Refuse a shape no surface accepts: not (H, W) or (N, H, W), empty, a side below 2 px, or an
    image with colour/detector channels last, (H, W, C) with C <= 4 (a stack of H images C px wide
    is no STEM data; denoising it as one mixes the channels into nonsense).

    Raises
    ------
    BadInputError
        One line naming the shape and what is accepted.
    """
    if len(shape) not in (2, 3):
        raise BadInputError(f"input has shape {list(shape)}; a 2-D image (H, W) or a 3-D stack (N, H, W) is needed")
    if 0 in shape:
        raise BadInputError(f"input is empty (shape {list(shape)})")
    if len(shape) == 3 and shape[-1] <= MAX_CHANNELS < min(shape[0], shape[1]):
        raise BadInputError(f"input has shape {list(shape)}: an image with {shape[-1]} channels last (H, W, C), "
                            "not a stack (N, H, W); stemreg denoises one channel at a time: pass one, "
                            "e.g. image[..., 0]")
    if min(shape[-2:]) < MIN_SIDE_PX:
        raise BadInputError(f"input is too small (shape {list(shape)}); an image needs at least "
                            f"{MIN_SIDE_PX} x {MIN_SIDE_PX} pixels")


def work_of(shape: tuple[int, ...], options: dict, network: Any = None) -> int:
    """The pixels the network processes for ``shape`` under ``options`` (tiles x padded tile area x
    stack count), plus :data:`PASS_COST_PX` per forward pass: the cost one request asks for.

    The tiling is the one the request runs (:func:`tiling_of`, the same rule as ``denoise_array``).
    """
    height, width = int(shape[-2]), int(shape[-1])
    n_images = int(shape[0]) if len(shape) == 3 else 1
    tile, overlap = tiling_of(shape, options, network)
    core = tile - 2 * overlap
    tiles_h, tiles_w = -(-height // core), -(-width // core)
    in_h, in_w = -(-height // tiles_h) + 2 * overlap, -(-width // tiles_w) + 2 * overlap
    multiple = int(getattr(network, "size_multiple", 1) or 1)  # tiles padded up to it
    in_h, in_w = in_h + (-in_h) % multiple, in_w + (-in_w) % multiple
    tiles = n_images * tiles_h * tiles_w
    passes = -(-tiles // (options.get("batch_size") or DEFAULT_PARAMS["batch_size"]))
    return tiles * in_h * in_w + passes * PASS_COST_PX


def check_work(shape: tuple[int, ...], options: dict, max_work: int, network: Any = None) -> int:
    """:func:`work_of`, refused above ``max_work`` (OverflowError naming both figures and what helps)."""
    work = work_of(shape, options, network)
    if work > max_work:
        tile, overlap = tiling_of(shape, options, network)
        raise OverflowError(f"this request asks for {work} pixel-steps of work (shape {list(shape)}, "
                            f"tile_px={tile}, overlap_px={overlap}, "
                            f"batch_size={options.get('batch_size') or DEFAULT_PARAMS['batch_size']}), more than "
                            f"the limit of {max_work}; send fewer or larger images per request, a larger "
                            "tile_px or a smaller overlap_px")
    return work


def models_from_code_path() -> str:
    """Path of ``pyfunc_entry.py`` (models logged before ``loader_module``; kept to read them)."""
    return str(Path(__file__).with_name("pyfunc_entry.py"))


def log_model_args(model: Any, directory: str | Path) -> dict[str, str]:
    """``loader_module`` and ``data_path`` for ``mlflow.pyfunc.log_model``: data only, no code stored.

    Writes the two artifacts into ``directory`` (see :func:`save_artifacts`).
    """
    save_artifacts(model, directory)
    return {"loader_module": LOADER_MODULE, "data_path": str(directory)}


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

    if model_input is None:
        raise BadInputError("no image given (None); an (H, W) image or (N, H, W) stack is needed")
    if isinstance(model_input, dict):
        if len(model_input) != 1:
            raise BadInputError(f"expected one image array, got a dict with keys {sorted(model_input)}")
        model_input = next(iter(model_input.values()))
    if isinstance(model_input, pd.DataFrame):
        values = model_input.to_numpy()
        if values.dtype == object and values.size and np.ndim(values.flat[0]) >= 1:
            model_input = np.stack([np.asarray(v, dtype=np.float32) for v in values.ravel()])
        else:
            model_input = values
    try:
        raw = np.asarray(model_input)
    except (ValueError, TypeError) as exc:  # ragged nested lists
        raise BadInputError(f"input is not a rectangular (H, W) or (N, H, W) array: {exc}") from None
    if raw.dtype == np.bool_:
        raise BadInputError("input holds booleans; a real-valued image (integer or float pixels) is needed")
    if raw.dtype.kind == "c":
        raise BadInputError("input holds complex numbers; a real-valued image is needed (pass its .real or "
                            "abs() if that is what you mean)")
    if raw.dtype.kind not in "uifO":
        raise BadInputError(f"input holds {raw.dtype} values; a real-valued image (integer or float pixels) "
                            "is needed")
    try:
        with np.errstate(over="ignore"):
            arr = np.asarray(raw, dtype=np.float32)
    except (ValueError, TypeError) as exc:
        raise BadInputError(f"input is not a numeric (H, W) or (N, H, W) array: {exc}") from None
    if raw.dtype.kind == "f" and raw.dtype.itemsize > 4 and np.isinf(arr).any() and np.isfinite(raw).all():
        raise BadInputError(f"input holds values up to {float(np.abs(raw).max()):.3g}, beyond float32's range "
                            f"(+-{FLOAT32_MAX:.3g}); rescale the image (e.g. divide by its maximum)")
    return arr


def _load_pyfunc(data_path: str) -> "DenoiserModel":
    """MLflow's ``loader_module`` hook: the denoiser from the data directory's two artifacts."""
    data = Path(data_path)
    return DenoiserModel(load_denoiser(data / WEIGHTS_FILE, data / ARCHITECTURE_FILE))


def denoise_input(network: Any, model_input: Any, params: dict | None) -> np.ndarray:
    """Validate params and input (one rule for every surface), then denoise with the tiling
    :func:`tiling_of` names (without params: exactly ``denoise_array(network, image)``)."""
    from stemreg.models.inference import denoise_array

    options = resolve_params(params)
    arr = as_image_array(model_input)
    check_shape(arr.shape)
    tile, overlap = tiling_of(arr.shape, options, network)
    return denoise_array(network, arr, tile_px=tile, overlap_px=overlap, batch_size=options["batch_size"])


class DenoiserModel:
    """A network behind ``predict`` on ``(H, W)`` or ``(N, H, W)`` float arrays: what
    :func:`_load_pyfunc` returns for a registered model, and what wraps the shipped pretrained base."""

    def __init__(self, network: Any) -> None:
        self.model = network

    def get_raw_model(self) -> Any:
        """The torch network (MLflow's ``PyFuncModel.get_raw_model`` hands it on)."""
        return self.model

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> np.ndarray:
        """Denoise; ``params`` may set ``tile_px``, ``overlap_px`` and ``batch_size``."""
        return denoise_input(self.model, model_input, params)


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
        if self.model is None:
            raise RuntimeError("DenoiserPyfunc has no network: load it through stemreg.load_model")
        return denoise_input(self.model, model_input, params)
