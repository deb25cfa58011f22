"""Electron dose and detector noise.

The noise model (``apply_dose_noise``), in the units of the normalised signal
``s`` (the clean image's 99.5th percentile, about its brightest columns, is 1):

    N_e     = I t / e                       beam electrons per pixel (50 pA x 1.4 us / e = 437)
    lam     = eta N_e                       detected electrons per unit signal (eta = 0.10: 43.7)
    b       = bias (1 - clip(s, 0, 1))      the seed's noise bias: a background flux, strongest where dark
    counts ~ Poisson(lam (s+ + b)) + Normal(0, read_noise_e^2)
    y       = (counts - lam b) / lam        back in signal units (the known background mean is removed)

so ``E[y] = s`` and ``Var[y] = (s + b) / lam + read_noise_e^2 / lam^2``: the
variance scales as 1 / dose, and the bias keeps dark regions noisy instead of
noise-free.

The free constants and why they have their values:

- ``eta`` (``DETECTOR_EFFICIENCY`` = 0.10): the fraction of the beam that the HAADF detector
  collects from the brightest columns (real annular detectors collect a few to ~15 %). It is
  the one constant fitted to the seed's Fig. 1 (PSNR 18.244 dB, SSIM 0.157 at 50 pA, 1.4 us,
  bias 0.2). The low-dose benchmark set (32 images) scores PSNR 17.92 +- 1.59 dB and SSIM
  0.159 +- 0.042 (mean +- std over images) against its clean images, 512 fresh pairs
  18.35 +- 1.64 dB and 0.169 +- 0.047; eta sits between the values that centre either
  (tests/acquisition/test_calibration.py holds 18.2 +- 0.5 dB and 0.16 +- 0.03;
  benchmarks/bench_simulation.py prints both).
- the bias form ``bias (1 - s)``: a flux that is largest where the specimen is dark and vanishes
  on the brightest columns, with its mean subtracted, so that it adds noise but no offset.
- the image normalisation: the 99.5th percentile of the clean image is 1 (a percentile, not
  the maximum, so that one hot column does not set the scale); see :mod:`.microscope`.
- the specimen's amorphous background (``background_fraction`` 0 to 3 times the column peaks,
  1 to 3 at the seed's point,
  speckle 250 pm across; :mod:`.specimens`): contamination and support film, whose share of
  the signal sets how much of the noise falls on structureless regions, and so the SSIM at a
  given PSNR.
- ``READ_NOISE_E`` = 0.5 electron rms per pixel: a counting HAADF detector's small Gaussian noise.

What the detector's electronics then do to the counts (bandwidth, ADU, defects, lost lines) is
:mod:`.detector`; :func:`acquire` applies both.
"""
from __future__ import annotations

import numpy as np

from stemreg.acquisition.detector import DETECTOR_KEYS, fast_scan_lowpass, read_out, to_signal_units
from stemreg.acquisition.optics import ELEMENTARY_CHARGE_C

# Free constants, calibrated on the low-dose benchmark set (see tests/acquisition/test_calibration.py).
DETECTOR_EFFICIENCY = 0.10
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
                     read_noise_e: float = READ_NOISE_E, **detector: float) -> np.ndarray:
    """One noisy acquisition of the noise-free ``signal``, in the units of ``signal``.

    ``lam = eta I t / e`` detected electrons per unit signal, ``b = bias (1 - clip(s, 0, 1))``,
    ``counts ~ Poisson(lam (max(s, 0) + b)) + Normal(0, read_noise_e^2)``, returned as
    ``(counts - lam b) / lam``, so that ``E = s`` and ``Var = (s + b) / lam + read_noise_e^2 / lam^2``
    (the module docstring says why the constants have their values). With the detector's
    parameters (:data:`~stemreg.acquisition.detector.DETECTOR_KEYS`) the counts go through the
    detector's read-out first (:func:`acquire`; the result is its frame in signal units).

    Parameters
    ----------
    signal
        Noise-free signal ``s``, (H, W) or a stack sharing one set of parameters; 1 is the clean
        image's 99.5th percentile.
    rng
        The random stream.
    beam_current_pA, dwell_time_us
        Beam current ``I`` and dwell time per pixel ``t``.
    bias
        The seed's noise bias: 0 adds nothing; larger values add noise where the signal is dark.
    detector_efficiency
        ``eta``, the fraction of the beam electrons the HAADF detector counts at signal 1.
    read_noise_e
        Gaussian read noise of the detector, electrons rms per pixel.
    **detector
        All of ``DETECTOR_KEYS`` or none.

    Returns
    -------
    numpy.ndarray
        float32, in the units of ``signal``.
    """
    return acquire(signal, rng, beam_current_pA=beam_current_pA, dwell_time_us=dwell_time_us, bias=bias,
                   detector_efficiency=detector_efficiency, read_noise_e=read_noise_e, **detector)[0]


def acquire(signal: np.ndarray, rng: np.random.Generator, *, beam_current_pA: float, dwell_time_us: float,
            bias: float, detector_efficiency: float = DETECTOR_EFFICIENCY, read_noise_e: float = READ_NOISE_E,
            **detector: float) -> tuple[np.ndarray, np.ndarray | None]:
    """One acquisition: ``(frame in signal units float32, frame in ADU float32 or None)``.

    Without detector parameters the frame is the electron counts scaled to signal units (no ADU
    frame). With them (:mod:`.detector`), the counts are read out to ADU (bandwidth, line jumps,
    gain, offset, quantisation, saturation, defective pixels, lost lines) and brought back to
    signal units with the known gain and offset; the background flux removed is the low-passed one.
    """
    lam = detected_electrons_per_unit_signal(beam_current_pA, dwell_time_us, detector_efficiency)
    positive = np.clip(signal, 0.0, None)
    background = bias * (1.0 - np.clip(signal, 0.0, 1.0))
    counts = rng.poisson(lam * (positive + background)).astype(np.float64)
    if read_noise_e > 0:
        counts += rng.normal(0.0, read_noise_e, size=counts.shape)
    if not detector:
        return ((counts - lam * background) / lam).astype(np.float32), None
    missing = set(DETECTOR_KEYS) - set(detector)
    unknown = set(detector) - set(DETECTOR_KEYS)
    if missing or unknown:
        raise TypeError(f"detector parameters: give all of {', '.join(DETECTOR_KEYS)} or none "
                        f"(missing {sorted(missing)}, unknown {sorted(unknown)})")
    adu = read_out(counts, rng, lam=lam, **detector)
    frame = to_signal_units(adu, lam=lam, gain_adu_per_e=detector["gain_adu_per_e"],
                            dark_offset_adu=detector["dark_offset_adu"])
    frame -= fast_scan_lowpass(background, detector["bandwidth_px"])
    return frame.astype(np.float32), adu.astype(np.float32)
