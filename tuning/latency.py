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


def side_by_side_ms_per_mpx(models: "dict[str, nn.Module]", *, image_px: int = 512, rounds: int = 7,
                            seed: int = 0) -> dict[str, float]:
    """Median ms per megapixel of several models timed in turn, round after round.

    On a shared machine the load drifts between one model's timing and the next; interleaving the
    calls (every round times each model once) exposes all of them to the same drift, so their
    ratios are steadier than those of separate :func:`ms_per_mpx` calls. One warm-up call each.
    """
    import statistics
    import time

    import numpy as np

    from stemreg.models.inference import denoise_array

    if image_px < 1 or rounds < 1:
        raise ValueError(f"image_px and rounds must be >= 1 (got {image_px}, {rounds})")
    image = np.random.default_rng(seed).random((image_px, image_px), dtype=np.float32)
    for model in models.values():
        denoise_array(model, image)
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            start = time.perf_counter()
            denoise_array(model, image)
            times[name].append(time.perf_counter() - start)
    return {name: 1000.0 * statistics.median(t) / (image.size / 1e6) for name, t in times.items()}
