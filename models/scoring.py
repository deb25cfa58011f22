"""The one scorer: PSNR / SSIM against the clean target, optional atom-column metrics, ms per megapixel.

The leaderboard, the promotion benchmark and the latency objective of a
search all measure through this module, so a figure means the same wherever
it is shown. Latency is ``ms_per_mpx``: wall time of the prediction per 10^6
pixels, first call excluded as warm-up.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from stemreg.models.columns import score_columns
from stemreg.models.metrics import psnr, ssim

PredictFn = Callable[[np.ndarray], np.ndarray]


def ms_per_mpx(seconds: float, pixels: int) -> float:
    """Milliseconds per megapixel for ``seconds`` spent on ``pixels`` pixels."""
    return 1000.0 * seconds / (pixels / 1e6)


@dataclass
class Scores:
    """Per-image figures of one predict function on a set of images.

    ``column_f1`` / ``column_error_pm`` are NaN for images without column positions.
    ``first_output`` is the prediction for the first image (for galleries).
    """

    psnr: np.ndarray
    ssim: np.ndarray
    column_f1: np.ndarray
    column_error_pm: np.ndarray
    ms_per_mpx: float
    first_output: np.ndarray | None = None


def score_predictions(predict: PredictFn | Sequence[PredictFn], degraded: Sequence[np.ndarray],
                      clean: Sequence[np.ndarray], *, columns: Sequence[np.ndarray] | None = None,
                      pixel_size_pm: float | Sequence[float] | None = None,
                      desc: str = "score", progress: bool = False) -> Scores:
    """Run ``predict`` on each degraded image (one frame at a time, as from a microscope) and score it.

    Parameters
    ----------
    predict
        ``(H, W) -> (H, W)`` denoiser, or one per image (e.g. a filter given each image's noise model).
    degraded, clean
        Images (lists of ``(H, W)`` or stacks ``(N, H, W)``); sizes may differ between images.
    columns
        Per image, ``(K, 2)`` true column positions in pixels; empty or None: no column metrics.
    pixel_size_pm
        Pixel size, for the column position error (needed with ``columns``): one for all images or
        one per image.
    desc, progress
        tqdm bar label and switch.

    Returns
    -------
    Scores
    """
    degraded = [np.asarray(d, np.float32) for d in degraded]
    clean = [np.asarray(c, np.float32) for c in clean]
    columns = list(columns) if columns is not None else [np.zeros((0, 2))] * len(degraded)
    predicts = list(predict) if isinstance(predict, Sequence) else [predict] * len(degraded)
    sizes = (list(pixel_size_pm) if isinstance(pixel_size_pm, (Sequence, np.ndarray))
             else [pixel_size_pm] * len(degraded))
    if len(predicts) != len(degraded) or len(sizes) != len(degraded):
        raise ValueError(f"{len(degraded)} images but {len(predicts)} predict functions and {len(sizes)} pixel "
                         "sizes; give one for all images or one per image")
    predicts[0](degraded[0])  # warm-up, not timed: lazy init, allocator, thread pools
    seconds, pixels = 0.0, 0
    psnrs, ssims, f1s, errors = [], [], [], []
    first = None
    for i, (image, target, cols, size_pm) in enumerate(tqdm(list(zip(degraded, clean, columns, sizes)), desc=desc,
                                                            disable=not progress, leave=False)):
        start = time.perf_counter()
        out = np.asarray(predicts[i](image), np.float32).reshape(image.shape)
        seconds += time.perf_counter() - start
        pixels += image.size
        if i == 0:
            first = out
        psnrs.append(psnr(out, target))
        ssims.append(ssim(out, target))
        if len(cols):
            if size_pm is None or not np.isfinite(size_pm):
                raise ValueError(f"image {i} has column positions but no pixel size; pass pixel_size_pm")
            score = score_columns(out, cols, pixel_size_pm=float(size_pm), clean=target)
            f1s.append(score.f1)
            errors.append(score.position_error_pm)
        else:
            f1s.append(float("nan"))
            errors.append(float("nan"))
    return Scores(psnr=np.array(psnrs), ssim=np.array(ssims), column_f1=np.array(f1s),
                  column_error_pm=np.array(errors), ms_per_mpx=ms_per_mpx(seconds, pixels), first_output=first)


def median_ms_per_mpx(predict: PredictFn, *, image_px: int = 512, repeats: int = 3, seed: int = 0) -> float:
    """Median wall time of ``predict`` on a random square image, in ms per megapixel.

    One warm-up call first; the median of ``repeats`` timed calls is steadier than the mean on a
    shared machine.
    """
    if image_px < 1 or repeats < 1:
        raise ValueError(f"image_px and repeats must be >= 1 (got {image_px}, {repeats})")
    image = np.random.default_rng(seed).random((image_px, image_px), dtype=np.float32)
    predict(image)
    times_s = []
    for _ in range(repeats):
        start = time.perf_counter()
        predict(image)
        times_s.append(time.perf_counter() - start)
    return ms_per_mpx(statistics.median(times_s), image.size)
