"""A streamed result also in its input's own format, where that format streams: a .tif series, page by page.

The job writes its chunked store (.zspy) first: chunks land in any order, on any worker, and a
killed run resumes from them. A TIFF cannot be written that way (its pages are a chain, written in
order by one writer), so the .tif is written once the store is complete, frame by frame from it (a
chunk of the store in memory at a time), under a temporary name and renamed: it exists whole or
not at all, and a run killed while writing it writes it again when resumed. An ImageJ hyperstack
(the format `stemreg denoise` writes in memory, calibration kept) up to 4 GB; a larger series is a
BigTIFF with the pixel size in the resolution tags (centimetres).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

#: ImageJ hyperstacks are classic TIFFs: their pixels must lie within 4 GB.
IMAGEJ_MAX_BYTES = (4 << 30) - (64 << 20)
#: Centimetres per unit, for a BigTIFF's resolution tags.
_CM_PER = {"m": 100.0, "mm": 0.1, "um": 1e-4, "µm": 1e-4, "nm": 1e-7, "Å": 1e-8, "A": 1e-8, "pm": 1e-10}


def as_input_path(job: Any) -> Path | None:
    """Where the result in the input's format goes (``OUTDIR/NAME.tif``); None where it does not stream
    (only .tif series are written so; a scan stays .zspy)."""
    if job.extra.get("format") != "tiff" or len(job.shape) != 3:
        return None
    return Path(job.output).with_suffix(".tif")


def write_as_input(job: Any) -> Path:
    """Write the finished store as ``OUTDIR/NAME.tif``, page by page; returns its path."""
    import tifffile

    from stemreg.acquisition.io import Calibration
    from stemreg.acquisition.series_io import open_series

    out = as_input_path(job)
    data = open_series(job.output).data
    calibration = Calibration(**job.extra["calibration"])
    imagej = 4 * math.prod(int(n) for n in data.shape) <= IMAGEJ_MAX_BYTES
    kwargs: dict[str, Any] = {}
    if calibration.pixel_size and imagej:
        kwargs = {"resolution": (1 / calibration.pixel_size,) * 2, "metadata": {"unit": calibration.unit or ""}}
    elif calibration.pixel_size and calibration.unit in _CM_PER:
        per_cm = 1 / (calibration.pixel_size * _CM_PER[calibration.unit])
        kwargs = {"resolution": (per_cm, per_cm), "resolutionunit": "CENTIMETER"}
    tmp = out.with_name(f".{out.name}.writing-{os.getpid()}")
    try:
        with tifffile.TiffWriter(tmp, imagej=imagej, bigtiff=not imagej) as writer:
            for start in range(0, int(data.shape[0]), job.chunk_frames):
                block = np.asarray(data[start:start + job.chunk_frames].compute(scheduler="synchronous"), np.float32)
                for frame in block:
                    writer.write(frame, contiguous=True, **kwargs)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
