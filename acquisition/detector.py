"""The detector and its electronics: how detected electrons become the numbers a microscope writes.

:mod:`.dose` counts detected electrons per pixel (Poisson plus read noise). A real HAADF/BF chain
then does, in this order (each parameter drawn per image by the condition, :data:`DETECTOR_KEYS`):

1. **Bandwidth** (``bandwidth_px``, a time constant in pixels of dwell): the detector's
   scintillator/photomultiplier and the amplifier are a first-order low-pass in *time*, and time
   runs along the fast-scan axis x. ``y[j] = a y[j-1] + (1 - a) x[j]``, ``a = exp(-1 / tau)``,
   restarted at each line (the flyback waits for it to settle). Signal *and* noise are smeared,
   so the noise's lag-1 correlation is ``a`` along x and 0 along y (0.14 on a real Velox frame:
   tau ~ 0.5 px; the range reaches 1.5 px, a = 0.51).
2. **Line jumps** (``line_jump``): each scan line gets its own DC level, Normal(0, line_jump) in
   units of the brightest columns' signal (amplifier drift, beam-current flicker between lines).
3. **The ADC** (``gain_adu_per_e``, ``dark_offset_adu``): ``ADU = round(offset + gain * electrons)``,
   clipped to ``0 .. FULL_SCALE_ADU`` (16 bit): integer quantisation, and saturation where
   the offset plus the signal exceed the range.
4. **Defective pixels** (``impulse_fraction``): that share of the pixels, each at random one of
   dead (reads the dark offset: no signal), hot (reads 2 to 8 times the brightest columns' signal)
   or an impulse (a spike of 1 to 4 times that signal, up or down, on top of the reading),
   independently in every frame (a scanning detector has no fixed pixels; its defects come from
   the electronics and stray hits on the scintillator). Amplitudes are relative to the signal, not
   the ADC's range: a reading tens of thousands of ADU off would say nothing about the specimen.
5. **Lost lines** (``line_glitch_rate``): each line, with this probability, is lost: half the time
   the previous line's readout is repeated, half the time it reads the dark offset alone.

:func:`to_signal_units` brings a frame back to the clean image's units with the *known* gain and
offset (as :class:`PairBatch` keeps them), so saturation, quantisation and defects stay in the data.
"""
from __future__ import annotations

import numpy as np
from scipy.signal import lfilter

#: The detector's per-image parameters (the condition draws each; see the module docstring).
DETECTOR_KEYS = ("bandwidth_px", "gain_adu_per_e", "dark_offset_adu", "impulse_fraction", "line_jump",
                 "line_glitch_rate")
#: A 16-bit ADC's largest reading.
FULL_SCALE_ADU = 65535
#: A detector that changes nothing (the seed's point has none): gain 0 stands for no ADC at all, the
#: read-out is the electrons themselves (no offset, rounding or saturation).
IDEAL_DETECTOR = {"bandwidth_px": 0.0, "gain_adu_per_e": 0.0, "dark_offset_adu": 0.0, "impulse_fraction": 0.0,
                  "line_jump": 0.0, "line_glitch_rate": 0.0}


def lowpass_coefficient(bandwidth_px: float) -> float:
    """``a = exp(-1 / tau)``, the first-order low-pass's pole (0 for ``tau = 0``): the noise's lag-1
    correlation along the fast-scan axis."""
    return float(np.exp(-1.0 / bandwidth_px)) if bandwidth_px > 0 else 0.0


def fast_scan_lowpass(image: np.ndarray, bandwidth_px: float) -> np.ndarray:
    """First-order low-pass along the last axis (x, the fast-scan axis), each line starting settled.

    Unit gain at zero frequency (a flat line stays flat); ``bandwidth_px = 0`` returns a copy.
    """
    x = np.asarray(image, dtype=np.float64)
    a = lowpass_coefficient(bandwidth_px)
    if a == 0.0:
        return x.copy()
    # zi = a x[0]: the filter's state as if the line's first value had been there forever
    y, _ = lfilter([1.0 - a], [1.0, -a], x, axis=-1, zi=a * x[..., :1])
    return y


def read_out(electrons: np.ndarray, rng: np.random.Generator, *, lam: float, bandwidth_px: float,
             gain_adu_per_e: float, dark_offset_adu: float, impulse_fraction: float, line_jump: float,
             line_glitch_rate: float) -> np.ndarray:
    """The frame(s) the microscope writes, in ADU (float64 holding integers 0 .. 65535; the electrons
    themselves for ``gain_adu_per_e = 0``, the ideal read-out).

    Parameters
    ----------
    electrons
        Detected electrons per pixel (Poisson counts plus read noise), ``(..., H, W)``.
    rng
        The random stream.
    lam
        Detected electrons per unit signal (sets the line jumps' scale).
    bandwidth_px, gain_adu_per_e, dark_offset_adu, impulse_fraction, line_jump, line_glitch_rate
        See the module docstring.
    """
    e = fast_scan_lowpass(electrons, bandwidth_px)
    if line_jump > 0:
        e = e + rng.normal(0.0, line_jump * lam, size=e.shape[:-1] + (1,))
    if impulse_fraction > 0:
        hit = rng.random(e.shape) < impulse_fraction
        kind = rng.integers(0, 3, size=int(hit.sum()))
        hot = lam * rng.uniform(2.0, 8.0, size=kind.shape)
        spike = e[hit] + lam * rng.uniform(1.0, 4.0, size=kind.shape) * rng.choice([-1.0, 1.0], size=kind.shape)
        e[hit] = np.where(kind == 0, 0.0, np.where(kind == 1, hot, spike))
    adu = np.clip(np.round(dark_offset_adu + gain_adu_per_e * e), 0, FULL_SCALE_ADU) if gain_adu_per_e > 0 else e
    if line_glitch_rate > 0:
        frames = adu.reshape((-1,) + adu.shape[-2:])
        for frame in frames:
            lost = np.flatnonzero(rng.random(frame.shape[0]) < line_glitch_rate)
            repeat = rng.random(lost.size) < 0.5
            for row, again in zip(lost, repeat):
                if again and row > 0:
                    frame[row] = frame[row - 1]
                else:
                    dark = rng.normal(0.0, 0.5, size=frame.shape[1])
                    frame[row] = (np.clip(np.round(dark_offset_adu + gain_adu_per_e * dark), 0, FULL_SCALE_ADU)
                                  if gain_adu_per_e > 0 else dark)
        adu = frames.reshape(adu.shape)
    return adu


def to_signal_units(adu: np.ndarray, *, lam: float, gain_adu_per_e: float, dark_offset_adu: float) -> np.ndarray:
    """``(ADU - offset) / (gain lam)``: a frame in the clean image's units, with the known calibration
    (electrons / lam for the ideal read-out, ``gain_adu_per_e = 0``)."""
    if gain_adu_per_e <= 0:
        return np.asarray(adu, dtype=np.float64) / lam
    return (np.asarray(adu, dtype=np.float64) - dark_offset_adu) / (gain_adu_per_e * lam)
