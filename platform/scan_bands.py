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
    batch its pyfunc would run on the whole image. None for a pyfunc whose network is unknown."""
    from stemreg.models.bands import plan_bands
    from stemreg.models.inference import plan_tiles
    from stemreg.models.mlflow_model import tiling_of
    from stemreg.models.prediction import network_of, request_options

    network = network_of(model.pyfunc)
    if network is None:
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


# -- a model that repairs defective pixels first (stemreg.models.impulses): each band's rows are repaired
# with a halo of HALO_ROWS rows and the frame's noise model from its central window, as the whole frame is
def impulse_k_of(model: Any) -> float | None:
    """The impulse repair's threshold of a loaded model's network, None when it repairs nothing."""
    from stemreg.models.prediction import network_of

    return getattr(network_of(model.pyfunc), "impulse_k", None) or None


def _halo(a: int, b: int, height: int, repair: Any) -> tuple[int, int]:
    from stemreg.models.impulses import HALO_ROWS

    return (max(0, a - HALO_ROWS), min(height, b + HALO_ROWS)) if repair is not None else (a, b)


def _prepared(block: Any, lo: int, a: int, b: int, repair: Any) -> np.ndarray:
    """Image rows ``[a, b)`` (``block`` holds the rows from ``lo`` on) checked, and repaired when
    ``repair`` is ``(k, FrameNoise)``."""
    rows = checked_rows(block, lo)
    if repair is not None:
        from stemreg.models.impulses import repair_rows

        rows = repair_rows(rows, *repair)
    return rows[a - lo:b - lo]


def _band_sums(block: Any, lo: int, a: int, b: int, offset: float | None, repair: Any) -> np.ndarray:
    """Row sums of the owned rows ``[a, b)`` (repaired first when the model repairs)."""
    if repair is None:
        return _sums(block, lo, offset)
    return _sums(_prepared(block, lo, a, b, repair), a, offset)


def _mean(sums: list[np.ndarray], count: int) -> float:
    from stemreg.models.inference import stats_from_sums

    return stats_from_sums(np.concatenate(sums), count)


def _stats(offset: float, sums: list[np.ndarray], count: int) -> tuple[float, float]:
    from stemreg.models.inference import finish_stats, stats_from_sums

    stats = finish_stats(np.float64(offset), np.float64(stats_from_sums(np.concatenate(sums), count)))
    return float(stats.offset), float(stats.scale)


def _band(load: Any, spec: Any, bands: Any, k: int, block: Any, block_lo: int,
          stats: tuple[float, float], repair: Any = None) -> np.ndarray:
    """Band ``k`` with the model ``load(spec)`` gives (:func:`stemreg.platform.lazy.worker_model`);
    ``block`` holds the image rows from ``block_lo`` on (the band's rows and, with ``repair``, a halo)."""
    from stemreg.models.bands import denoise_band
    from stemreg.models.inference import NormStats
    from stemreg.models.prediction import network_of

    norm = NormStats(np.float32(stats[0]), np.float32(stats[1]))
    lo, hi = read_span(bands, k)
    rows = _prepared(block, block_lo, lo, hi, repair)
    return denoise_band(network_of(load(spec).pyfunc), bands, k, rows, lo, norm)


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
    height, count = int(data.shape[0]), int(data.shape[0]) * int(data.shape[1])
    repair = None
    k_impulse = impulse_k_of(model)
    if k_impulse:
        from stemreg.models.impulses import frame_noise, noise_window

        repair = dask.delayed(tuple)([k_impulse, dask.delayed(frame_noise)(data[noise_window(data.shape)])])
    owned = [bands.owned(k) for k in range(len(bands.bands))]
    spans = [_halo(a, b, height, repair) for a, b in owned]
    sums = [dask.delayed(_band_sums)(data[lo:hi], lo, a, b, None, repair) for (a, b), (lo, hi) in zip(owned, spans)]
    mean = dask.delayed(_mean)(sums, count)
    squares = [dask.delayed(_band_sums)(data[lo:hi], lo, a, b, mean, repair)
               for (a, b), (lo, hi) in zip(owned, spans)]
    stats = dask.delayed(_stats)(mean, squares, count)
    parts = []
    for k, (a, b) in enumerate(owned):
        lo, hi = _halo(*read_span(bands, k), height, repair)
        part = dask.delayed(_band)(load, spec, bands, k, data[lo:hi], lo, stats, repair)
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
    return {**plan_to_json(probe), "impulse_k": impulse_k_of(model)}


def scan_stats(job: Any, executor: Any) -> list[float]:
    """The scan's float32 (offset, scale): two passes over its bands, on ``executor``."""
    bands = plan_from_json(job.extra["tiling"])
    count = int(job.shape[0]) * int(job.shape[1])
    indices = list(range(len(bands.bands)))
    if job.extra["tiling"].get("impulse_k"):  # the frame's noise model, from its central window, once
        from stemreg.models.impulses import frame_noise, noise_window

        rows, cols = noise_window(job.shape)
        window = checked_rows(_rows(job, rows.start, rows.stop), rows.start)[:, cols]
        job.extra["noise"] = frame_noise(window).to_json()
    sums = dict(executor.map(_job_sums, job, indices))
    offset = _mean([sums[k] for k in indices], count)
    job.extra["mean"] = offset  # what the second pass's workers subtract
    squares = dict(executor.map(_job_squares, job, indices))
    return list(_stats(offset, [squares[k] for k in indices], count))


def _rows(job: Any, a: int, b: int) -> np.ndarray:
    from stemreg.acquisition.series_io import open_series_once

    return open_series_once(job.input).data[a:b].compute(scheduler="synchronous")


def _job_repair(job: Any) -> Any:
    k = job.extra["tiling"].get("impulse_k")
    if not k:
        return None
    from stemreg.models.impulses import FrameNoise

    return (k, FrameNoise.from_json(job.extra["noise"]))


def _job_band_sums(job: Any, k: int, offset: float | None) -> np.ndarray:
    a, b = plan_from_json(job.extra["tiling"]).owned(k)
    repair = _job_repair(job)
    lo, hi = _halo(a, b, int(job.shape[0]), repair)
    return _band_sums(_rows(job, lo, hi), lo, a, b, offset, repair)


def _job_sums(job: Any, k: int) -> np.ndarray:
    return _job_band_sums(job, k, None)


def _job_squares(job: Any, k: int) -> np.ndarray:
    return _job_band_sums(job, k, job.extra["mean"])


def band_of(job: Any, k: int, load: Any) -> tuple[tuple[int, int], np.ndarray]:
    """Band ``k`` of a streamed scan: the rows it owns and their denoised values (model: ``load(job.model)``)."""
    bands = plan_from_json(job.extra["tiling"])
    repair = _job_repair(job)
    lo, hi = _halo(*read_span(bands, k), int(job.shape[0]), repair)
    return bands.owned(k), _band(load, job.model, bands, k, _rows(job, lo, hi), lo, tuple(job.extra["stats"]),
                                 repair)
