"""Inference time per megapixel on this machine: the second objective of a quality-latency search."""
from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from torch import nn


def ms_per_megapixel(model: "nn.Module", *, image_px: int = 512, repeats: int = 3, seed: int = 0) -> float:
    """Median wall time of :func:`stemreg.models.denoise_array` on a square image, per megapixel.

    The timed call is the one users make (normalisation and tiling included),
    after one warm-up call so first-call allocation does not count.

    Parameters
    ----------
    model : torch.nn.Module
    image_px : int
        Edge of the random test image.
    repeats : int
        Timed calls; the median is reported (the machine is shared, so the
        median is steadier than the mean).
    seed : int
        Seed of the random test image.

    Returns
    -------
    float
        Milliseconds per 10^6 pixels.
    """
    from stemreg.models import denoise_array

    if image_px < 1 or repeats < 1:
        raise ValueError(f"image_px and repeats must be >= 1 (got {image_px}, {repeats})")
    image = np.random.default_rng(seed).random((image_px, image_px), dtype=np.float32)
    denoise_array(model, image)
    times_s = []
    for _ in range(repeats):
        start = time.perf_counter()
        denoise_array(model, image)
        times_s.append(time.perf_counter() - start)
    megapixels = image_px * image_px / 1e6
    return 1e3 * statistics.median(times_s) / megapixels
