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

from .noise_models import NoiseModel, estimate_noise_model, fit_noise_model, noise_model_from_params

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
    # Noise correlated along x by a detector's low-pass (noise.correlation_x) goes in as white noise of
    # the smoothed, lower variance the model holds: undoing the low-pass first (unsmear_x) amplified
    # the noise and the defective pixels, 0.3 to 3.5 dB worse on simulated raw frames (bench_real.py).
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
