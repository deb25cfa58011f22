"""Electron dose and detector noise.

The noise model (``apply_dose_noise``), in the units of the normalised signal
``s`` (the clean image's brightest column is about 1):

    N_e     = I t / e                       electrons per pixel (50 pA x 1.4 us = 437)
    lam     = eta N_e                       detected electrons per unit signal
    b       = bias (1 - clip(s, 0, 1))      the seed's noise bias: a background flux, strongest where dark
    counts ~ Poisson(lam (s+ + b)) + Normal(0, read_noise_e^2)
    y       = (counts - lam b) / lam        back in signal units (the known background mean is removed)

so ``E[y] = s`` and ``Var[y] = (s + b) / lam + read_noise_e^2 / lam^2``: the
variance scales as 1 / dose, and the bias keeps dark regions noisy instead of
noise-free. ``eta`` (``DETECTOR_EFFICIENCY``) is the fraction of the beam the
HAADF detector collects from the brightest column, calibrated so that the
low-dose benchmark set at 50 pA, 1.4 us, bias 0.2 scores PSNR ~18.2 dB and
SSIM ~0.16 against the clean images (the seed's Fig. 1).
"""
from __future__ import annotations

import numpy as np

from stemreg.acquisition.optics import ELEMENTARY_CHARGE_C

# Free constants, calibrated on the low-dose benchmark set (see tests/acquisition/test_calibration.py).
DETECTOR_EFFICIENCY = 0.07
READ_NOISE_E = 0.5


def electrons_per_pixel(beam_current_pA: float, dwell_time_us: float) -> float:
    """Beam electrons per pixel, ``I t / e`` (50 pA x 1.4 us = 437)."""
    return beam_current_pA * 1e-12 * dwell_time_us * 1e-6 / ELEMENTARY_CHARGE_C


def detected_electrons_per_unit_signal(beam_current_pA: float, dwell_time_us: float,
                                       detector_efficiency: float = DETECTOR_EFFICIENCY) -> float:
    """``lam = eta I t / e``: detected electrons at signal 1 (the brightest column)."""
    return detector_efficiency * electrons_per_pixel(beam_current_pA, dwell_time_us)


def apply_dose_noise(signal: np.ndarray, rng: np.random.Generator, *, beam_current_pA: float,
                     dwell_time_us: float, bias: float, detector_efficiency: float = DETECTOR_EFFICIENCY,
                     read_noise_e: float = READ_NOISE_E) -> np.ndarray:
    """One noisy acquisition of the noise-free ``signal`` (see the module docstring for the formula).

    Returns float32 in the units of ``signal``. ``signal`` may be (H, W) or a stack
    sharing one set of parameters.
    """
    lam = detected_electrons_per_unit_signal(beam_current_pA, dwell_time_us, detector_efficiency)
    positive = np.clip(signal, 0.0, None)
    background = bias * (1.0 - np.clip(signal, 0.0, 1.0))
    counts = rng.poisson(lam * (positive + background)).astype(np.float64)
    if read_noise_e > 0:
        counts += rng.normal(0.0, read_noise_e, size=counts.shape)
    return ((counts - lam * background) / lam).astype(np.float32)
