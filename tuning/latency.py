"""Inference time per megapixel on this machine: the second objective of a quality-latency search."""
from __future__ import annotations

from typing import TYPE_CHECKING

from stemreg.models.scoring import median_ms_per_mpx

if TYPE_CHECKING:
    from torch import nn


def ms_per_mpx(model: "nn.Module", *, image_px: int = 512, repeats: int = 3, seed: int = 0) -> float:
    """Median wall time of :func:`stemreg.models.denoise_array` on a square image, per megapixel.

    The timed call is the one users make (normalisation and tiling included); measured by
    :func:`stemreg.models.scoring.median_ms_per_mpx`, the scorer every figure comes from.

    Returns
    -------
    float
        Milliseconds per 10^6 pixels.
    """
    from stemreg.models.inference import denoise_array  # torch: only when a model is timed

    return median_ms_per_mpx(lambda image: denoise_array(model, image), image_px=image_px, repeats=repeats,
                             seed=seed)
