"""The trust report of a streamed output (:mod:`stemreg.platform.trust`), as `stemreg denoise` gives in memory.

A series is judged by a sample: the first frame of each chunk, where the chunk is denoised (input
and output are both at hand there; judging every frame would cost about what denoising it does,
measured 0.47 s against 0.41 s for 8 frames of 128 px with the shipped base). Each verdict goes
into its chunk's completion marker, so a resumed run still reports the frames a killed run judged.
A scan in row bands is judged once it is complete, from a 192 px square of its input and output
(what the server judges, :func:`~stemreg.platform.trust.served_report`) at the start of its middle
band, centred across: the report's figures are image-level, and the square lies in one row of
the output's chunks, so judging it reads little.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np


def _pixel_size_pm(job: Any) -> float | None:
    from stemreg.acquisition.io import Calibration

    return Calibration(**job.extra["calibration"]).pixel_size_pm()


def chunk_trust(job: Any, index: int, frames: np.ndarray, out: np.ndarray) -> list[dict] | None:
    """``frame``, ``verdict`` and ``reason`` of the chunk's first frame (None under 16 px: not judged)."""
    from stemreg.platform.lazy import worker_model
    from stemreg.platform.trust import report_for

    frames = frames if frames.ndim == 3 else frames[None]
    out = out if out.ndim == 3 else out[None]
    if min(frames.shape[-2:]) < 16:
        return None
    report = report_for(worker_model(job.model), frames[0], out[0], pixel_size_pm=_pixel_size_pm(job))
    return [{"frame": job.frames_of(index)[0], "verdict": report.verdict, "reason": report.reason}]


def job_trust(job: Any) -> list[dict] | dict | None:
    """The trust of a finished job: a series' verdicts on its judged frames (from its markers, in frame
    order), or a scan's report from a 192 px square in its middle."""
    if job.banded:
        return _scan_trust(job)
    verdicts: list[dict] = []
    for index in range(job.n_chunks):
        marker = json.loads((job.job_dir / f"done-{index}.json").read_text())
        if marker.get("trust") is None:
            return None
        verdicts.extend(marker["trust"])
    return verdicts


def _scan_trust(job: Any) -> dict | None:
    from stemreg.acquisition.series_io import open_series, open_series_once
    from stemreg.platform.lazy import worker_model
    from stemreg.platform.trust import HEADER_CROP_PX, served_report

    from stemreg.platform.scan_bands import plan_from_json

    height, width = (int(n) for n in job.shape)
    bands = plan_from_json(job.extra["tiling"])
    top = bands.owned(len(bands.bands) // 2)[0]  # the middle band's first row: within one row of chunks
    top, left = max(0, min(top, height - HEADER_CROP_PX)), max(0, (width - HEADER_CROP_PX) // 2)
    window = (slice(top, top + HEADER_CROP_PX), slice(left, left + HEADER_CROP_PX))
    noisy = np.asarray(open_series_once(job.input).data[window].compute(scheduler="synchronous"), np.float32)
    denoised = np.asarray(open_series(job.output).data[window].compute(scheduler="synchronous"))
    report = served_report(worker_model(job.model), noisy, denoised, pixel_size_pm=_pixel_size_pm(job))
    judged = f"{noisy.shape[0]} x {noisy.shape[1]} px from row {top}, column {left}"
    return None if report is None else {"verdict": report.verdict, "reason": report.reason, "judged": judged}
