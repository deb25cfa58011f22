"""Defective pixels of a raw frame: found by an outlier test in noise-sigma units, repaired before a network.

A detector writes some pixels that say nothing about the specimen (:mod:`stemreg.acquisition.detector`:
hot pixels, impulses, dead pixels, lost lines). A network trained on clean Poisson noise has never
seen a lone pixel 10 or 30 noise sigmas off its neighbours, and answers with a ringed dot. The test
here decides from the frame alone:

- the noise model ``var = gain * mean + offset_var`` is estimated from the frame itself
  (:func:`stemreg.models.trust_stats.input_noise`: 4th differences across the scan lines, robust
  per intensity bin, so neither the defects nor a fast-scan bandwidth bias it);
- each pixel is compared with the median ``m1`` of its 8 neighbours, in units of the noise sigma at
  that level (``d = (x - m1) / (sigma sqrt(1 + pi / 16))``: the median of 8 adds ~pi/16 of a
  variance);
- signal is allowed its curvature: a column peak stands above its neighbours by about what they
  stand above the next ring, so the allowance is ``|m1 - m2|`` (``m2`` the median of the 16 pixels
  two steps away). A bright column is never a defect, whatever its dose, because its neighbours
  are bright too; a lone pixel far outside the noise is.

A pixel is a defect when ``|x - m1| > k sigma' + |m1 - m2|``; it is replaced by ``m1``. At
``k = 6`` a Gaussian noise pixel crosses by chance about once in 10^9; Poisson counts at under one
electron a pixel cross more often (a few per 10^4 at 0.1 e-), and there the repair only swaps one
count for its neighbours' median.

Where it must not run: when the probe is narrower than a pixel (coarse sampling, e.g. 32-64 pm/px at
the low-dose condition) a lone atom column *is* one pixel, as sharp as a defect, and no test on one
frame tells them apart; at high dose there it flags real columns
(``benchmarks/bench_adapt.py --impulse-check`` measures the rate over the condition's range). So
the repair is a model's declared step (:func:`stemreg.models.architectures.build_model`'s
``impulse_k``, set by `stemreg adapt` on lab frames that hold defects) or asked for per call
(:func:`stemreg.models.inference.denoise_array`'s ``impulses``), never applied behind a user's back.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from stemreg.models import trust_stats as ts

#: The outlier test's threshold, in noise sigmas beyond the signal's own curvature.
DEFAULT_K = 6.0
#: A frame larger than this each way has its noise model estimated from its central window of this
#: size, so a scan streamed in row bands (stemreg.platform.scan_bands) is repaired with the same numbers
#: as the whole frame in memory; a frame within it is its own window (the figures are unchanged).
NOISE_WINDOW_PX = 1024
#: Rows beyond a pixel's own that its test reads (the ring two steps away): a band's halo.
HALO_ROWS = 2

_RING2 = np.ones((5, 5), bool)
_RING2[1:4, 1:4] = False


@dataclass(frozen=True)
class FrameNoise:
    """A frame's noise model for the repair, and the floor its variance is held above."""

    noise: ts.InputNoise
    floor: float

    def to_json(self) -> dict:
        return {"gain": self.noise.gain, "offset_var": self.noise.offset_var, "corr_x": list(self.noise.corr_x),
                "corr_y": list(self.noise.corr_y), "floor": self.floor}

    @classmethod
    def from_json(cls, data: dict) -> "FrameNoise":
        noise = ts.InputNoise(float(data["gain"]), float(data["offset_var"]), tuple(data["corr_x"]),
                              tuple(data["corr_y"]))
        return cls(noise, float(data["floor"]))


def noise_window(shape: tuple[int, ...]) -> tuple[slice, slice]:
    """The rows and columns of a frame its repair's noise model is estimated from (centred)."""
    h, w = int(shape[-2]), int(shape[-1])
    r0, c0 = max(0, (h - NOISE_WINDOW_PX) // 2), max(0, (w - NOISE_WINDOW_PX) // 2)
    return slice(r0, min(h, r0 + NOISE_WINDOW_PX)), slice(c0, min(w, c0 + NOISE_WINDOW_PX))


def frame_noise(window: np.ndarray) -> FrameNoise:
    """The noise model of a frame from its :func:`noise_window` (the pixels, at least 16 px each way)."""
    x = np.asarray(window, np.float64)
    m1 = ts.ring_median(x)
    noise = ts.input_noise(x, m1)
    var = noise.gain * m1 + noise.offset_var
    return FrameNoise(noise, 0.01 * max(float(np.median(var)), 1e-20))  # InputNoise.variance's floor


def find_impulses(image: np.ndarray, k: float = DEFAULT_K, noise: ts.InputNoise | None = None,
                  floor: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The frame's defective pixels (boolean map) and each pixel's replacement (its neighbours' median).

    Parameters
    ----------
    image
        One frame ``(H, W)``, at least 16 px each way, in any units (ADU, counts, normalised).
    k
        Threshold in noise sigmas beyond the local curvature (see the module docstring).
    noise
        The frame's noise model when already estimated (the trust report has it); default: estimated here.
    """
    x = np.asarray(image, np.float64)
    if x.ndim != 2 or min(x.shape) < 16:
        raise ValueError(f"impulse repair takes one (H, W) frame of at least 16 px, got shape {x.shape}")
    m1 = ts.ring_median(x)
    noise = noise if noise is not None else ts.input_noise(x, m1)
    var = noise.variance(m1) if floor is None else np.maximum(noise.gain * m1 + noise.offset_var, floor)
    sigma = np.sqrt(var * (1.0 + np.pi / 16.0))
    excess = np.abs(x - m1) - k * sigma
    mask = excess > 0
    ys, xs = np.nonzero(mask)
    if ys.size:  # the ring two steps away only where a pixel is a candidate (few): the costly median
        padded = np.pad(x, 2, mode="symmetric")  # scipy's "reflect"
        oy, ox = np.nonzero(_RING2)
        m2 = np.median(padded[ys[:, None] + oy[None, :], xs[:, None] + ox[None, :]], axis=1)
        mask[ys, xs] = excess[ys, xs] > np.abs(m1[ys, xs] - m2)
    return mask, m1


def repair_impulses(image: np.ndarray, k: float = DEFAULT_K) -> tuple[np.ndarray, np.ndarray]:
    """``(repaired, mask)``: the frame (or each frame of an ``(N, H, W)`` stack) with its defective
    pixels replaced by their neighbours' median, in the input's dtype; frames under 16 px are returned
    unchanged."""
    arr = np.asarray(image)
    if arr.ndim == 3:
        pairs = [repair_impulses(frame, k) for frame in arr]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
    if arr.ndim != 2 or min(arr.shape) < 16:
        return arr.copy(), np.zeros(arr.shape, bool)
    if max(arr.shape) > NOISE_WINDOW_PX:
        frame = frame_noise(arr[noise_window(arr.shape)])
        mask, median = find_impulses(arr, k, noise=frame.noise, floor=frame.floor)
    else:
        mask, median = find_impulses(arr, k)
    out = arr.copy()
    out[mask] = median[mask].astype(arr.dtype)
    return out, mask


def repair_rows(rows: np.ndarray, k: float, frame: FrameNoise) -> np.ndarray:
    """A block of a frame's rows with its defective pixels repaired, given the whole frame's noise
    (:func:`frame_noise` of its :func:`noise_window`). Rows more than :data:`HALO_ROWS` from the block's
    cut edges come out as the whole frame's repair gives them; at the frame's own top and bottom the
    block's edge is the frame's."""
    arr = np.asarray(rows)
    if min(arr.shape) < 16:
        raise ValueError(f"impulse repair takes blocks of at least 16 x 16 px, got {arr.shape}")
    mask, median = find_impulses(arr, k, noise=frame.noise, floor=frame.floor)
    out = arr.copy()
    out[mask] = median[mask].astype(arr.dtype)
    return out
