"""Image quality metrics: the ONE place PSNR and SSIM are defined in stemreg.

Both use scikit-image with ``data_range = target.max() - target.min()`` of the
clean target, so figures do not depend on the image's units or offset and are
comparable across training, tuning, evaluation and the registry tags.
"""
from __future__ import annotations

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


def data_range_of(target: np.ndarray) -> float:
    """The data range PSNR/SSIM use: ``target.max() - target.min()`` (1.0 for a flat target)."""
    span = float(np.max(target) - np.min(target))
    return span if span > 0 else 1.0


def _pair(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from target shape {target.shape}")
    return pred, target


def psnr(pred: np.ndarray, target: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of ``pred`` against the clean ``target`` (H, W)."""
    pred, target = _pair(pred, target)
    if pred.ndim != 2:
        raise ValueError(f"psnr takes 2-D images (H, W); got shape {pred.shape} (use psnr_batch for stacks)")
    with np.errstate(divide="ignore"):  # a perfect prediction is +inf dB, not a warning
        return float(peak_signal_noise_ratio(target, pred, data_range=data_range_of(target)))


def ssim(pred: np.ndarray, target: np.ndarray) -> float:
    """Structural similarity of ``pred`` against the clean ``target`` (H, W), 7x7 window."""
    pred, target = _pair(pred, target)
    if pred.ndim != 2:
        raise ValueError(f"ssim takes 2-D images (H, W); got shape {pred.shape} (use ssim_batch for stacks)")
    if min(pred.shape) < 7:
        raise ValueError(f"ssim needs images at least 7x7 px (got {pred.shape})")
    return float(structural_similarity(target, pred, data_range=data_range_of(target)))


def psnr_batch(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-image PSNR (dB) of two ``(N, H, W)`` stacks."""
    pred, target = _pair(pred, target)
    return np.array([psnr(p, t) for p, t in zip(pred, target)])


def ssim_batch(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-image SSIM of two ``(N, H, W)`` stacks."""
    pred, target = _pair(pred, target)
    return np.array([ssim(p, t) for p, t in zip(pred, target)])


def single_pixel_dots(image: np.ndarray, scale: float | None = None, *, threshold: float = 0.25) -> np.ndarray:
    """Single-pixel dots (boolean map): pixels that differ from the median of their 8 neighbours by
    more than ``threshold`` times ``scale``.

    ``scale`` is the range of the image the dots are judged against: the truth's 0.5-99.5th
    percentile span when a truth exists (every method's output then meets the same bar, and the
    truth's own count says how many dots the specimen really holds), else the image's own. A column
    several pixels wide never counts; an isolated bright or dark pixel a quarter of the range off does.
    """
    from scipy.ndimage import median_filter

    x = np.asarray(image, np.float64)
    ring = np.ones((3, 3), bool)
    ring[1, 1] = False
    if scale is None:
        low, high = np.percentile(x, [0.5, 99.5])
        scale = float(high - low)
    return np.abs(x - median_filter(x, footprint=ring, mode="reflect")) > threshold * max(float(scale), 1e-12)
