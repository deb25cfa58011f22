"""Poisson-Gaussian noise models ``var = gain * mean + offset_var`` for the GAT-based classical filters.

Three sources, best first: the exact model of a simulated acquisition (:func:`noise_model_from_params`,
the *oracle*), a fit on validation pairs or repeats (:func:`fit_noise_model`), and an estimate from one
noisy image alone (:func:`estimate_noise_model`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class NoiseModel:
    """Affine Poisson-Gaussian noise model: ``variance = gain * mean + offset_var``.

    Attributes
    ----------
    gain
        Image units per detected electron (the Poisson scale ``a``).
    offset_var
        Signal-independent variance (Gaussian read noise minus ``gain * offset``),
        in squared image units; may be negative when the image has a dark offset.
    """

    gain: float
    offset_var: float
    #: Lag-1 correlation of the noise along x (the fast-scan axis): a detector's first-order low-pass
    #: ``a = exp(-1 / bandwidth_px)``; 0 is white noise. The variance above is already the smoothed one.
    correlation_x: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return {"gain": float(self.gain), "offset_var": float(self.offset_var),
                "correlation_x": float(self.correlation_x)}

    def white(self) -> "NoiseModel":
        """The model of the same noise before the low-pass (:func:`unsmear_x` undoes it): variance
        ``(1 + a) / (1 - a)`` times larger, white."""
        a = float(self.correlation_x)
        factor = (1.0 + a) / (1.0 - a)
        return NoiseModel(gain=self.gain * factor, offset_var=self.offset_var * factor)


def unsmear_x(image: np.ndarray, correlation_x: float) -> np.ndarray:
    """Undo a first-order low-pass of pole ``a`` along x (the last axis): ``x[j] = (y[j] - a y[j-1]) / (1 - a)``.

    The exact inverse of :func:`stemreg.acquisition.detector.fast_scan_lowpass` (each line starting
    settled): the noise comes back white and the signal sharp, so a filter made for white noise
    estimates the unsmeared image (the clean target) directly.
    """
    y = np.asarray(image, dtype=np.float64)
    a = float(correlation_x)
    if a <= 0:
        return y.copy()
    x = y.copy()
    x[..., 1:] = (y[..., 1:] - a * y[..., :-1]) / (1.0 - a)
    return x


def fit_noise_model(noisy: np.ndarray, reference: np.ndarray, *, independent_repeat: bool = False,
                    n_bins: int = 24) -> NoiseModel:
    """Fit ``var = gain * mean + offset_var`` from validation images.

    Parameters
    ----------
    noisy
        Noisy images ``(N, H, W)`` (or ``(H, W)``).
    reference
        Either the clean targets (same shape), or a second, independent noisy
        acquisition of the same fields when ``independent_repeat`` is true
        (then the noise is ``(a - b) / sqrt(2)`` and the mean ``(a + b) / 2``;
        this needs no clean image and is immune to blur or distortions the
        clean target lacks).
    n_bins
        Intensity bins (quantiles of the mean) for the variance regression.

    Returns
    -------
    NoiseModel
    """
    noisy = np.asarray(noisy, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if noisy.shape != reference.shape:
        raise ValueError(f"noisy {noisy.shape} and reference {reference.shape} must have the same shape")
    if independent_repeat:
        # Moments, not bins: the mean of two noisy frames is itself noisy, and binning by it (or by a
        # smoothed copy) biases the slope. With r = (a - b)/sqrt(2), m = (a + b)/2 and true mean t:
        # E[r^2] = gain t + offset, Var(t) = Var(m) - E[r^2] / 2, and
        # Cov(r^2, m) = gain Var(t) + gain^2 E[t] / 2 (the second term: Poisson's third moment).
        r2 = (((noisy - reference) / np.sqrt(2.0)) ** 2).ravel()
        m = ((noisy + reference) / 2).ravel()
        signal_var, mean_level, cov = m.var() - r2.mean() / 2, m.mean(), np.cov(r2, m)[0, 1]
        if signal_var <= 0:
            gain = 0.0
        elif mean_level > 0 and signal_var**2 + 2 * mean_level * cov > 0:
            gain = float((np.sqrt(signal_var**2 + 2 * mean_level * cov) - signal_var) / mean_level)
        else:
            gain = float(cov / signal_var)
        offset_var = float(r2.mean() - gain * m.mean())
        return _sane(gain, offset_var, float(m.min()), float(r2.mean()))
    residual = noisy - reference
    mean = reference
    mean, residual = mean.ravel(), residual.ravel()
    edges = np.unique(np.quantile(mean, np.linspace(0, 1, n_bins + 1)))
    which = np.clip(np.searchsorted(edges, mean, side="right") - 1, 0, len(edges) - 2)
    bin_mean, bin_var = [], []
    for b in range(len(edges) - 1):
        sel = which == b
        if sel.sum() >= 16:
            bin_mean.append(mean[sel].mean())
            bin_var.append(residual[sel].var())
    bin_mean_a, bin_var_a = np.asarray(bin_mean), np.asarray(bin_var)
    if len(bin_mean_a) >= 2 and np.ptp(bin_mean_a) > 0:
        gain, offset_var = np.polyfit(bin_mean_a, bin_var_a, 1)
    else:
        gain, offset_var = 0.0, float(residual.var())
    return _sane(float(gain), float(offset_var), float(mean.min()), float(residual.var()))


ELEMENTARY_CHARGE_C = 1.602176634e-19  # exact (SI 2019)


def noise_model_from_params(params: dict[str, Any]) -> NoiseModel:
    """The exact noise model of one simulated acquisition (the *oracle*), in signal units.

    With ``lam = detector_efficiency * I * t / e`` detected electrons per unit signal (``I`` the
    effective ``beam_current_pA``, ``t`` the ``dwell_time_us``), the simulation's noise is
    ``var = (1 - bias) / lam * s + bias / lam + read_noise_e^2 / lam^2`` (see
    :mod:`stemreg.acquisition.dose`), so ``gain = (1 - bias) / lam`` and
    ``offset_var = bias / lam + read_noise_e^2 / lam^2``. With the detector's read-out
    (:mod:`stemreg.acquisition.detector`): its low-pass of pole ``a = exp(-1 / bandwidth_px)`` scales
    both by ``(1 - a) / (1 + a)`` and sets ``correlation_x = a``; the ADC's rounding adds
    ``1 / (12 (gain_adu_per_e lam)^2)``. (Defective pixels, line jumps and lost lines are not noise a
    Gaussian model describes, and are left out.)

    Parameters
    ----------
    params
        One image's acquisition parameters (``PairBatch.params[i]``): ``beam_current_pA``,
        ``dwell_time_us``, ``bias``, ``detector_efficiency``, ``read_noise_e``.

    Raises
    ------
    ValueError
        A key is missing or the dose is not positive.
    """
    keys = ("beam_current_pA", "dwell_time_us", "bias", "detector_efficiency", "read_noise_e")
    missing = [k for k in keys if k not in params]
    if missing:
        raise ValueError(f"acquisition parameters lack {', '.join(missing)}; needed: {', '.join(keys)}")
    lam = (float(params["detector_efficiency"]) * float(params["beam_current_pA"]) * 1e-12
           * float(params["dwell_time_us"]) * 1e-6 / ELEMENTARY_CHARGE_C)
    if not lam > 0:
        raise ValueError(f"detected electrons per unit signal must be > 0, got {lam} from {params}")
    bias, read = float(params["bias"]), float(params["read_noise_e"])
    bandwidth = float(params.get("bandwidth_px", 0.0))
    a = float(np.exp(-1.0 / bandwidth)) if bandwidth > 0 else 0.0  # as stemreg.acquisition.detector
    smoothing = (1.0 - a) / (1.0 + a)
    rounding = 0.0
    if float(params.get("gain_adu_per_e", 0.0)) > 0:
        rounding = 1.0 / (12.0 * (float(params["gain_adu_per_e"]) * lam) ** 2)
    return NoiseModel(gain=smoothing * (1.0 - bias) / lam,
                      offset_var=smoothing * (bias / lam + read * read / (lam * lam)) + rounding, correlation_x=a)


def estimate_noise_model(image: np.ndarray, *, n_bins: int = 16) -> NoiseModel:
    """Estimate ``var = gain * mean + offset_var`` from one noisy image alone (no clean target, no repeat).

    The finest diagonal Haar coefficient of each 2x2 block, ``(x00 - x01 - x10 + x11) / 2``, has the
    noise variance of one pixel and little of a smooth signal; its robust (MAD) variance per bin of
    block means is regressed on the bin mean (Foi et al., IEEE TIP 2008, in its simplest form).

    Noise correlated along x (a detector's low-pass, lag-1 correlation ``rho``) shrinks the diagonal
    and the horizontal coefficients' variance by ``1 - rho`` and grows the vertical one's by ``1 + rho``:
    their robust variances give ``rho`` (``correlation_x``, below 0.05 taken as 0) and the correction.
    """
    x = np.asarray(image, np.float64)
    if x.ndim != 2 or min(x.shape) < 8:
        raise ValueError(f"expected one (H, W) image of at least 8x8 px, got shape {x.shape}")
    h, w = (x.shape[0] // 2) * 2, (x.shape[1] // 2) * 2
    a, b = x[0:h:2, 0:w:2], x[0:h:2, 1:w:2]
    c, d = x[1:h:2, 0:w:2], x[1:h:2, 1:w:2]
    detail = ((a - b - c + d) / 2).ravel()
    mean = ((a + b + c + d) / 4).ravel()
    ratio = _robust_var((a - b + c - d) / 2) / max(_robust_var((a + b - c - d) / 2), 1e-30)
    rho = float(np.clip((1 - ratio) / (1 + ratio), 0.0, 0.9))
    rho = rho if rho >= 0.05 else 0.0
    edges = np.unique(np.quantile(mean, np.linspace(0, 1, n_bins + 1)))
    which = np.clip(np.searchsorted(edges, mean, side="right") - 1, 0, len(edges) - 2)
    centres, variances, counts = [], [], []
    for k in range(len(edges) - 1):
        sel = detail[which == k]
        if sel.size >= 32:
            mad = np.median(np.abs(sel - np.median(sel)))
            centres.append(mean[which == k].mean())
            variances.append((1.4826 * mad) ** 2)
            counts.append(sel.size)
    centre_a, var_a = np.asarray(centres), np.asarray(variances)
    total = float(np.var(detail))
    if len(centre_a) >= 2 and np.ptp(centre_a) > 0:
        gain, offset_var = np.polyfit(centre_a, var_a, 1, w=np.sqrt(np.asarray(counts, float)))
    else:
        gain, offset_var = 0.0, float(var_a[0]) if len(var_a) else total
    model = _sane(float(gain) / (1 - rho), float(offset_var) / (1 - rho), float(mean.min()), total / (1 - rho))
    return NoiseModel(model.gain, model.offset_var, correlation_x=rho)


def _robust_var(values: np.ndarray) -> float:
    values = np.ravel(values)
    return float((1.4826 * np.median(np.abs(values - np.median(values)))) ** 2)


def _sane(gain: float, offset_var: float, min_mean: float, total_var: float) -> NoiseModel:
    """Keep the fitted model usable by the GAT: positive gain, non-negative variance over the data."""
    # a non-positive slope means no measurable shot noise: keep a tiny gain so the GAT stays
    # defined and behaves as plain scaling by the Gaussian std
    gain = max(gain, 1e-6 * max(total_var, 1e-12) ** 0.5)
    if offset_var + gain * min_mean < 0:
        offset_var = -gain * min_mean
    return NoiseModel(gain=float(gain), offset_var=float(offset_var))
