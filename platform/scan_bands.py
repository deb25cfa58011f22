"""A single huge scan ``(H, W)``, lazily or streamed: row bands with the bytes of one whole-image run.

The rule is :mod:`stemreg.models.bands`; this module ties it to a loaded model (the tiling and
batch its pyfunc runs for the whole image), to a Dask graph (:func:`denoise_scan_lazy`) and to a
streamed job (:func:`plan_scan`, :func:`scan_stats`, :func:`band_of`). Statistics take two passes
over the rows (sums, then squared deviations from the mean), band by band, before any band is
denoised; every band reads only the rows its tiles see.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np

from stemreg.platform.errors import BadInputError


def band_plan_of(model: Any, shape: tuple[int, ...], params: dict | None = None, *, band_bytes: int = 0,
                 tile_rows: int | None = None) -> Any:
    """The :class:`~stemreg.models.bands.BandPlan` of ``model`` on an ``(H, W)`` scan: the tiling and
    batch its pyfunc would run on the whole image. None for a pyfunc whose network is unknown, or one
    that repairs impulses first (:mod:`stemreg.models.impulses`: a whole-frame noise estimate)."""
    from stemreg.models.bands import plan_bands
    from stemreg.models.inference import plan_tiles
    from stemreg.models.mlflow_model import tiling_of
    from stemreg.models.prediction import network_of, request_options

    network = network_of(model.pyfunc)
    if network is None or getattr(network, "impulse_k", None):  # unknown, or a whole-frame repair step first
        return None
    options = request_options(model.pyfunc, params)
    tile, overlap = tiling_of(shape, options, network)
    plan = plan_tiles(network, int(shape[-2]), int(shape[-1]), tile_px=tile, overlap_px=overlap,
                      batch_size=int(options["batch_size"]))
    return plan_bands(plan, band_bytes=band_bytes, tile_rows=tile_rows)


def plan_to_json(bands: Any) -> dict:
    return {"tiles": asdict(bands.tiles), "bands": [list(b) for b in bands.bands]}


def plan_from_json(data: dict) -> Any:
    from stemreg.models.bands import BandPlan
    from stemreg.models.inference import TilePlan

    tiles = dict(data["tiles"])
    tiles["ys"], tiles["xs"] = tuple(tiles["ys"]), tuple(tiles["xs"])
    return BandPlan(TilePlan(**tiles), tuple(tuple(b) for b in data["bands"]))


def checked_rows(block: Any, first_row: int) -> np.ndarray:
    """Rows of the scan as float32, refused (one line naming them) if not finite or out of float32's range."""
    from stemreg.models.mlflow_model import as_image_array

    rows = as_image_array(np.asarray(block))
    if not np.isfinite(rows).all():
        bad = int(np.flatnonzero(~np.isfinite(rows).all(axis=1))[0]) + first_row
        raise BadInputError(f"rows {first_row}-{first_row + len(rows) - 1}: the image holds NaN or Inf values "
                            f"(first in row {bad}); replace them before denoising")
    return rows


#: Rows summed at a time (the float64 copies of a band's rows stay small; a row's sum is the same).
_SUM_BYTES = 1 << 20


def _sums(block: Any, first_row: int, offset: float | None = None) -> np.ndarray:
    from stemreg.models.inference import row_sums

    step = max(1, _SUM_BYTES // (8 * int(block.shape[-1])))
    return np.concatenate([row_sums(checked_rows(block[a:a + step], first_row + a), offset)
                           for a in range(0, len(block), step)])


def _mean(sums: list[np.ndarray], count: int) -> float:
    from stemreg.models.inference import stats_from_sums

    return stats_from_sums(np.concatenate(sums), count)


def _stats(offset: float, sums: list[np.ndarray], count: int) -> tuple[float, float]:
    from stemreg.models.inference import finish_stats, stats_from_sums

    stats = finish_stats(np.float64(offset), np.float64(stats_from_sums(np.concatenate(sums), count)))
    return float(stats.offset), float(stats.scale)


def _band(load: Any, spec: Any, bands: Any, k: int, block: Any, row_lo: int,
          stats: tuple[float, float]) -> np.ndarray:
    """Band ``k`` with the model ``load(spec)`` gives (:func:`stemreg.platform.lazy.worker_model`)."""
    from stemreg.models.bands import denoise_band
    from stemreg.models.inference import NormStats
    from stemreg.models.prediction import network_of

    norm = NormStats(np.float32(stats[0]), np.float32(stats[1]))
    return denoise_band(network_of(load(spec).pyfunc), bands, k, checked_rows(block, row_lo), row_lo, norm)


def read_span(bands: Any, k: int) -> tuple[int, int]:
    """The image rows ``[lo, hi)`` band ``k`` reads."""
    rows = bands.read_rows(k)
    return int(rows.min()), int(rows.max()) + 1


def denoise_scan_lazy(data: Any, model: Any, spec: Any, params: dict | None, *, band_bytes: int, load: Any) -> Any:
    """A lazy ``(H, W)`` result in row bands (one Dask chunk per band); None when it cannot be banded
    (one tile row, or a pyfunc whose network is unknown): the caller then runs it as one block."""
    import dask
    import dask.array as da

    bands = band_plan_of(model, data.shape, params, band_bytes=band_bytes)
    if bands is None or len(bands.bands) == 1:
        return None
    count = int(data.shape[0]) * int(data.shape[1])
    owned = [bands.owned(k) for k in range(len(bands.bands))]
    sums = [dask.delayed(_sums)(data[a:b], a) for a, b in owned]
    mean = dask.delayed(_mean)(sums, count)
    squares = [dask.delayed(_sums)(data[a:b], a, mean) for a, b in owned]
    stats = dask.delayed(_stats)(mean, squares, count)
    parts = []
    for k, (a, b) in enumerate(owned):
        lo, hi = read_span(bands, k)
        part = dask.delayed(_band)(load, spec, bands, k, data[lo:hi], lo, stats)
        parts.append(da.from_delayed(part, (b - a, int(data.shape[1])), np.float32))
    return da.concatenate(parts, axis=0)


# -- a streamed job (stemreg.platform.stream_job) -----------------------------------------------------------
def plan_scan(model: Any, shape: tuple[int, ...], params: dict | None, *, chunk_rows: int | None,
              band_bytes: int) -> dict | None:
    """The band plan of a streamed scan as plain data (for the job's manifest); None: one chunk.

    Raises
    ------
    BadInputError
        ``chunk_rows`` that is not a whole number of band steps (the message names the step).
    """
    probe = band_plan_of(model, shape, params, band_bytes=band_bytes)
    if probe is None:
        return None
    if chunk_rows is not None:
        from stemreg.models.bands import row_step

        step = row_step(probe.tiles) * probe.tiles.core_h
        if chunk_rows % step:
            raise BadInputError(f"--chunk-rows {chunk_rows}: give a multiple of {step} (whole rows of tiles, "
                                f"{probe.tiles.core_h} px each, that start whole batches of "
                                f"{probe.tiles.batch_size} tiles)")
        probe = band_plan_of(model, shape, params, tile_rows=chunk_rows // probe.tiles.core_h)
    return plan_to_json(probe)


def scan_stats(job: Any, executor: Any) -> list[float]:
    """The scan's float32 (offset, scale): two passes over its bands, on ``executor``."""
    bands = plan_from_json(job.extra["tiling"])
    count = int(job.shape[0]) * int(job.shape[1])
    indices = list(range(len(bands.bands)))
    sums = dict(executor.map(_job_sums, job, indices))
    offset = _mean([sums[k] for k in indices], count)
    job.extra["mean"] = offset  # what the second pass's workers subtract
    squares = dict(executor.map(_job_squares, job, indices))
    return list(_stats(offset, [squares[k] for k in indices], count))


def _rows(job: Any, a: int, b: int) -> np.ndarray:
    from stemreg.acquisition.series_io import open_series_once

    return open_series_once(job.input).data[a:b].compute(scheduler="synchronous")


def _owned_rows(job: Any, k: int) -> tuple[int, np.ndarray]:
    a, b = plan_from_json(job.extra["tiling"]).owned(k)
    return a, _rows(job, a, b)


def _job_sums(job: Any, k: int) -> np.ndarray:
    return _sums(*_owned_rows(job, k)[::-1])


def _job_squares(job: Any, k: int) -> np.ndarray:
    return _sums(*_owned_rows(job, k)[::-1], job.extra["mean"])


def band_of(job: Any, k: int, load: Any) -> tuple[tuple[int, int], np.ndarray]:
    """Band ``k`` of a streamed scan: the rows it owns and their denoised values (model: ``load(job.model)``)."""
    bands = plan_from_json(job.extra["tiling"])
    lo, hi = read_span(bands, k)
    return bands.owned(k), _band(load, job.model, bands, k, _rows(job, lo, hi), lo, tuple(job.extra["stats"]))
