"""One simulated acquisition: specimen -> probe -> scan -> (noise-free) signal, plus its clean target.

Units: the clean target is the in-focus, undistorted noise-free HAADF image
divided by its 99.5th percentile, so the clean image spans about [0, 1]
(brightest columns ~1). The degraded signal is divided by the *same* number,
so degraded and clean share units; the noise (:mod:`.dose`) then counts
``lam = eta I t / e`` detected electrons per unit of that signal.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
import numpy as np
import scipy.fft

from stemreg.acquisition.contrast import ABF_BACKGROUND_WEIGHT, abf_brightness, to_bright_field
from stemreg.acquisition.optics import gaussian_transfer, probe_transfer
from stemreg.acquisition.scan import apply_scan_distortion, scan_displacement_px
from stemreg.acquisition.specimens import (BACKGROUND_CORRELATION_PM, SpecimenFamily, background_spectrum,
                                           draw_specimen, render_columns)

NORMALISATION_PERCENTILE = 99.5
# Margin simulated around the field so that the probe tails, defocus and scan displacements see specimen
# and the FFT's wrap-around stays outside the crop.
BASE_MARGIN_PX = 16


@dataclass
class Field:
    """One simulated field before noise: clean target, noise-free degraded signal, column positions."""

    clean: np.ndarray      # (H, W) float32
    signal: np.ndarray     # (H, W) float32, same units as clean
    columns: np.ndarray    # (K, 2) (row, col) pixels in the clean image


def _fast_shape(size_px: int, margin: int) -> tuple[int, int]:
    # few distinct shapes (multiples of 16, FFT-friendly) so that cached probes are reused
    n = scipy.fft.next_fast_len(16 * int(np.ceil((size_px + 2 * margin) / 16)), real=True)
    return (n, n)


def margin_px(params: dict, pixel_size_pm: float) -> int:
    """Margin that holds the defocused probe's radius and the largest scan displacement."""
    probe_radius_px = abs(params.get("defocus_nm", 0.0)) * 1e3 * params["convergence_mrad"] * 1e-3 / pixel_size_pm
    displacement = (abs(params.get("hysteresis_amplitude_px", 0.0)) + abs(params.get("drift_px", 0.0))
                    + 5 * abs(params.get("jitter_px", 0.0)))
    return int(np.ceil(BASE_MARGIN_PX + probe_radius_px + displacement + 3 * params.get("blur_sigma_px", 0.0)))


@dataclass
class Rendered:
    """A field before the scan: what every acquisition of it shares, so scans and noise can be redrawn.

    ``degraded_padded`` is the noise-free degraded image on a grid ``margin`` px larger each side than
    the field (in the clean units); :func:`scan_rendered` samples it along a (distorted) scan.
    """

    clean: np.ndarray            # (H, W) float32
    degraded_padded: np.ndarray  # (H + 2 margin, W + 2 margin) float32
    margin: int
    columns: np.ndarray          # (K, 2)


def render_field(params: dict, size_px: int, pixel_size_pm: float, rng: np.random.Generator) -> Rendered:
    """Specimen -> probe -> noise-free images of one field, before the scan (see :func:`simulate_field`)."""
    # Defocus on a 0.5 nm grid (far below the ~4 nm depth of field) so probes are reused from the cache;
    # params records the value used.
    params["defocus_nm"] = round(params["defocus_nm"] * 2) / 2
    margin = margin_px(params, pixel_size_pm)
    padded = _fast_shape(size_px, margin)
    field_pm = (size_px * pixel_size_pm, size_px * pixel_size_pm)
    specimen = draw_specimen(params["specimen"], field_pm, rng, vacancy_fraction=params["vacancy_fraction"],
                             substitution_fraction=params["substitution_fraction"],
                             background_fraction=params["background_fraction"],
                             lattice_strain=params.get("lattice_strain", 0.02),
                             brightness_spread=params.get("brightness_spread", 0.0))
    bright_field = params.get("contrast") == "abf"
    if bright_field:
        specimen = dataclasses.replace(specimen, brightness=abf_brightness(specimen.brightness))
    potential_ft = scipy.fft.rfft2(render_columns(specimen, padded, pixel_size_pm, origin_px=(margin, margin)))
    optics = dict(energy_keV=params["energy_keV"], convergence_mrad=params["convergence_mrad"], cs_um=params["cs_um"])
    source_px = params["source_size_pm"] / pixel_size_pm
    focus = probe_transfer(padded, pixel_size_pm, **optics) * gaussian_transfer(padded, source_px)
    clean_padded = scipy.fft.irfft2(potential_ft * focus, s=padded)
    if params["defocus_nm"] or params["blur_sigma_px"]:
        # the source size and the image blur are Gaussians in quadrature
        blur = gaussian_transfer(padded, float(np.hypot(source_px, params["blur_sigma_px"])))
        degraded_padded = scipy.fft.irfft2(
            potential_ft * probe_transfer(padded, pixel_size_pm, defocus_nm=params["defocus_nm"], **optics) * blur,
            s=padded)
    else:
        degraded_padded = clean_padded
    # An undersampled probe (coarser pixels than the probe's width) rings slightly below zero through
    # the FFT; intensities are never negative.
    clean_padded = np.maximum(clean_padded, 0.0)
    degraded_padded = np.maximum(degraded_padded, 0.0)
    crop = (slice(margin, margin + size_px),) * 2
    # bright field: the columns' own level, before the background, sets the depth of their dips
    reference = float(np.percentile(clean_padded[crop], NORMALISATION_PERCENTILE)) if bright_field else 0.0
    if specimen.background > 0:
        # Amorphous support / contamination / thickness changes, with a height relative to the imaged
        # columns' peaks; smooth over ~150 pm, so the probe and blur leave it unchanged.
        column_level = float(np.percentile(clean_padded, NORMALISATION_PERCENTILE))
        # A thickness is never negative: at coarse sampling a field holds hundreds of speckles, and the
        # Gaussian field's rare dips below zero would make negative HAADF signal.
        background = specimen.background * column_level * np.maximum(scipy.fft.irfft2(
            background_spectrum(padded, BACKGROUND_CORRELATION_PM / pixel_size_pm, rng), s=padded), 0.0)
        background = background * (ABF_BACKGROUND_WEIGHT if bright_field else 1.0)
        clean_padded = clean_padded + background
        degraded_padded = degraded_padded + background
    if bright_field:
        clean_padded = to_bright_field(clean_padded, params["abf_depth"], reference)
        degraded_padded = to_bright_field(degraded_padded, params["abf_depth"], reference)
    scale = float(np.percentile(clean_padded[crop], NORMALISATION_PERCENTILE))
    scale = scale if scale > 0 else 1.0
    columns = specimen.positions_pm / pixel_size_pm
    in_field = ((columns[:, 0] >= 0) & (columns[:, 0] <= size_px - 1)
                & (columns[:, 1] >= 0) & (columns[:, 1] <= size_px - 1))
    return Rendered(clean=(clean_padded[crop] / scale).astype(np.float32),
                    degraded_padded=(degraded_padded / scale).astype(np.float32), margin=margin,
                    columns=columns[in_field].astype(np.float32).reshape(-1, 2))


def scan_rendered(rendered: Rendered, params: dict, rng: np.random.Generator, *,
                  window: tuple[int, int, int] | None = None) -> np.ndarray:
    """The noise-free signal of one scan of a rendered field, with the condition's scan distortions.

    ``window=(row, col, size)`` returns only that square of the scan (the distortion is still drawn
    for the whole frame, so line starts stay at the frame's left edge).
    """
    size = rendered.clean.shape
    dy, dx = scan_displacement_px(size, rng, hysteresis_amplitude_px=params["hysteresis_amplitude_px"],
                                  hysteresis_decay_px=params["hysteresis_decay_px"],
                                  jitter_px=params["jitter_px"], drift_px=params["drift_px"])
    row, col = (0, 0) if window is None else window[:2]
    h, w = size if window is None else (window[2], window[2])
    m = rendered.margin
    if np.any(dx) or np.any(dy):
        return apply_scan_distortion(rendered.degraded_padded, dy[row:row + h, col:col + w],
                                     dx[row:row + h, col:col + w],
                                     origin_px=(m + row, m + col)).astype(np.float32)
    return rendered.degraded_padded[m + row:m + row + h, m + col:m + col + w].copy()


def simulate_field(params: dict, size_px: int, pixel_size_pm: float, rng: np.random.Generator) -> Field:
    """Simulate one field from drawn physical ``params`` (one value per parameter).

    ``params`` holds ``specimen``, ``energy_keV``, ``convergence_mrad``, ``cs_um``, ``defocus_nm``,
    ``source_size_pm``, ``blur_sigma_px``, the scan-distortion and defect parameters.
    """
    rendered = render_field(params, size_px, pixel_size_pm, rng)
    return Field(clean=rendered.clean, signal=scan_rendered(rendered, params, rng), columns=rendered.columns)


def normalise_user_image(image: np.ndarray) -> np.ndarray:
    """Bring a user's high-dose image to the clean units: 0.5th percentile -> 0, 99.5th -> 1."""
    low, high = np.percentile(image, [100 - NORMALISATION_PERCENTILE, NORMALISATION_PERCENTILE])
    span = high - low if high > low else 1.0
    return ((image - low) / span).astype(np.float32)


def degrade_field(clean: np.ndarray, params: dict, pixel_size_pm: float, rng: np.random.Generator) -> np.ndarray:
    """Noise-free degraded signal of a user's clean (normalised, in-focus) image.

    The image already carries the microscope's in-focus probe, so only the *extra* blur is applied:
    the defocused probe intensity (an approximation: it blurs on top of the in-focus probe) and the
    Gaussian image blur; then the scan distortions. Edges are extended by reflection.
    """
    size = clean.shape
    margin = margin_px(params, pixel_size_pm)
    padded = np.pad(clean.astype(np.float64), margin, mode="reflect")
    transfer = None
    if params["defocus_nm"]:
        transfer = probe_transfer(padded.shape, pixel_size_pm, energy_keV=params["energy_keV"],
                                  convergence_mrad=params["convergence_mrad"], defocus_nm=params["defocus_nm"],
                                  cs_um=params["cs_um"])
    if params["blur_sigma_px"]:
        blur = gaussian_transfer(padded.shape, params["blur_sigma_px"])
        transfer = blur if transfer is None else transfer * blur
    if transfer is not None:
        padded = scipy.fft.irfft2(scipy.fft.rfft2(padded) * transfer, s=padded.shape)
    dy, dx = scan_displacement_px(size, rng, hysteresis_amplitude_px=params["hysteresis_amplitude_px"],
                                  hysteresis_decay_px=params["hysteresis_decay_px"],
                                  jitter_px=params["jitter_px"], drift_px=params["drift_px"])
    if np.any(dx) or np.any(dy):
        return apply_scan_distortion(padded, dy, dx, origin_px=(margin, margin)).astype(np.float32)
    return padded[margin:margin + size[0], margin:margin + size[1]].astype(np.float32)


__all__ = ["Field", "Rendered", "SpecimenFamily", "simulate_field", "render_field", "scan_rendered", "degrade_field", "normalise_user_image"]
