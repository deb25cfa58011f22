"""Degraded/clean pairs with what made them, and the strata of a benchmark."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from stemreg.acquisition.detector import DETECTOR_KEYS
from stemreg.acquisition.dose import apply_dose_noise


@dataclass(frozen=True)
class BenchmarkBin:
    """One stratum of a benchmark: a sampling (column spacing in px, or a pixel size) and a dose."""

    name: str
    dose_scale: float
    spacing_px: float | None = None      # column spacing: the pixel size follows from each specimen
    pixel_size_pm: float | None = None   # or a fixed pixel size (the seed's bin)


NOISE_KEYS = ("beam_current_pA", "dwell_time_us", "bias", "detector_efficiency", "read_noise_e")


def noise_kwargs(params: dict) -> dict:
    """The dose-noise and (when drawn) detector parameters of one image, for :func:`apply_dose_noise`."""
    kwargs = {k: params[k] for k in NOISE_KEYS}
    if all(k in params for k in DETECTOR_KEYS):
        kwargs.update({k: params[k] for k in DETECTOR_KEYS})
    return kwargs


@dataclass
class PairBatch:
    """Degraded/clean pairs with what made them.

    ``degraded`` and ``clean`` are (N, H, W) float32 in the same units: the clean image is the
    in-focus, undistorted noise-free HAADF signal divided by its 99.5th percentile (so it spans
    about [0, 1]); ``degraded`` is the condition's acquisition of it in the same units (detected
    counts divided by the detected electrons per unit signal). ``columns[i]`` holds the (K, 2)
    (row, col) pixel positions of image i's atomic columns ((0, 2) for user images).
    Each image has its own sampling, ``params[i]["pixel_size_pm"]`` (:attr:`pixel_sizes_pm`);
    ``pixel_size_pm`` is their geometric mean, for a single figure. ``bins[i]`` names the
    benchmark stratum of image i (empty outside a benchmark). ``raw`` holds the same frames in ADU
    (integers 0 .. 65535, :mod:`.detector`), ``degraded`` being ``raw`` brought back to signal units
    with the known gain and offset.
    """

    degraded: np.ndarray
    clean: np.ndarray
    params: list[dict]
    columns: list[np.ndarray]
    pixel_size_pm: float
    signal: np.ndarray | None = field(default=None, repr=False)  # noise-free degraded signal, for repeats
    bins: list[str] = field(default_factory=list)
    raw: np.ndarray | None = field(default=None, repr=False)  # the frames in ADU, as the microscope writes them

    @property
    def pixel_sizes_pm(self) -> np.ndarray:
        """Pixel size of each image, pm, (N,)."""
        return np.array([p.get("pixel_size_pm", self.pixel_size_pm) for p in self.params], dtype=np.float64)

    def __len__(self) -> int:
        return len(self.degraded)

    def __getitem__(self, index: int | slice | np.ndarray) -> "PairBatch":
        """A sub-batch (always a batch, also for an int index)."""
        idx = np.atleast_1d(np.arange(len(self))[index])
        return PairBatch(self.degraded[idx], self.clean[idx], [self.params[i] for i in idx],
                         [self.columns[i] for i in idx], self.pixel_size_pm,
                         None if self.signal is None else self.signal[idx],
                         [self.bins[i] for i in idx] if self.bins else [],
                         None if self.raw is None else self.raw[idx])

    def repeats(self, k: int, *, seed: int | np.random.Generator) -> np.ndarray:
        """``k`` independent noisy acquisitions of each field, (N, k, H, W) float32.

        The same noise-free signal (same scan distortion) with fresh dose noise each time,
        as for noise2noise / SDnDTI training. ``seed`` makes it reproducible.
        """
        if self.signal is None:
            raise ValueError("this PairBatch carries no noise-free signal, so it cannot make repeats")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        rng = np.random.default_rng(seed)
        out = np.empty((len(self), k) + self.degraded.shape[1:], dtype=np.float32)
        for i, params in enumerate(self.params):
            out[i] = apply_dose_noise(np.broadcast_to(self.signal[i], out.shape[1:]), rng, **noise_kwargs(params))
        return out
