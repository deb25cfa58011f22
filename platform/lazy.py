"""Denoising on Dask: a lazy array or HyperSpy signal in, a lazy one out; the model loaded once per worker.

A Dask graph never carries the model: it carries a :class:`ModelSpec` (which model, pinned to the
version the caller loaded, and the store), and each process that runs a block loads the model from
it once, through :func:`stemreg.load_model` (the verified path: sha256 of the weights and
architecture checked, no pickled code), and keeps it for the next blocks. The process that built
the graph seeds its cache with the model it already holds, so an in-process run loads nothing twice.

Frames map over chunks of whole frames; each chunk is denoised as :func:`stemreg.denoise` denoises
an in-memory stack (tiled as usual), and a chunk holds a multiple of the model's batch of tiles,
so its forward passes are the ones the in-memory run makes and the values are the same bytes.
"""
from __future__ import annotations

import copy
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stemreg.platform.errors import StemregError

#: Bytes of input per chunk of frames when the caller does not say (a few chunks per worker fit easily).
CHUNK_BYTES = 64 * 2**20

_MODELS: dict["ModelSpec", Any] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class ModelSpec:
    """What a worker needs to load the caller's model itself: small, picklable, no weights."""

    model_uri: str  # what the caller loaded: models:/<name>/<version>, pretrained:<name>, or a URI
    condition: str | None = None
    version: str | None = None
    tracking_uri: str | None = None

    def load(self) -> Any:
        """The model, through :func:`stemreg.load_model` (verified), checked to be the one pinned."""
        # stemreg.load_model is this function; platform does not import the API package above it
        from stemreg.platform.prediction import load_model, load_shipped_base

        if self.model_uri.startswith("pretrained:"):  # the shipped base (sha256 checked against its card)
            model = load_shipped_base(self.condition)
        elif self.model_uri.startswith("models:/") and self.condition is not None:
            alias = self.version if self.version is not None else "champion"
            model = load_model(self.condition, alias=alias, tracking_uri=self.tracking_uri)
        else:
            model = load_model(model_uri=self.model_uri, tracking_uri=self.tracking_uri)
        if model.model_uri != self.model_uri:
            raise StemregError(f"a worker loaded {model.model_uri} where the job was started with {self.model_uri} "
                               "(a model was registered meanwhile); rerun the job")
        return model


def spec_of(model: Any, tracking_uri: str | None = None) -> ModelSpec:
    """The :class:`ModelSpec` of a loaded model; this process's cache holds the model under it."""
    from stemreg.platform.store import tracking_uri as default_tracking_uri

    uri = tracking_uri or default_tracking_uri()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):  # a worker may run elsewhere: absolute
        uri = "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    spec = ModelSpec(model_uri=str(model.model_uri), condition=model.condition,
                     version=None if model.version is None else str(model.version), tracking_uri=uri)
    with _LOCK:
        _MODELS.setdefault(spec, model)
    return spec


def worker_model(spec: ModelSpec) -> Any:
    """The model of ``spec`` in this process: loaded on first use, then reused by every block."""
    with _LOCK:  # one load per process, even when several threads start blocks at once
        if spec not in _MODELS:
            _MODELS[spec] = spec.load()
        return _MODELS[spec]


def run_frames(spec: ModelSpec, frames: np.ndarray, params: dict | None = None) -> np.ndarray:
    """Denoise ``(k, H, W)`` or ``(H, W)`` with the model of ``spec``: what :func:`stemreg.denoise` does."""
    from stemreg.platform.prediction import _run

    return _run(worker_model(spec), frames, params)


def frames_per_chunk(shape: tuple[int, ...], params: dict | None = None, *, chunk_bytes: int = CHUNK_BYTES,
                     tiles_per_frame: int = 1) -> int:
    """Whole frames per chunk: about ``chunk_bytes`` of float32, a multiple of the frames whose tiles
    fill whole batches (so the chunk's forward passes are the in-memory run's)."""
    batch = int((params or {}).get("batch_size") or 8)
    step = batch // math.gcd(batch, max(1, tiles_per_frame))
    frame_bytes = 4 * int(np.prod(shape[-2:]))
    return max(step, chunk_bytes // frame_bytes // step * step)


def tiles_per_frame(model: Any, shape: tuple[int, ...], params: dict | None = None) -> int:
    """How many tiles the model runs per frame of ``shape`` (1 for a frame up to 1024 px)."""
    from stemreg.models.inference import _even_core, _tile_starts
    from stemreg.models.mlflow_model import resolve_params, tiling_of
    from stemreg.models.prediction import network_of

    options = resolve_params(params)
    tile, overlap = tiling_of(shape, options, network_of(model.pyfunc))
    core = tile - 2 * overlap
    height, width = int(shape[-2]), int(shape[-1])
    return (len(_tile_starts(height, _even_core(height, core))) * len(_tile_starts(width, _even_core(width, core))))


def denoise_lazy(data: Any, model: Any, *, params: dict | None = None, tracking_uri: str | None = None,
                 chunk_frames: int | None = None) -> Any:
    """A lazy Dask array of the denoised ``data`` (a Dask array ``(N, H, W)`` or ``(H, W)``); nothing runs.

    Raises
    ------
    ValueError
        Not 2-D or 3-D (the message says what is accepted).
    """
    import dask.array as da

    if data.ndim not in (2, 3) or min(data.shape[-2:]) < 2:
        raise ValueError(f"image must be 2-D (H, W) or a 3-D stack (N, H, W); got shape {tuple(data.shape)}")
    spec = spec_of(model, tracking_uri)
    if data.ndim == 2:  # one scan: row bands with the whole-image bytes, about as tall as its row chunks
        from stemreg.platform.scan_bands import denoise_scan_lazy

        band_bytes = 4 * max(data.chunks[0]) * int(data.shape[1])
        banded = denoise_scan_lazy(data, model, spec, params, band_bytes=band_bytes, load=worker_model)
        if banded is not None:
            return banded
        block = data.rechunk(data.shape)
        return block.map_blocks(run_frames, spec=spec, params=params, dtype=np.float32, meta=np.empty((0, 0), np.float32))
    per = chunk_frames or frames_per_chunk(data.shape, params, tiles_per_frame=tiles_per_frame(model, data.shape, params))
    frames = data.rechunk((per, -1, -1))
    # the spec as a keyword: every block task names the same small object, never the model
    return da.map_blocks(_run_block, frames, spec=spec, params=params, dtype=np.float32,
                         meta=np.empty((0, 0, 0), np.float32))


def _run_block(block: np.ndarray, *, spec: ModelSpec, params: dict | None) -> np.ndarray:
    return run_frames(spec, block, params)


def is_lazy(image: Any) -> bool:
    """A Dask array, or a HyperSpy signal whose data is one."""
    data = getattr(image, "data", None) if hasattr(image, "axes_manager") else image
    return type(data).__module__.startswith("dask.")


def denoise_lazy_input(image: Any, model: Any, *, params: dict | None = None,
                       tracking_uri: str | None = None) -> Any:
    """:func:`stemreg.denoise` for lazy input: a Dask array gives a Dask array, a lazy signal a lazy
    signal with the same axes (scale, units) and metadata. Nothing is computed."""
    if not hasattr(image, "axes_manager"):
        return denoise_lazy(image, model, params=params, tracking_uri=tracking_uri)
    result = image.deepcopy() if hasattr(image, "deepcopy") else copy.deepcopy(image)
    result.data = denoise_lazy(image.data, model, params=params, tracking_uri=tracking_uri)
    return result
