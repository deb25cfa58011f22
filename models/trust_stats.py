"""The statistics behind the trust report: a denoised image checked against its own input, no truth.

Pure array functions. ``noisy`` is the input, ``denoised`` the model's output, ``residual = noisy -
denoised``; when only noise was removed the residual *is* the noise, so it must look like the noise
model that the input itself implies:

- :func:`input_noise`: the input's noise, from differences across the *other* axis. Scan noise is
  independent from one scan line to the next, so the 4th difference down the columns (weights
  1, -4, 6, -4, 1) holds the pixel noise with little of the signal, and its correlation along x is
  the noise's correlation along x (the detector's bandwidth); likewise across. Its variance per bin
  of intensity gives ``var = gain * mean + offset_var`` (as :func:`~stemreg.models.noise_models.
  estimate_noise_model` does with Haar coefficients, which correlated noise would bias low).
- :func:`residual_figures`: the residual's normalised variance (~1), its correlation at lags 1-3
  along both axes minus the input noise's, lattice peaks in its spectrum (signal removed), and
  single-pixel spikes in the output that the input does not hold (hallucinated dots).
- :func:`contrast_skew`, :func:`peak_counts`: whether the image looks like what a model was trained
  on (HAADF-like bright columns; detected electrons at the brightest columns).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

#: The 4th difference: passes noise (gain sqrt(70)) and stops smooth signal (a column 8 px apart: x0.34).
_D4 = np.array([1.0, -4.0, 6.0, -4.0, 1.0])
LAGS = (1, 2, 3)


@dataclass(frozen=True)
class InputNoise:
    """The input's noise: ``var = gain * mean + offset_var`` and its correlation at :data:`LAGS`."""

    gain: float
    offset_var: float
    corr_x: tuple[float, ...]
    corr_y: tuple[float, ...]

    def variance(self, mean: np.ndarray) -> np.ndarray:
        """Pixel noise variance at the given mean level (floored at 1 % of the mid-level's)."""
        var = self.gain * mean + self.offset_var
        floor = 0.01 * max(float(np.median(var)), 1e-20)
        return np.maximum(var, floor)


def _diff4(x: np.ndarray, axis: int) -> np.ndarray:
    """4th difference along ``axis``, normalised to unit noise gain (valid part only)."""
    return ndimage.correlate1d(x, _D4 / np.sqrt(70.0), axis=axis, mode="nearest")[
        (slice(2, -2), slice(None)) if axis == 0 else (slice(None), slice(2, -2))]


def _robust_clip(a: np.ndarray, k: float = 5.0) -> np.ndarray:
    """Clip at ``k`` robust standard deviations, so that impulse pixels do not set a correlation."""
    sample = a.ravel()[::7]  # the median of a 1-in-7 sample: as good here, and median is the cost
    centre = np.median(sample)
    scale = 1.4826 * np.median(np.abs(sample - centre)) + 1e-20
    return np.clip(a, centre - k * scale, centre + k * scale)


def lag_corr(a: np.ndarray, axis: int, lags: tuple[int, ...] = LAGS) -> tuple[float, ...]:
    """Correlation of ``a`` with itself shifted by each lag along ``axis`` (mean removed)."""
    a = a - a.mean()
    denom = float(np.mean(a * a)) + 1e-30
    out = []
    for k in lags:
        if axis == 1:
            out.append(float(np.mean(a[:, :-k] * a[:, k:])) / denom)
        else:
            out.append(float(np.mean(a[:-k] * a[k:])) / denom)
    return tuple(out)


def _fit_variance(detail: np.ndarray, level: np.ndarray, n_bins: int = 12) -> tuple[float, float]:
    """Robust (MAD) variance of ``detail`` per quantile bin of ``level``, regressed on the bin's mean."""
    step = max(1, detail.size // 65536)  # 64 k points fix 12 variances to ~2 %; medians are the cost
    detail, level = detail.ravel()[::step], level.ravel()[::step]
    # the quantiles of a sorted copy: the same order statistics, and one (SIMD) sort of 64 k points
    # costs a fifth of partitioning them at 26 places
    edges = np.unique(np.quantile(np.sort(level), np.linspace(0, 1, n_bins + 1)))
    # each point's bin, np.searchsorted(edges, level, "right") - 1 clipped to the last bin: the
    # inner edges at or below it, counted (a dozen vector compares; a binary search per point cost more)
    which = np.zeros(level.shape, np.int16)
    for edge in edges[1:-1]:
        which += level >= edge
    # each bin's points, in their original order, as one slice (a stable sort by bin): the same
    # medians and the same sums as boolean masks gave, without 12 passes over every point
    order = np.argsort(which, kind="stable")  # 16-bit keys: a radix sort
    detail, level = detail[order], level[order]
    ends = np.cumsum(np.bincount(which, minlength=max(len(edges) - 1, 1)))
    starts = np.r_[0, ends[:-1]]
    kept = [b for b in range(len(ends)) if ends[b] - starts[b] >= 32]
    mads = _median_abs_deviations(detail, starts[kept], ends[kept])
    centres = [level[starts[b]:ends[b]].mean() for b in kept]
    variances = [(1.4826 * mad) ** 2 for mad in mads]
    counts = [ends[b] - starts[b] for b in kept]
    if len(centres) >= 2 and np.ptp(centres) > 0:
        gain, offset = np.polyfit(centres, variances, 1, w=np.sqrt(np.asarray(counts, float)))
    else:
        gain, offset = 0.0, float(np.var(detail))
    gain = max(float(gain), 0.0)
    low = float(np.min(centres)) if centres else 0.0
    if offset + gain * low <= 0:  # keep the variance positive over the data
        offset = max(float(np.min(variances)) if variances else float(np.var(detail)), 1e-20) - gain * low
    return gain, float(offset)


def _median_abs_deviations(values: np.ndarray, starts: np.ndarray, stops: np.ndarray) -> list[np.float64]:
    """``np.median(np.abs(d - np.median(d)))`` of each slice ``d = values[start:stop]``, the same numbers,
    from two row-wise sorts of one block (each slice a row, padded with +inf, which sorts last)."""
    if len(starts) == 0:
        return []
    sizes = stops - starts
    block = np.full((len(sizes), int(sizes.max())), np.inf)
    for row, (start, stop) in enumerate(zip(starts, stops)):
        block[row, :stop - start] = values[start:stop]
    rows, low, high = np.arange(len(sizes)), (sizes - 1) // 2, sizes // 2  # the middle one or two
    block.sort(axis=1)
    median = (block[rows, low] + block[rows, high]) / 2  # np.median's mean of the middle two (or one)
    block -= median[:, None]
    np.abs(block, out=block)
    block.sort(axis=1)
    return list((block[rows, low] + block[rows, high]) / 2)


def input_noise(noisy: np.ndarray, level: np.ndarray) -> InputNoise:
    """The input's noise model and correlation, from 4th differences across the other axis.

    Parameters
    ----------
    noisy
        The input image ``(H, W)``, at least 16 px each way.
    level
        The mean to bin the variance by (the denoised image: the input's own mean, less noisy).
    """
    x = np.asarray(noisy, np.float64)
    dy, dx = _diff4(x, 0), _diff4(x, 1)  # noise seen down the columns / along the rows
    corr_x = lag_corr(_robust_clip(dy), axis=1)
    corr_y = lag_corr(_robust_clip(dx), axis=0)
    # dy's variance is the pixel variance times sum_ab w_a w_b rho_y(a - b) / 70: undo the (small)
    # correlation down the columns, which the detector's fast-scan bandwidth does not cause
    r = np.r_[1.0, corr_y, 0.0]
    w = _D4 / np.sqrt(70.0)
    factor = sum(w[a] * w[b] * r[abs(a - b)] for a in range(5) for b in range(5))
    gain, offset = _fit_variance(dy, np.asarray(level, np.float64)[2:-2, :])
    factor = float(np.clip(factor, 0.3, 3.0))
    return InputNoise(gain / factor, offset / factor, corr_x, corr_y)


def _power(image: np.ndarray) -> np.ndarray:
    """Hann-windowed power spectrum, zero frequency at the centre."""
    return np.abs(np.fft.fftshift(np.fft.fft2((image - image.mean()) * _hann(*image.shape)))) ** 2


@functools.lru_cache(maxsize=8)
def _peak_region(h: int, w: int) -> np.ndarray:
    """Where a spectrum's lattice peaks are looked for: not the DC and the slow background, and one half
    plane (the spectrum of a real image is symmetric). Per shape, cached."""
    cy, cx = h // 2, w // 2
    yy, xx = np.ogrid[:h, :w]
    keep = np.hypot((yy - cy) / h, (xx - cx) / w) >= 3.0 / min(h, w)
    keep[:, :cx] = False
    keep.flags.writeable = False
    return keep


@functools.lru_cache(maxsize=8)
def _hann(h: int, w: int) -> np.ndarray:
    window = np.outer(np.hanning(h), np.hanning(w))
    window.flags.writeable = False
    return window


def _spectrum_peaks(spectrum: np.ndarray, n_peaks: int = 8) -> list[tuple[int, int]]:
    """The strongest lattice peaks of a power spectrum (outside the lowest frequencies)."""
    power = np.where(_peak_region(*spectrum.shape), spectrum, 0.0)
    positive = power[power > 0][::5]
    floor = np.median(positive) if positive.size else 0.0
    rows, cols = np.nonzero(power > 30 * floor)
    top = power[rows, cols] == _window_extreme(power, rows, cols, 2, np.maximum)  # local maxima (5 x 5)
    candidates = np.stack([rows[top], cols[top]], axis=1)
    order = np.argsort(power[candidates[:, 0], candidates[:, 1]])[::-1]
    return [tuple(c) for c in candidates[order[:n_peaks]]]


def lattice_in_residual(noisy: np.ndarray, residual: np.ndarray) -> tuple[float, float]:
    """How far the residual's power at the input's lattice peaks stands above its local background.

    For each of the input's strongest spectral peaks: the residual's power summed over the 3x3 bins
    there, against the median power of the 11x11 bins around it (the core left out, so coloured
    noise sets its own background).

    Returns
    -------
    ratio : float
        The largest peak-over-background ratio (about 1 to 2 for noise; 0 without a lattice).
    removed : float
        The share of the lattice peaks' amplitude (above background, power-weighted over the peaks,
        so that a weak peak's noise does not decide) found in the residual (0: none removed, 1: all).
    """
    x = np.asarray(noisy, np.float64)
    p_x = _power(x)
    peaks = _spectrum_peaks(p_x)
    if not peaks:
        return 0.0, 0.0
    p_r = _power(np.asarray(residual, np.float64))
    ratio, in_residual, in_input = 0.0, 0.0, 0.0
    medians = [_box_medians(p_r, peaks), _box_medians(p_x, peaks)]
    for i, (py, px) in enumerate(peaks):
        core = (slice(max(py - 1, 0), py + 2), slice(max(px - 1, 0), px + 2))
        measured = []
        for power, median in zip((p_r, p_x), medians):
            background = median[i] / np.log(2.0)  # an exponential's median is ln2 x its mean
            measured.append((power[core].sum(), power[core].size * background))
        (core_r, bg_r), (core_x, bg_x) = measured
        if bg_r > 0:
            ratio = max(ratio, float(core_r / bg_r))
        if core_x > bg_x:
            in_residual += max(core_r - bg_r, 0.0)
            in_input += core_x - bg_x
    removed = float(np.sqrt(in_residual / in_input)) if in_input > 0 else 0.0
    return ratio, min(removed, 1.0)


#: The 11 x 11 box around a spectral peak without its 3 x 3 core: (row, column) offsets.
_BOX = np.array([(dy, dx) for dy in range(-5, 6) for dx in range(-5, 6) if max(abs(dy), abs(dx)) > 1]).T


def _box_medians(power: np.ndarray, peaks: list[tuple[int, int]]) -> list[float]:
    """The median power of each peak's 11 x 11 box, its 3 x 3 core left out: for every box inside the
    spectrum one ``np.median`` over all of them; a box cut by the border as ever (``np.nanmedian`` of
    the box clipped, the core as its slice there gives it)."""
    h, w = power.shape
    out = [0.0] * len(peaks)
    inside = [i for i, (py, px) in enumerate(peaks) if 5 <= py < h - 5 and 5 <= px < w - 5]
    if inside:
        rows = np.array([peaks[i][0] for i in inside])[:, None] + _BOX[0]
        cols = np.array([peaks[i][1] for i in inside])[:, None] + _BOX[1]
        for i, value in zip(inside, np.median(power[rows, cols], axis=1)):
            out[i] = float(value)
    for i, (py, px) in enumerate(peaks):
        if i not in inside:
            y0, y1, x0, x1 = max(py - 5, 0), min(py + 6, h), max(px - 5, 0), min(px + 6, w)
            box = power[y0:y1, x0:x1].copy()
            box[py - 1 - y0:py + 2 - y0, px - 1 - x0:px + 2 - x0] = np.nan
            out[i] = float(np.nanmedian(box))
    return out


def ring_median(image: np.ndarray) -> np.ndarray:
    """The median of each pixel's 8 neighbours (the upper one of the middle two, borders mirrored):
    exactly ``ndimage.median_filter(image, footprint=<3 x 3 ring>, mode="reflect")``, by a selection
    network of elementwise min / max (a fifth of the cost). The 5th smallest of 8 is, with each half
    of 4 sorted (``a1 <= .. <= a4``, ``b1 <= .. <= b4``), ``min(max(a1, b4), .., max(a4, b1))``."""
    x = np.asarray(image)
    h, w = x.shape
    padded = np.pad(x, 1, mode="symmetric")  # scipy's "reflect"
    ring = [padded[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
    a, b = _sort4(ring[:4]), _sort4(ring[4:])
    out = np.maximum(a[0], b[3])
    for k in (1, 2, 3):
        np.minimum(out, np.maximum(a[k], b[3 - k]), out=out)
    return out


def _sort4(v: list[np.ndarray]) -> list[np.ndarray]:
    """Four arrays sorted elementwise (the 5-comparator network)."""
    lo01, hi01 = np.minimum(v[0], v[1]), np.maximum(v[0], v[1])
    lo23, hi23 = np.minimum(v[2], v[3]), np.maximum(v[2], v[3])
    first, mid_a = np.minimum(lo01, lo23), np.maximum(lo01, lo23)
    mid_b, last = np.minimum(hi01, hi23), np.maximum(hi01, hi23)
    return [first, np.minimum(mid_a, mid_b), np.maximum(mid_a, mid_b), last]


def unsupported_dots(noisy: np.ndarray, denoised: np.ndarray, sigma: np.ndarray, k: float = 4.0) -> np.ndarray:
    """Single-pixel spikes of the output that the input does not hold (boolean map).

    A pixel where the output stands more than ``k`` noise sigmas above (or below) the mean of its 8
    neighbours, is a local extremum there, and the residual stands more than ``k`` sigmas the other
    way: the output put something the input's pixel does not show.
    """
    kernel = np.ones((3, 3)) / 8.0
    kernel[1, 1] = 0.0
    y = np.asarray(denoised, np.float64)
    r = np.asarray(noisy, np.float64) - y
    spike_y = y - ndimage.convolve(y, kernel, mode="nearest")
    spike_r = r - ndimage.convolve(r, kernel, mode="nearest")
    up = (spike_y > k * sigma) & (spike_r < -k * sigma)
    down = (spike_y < -k * sigma) & (spike_r > k * sigma)
    for mask, pick in ((up, np.maximum), (down, np.minimum)):  # ... and a local extremum (3 x 3)
        rows, cols = np.nonzero(mask)
        mask[rows, cols] = y[rows, cols] == _window_extreme(y, rows, cols, 1, pick)
    return up | down


def _window_extreme(image: np.ndarray, rows: np.ndarray, cols: np.ndarray, radius: int, pick: Any) -> np.ndarray:
    """``pick`` (np.maximum / np.minimum) over the ``2 radius + 1`` square around each given pixel,
    clipped at the borders: what ``ndimage.maximum_filter`` (``minimum_filter``) gives there, with
    its default mode, for those pixels only (the candidates are few; a filter visits every pixel)."""
    h, w = image.shape
    steps = np.arange(-radius, radius + 1)
    rr = np.clip(rows[:, None] + steps, 0, h - 1)[:, :, None]  # one gather of every window, (n, k, k)
    cc = np.clip(cols[:, None] + steps, 0, w - 1)[:, None, :]
    return pick.reduce(image[rr, cc].reshape(len(rows), (2 * radius + 1) ** 2), axis=1)


def residual_map(z: np.ndarray, corr_x: tuple[float, ...], corr_y: tuple[float, ...],
                 sigma_px: float = 2.0) -> np.ndarray:
    """Local structure of the normalised residual, as a z-score map (float32, the image's shape).

    The residual smoothed by a Gaussian of ``sigma_px``, divided by the spread that smoothing gives
    pure noise of the input's correlation: |value| > 4 marks where the model removed (positive: the
    input is brighter) or added (negative) structure.
    """
    smooth = ndimage.gaussian_filter(z, sigma_px, mode="reflect")
    # white noise through a 2-D Gaussian of sigma s keeps 1 / (4 pi s^2) of its variance; the noise's
    # correlation multiplies that by about (1 + 2 sum rho) along each axis
    inflation = max(1.0 + 2.0 * sum(corr_x), 0.2) * max(1.0 + 2.0 * sum(corr_y), 0.2)
    spread = np.sqrt(inflation / (4.0 * np.pi * sigma_px ** 2))
    return (smooth / spread).astype(np.float32)


def contrast_skew(noisy: np.ndarray) -> float:
    """Skewness of the input band-passed to the columns' scale (Gaussians of 1 and 4 px): > 0 for
    bright columns on a dark field (HAADF-like), about 0 or < 0 for dark columns on a bright one
    (bright field, ABF). The band-pass drops the amorphous background, whose own spread of
    brightness would otherwise set the skew."""
    x = np.asarray(noisy, np.float64)
    s = ndimage.gaussian_filter(x, 1.0) - ndimage.gaussian_filter(x, 4.0)
    d = s - s.mean()
    d2 = d * d
    sd = float(np.sqrt(np.mean(d2)))
    return float(np.mean(d2 * d) / sd ** 3) if sd > 0 else 0.0


def peak_counts(denoised: np.ndarray, noise: InputNoise) -> float:
    """Detected electrons per pixel at the brightest columns, from the noise model alone.

    With ``var = gain * (mean - dark)`` for Poisson counts scaled by ``gain`` above a ``dark`` level
    (``dark = -offset_var / gain``), a level ``m`` holds ``(m - dark) / gain`` electrons; taken at
    the output's 99.5th percentile. Independent of the file's units (ADU, normalised, counts).
    """
    if noise.gain <= 0:
        return float("inf")
    dark = -noise.offset_var / noise.gain
    return float((np.percentile(denoised, 99.5) - dark) / noise.gain)


def residual_signal_corr(z: np.ndarray, denoised: np.ndarray, sigma_px: float = 2.0) -> float:
    """Correlation of the normalised residual with the output's own detail across the scan lines (the
    output minus its Gaussian blur of ``sigma_px`` along y). Noise is independent of the signal, so a
    residual that is noise holds none of it (~0); a model that sharpens what was not blurred leaves the
    negative of its added detail in the residual (< 0), one that smooths signal away leaves the detail
    (> 0). Along y only: a detector's bandwidth blurs the signal along x (the fast scan), and a model
    that undoes that blur adds detail along x rightly."""
    y = np.asarray(denoised, np.float64)
    detail = y - ndimage.gaussian_filter1d(y, sigma_px, axis=0, mode="reflect")
    detail = detail - detail.mean()
    r = np.asarray(z, np.float64) - np.mean(z)
    denom = float(np.sqrt(np.mean(r * r) * np.mean(detail * detail)))
    return float(np.mean(r * detail) / denom) if denom > 0 else 0.0
