"""A scan larger than memory, denoised in row bands that give the bytes of one whole-image run.

:func:`~stemreg.models.inference.denoise_array` normalises the whole image with its mean and
standard deviation, reflect-pads it, and runs its tiles (rows of tiles, left to right) in batches,
later tiles overwriting where tiles overlap. A band here is a run of whole tile rows:

- the statistics come from :func:`~stemreg.models.inference.row_sums` over every row of the image
  (a first pass, band by band; a row's sum does not depend on its neighbours, and the totals are
  exactly rounded), so they are the whole-image ones to the last bit;
- a band starts at a tile whose index is a multiple of the batch size, so its batches are the
  whole run's batches, tile for tile (a forward pass's bytes can depend on what shares its batch);
- it reads the rows its tiles see (with the reflected rows at the image's top and bottom) and
  keeps the rows it owns: from its first tile row's start to the next band's first tile row's
  start, the rows no later tile overwrites. Band ``k`` owns rows ``[k R, (k + 1) R)`` (``R`` =
  :attr:`BandPlan.rows`), the last band up to the image's end: a chunk grid of ``R`` rows, each
  chunk written by one band.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from stemreg.models.inference import NormStats, TilePlan, run_tiles


@dataclass(frozen=True)
class BandPlan:
    """Bands of whole tile rows over a :class:`TilePlan`: ``bands[k] = (first, stop)`` tile rows."""

    tiles: TilePlan
    bands: tuple[tuple[int, int], ...]

    @property
    def rows(self) -> int:
        """Image rows each band owns (the last may own more, up to the image's end): the chunk height."""
        first, stop = self.bands[0]
        return self.tiles.height if len(self.bands) == 1 else (stop - first) * self.tiles.core_h

    def owned(self, k: int) -> tuple[int, int]:
        """The image rows ``[start, stop)`` band ``k`` writes."""
        first, stop = self.bands[k]
        ys = self.tiles.ys
        return ys[first], (ys[stop] if stop < len(ys) else self.tiles.height)

    def read_rows(self, k: int) -> np.ndarray:
        """The image row under each padded row band ``k``'s tiles see (reflected at the edges)."""
        first, stop = self.bands[k]
        plan = self.tiles
        padded = np.arange(plan.ys[first], plan.ys[stop - 1] + plan.core_h + 2 * plan.overlap_px)
        rows = np.abs(padded - plan.overlap_px)
        last = plan.height - 1
        return np.where(rows > last, 2 * last - rows, rows)


def row_step(plan: TilePlan) -> int:
    """Tile rows per band must be a multiple of this: each band then starts at a whole batch."""
    import math

    per_row = len(plan.xs)
    return plan.batch_size // math.gcd(plan.batch_size, per_row)


def plan_bands(plan: TilePlan, *, band_bytes: int | None = None, tile_rows: int | None = None) -> BandPlan:
    """Bands of about ``band_bytes`` of float32 input each (or of ``tile_rows`` tile rows, a multiple of
    :func:`row_step`). An image of one tile row, or too small to split, is one band.

    Raises
    ------
    ValueError
        ``tile_rows`` not a multiple of :func:`row_step`.
    """
    step, count = row_step(plan), len(plan.ys)
    if tile_rows is not None:
        if tile_rows < 1 or tile_rows % step:
            raise ValueError(f"{tile_rows} tile rows per band: give a multiple of {step} (whole batches of "
                             f"{plan.batch_size} tiles, {len(plan.xs)} tiles per row)")
        per = tile_rows
    else:
        row_bytes = 4 * plan.core_h * plan.width
        per = max(step, int(band_bytes or 0) // max(1, row_bytes) // step * step)
    starts = list(range(0, count, per))
    if len(starts) > 1 and starts[-1] == count - 1:
        starts.pop()  # the last tile row starts off the grid (it is aligned to the image's end): join it on
    stops = starts[1:] + [count]
    return BandPlan(plan, tuple(zip(starts, stops)))


def denoise_band(model: nn.Module, bands: BandPlan, k: int, rows: np.ndarray, row_lo: int, stats: NormStats,
                 *, device: str | None = None) -> np.ndarray:
    """Band ``k``'s owned rows, denoised: ``rows`` holds the image rows from ``row_lo`` on, at least
    those :meth:`BandPlan.read_rows` names (float32, checked by the caller)."""
    plan = bands.tiles
    first, stop = bands.bands[k]
    index = bands.read_rows(k) - row_lo
    if index.min() < 0 or index.max() >= len(rows):
        raise ValueError(f"band {k} needs image rows {index.min() + row_lo}-{index.max() + row_lo}; "
                         f"got {row_lo}-{row_lo + len(rows) - 1}")
    offset, scale = (np.float32(np.asarray(v).reshape(())) for v in (stats.offset, stats.scale))
    # apply_stats, in place: the same two float32 operations on each pixel as the whole run's
    normed = np.asarray(rows, np.float32)[index]
    np.subtract(normed, offset, out=normed)
    np.divide(normed, scale, out=normed)
    pw = ((0, 0), (0, 0), (plan.overlap_px, plan.overlap_px))
    padded = np.pad(normed[None], pw, mode=plan.pad_mode)
    del normed
    top = plan.ys[first]
    out = np.empty((1, plan.ys[stop - 1] + plan.core_h - top, plan.width), np.float32)
    tiles = [(0, y, x) for y in plan.ys[first:stop] for x in plan.xs]
    run_tiles(model, plan, padded, tiles, out, row0=top, device=device)
    del padded
    start, end = bands.owned(k)
    owned = out[0, :end - start]
    np.multiply(owned, scale, out=owned)  # denormalise, in place
    np.add(owned, offset, out=owned)
    return owned

