"""Classical (non-learned) denoisers, each with its strength fitted on a validation set.

Methods: ``gaussian`` (Gaussian filter), ``nlm`` (non-local means), ``tv``
(total variation, Chambolle), ``wavelet`` (BayesShrink) from scikit-image, and
``bm3d`` (the ``bm3d`` package).

STEM counts are Poisson (shot noise) plus Gaussian (detector), so the noise is
signal dependent. ``nlm``, ``tv``, ``wavelet`` and ``bm3d`` therefore run in
the domain of the generalised Anscombe transform (GAT), where the noise is
close to unit-variance Gaussian, and come back through the *exact unbiased*
inverse (Makitalo & Foi, IEEE TIP 2011/2013), computed numerically for the
fitted noise model. The Gaussian filter works on the raw image.

Each image gets its own noise model (``var = gain * mean + offset_var``):
over a range of doses one model for all images would be wrong for most of
them. For simulated images it is known exactly from the acquisition
parameters (:func:`noise_model_from_params`, the *oracle* model); for an image
of unknown acquisition it is estimated from the image itself
(:func:`estimate_noise_model`). Each method's strength is fitted on validation
images, never on the images scored: the GAT makes the "known noise level"
sigma = 1, and a small grid of multipliers around it (or of the filter width
for ``gaussian``) is searched for the best validation PSNR.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import numpy as np

__all__ = [
    "CLASSICAL_METHODS",
    "NoiseModel",
    "ClassicalDenoiser",
    "fit_noise_model",
    "noise_model_from_params",
    "estimate_noise_model",
    "fit_classical",
    "denoise_classical",
    "gat_forward",
    "gat_inverse",
]

CLASSICAL_METHODS: tuple[str, ...] = ("gaussian", "nlm", "tv", "wavelet", "bm3d")

# Strength grids searched on the validation set. In the GAT domain the noise
# std is 1, so nlm / wavelet / bm3d grids are multipliers of the known level.
DEFAULT_GRIDS: dict[str, dict[str, list[float]]] = {
    "gaussian": {"sigma_px": [0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0]},
    "nlm": {"h": [0.4, 0.6, 0.8, 1.0, 1.3, 1.7, 2.2]},
    "tv": {"weight": [0.25, 0.5, 1.0, 2.0, 4.0, 8.0]},
    "wavelet": {"sigma": [0.5, 0.75, 1.0, 1.5, 2.0, 3.0]},
    "bm3d": {"sigma": [0.75, 1.0, 1.4, 2.0]},
}


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

    def to_dict(self) -> dict[str, float]:
        return {"gain": float(self.gain), "offset_var": float(self.offset_var)}


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
    ``offset_var = bias / lam + read_noise_e^2 / lam^2``.

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
    return NoiseModel(gain=(1.0 - bias) / lam, offset_var=bias / lam + read * read / (lam * lam))


def estimate_noise_model(image: np.ndarray, *, n_bins: int = 16) -> NoiseModel:
    """Estimate ``var = gain * mean + offset_var`` from one noisy image alone (no clean target, no repeat).

    The finest diagonal Haar coefficient of each 2x2 block, ``(x00 - x01 - x10 + x11) / 2``, has the
    noise variance of one pixel and little of a smooth signal; its robust (MAD) variance per bin of
    block means is regressed on the bin mean (Foi et al., IEEE TIP 2008, in its simplest form).
    """
    x = np.asarray(image, np.float64)
    if x.ndim != 2 or min(x.shape) < 8:
        raise ValueError(f"expected one (H, W) image of at least 8x8 px, got shape {x.shape}")
    h, w = (x.shape[0] // 2) * 2, (x.shape[1] // 2) * 2
    a, b = x[0:h:2, 0:w:2], x[0:h:2, 1:w:2]
    c, d = x[1:h:2, 0:w:2], x[1:h:2, 1:w:2]
    detail = ((a - b - c + d) / 2).ravel()
    mean = ((a + b + c + d) / 4).ravel()
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
    return _sane(float(gain), float(offset_var), float(mean.min()), total)


def _sane(gain: float, offset_var: float, min_mean: float, total_var: float) -> NoiseModel:
    """Keep the fitted model usable by the GAT: positive gain, non-negative variance over the data."""
    # a non-positive slope means no measurable shot noise: keep a tiny gain so the GAT stays
    # defined and behaves as plain scaling by the Gaussian std
    gain = max(gain, 1e-6 * max(total_var, 1e-12) ** 0.5)
    if offset_var + gain * min_mean < 0:
        offset_var = -gain * min_mean
    return NoiseModel(gain=float(gain), offset_var=float(offset_var))


def gat_forward(image: np.ndarray, noise: NoiseModel) -> np.ndarray:
    """Generalised Anscombe transform: Poisson-Gaussian noise -> approx. unit-variance Gaussian."""
    a = noise.gain
    return (2.0 / a) * np.sqrt(np.maximum(a * np.asarray(image, np.float64) + 0.375 * a * a + noise.offset_var, 0.0))


def _gat_expectation_table(noise: NoiseModel, lam_max: float, n_points: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """E[GAT(z) | lambda] on a grid of Poisson means lambda (in electrons)."""
    from scipy.stats import poisson

    a, b = noise.gain, noise.offset_var
    read_var = max(b, 0.0) / (a * a)  # Gaussian variance in electron units
    read_std = np.sqrt(read_var)
    lam = np.linspace(0.0, np.sqrt(lam_max), n_points) ** 2  # dense near 0, where the inverse matters most
    k_max = int(lam_max + 10 * np.sqrt(lam_max) + 20)
    k = np.arange(k_max + 1)
    nodes, weights = np.polynomial.hermite_e.hermegauss(21)
    weights = weights / weights.sum()
    # E_n[2 sqrt(k + n + 3/8 + s^2)] for every k, n ~ N(0, s^2)
    inner = 2.0 * np.sqrt(np.maximum(k[:, None] + read_std * nodes[None, :] + 0.375 + read_var, 0.0))
    per_k = inner @ weights
    pmf = poisson.pmf(k[None, :], lam[:, None])
    expectation = pmf @ per_k
    return lam, expectation


def gat_inverse(transformed: np.ndarray, noise: NoiseModel) -> np.ndarray:
    """Exact unbiased inverse of :func:`gat_forward` (Makitalo & Foi), numerically.

    Maps a denoised GAT-domain value D to the mean intensity whose transformed
    expectation is D, rather than the biased algebraic inverse.
    """
    a, b = noise.gain, noise.offset_var
    d = np.asarray(transformed, np.float64)
    d_max = float(np.max(d, initial=0.0))
    read_var = max(b, 0.0) / (a * a)
    dark_offset = max(-b, 0.0) / (a * a)  # the image's offset in electrons when offset_var < 0
    lam_max = max(d_max**2 / 4.0 + 10.0, 20.0)
    lam, expectation = _gat_expectation_table(noise, lam_max)
    lam_est = np.interp(d, expectation, lam, left=0.0)
    above = d > expectation[-1]
    if np.any(above):  # asymptotic inverse where the table ends
        lam_est[above] = d[above] ** 2 / 4.0 - 0.125 - read_var
    return a * (lam_est + dark_offset)


def _run_one(method: str, image: np.ndarray, params: dict[str, float], noise: NoiseModel | None) -> np.ndarray:
    """Denoise one (H, W) image with fixed parameters."""
    from scipy.ndimage import gaussian_filter

    image = np.asarray(image, np.float64)
    if method == "gaussian":
        return gaussian_filter(image, params["sigma_px"], mode="reflect")
    if noise is None:
        raise ValueError(f"method {method!r} needs a NoiseModel (fit one with fit_noise_model)")
    vst = gat_forward(image, noise)
    if method == "nlm":
        from skimage.restoration import denoise_nl_means

        out = denoise_nl_means(vst, h=params["h"], sigma=1.0, patch_size=5, patch_distance=6, fast_mode=True)
    elif method == "tv":
        from skimage.restoration import denoise_tv_chambolle

        out = denoise_tv_chambolle(vst, weight=params["weight"])
    elif method == "wavelet":
        from skimage.restoration import denoise_wavelet

        out = denoise_wavelet(vst, sigma=params["sigma"], wavelet="db2", mode="soft", method="BayesShrink",
                              rescale_sigma=False)
    elif method == "bm3d":
        import bm3d

        out = bm3d.bm3d(vst, sigma_psd=params["sigma"])
    else:
        raise ValueError(f"unknown classical method {method!r}; accepted: {', '.join(CLASSICAL_METHODS)}")
    return gat_inverse(out, noise)


def denoise_classical(image: np.ndarray, method: str, *, noise: NoiseModel | Sequence[NoiseModel] | None = None,
                      **params: float) -> np.ndarray:
    """Denoise ``(H, W)`` or ``(N, H, W)`` with one classical method and fixed parameters.

    Parameters
    ----------
    image
        Noisy image(s), any units.
    method
        One of :data:`CLASSICAL_METHODS`.
    noise
        The noise model (needed by every method but ``gaussian``), or one per image of a stack.
    **params
        The method's strength: ``sigma_px`` (gaussian), ``h`` (nlm), ``weight`` (tv),
        ``sigma`` (wavelet, bm3d; GAT-domain noise std, 1 = the known level).

    Returns
    -------
    numpy.ndarray
        float32, same shape as ``image``.
    """
    if method not in CLASSICAL_METHODS:
        raise ValueError(f"unknown classical method {method!r}; accepted: {', '.join(CLASSICAL_METHODS)}")
    arr = np.asarray(image)
    if arr.ndim not in (2, 3):
        raise ValueError(f"expected an (H, W) image or an (N, H, W) stack, got shape {arr.shape}")
    stack = arr[None] if arr.ndim == 2 else arr
    models = _per_image(noise, len(stack))
    out = np.stack([_run_one(method, im, params, model) for im, model in zip(stack, models)]).astype(np.float32)
    return out[0] if arr.ndim == 2 else out


def _per_image(noise: NoiseModel | Sequence[NoiseModel] | None, n: int) -> list[NoiseModel | None]:
    if noise is None or isinstance(noise, NoiseModel):
        return [noise] * n
    models = list(noise)
    if len(models) != n:
        raise ValueError(f"{len(models)} noise models for {n} images; give one model, or one per image")
    return models


@dataclass(frozen=True)
class ClassicalDenoiser:
    """A classical method with its fitted strength; call it on ``(H, W)`` or ``(N, H, W)``."""

    method: str
    params: dict[str, float]
    noise: NoiseModel | None = None
    val_psnr: float = float("nan")
    grid_scores: list[tuple[dict[str, float], float]] = field(default_factory=list)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return denoise_classical(image, self.method, noise=self.noise, **self.params)

    def with_noise(self, noise: NoiseModel | None) -> "ClassicalDenoiser":
        """The same fitted strength applied with another image's noise model."""
        return replace(self, noise=noise)

    def describe(self) -> dict[str, Any]:
        """JSON-able summary (method, fitted parameters, noise model, validation PSNR)."""
        return {"method": self.method, "params": dict(self.params),
                "noise": self.noise.to_dict() if self.noise else None, "val_psnr": self.val_psnr}


def fit_classical(method: str, val_degraded: np.ndarray, val_clean: np.ndarray, *,
                  noise: NoiseModel | Sequence[NoiseModel] | None = None, grid: dict[str, list[float]] | None = None,
                  on_step: Callable[[], None] | None = None) -> ClassicalDenoiser:
    """Fit one method's strength by grid search of mean PSNR on a validation set.

    Parameters
    ----------
    method
        One of :data:`CLASSICAL_METHODS`.
    val_degraded, val_clean
        Validation images ``(N, H, W)``, drawn with a seed other than the test set's.
    noise
        Noise model, or one per validation image (e.g. :func:`noise_model_from_params` of each);
        fitted from the validation pairs when not given.
    grid
        ``{param: [values]}`` to search; default :data:`DEFAULT_GRIDS`.
    on_step
        Called after each grid point (progress bars).

    Returns
    -------
    ClassicalDenoiser
    """
    from .metrics import psnr

    if method not in CLASSICAL_METHODS:
        raise ValueError(f"unknown classical method {method!r}; accepted: {', '.join(CLASSICAL_METHODS)}")
    val_degraded = np.asarray(val_degraded, np.float32)
    val_clean = np.asarray(val_clean, np.float32)
    if val_degraded.ndim == 2:
        val_degraded, val_clean = val_degraded[None], val_clean[None]
    if method != "gaussian" and noise is None:
        noise = fit_noise_model(val_degraded, val_clean)
    grid = grid or DEFAULT_GRIDS[method]
    (name, values), = grid.items()
    scores: list[tuple[dict[str, float], float]] = []
    for value in values:
        params = {name: float(value)}
        out = denoise_classical(val_degraded, method, noise=noise, **params)
        score = float(np.mean([psnr(o, c) for o, c in zip(out, val_clean)]))
        scores.append((params, score))
        if on_step is not None:
            on_step()
    best_params, best_score = max(scores, key=lambda s: s[1])
    single = noise if noise is None or isinstance(noise, NoiseModel) else None
    return ClassicalDenoiser(method=method, params=best_params, noise=single, val_psnr=best_score,
                             grid_scores=scores)
