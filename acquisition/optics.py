"""Probe optics of an incoherent HAADF STEM: wavelength, aberrations, probe intensity.

The probe is the inverse Fourier transform of the condenser aperture times
``exp(-i chi(k))``; the HAADF image is the specimen convolved with the probe
intensity (incoherent imaging), further blurred by the effective source size.
All lengths are in picometres unless a name says otherwise.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import scipy.fft

ELECTRON_MASS_KG = 9.1093837015e-31
ELEMENTARY_CHARGE_C = 1.602176634e-19
PLANCK_JS = 6.62607015e-34
SPEED_OF_LIGHT_M_S = 299792458.0


def electron_wavelength_pm(energy_keV: float) -> float:
    """Relativistic electron wavelength.

    ``lambda = h / sqrt(2 m0 e V (1 + e V / (2 m0 c^2)))``; 200 keV gives 2.508 pm.
    """
    ev_J = energy_keV * 1e3 * ELEMENTARY_CHARGE_C
    momentum = np.sqrt(2 * ELECTRON_MASS_KG * ev_J * (1 + ev_J / (2 * ELECTRON_MASS_KG * SPEED_OF_LIGHT_M_S**2)))
    return float(PLANCK_JS / momentum * 1e12)


def spatial_frequency_grid_per_pm(shape: tuple[int, int], pixel_size_pm: float) -> tuple[np.ndarray, np.ndarray]:
    """Spatial frequencies (ky, kx) in 1/pm of an FFT grid, unshifted (DC at [0, 0])."""
    ky = np.fft.fftfreq(shape[0], d=pixel_size_pm)[:, None]
    kx = np.fft.fftfreq(shape[1], d=pixel_size_pm)[None, :]
    return ky, kx


def aberration_phase(k_per_pm: np.ndarray, wavelength_pm: float, *, defocus_nm: float = 0.0,
                     cs_um: float = 0.0) -> np.ndarray:
    """Aberration function ``chi(alpha) = 2 pi / lambda (C1 alpha^2 / 2 + Cs alpha^4 / 4)``, alpha = lambda k.

    ``defocus_nm`` is C1 (its sign does not change the intensity for Cs = 0),
    ``cs_um`` the third-order spherical aberration C3.
    """
    alpha = wavelength_pm * k_per_pm
    c1_pm = defocus_nm * 1e3
    c3_pm = cs_um * 1e6
    return 2 * np.pi / wavelength_pm * (0.5 * c1_pm * alpha**2 + 0.25 * c3_pm * alpha**4)


def probe_intensity(shape: tuple[int, int], pixel_size_pm: float, *, energy_keV: float, convergence_mrad: float,
                    defocus_nm: float = 0.0, cs_um: float = 0.0) -> np.ndarray:
    """Probe intensity ``|IFFT[A(k) exp(-i chi(k))]|^2`` sampled on the pixel grid, summing to 1.

    Returned centred at pixel ``(shape[0] // 2, shape[1] // 2)``.
    """
    wavelength_pm = electron_wavelength_pm(energy_keV)
    ky, kx = spatial_frequency_grid_per_pm(shape, pixel_size_pm)
    k = np.sqrt(ky**2 + kx**2)
    aperture = (wavelength_pm * k <= convergence_mrad * 1e-3).astype(np.float64)
    if aperture.sum() <= 1:
        raise ValueError(f"convergence_mrad={convergence_mrad} is too small for a {shape} grid at "
                         f"{pixel_size_pm} pm: the aperture holds no spatial frequency")
    wave = scipy.fft.ifft2(aperture * np.exp(-1j * aberration_phase(k, wavelength_pm, defocus_nm=defocus_nm,
                                                                   cs_um=cs_um)))
    intensity = np.abs(wave) ** 2
    return np.fft.fftshift(intensity / intensity.sum())


@lru_cache(maxsize=32)
def _k2_half_per_pm2(shape: tuple[int, int], pixel_size_pm: float) -> np.ndarray:
    ky = scipy.fft.fftfreq(shape[0], d=pixel_size_pm)[:, None]
    kx = scipy.fft.rfftfreq(shape[1], d=pixel_size_pm)[None, :]
    return ky**2 + kx**2


def gaussian_transfer(shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    """Half-spectrum (rfft2 layout) Fourier transform of a unit-sum Gaussian of ``sigma_px``."""
    return np.exp(-2 * np.pi**2 * sigma_px**2 * _k2_half_per_pm2(shape, 1.0))


@lru_cache(maxsize=128)
def probe_transfer(shape: tuple[int, int], pixel_size_pm: float, *, energy_keV: float, convergence_mrad: float,
                   defocus_nm: float = 0.0, cs_um: float = 0.0) -> np.ndarray:
    """Half-spectrum transfer function of the probe intensity (cached; do not modify the result)."""
    probe = probe_intensity(shape, pixel_size_pm, energy_keV=energy_keV, convergence_mrad=convergence_mrad,
                            defocus_nm=defocus_nm, cs_um=cs_um)
    transfer = scipy.fft.rfft2(scipy.fft.ifftshift(probe)).astype(np.complex64)  # half the cache's memory
    transfer.setflags(write=False)
    return transfer


def imaging_transfer(shape: tuple[int, int], pixel_size_pm: float, *, energy_keV: float, convergence_mrad: float,
                     defocus_nm: float = 0.0, cs_um: float = 0.0, source_size_pm: float = 0.0,
                     blur_sigma_px: float = 0.0) -> np.ndarray:
    """Half-spectrum transfer function of probe, source size and image blur.

    Multiply a specimen's ``rfft2`` by it (see :func:`convolve`) to get the noise-free HAADF image.
    """
    transfer = probe_transfer(shape, pixel_size_pm, energy_keV=energy_keV, convergence_mrad=convergence_mrad,
                              defocus_nm=defocus_nm, cs_um=cs_um)
    sigma_px = float(np.hypot(source_size_pm / pixel_size_pm, blur_sigma_px))
    return transfer * gaussian_transfer(shape, sigma_px) if sigma_px > 0 else transfer


def convolve(image: np.ndarray, transfer: np.ndarray) -> np.ndarray:
    """Circular convolution of ``image`` (H, W) with the PSF whose half-spectrum transfer is ``transfer``."""
    return scipy.fft.irfft2(scipy.fft.rfft2(image) * transfer, s=image.shape)


def probe_fwhm_pm(probe: np.ndarray, pixel_size_pm: float) -> float:
    """Full width at half maximum of a centred, round probe, from its radial profile."""
    centre = np.unravel_index(np.argmax(probe), probe.shape)
    row = probe[centre[0], :] / probe[centre]
    right = row[centre[1]:]
    below = np.nonzero(right < 0.5)[0][0]
    # linear interpolation between the last sample above and the first below half maximum
    x0, x1 = below - 1, below
    half = x0 + (right[x0] - 0.5) / (right[x0] - right[x1])
    return float(2 * half * pixel_size_pm)


def probe_d50_pm(probe: np.ndarray, pixel_size_pm: float) -> float:
    """Diameter of the circle around the probe's centroid that holds half its intensity."""
    yy, xx = np.indices(probe.shape)
    total = probe.sum()
    cy, cx = (probe * yy).sum() / total, (probe * xx).sum() / total
    r = np.hypot(yy - cy, xx - cx).ravel()
    order = np.argsort(r)
    cumulative = np.cumsum(probe.ravel()[order]) / total
    return float(2 * r[order][np.searchsorted(cumulative, 0.5)] * pixel_size_pm)


def degradation_psf(params: dict, pixel_size_pm: float) -> np.ndarray | None:
    """The exact PSF that maps an acquisition's clean target to its (noise-free) degraded image.

    The target is the in-focus image (probe x source); the degraded one adds the condition's
    defocus and image blur. Their transfer ratio, defocused probe x Gaussian(hypot(source, blur)) over
    in-focus probe x Gaussian(source), is the *oracle* blur a deconvolution is handed (zero where the
    in-focus transfer vanishes: the target holds nothing there). A Gaussian blur alone gives a
    Gaussian of ``blur_sigma_px`` (Gaussians in quadrature).

    Returns
    -------
    numpy.ndarray or None
        A centred, odd-sized (K, K) float32 kernel summing to 1, or None when the condition adds
        no blur.
    """
    defocus_nm = float(params.get("defocus_nm", 0.0))
    blur_px = float(params.get("blur_sigma_px", 0.0))
    if not defocus_nm and not blur_px:
        return None
    if not defocus_nm:
        half = int(np.ceil(4 * blur_px))
        r2 = np.add.outer(np.arange(-half, half + 1) ** 2, np.arange(-half, half + 1) ** 2)
        kernel = np.exp(-0.5 * r2 / blur_px**2)
        return (kernel / kernel.sum()).astype(np.float32)
    alpha = float(params["convergence_mrad"]) * 1e-3
    radius_px = abs(defocus_nm) * 1e3 * alpha / pixel_size_pm + 4 * blur_px + 4
    half = int(np.ceil(1.5 * radius_px))
    n = int(scipy.fft.next_fast_len(4 * half + 8))
    shape = (n, n)
    optics = dict(energy_keV=params["energy_keV"], convergence_mrad=params["convergence_mrad"],
                  cs_um=params.get("cs_um", 0.0))
    source_px = float(params.get("source_size_pm", 0.0)) / pixel_size_pm
    focus = np.asarray(probe_transfer(shape, pixel_size_pm, **optics)) * gaussian_transfer(shape, source_px)
    degraded = (np.asarray(probe_transfer(shape, pixel_size_pm, defocus_nm=defocus_nm, **optics))
                * gaussian_transfer(shape, float(np.hypot(source_px, blur_px))))
    # Where the in-focus transfer fades the target holds nothing: the ratio goes to 1 there (a sharp
    # cut-off to 0 would ring through the whole kernel).
    eps = 1e-4 * np.abs(focus).max() ** 2
    ratio = (degraded * np.conj(focus) + eps) / (np.abs(focus) ** 2 + eps)
    kernel = scipy.fft.fftshift(scipy.fft.irfft2(ratio, s=shape))
    c = n // 2
    kernel = np.maximum(kernel[c - half:c + half + 1, c - half:c + half + 1], 0.0)
    return (kernel / kernel.sum()).astype(np.float32)
