"""Classical restoration: deconvolution with a known PSF and scan-line alignment (pure array functions).

The classical route a microscopist takes for a blurred or scan-distorted low-dose image: denoise
(BM3D in the Anscombe domain, :mod:`stemreg.models.classical`), then undo the blur with the PSF,
or first re-align the scan lines and then denoise. Handed the *oracle* PSF (the exact blur of
each simulated image), these are an upper bound for that route. The PSF is an argument: these
functions know nothing about microscopes (the acquisition layer computes it).

- :func:`wiener_deconvolve`: Wiener filter with a constant noise-to-signal ``balance``;
- :func:`richardson_lucy`: Richardson-Lucy iterations (scikit-image), ``iterations`` of them;
- :func:`align_scan_lines`: undoes a known line-start (hysteresis) displacement profile and estimates
  and undoes each line's own shift (jitter) by matching it to its neighbours.

Edges are reflect-padded by the PSF's radius, so the circular FFT does not wrap the far edge in.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.fft
from scipy.ndimage import gaussian_filter1d, shift as nd_shift

#: Strength grids searched on validation images (as the denoisers' strengths are).
WIENER_BALANCES: tuple[float, ...] = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3)
RL_ITERATIONS: tuple[int, ...] = (3, 6, 12, 25, 50)
#: Assumed error of one line-to-line shift measurement (pixels), against the jitter's spread.
MEASUREMENT_ERROR_PX = 0.1


def _check(image: np.ndarray, psf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(image, np.float64)
    psf = np.asarray(psf, np.float64)
    if image.ndim != 2:
        raise ValueError(f"expected one (H, W) image, got shape {image.shape}")
    if psf.ndim != 2 or psf.shape[0] % 2 == 0 or psf.shape[1] % 2 == 0 or psf.sum() <= 0:
        raise ValueError(f"the PSF must be an odd-sized (K, K) kernel with a positive sum; got shape {psf.shape}")
    return image, psf / psf.sum()


def _transfer(psf: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """rfft2 of the PSF placed with its centre at the origin of a ``shape`` grid."""
    grid = np.zeros(shape)
    k0, k1 = psf.shape
    grid[:k0, :k1] = psf
    grid = np.roll(grid, (-(k0 // 2), -(k1 // 2)), axis=(0, 1))
    return scipy.fft.rfft2(grid)


def wiener_deconvolve(image: np.ndarray, psf: np.ndarray, *, balance: float) -> np.ndarray:
    """Wiener deconvolution ``conj(H) Y / (|H|^2 + balance)`` of an (H, W) image by a centred PSF.

    Parameters
    ----------
    image
        The (denoised) blurred image.
    psf
        Odd-sized kernel (normalised here to sum 1).
    balance
        Noise-to-signal power ratio, constant over frequencies (larger: smoother).
    """
    image, psf = _check(image, psf)
    if balance <= 0:
        raise ValueError(f"balance must be > 0 (got {balance})")
    pad = max(psf.shape) // 2
    padded = np.pad(image, pad, mode="reflect")
    h = _transfer(psf, padded.shape)
    out = scipy.fft.irfft2(scipy.fft.rfft2(padded) * np.conj(h) / (np.abs(h) ** 2 + balance), s=padded.shape)
    return out[pad:pad + image.shape[0], pad:pad + image.shape[1]].astype(np.float32)


def richardson_lucy(image: np.ndarray, psf: np.ndarray, *, iterations: int) -> np.ndarray:
    """Richardson-Lucy deconvolution (scikit-image) of a non-negative (H, W) image.

    Negative values (a denoiser's undershoot) are clipped to 0 first; the image's scale is kept.
    """
    from skimage.restoration import richardson_lucy as skimage_rl

    image, psf = _check(image, psf)
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1 (got {iterations})")
    pad = max(psf.shape) // 2
    padded = np.pad(np.maximum(image, 0.0), pad, mode="reflect")
    scale = float(padded.max()) or 1.0
    out = skimage_rl(padded / scale, psf, num_iter=int(iterations), clip=False) * scale
    return out[pad:pad + image.shape[0], pad:pad + image.shape[1]].astype(np.float32)


def deconvolve(image: np.ndarray, psf: np.ndarray | None, method: str, strength: float) -> np.ndarray:
    """``wiener`` (``strength`` = balance) or ``rl`` (``strength`` = iterations); no PSF: unchanged."""
    if psf is None:
        return np.asarray(image, np.float32)
    if method == "wiener":
        return wiener_deconvolve(image, psf, balance=strength)
    if method == "rl":
        return richardson_lucy(image, psf, iterations=int(strength))
    raise ValueError(f"unknown deconvolution {method!r}; accepted: wiener, rl")


def fit_deconvolution(method: str, denoised: Sequence[np.ndarray], clean: Sequence[np.ndarray],
                      psfs: Sequence[np.ndarray | None]) -> tuple[float, float]:
    """The grid strength (:data:`WIENER_BALANCES` or :data:`RL_ITERATIONS`) with the best mean PSNR
    on validation images; returns ``(strength, val_psnr)``."""
    from .metrics import psnr

    grid = WIENER_BALANCES if method == "wiener" else RL_ITERATIONS
    scores = [(float(s), float(np.mean([psnr(deconvolve(d, k, method, s), c)
                                        for d, c, k in zip(denoised, clean, psfs)]))) for s in grid]
    return max(scores, key=lambda item: item[1])


# ---------------------------------------------------------------------------- scan lines

def _resample_rows(image: np.ndarray, displacement: np.ndarray) -> np.ndarray:
    """Each row re-sampled on the regular grid, given where each of its pixels really was
    (``x + displacement[i, x]``); positions that fold back (displacement falling faster than 1 px/px)
    keep their monotone envelope."""
    h, w = image.shape
    x = np.arange(w, dtype=np.float64)
    out = np.empty_like(image)
    for i in range(h):
        where = np.maximum.accumulate(x + displacement[i])
        keep = np.concatenate(([True], np.diff(where) > 1e-6))
        out[i] = np.interp(x, where[keep], image[i, keep])
    return out


def _relative_shift(row: np.ndarray, previous: np.ndarray, candidates: np.ndarray, margin: int
                    ) -> tuple[float, float]:
    """``(r, weight)``: the shift r with ``row(x + r) ~ previous(x)`` (parabola-refined minimum of the
    squared difference) and how sharply that minimum is defined (its curvature over its depth)."""
    x = np.arange(row.size, dtype=np.float64)
    errors = np.array([np.mean((np.interp(x + c, x, row)[margin:-margin] - previous[margin:-margin]) ** 2)
                       for c in candidates])
    k = int(np.argmin(errors))
    step = candidates[1] - candidates[0]
    if 0 < k < len(errors) - 1:
        curvature = errors[k - 1] - 2 * errors[k] + errors[k + 1]
        offset = 0.5 * (errors[k - 1] - errors[k + 1]) / curvature if curvature > 0 else 0.0
        weight = max(curvature, 0.0) / step**2 / (errors[k] + 1e-12)
        return float(candidates[k] + np.clip(offset, -1, 1) * step), float(weight)
    return float(candidates[k]), 0.0  # at the search's edge: no information


def align_scan_lines(image: np.ndarray, *, hysteresis_amplitude_px: float = 0.0, hysteresis_decay_px: float = 8.0,
                     max_shift_px: float = 2.0, jitter_px: float | None = None, smooth_px: float = 1.5,
                     iterations: int = 2) -> np.ndarray:
    """Undo scan-line displacements along the fast axis (x).

    The line-start hysteresis ``A exp(-x / d)`` (the same on every line) is undone with the given
    amplitude and decay. Each line's own shift (jitter) is then estimated: the shift between every
    pair of neighbouring lines (smoothed over ``smooth_px`` to see through the noise) is measured,
    weighted by how sharply it is defined, and the shifts that best explain all of them are solved
    for by weighted least squares, with a weak pull towards zero (a relative alignment cannot see a
    common offset; with the jitter's known spread ``jitter_px`` the pull is the prior's: a line
    shift is trusted in proportion to how large shifts are expected against a ~0.1 px measurement
    error). ``iterations`` repeats the estimate on the corrected image.

    Returns
    -------
    numpy.ndarray
        float32 (H, W), the re-aligned image (noise untouched, interpolated linearly).
    """
    image = np.asarray(image, np.float64)
    if image.ndim != 2:
        raise ValueError(f"expected one (H, W) image, got shape {image.shape}")
    h, w = image.shape
    x = np.arange(w, dtype=np.float64)
    hysteresis = hysteresis_amplitude_px * np.exp(-x / max(hysteresis_decay_px, 1e-6))
    unhysteresed = _resample_rows(image, np.broadcast_to(hysteresis, (h, w)))
    out = unhysteresed
    if max_shift_px <= 0 or iterations < 1 or h < 3:
        return out.astype(np.float32)
    candidates = np.arange(-2 * max_shift_px, 2 * max_shift_px + 1e-9, 0.1)
    margin = int(np.ceil(2 * max_shift_px)) + 1
    total = np.zeros(h)
    for _ in range(iterations):
        smooth = gaussian_filter1d(out, smooth_px, axis=1)
        # rows of unequal brightness (on and between atom rows) compare by shape, not level
        smooth = (smooth - smooth.mean(axis=1, keepdims=True)) / (smooth.std(axis=1, keepdims=True) + 1e-12)
        pairs = [_relative_shift(smooth[i], smooth[i - 1], candidates, margin) for i in range(1, h)]
        r = np.array([p[0] for p in pairs])
        weights = np.array([p[1] for p in pairs])
        # minimise sum_i w_i (s_{i-1} - s_i - r_i)^2 + prior sum_i s_i^2
        difference = np.zeros((h - 1, h))
        difference[np.arange(h - 1), np.arange(h - 1)] = 1.0
        difference[np.arange(h - 1), np.arange(1, h)] = -1.0
        scale = float(np.mean(weights)) or 1.0
        prior = scale * ((MEASUREMENT_ERROR_PX / jitter_px) ** 2 if jitter_px else 1e-3)
        normal = difference.T @ (weights[:, None] * difference) + prior * np.eye(h)
        shifts = np.linalg.solve(normal, difference.T @ (weights * r))
        # a lattice tilted against the scan shifts every line by the same amount: that is not jitter
        shifts -= np.polyval(np.polyfit(np.arange(h), shifts, 1), np.arange(h))
        total += shifts - gaussian_filter1d(shifts, 8.0, mode="reflect")
        out = np.stack([nd_shift(row, s, order=1, mode="nearest") if s else row
                        for row, s in zip(unhysteresed, total)])
    return out.astype(np.float32)
