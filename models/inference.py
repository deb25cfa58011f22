"""Normalisation and tiled inference: how any image, of any size and units, meets a network.

Training and inference share :func:`normalise`/:func:`denormalise`, so a
trained model is independent of the image's units (counts, electrons,
detector volts). :func:`denoise_array` normalises each whole image (not each
tile, which would make tiles disagree), reflect-pads it by ``overlap_px``,
runs overlapping tiles in batches and keeps only each tile's centre. With
``overlap_px`` at least the network's receptive radius (8 px for the default
hourglass) tiled and whole-image results are identical up to float rounding.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from stemreg.errors import BadInputError


@dataclass(frozen=True)
class NormStats:
    """Per-image offset and scale; arrays broadcast against the image (scalars or (N, 1, 1))."""

    offset: np.ndarray
    scale: np.ndarray


def row_sums(rows: np.ndarray, offset: float | None = None) -> np.ndarray:
    """float64 sum of each row of a ``(rows, W)`` block (of ``(x - offset)**2`` when ``offset`` is given).

    A row's sum depends on that row alone, never on which rows come with it, so an image summed
    whole and one summed in bands of rows (a scan streamed from disk) give the same row sums; the
    statistics are then :func:`stats_from_sums` of them, the same bytes either way.
    """
    block = np.ascontiguousarray(rows, dtype=np.float64)
    block = block.reshape(-1, block.shape[-1])
    if offset is not None:
        block = np.square(block - offset)
    return np.add.reduce(block, axis=1)


def blocked_row_sums(image: np.ndarray, offset: float | None = None, block_bytes: int = 4 << 20) -> np.ndarray:
    """:func:`row_sums` of an ``(H, W)`` image a few MB of rows at a time (the float64 copies stay small)."""
    step = max(1, block_bytes // (8 * int(image.shape[-1])))
    return np.concatenate([row_sums(image[a:a + step], offset) for a in range(0, len(image), step)])


def stats_from_sums(sums: np.ndarray, count: int) -> float:
    """The exactly rounded total of ``sums`` (math.fsum: independent of their order) over ``count``."""
    return math.fsum(np.asarray(sums, dtype=np.float64).tolist()) / count


def finish_stats(offset: np.ndarray, variance: np.ndarray) -> NormStats:
    """float32 :class:`NormStats` from float64 means and variances (a flat image keeps scale 1)."""
    scale = np.sqrt(variance)
    scale = np.where(scale > 1e-12 * np.maximum(np.abs(offset), 1.0), scale, 1.0)
    return NormStats(offset=np.asarray(offset).astype(np.float32), scale=np.asarray(scale).astype(np.float32))


def image_stats(x: np.ndarray) -> NormStats:
    """Per-image mean and standard deviation of ``(H, W)`` or ``(N, H, W)``, from :func:`row_sums`:
    two passes (mean, then squared deviations), each total exactly rounded."""
    x = np.asarray(x, dtype=np.float32)
    stack = x[None] if x.ndim == 2 else x
    count = int(stack.shape[1]) * int(stack.shape[2])
    offsets = np.array([stats_from_sums(blocked_row_sums(image), count) for image in stack])
    variances = np.array([stats_from_sums(blocked_row_sums(image, mean), count)
                          for image, mean in zip(stack, offsets)])
    stats = finish_stats(offsets, variances)
    if x.ndim == 2:
        return NormStats(offset=stats.offset.reshape(()), scale=stats.scale.reshape(()))
    return NormStats(offset=stats.offset.reshape(-1, 1, 1), scale=stats.scale.reshape(-1, 1, 1))


def normalise(x: np.ndarray) -> tuple[np.ndarray, NormStats]:
    """Per-image zero-mean, unit-standard-deviation normalisation.

    Parameters
    ----------
    x : ndarray
        ``(H, W)`` image or ``(N, H, W)`` stack.

    Returns
    -------
    xn : ndarray, float32
        Normalised image(s), same shape.
    stats : NormStats
        What :func:`denormalise` needs; apply the *input's* stats to a
        training target too, so input and target stay in one scale. Computed by
        :func:`image_stats` (row by row, so a streamed scan gets the same bytes).
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim not in (2, 3):
        raise ValueError(f"normalise takes (H, W) or (N, H, W) arrays; got shape {x.shape}")
    stats = image_stats(x)
    return apply_stats(x, stats), stats


def apply_stats(x: np.ndarray, stats: NormStats) -> np.ndarray:
    """Normalise ``x`` with given stats (e.g. a clean target with its input's stats)."""
    return ((np.asarray(x, dtype=np.float32) - stats.offset) / stats.scale).astype(np.float32)


def denormalise(y: np.ndarray, stats: NormStats) -> np.ndarray:
    """Undo :func:`normalise`: back to the input image's units (float32)."""
    return (np.asarray(y, dtype=np.float32) * stats.scale + stats.offset).astype(np.float32)


def _tile_starts(length: int, core: int) -> list[int]:
    if length <= core:
        return [0]
    starts = list(range(0, length - core, core))
    starts.append(length - core)  # the last tile is aligned to the end, overlapping its neighbour
    return starts


def _even_core(length: int, core_px: int) -> int:
    n_tiles = -(-length // core_px)
    return -(-length // n_tiles)


def check_image(image: np.ndarray) -> np.ndarray:
    """Validate an image or stack for inference; return it as float32.

    Raises
    ------
    ValueError
        Wrong rank, empty, or NaN/Inf values.
    """
    arr = np.asarray(image)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"image must be a numeric array; got dtype {arr.dtype}")
    if arr.ndim not in (2, 3):
        raise ValueError(f"image must be 2-D (H, W) or a 3-D stack (N, H, W); got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"image is empty (shape {arr.shape})")
    arr = arr.astype(np.float32, copy=False)
    if not np.all(np.isfinite(arr)):
        raise BadInputError("image holds NaN or Inf values; replace them before denoising")
    return arr


def model_device(model: nn.Module) -> torch.device:
    """The device the model's parameters live on (CPU for a parameter-free module)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


#: Largest tile edge run in one piece by default: an image up to this size (plus its margin) is not tiled.
WHOLE_IMAGE_PX = 1024
#: Most context kept each side of a tile by default; beyond it the far field adds little.
MAX_OVERLAP_PX = 64
#: Reflect margin around an image that is run whole (no seams to hide, only its borders to support).
WHOLE_IMAGE_MARGIN_PX = 8


def default_tiling(model: nn.Module, height: int, width: int) -> tuple[int, int]:
    """``(tile_px, overlap_px)`` for an image: whole (with a small margin) when it fits
    :data:`WHOLE_IMAGE_PX`, else tiles of that size overlapping by the model's receptive radius
    (at most :data:`MAX_OVERLAP_PX`)."""
    radius = int(getattr(model, "receptive_radius_px", MAX_OVERLAP_PX))
    if max(height, width) <= WHOLE_IMAGE_PX:
        margin = min(radius, WHOLE_IMAGE_MARGIN_PX)
        return max(height, width) + 2 * margin, margin
    overlap = min(radius, MAX_OVERLAP_PX)
    return WHOLE_IMAGE_PX + 2 * overlap, overlap


def resolve_tiling(model: nn.Module | None, height: int, width: int, tile_px: int | None = None,
                   overlap_px: int | None = None) -> tuple[int, int]:
    """The ``(tile_px, overlap_px)`` :func:`denoise_array` runs: each given one as given, a missing
    one from :func:`default_tiling`. ``model`` None stands for a network of unknown receptive
    radius (the largest default overlap is assumed: never less work than the real run)."""
    if tile_px is None or overlap_px is None:
        auto_tile, auto_overlap = default_tiling(model, height, width)
        tile_px = auto_tile if tile_px is None else tile_px
        overlap_px = auto_overlap if overlap_px is None else overlap_px
    return int(tile_px), int(overlap_px)


#: Serialises moving a shared model's weights (:func:`_place`).
_PLACE_LOCK = threading.Lock()


def _place(model: nn.Module, dev: torch.device) -> None:
    """Move the model to ``dev`` with channels-last weights, unless it is there already: a served
    model is then left untouched, so concurrent calls (``stemreg serve --parallel``) share it safely.

    The move replaces the weights in place and frees the old ones, so it runs under a lock: threads
    that share a fresh model (Dask's threaded workers start their first blocks together) would else
    run a forward pass on weights freed under them (garbage in the first frames' output, seen once in
    tests/platform/test_streaming.py). Every forward pass comes after its own call here, and a model
    is moved at most once, so no pass can overlap the move."""
    # channels-last convolutions run ~1.8x faster on CPU here (benchmarks/bench_inference.py)
    def placed() -> bool:
        return not any(p.device != dev or (p.dim() == 4 and not p.is_contiguous(memory_format=torch.channels_last))
                       for p in model.parameters())

    if not placed():
        with _PLACE_LOCK:
            if not placed():
                model.to(dev, memory_format=torch.channels_last)


def denoise_array(model: nn.Module, image: np.ndarray, *, tile_px: int | None = None, overlap_px: int | None = None,
                  device: str | torch.device | None = None, batch_size: int = 8,
                  impulses: bool | None = None) -> np.ndarray:
    """Denoise an image or stack with a trained network, any size, in its own units.

    Parameters
    ----------
    model : torch.nn.Module
        Maps ``(B, 1, h, w)`` normalised tiles to the same shape. A model may
        declare ``size_multiple`` (e.g. 8 for one that down-samples 3 times);
        tiles are then reflect-padded to a multiple of it.
    image : ndarray
        ``(H, W)`` or ``(N, H, W)``, finite values.
    tile_px : int, optional
        Tile edge in pixels, overlap included. Default (with ``overlap_px``):
        :func:`default_tiling`, the whole image when it fits 1024 px.
    overlap_px : int, optional
        Context each side of a tile that is computed but discarded; at least
        the network's receptive radius for seamless results.
    device : str or torch.device, optional
        Where to run; default the model's own device. The model is moved there.
    batch_size : int
        Tiles per forward pass.
    impulses : bool, optional
        Repair defective pixels (hot, dead, impulse; :mod:`stemreg.models.impulses`) of each whole
        frame before the network. Default: the model's own ``impulse_k`` (set on adapted models),
        else no repair; True uses the model's threshold or the default one; False never repairs.

    Returns
    -------
    ndarray, float32
        Same shape as ``image``.
    """
    arr = check_image(image)
    stack = arr[None] if arr.ndim == 2 else arr
    plan = plan_tiles(model, stack.shape[-2], stack.shape[-1], tile_px=tile_px, overlap_px=overlap_px,
                      batch_size=batch_size)
    impulse_k = getattr(model, "impulse_k", None)
    if impulses or (impulses is None and impulse_k):  # a whole-frame step: such a model's scans are not banded
        from stemreg.models.impulses import DEFAULT_K, repair_impulses

        stack = repair_impulses(stack, impulse_k or DEFAULT_K)[0]
    xn, stats = normalise(stack)
    # reflect needs at least 2 px along an axis; a 1-px image falls back to edge padding
    pw = ((0, 0), (plan.overlap_px, plan.overlap_px), (plan.overlap_px, plan.overlap_px))
    padded = np.pad(xn, pw, mode=plan.pad_mode)
    tiles = [(n, y, x) for n in range(stack.shape[0]) for y in plan.ys for x in plan.xs]
    out = np.empty_like(xn)
    run_tiles(model, plan, padded, tiles, out, device=device)
    result = denormalise(out, stats)
    return result[0] if arr.ndim == 2 else result


@dataclass(frozen=True)
class TilePlan:
    """Where :func:`denoise_array` puts its tiles on an ``(H, W)`` image (of a stack) and how it batches them."""

    height: int
    width: int
    tile_px: int
    overlap_px: int
    core_h: int
    core_w: int
    ys: tuple[int, ...]
    xs: tuple[int, ...]
    batch_size: int

    @property
    def pad_mode(self) -> str:
        return "reflect" if min(self.height, self.width) > 1 else "edge"


def plan_tiles(model: nn.Module | None, height: int, width: int, *, tile_px: int | None = None,
               overlap_px: int | None = None, batch_size: int = 8) -> TilePlan:
    """The :class:`TilePlan` of :func:`denoise_array` for an ``(H, W)`` image (checked as it checks)."""
    tile_px, overlap_px = resolve_tiling(model, height, width, tile_px, overlap_px)
    if overlap_px < 0:
        raise ValueError(f"overlap_px must be >= 0 (got {overlap_px})")
    core_px = tile_px - 2 * overlap_px
    if core_px < 1:
        raise ValueError(f"tile_px ({tile_px}) must exceed 2 * overlap_px ({2 * overlap_px})")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 (got {batch_size})")
    # Spread the tiles evenly: fewest tiles of core <= core_px, instead of full tiles plus one
    # mostly-overlapping last tile (which cost up to 2x the work on a 512 px image).
    core_h, core_w = _even_core(height, core_px), _even_core(width, core_px)
    return TilePlan(height, width, tile_px, overlap_px, core_h, core_w, tuple(_tile_starts(height, core_h)),
                    tuple(_tile_starts(width, core_w)), batch_size)


def run_tiles(model: nn.Module, plan: TilePlan, padded: np.ndarray, tiles: list[tuple[int, int, int]],
              out: np.ndarray, *, row0: int = 0, device: str | torch.device | None = None) -> None:
    """Run ``tiles`` ``(n, y, x)`` in batches of ``plan.batch_size`` and write each tile's centre into ``out``.

    ``padded`` holds the normalised, reflect-padded rows from padded row ``row0`` on, ``out`` the
    image rows from ``row0`` on (a band of a scan; 0 for a whole image). Later tiles overwrite where
    tiles overlap, as in one whole-image run.
    """
    overlap, core_h, core_w = plan.overlap_px, plan.core_h, plan.core_w
    in_h, in_w = core_h + 2 * overlap, core_w + 2 * overlap
    multiple = int(getattr(model, "size_multiple", 1) or 1)
    extra_h, extra_w = (-in_h) % multiple, (-in_w) % multiple
    dev = torch.device(device) if device is not None else model_device(model)
    _place(model, dev)
    was_training = model.training
    if was_training:
        model.eval()
    try:
        with torch.inference_mode():
            for i in range(0, len(tiles), plan.batch_size):
                chunk = tiles[i:i + plan.batch_size]
                batch = np.stack([padded[n, y - row0:y - row0 + in_h, x:x + in_w] for n, y, x in chunk])
                if extra_h or extra_w:
                    batch = np.pad(batch, ((0, 0), (0, extra_h), (0, extra_w)), mode="reflect"
                                   if min(in_h, in_w) > max(extra_h, extra_w) else "edge")
                tiles_in = torch.from_numpy(np.ascontiguousarray(batch))[:, None].to(dev)
                pred = model(tiles_in.contiguous(memory_format=torch.channels_last))
                pred = pred[:, 0, overlap:overlap + core_h, overlap:overlap + core_w]
                pred = pred.float().cpu().numpy()
                for (n, y, x), tile in zip(chunk, pred):
                    out[n, y - row0:y - row0 + core_h, x:x + core_w] = tile
    finally:
        if was_training:
            model.train(True)
