"""Scan distortions: scan-coil hysteresis at every line start, line-to-line jitter, slow drift.

The beam at pixel (row i, column j) actually sits at ``(i + dy[i, j], j + dx[i, j])``
in the undistorted frame (pixels):

    dx = A exp(-j / d)                           hysteresis: the coils lag at each line start
       + jitter_i                                line-to-line jitter, Normal(0, jitter_px) per line
       + drift_px cos(theta) t_ij                slow drift along a random direction theta,
    dy = drift_px sin(theta) t_ij                t_ij = (i W + j) / (H W) the scan time in [0, 1)

Flyback (the beam's return from the end of one line to the start of the next) is not a separate
term: when the next line starts before the scan coils have settled, the beam lags behind at the
line start and catches up over the first pixels, which is the hysteresis term. A short flyback
delay is a larger ``hysteresis_amplitude_px`` and ``hysteresis_decay_px``.
Jitter acts along the fast-scan direction (x) only, where line-synchronous interference moves it.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import map_coordinates


def scan_displacement_px(shape: tuple[int, int], rng: np.random.Generator | None = None, *,
                         hysteresis_amplitude_px: float = 0.0, hysteresis_decay_px: float = 8.0,
                         jitter_px: float = 0.0, drift_px: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Where the beam really is at each pixel: displacements ``(dy, dx)`` in pixels, each (H, W)."""
    height, width = shape
    cols = np.arange(width, dtype=np.float64)[None, :]
    dx = np.zeros(shape)
    dy = np.zeros(shape)
    if hysteresis_amplitude_px:
        dx = dx + hysteresis_amplitude_px * np.exp(-cols / max(hysteresis_decay_px, 1e-6))
    if (jitter_px or drift_px) and rng is None:
        raise ValueError("jitter and drift are random: pass rng")
    if jitter_px:
        dx = dx + rng.normal(0.0, jitter_px, size=(height, 1))
    if drift_px:
        theta = rng.uniform(0, 2 * np.pi)
        t = (np.arange(height)[:, None] * width + cols) / (height * width)
        dx = dx + drift_px * np.cos(theta) * t
        dy = dy + drift_px * np.sin(theta) * t
    return np.broadcast_to(dy, shape).copy(), np.broadcast_to(dx, shape).copy()


def apply_scan_distortion(image: np.ndarray, dy: np.ndarray, dx: np.ndarray, *,
                          origin_px: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Sample ``image`` where the beam really was: the distorted (H, W) scan of ``dy.shape``.

    ``image`` may be larger than the scan (a margin around it, the scan starting at ``origin_px``)
    so that displaced pixels near the edges still see specimen. Cubic-spline interpolation.
    """
    rows = np.arange(dy.shape[0])[:, None] + origin_px[0] + dy
    cols = np.arange(dy.shape[1])[None, :] + origin_px[1] + dx
    return map_coordinates(image, [rows, cols], order=3, mode="nearest")
