"""Acquisition conditions: named, versioned specs of the microscope, and the pairs drawn from them.

A condition fixes the optics and sets each physical parameter to a value or a
``[low, high]`` range drawn uniformly per image, so that one model covers a
range (e.g. defocus 5 to 30 nm). The built-in conditions live as YAML files in
``conditions/``; a lab describes its own microscope in the same format.
The target is always the clean, in-focus, undistorted image.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from stemreg.acquisition.detector import DETECTOR_KEYS, IDEAL_DETECTOR  # noqa: F401 (DETECTOR_KEYS re-exported)
from stemreg.acquisition.contrast import set_contrast
from stemreg.acquisition.dose import DETECTOR_EFFICIENCY, READ_NOISE_E, acquire
from stemreg.acquisition.pairs import NOISE_KEYS, BenchmarkBin, PairBatch, noise_kwargs  # noqa: F401 (re-exported)
from stemreg.acquisition.optics import electron_wavelength_pm
from stemreg.acquisition.microscope import degrade_field, normalise_user_image, simulate_field
from stemreg.acquisition.ranges import LOG_UNIFORM, RANGED_PARAMS
from stemreg.errors import BadInputError

#: The square image sizes a condition simulates (its own `image_size_px` and `simulate --size`): below 16 px
#: no unit cell fits; above 4096 px one image is 64 MB of float32 before its noise and pairs.
IMAGE_SIZE_BOUNDS_PX = (16, 4096)
from stemreg.acquisition.specimens import SpecimenFamily, family_spacing_pm

CONDITIONS_DIR = Path(__file__).with_name("conditions")
# Revision of the simulator's physics (specimens, optics, noise constants). It enters every condition's hash,
# so that a benchmark set drawn by changed physics never carries an old benchmark id.
# 2: effective source 15 pm (was 10), amorphous background correlation 250 pm (was 150), detector
#    efficiency recalibrated to 0.10 (was 0.07); a diffuse pedestal inside nanoparticles.
# 3: pixel size, dose and source size drawn per image (log-uniform); the random-lattice family; sublattice
#    brightness spread; benchmark stratified by sampling x dose.
# 5: bright-field (ABF) images drawn within every condition (``bright_field_fraction``), with the ABF
#    detector's own efficiency; see :mod:`.contrast`.
# 4: the detector's read-out (:mod:`.detector`): bandwidth along the fast-scan axis, ADU gain and offset,
#    quantisation, saturation, defective pixels, line jumps, lost lines; drawn per image.
SIMULATOR_REVISION = 5
ParamValue = Union[float, tuple[float, float]]

#: Bounds of the benchmark's strata: column spacings of 2 px (Nyquist: columns still resolved) to 1024 px
#: (a few columns in the largest field), and dose scales as the dose_scale parameter allows.
BIN_BOUNDS: dict[str, tuple[float, float]] = {"benchmark_spacings_px": (2.0, 1024.0),
                                              "benchmark_doses": (1e-3, 1e3)}
#: The families of the seed's point (the calibration): the built-in crystals and the particle.
SEED_SPECIMENS = tuple(f for f in SpecimenFamily if f is not SpecimenFamily.random_lattice)


class Condition(BaseModel):
    """A named, versioned acquisition condition (frozen; unknown keys are refused).

    Each physical parameter is a value or a ``[low, high]`` range drawn uniformly per image.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    version: int = Field(1, ge=1)
    description: str = ""
    specimens: tuple[SpecimenFamily, ...] = tuple(SpecimenFamily)
    image_size_px: int = Field(256, ge=IMAGE_SIZE_BOUNDS_PX[0], le=IMAGE_SIZE_BOUNDS_PX[1])
    # Sampling: 4 to 64 pm/px, log-uniform, puts every family's columns 5 to 100 px apart, the range
    # from overview scans to close-ups; seed_pixel_size_pm is the seed's point (SrTiO3 cells 49 px).
    pixel_size_pm: ParamValue = (4.0, 64.0)
    seed_pixel_size_pm: float = Field(8.0, gt=0, le=1000)
    # Dose: beam_current_pA x dwell_time_us is the condition's point; each image gets dose_scale times it.
    dose_scale: ParamValue = (0.25, 4.0)
    energy_keV: float = Field(200.0, ge=1, le=3000)  # 1 keV up: a wavelength the optics can use
    convergence_mrad: float = Field(30.0, gt=0, le=200)
    # Spherical aberration: 0 (corrected) to a few mm on uncorrected lenses; finite.
    cs_um: float = Field(0.0, ge=-1e4, le=1e4, allow_inf_nan=False)
    detector_efficiency: float = Field(DETECTOR_EFFICIENCY, gt=0, le=1)
    read_noise_e: float = Field(READ_NOISE_E, ge=0, le=1e3, allow_inf_nan=False)
    beam_current_pA: ParamValue = 50.0
    dwell_time_us: ParamValue = 1.4
    bias: ParamValue = 0.2
    defocus_nm: ParamValue = 0.0
    # Standard deviation of the Gaussian effective source (partial spatial coherence, instabilities):
    # 15 pm (35 pm FWHM) widens the 43 pm diffraction-limited 30 mrad probe, with the 8 pm thermal
    # column width, to the ~60 pm column FWHM of aberration-corrected 200 kV HAADF images (the seed's
    # point); the range up to 85 pm reaches the 150-200 pm column FWHM of uncorrected microscopes.
    source_size_pm: ParamValue = (10.0, 85.0)
    seed_source_size_pm: float = Field(15.0, ge=0, le=1000)
    blur_sigma_px: ParamValue = 0.0
    hysteresis_amplitude_px: ParamValue = 0.0
    hysteresis_decay_px: ParamValue = 8.0
    jitter_px: ParamValue = 0.0
    drift_px: ParamValue = 0.0
    vacancy_fraction: ParamValue = 0.02
    substitution_fraction: ParamValue = 0.02
    # Amorphous background under the columns, in units of the columns' height: from none (a clean, thin
    # crystal on a dark field) to thick contamination or support. The seed's point keeps its 1 to 3.
    background_fraction: ParamValue = (0.0, 3.0)
    seed_background_fraction: tuple[float, float] = (1.0, 3.0)
    lattice_strain: ParamValue = 0.05
    brightness_spread: ParamValue = 0.2
    # The detector's read-out (:mod:`.detector`), drawn per image: a time constant along the fast-scan
    # axis up to 1.5 px (noise lag-1 correlation up to 0.51 along x; a Velox frame shows 0.14), 0.5 to
    # 100 ADU per detected electron (coarse quantisation to fine), a dark offset up to 50000 of the 16-bit
    # range (the top of both ranges saturates the brightest columns), up to 0.2 % defective pixels,
    # line-to-line jumps up to 3 % of the columns' signal and up to 1 line in 100 lost.
    bandwidth_px: ParamValue = (0.0, 1.5)
    gain_adu_per_e: ParamValue = (0.5, 100.0)
    dark_offset_adu: ParamValue = (0.0, 50000.0)
    impulse_fraction: ParamValue = (0.0, 0.002)
    line_jump: ParamValue = (0.0, 0.03)
    line_glitch_rate: ParamValue = (0.0, 0.01)
    # Bright field (:mod:`.contrast`): this share of the images is annular bright field, columns dark on
    # a bright background, dips of 1 - exp(-abf_depth) (14 to 50 %), counted by the ABF detector with
    # its own efficiency (it collects a large part of the direct beam).
    bright_field_fraction: float = Field(0.3, ge=0, le=1)
    abf_depth: ParamValue = (0.15, 0.7)
    bf_detector_efficiency: float = Field(0.3, gt=0, le=1)
    benchmark_seed: int = 20260917
    # The benchmark's strata: column spacings (px) x dose scales, plus the seed's point.
    benchmark_spacings_px: tuple[float, ...] = (8.0, 16.0, 32.0, 64.0)
    benchmark_doses: tuple[float, ...] = (0.25, 1.0, 4.0)
    benchmark_per_bin: int = Field(8, ge=1, le=1000)

    @field_validator(*RANGED_PARAMS, mode="after")
    @classmethod
    def _within_bounds(cls, value: ParamValue, info) -> ParamValue:
        low_ok, high_ok = RANGED_PARAMS[info.field_name]
        values = value if isinstance(value, tuple) else (value,)
        if isinstance(value, tuple) and value[0] > value[1]:
            raise ValueError(f"range must be [low, high] with low <= high, got {list(value)}")
        for v in values:
            if not (low_ok <= v <= high_ok) or not np.isfinite(v):
                raise ValueError(f"{v} is outside the accepted {low_ok} .. {high_ok}")
        return value

    @field_validator("seed_background_fraction", mode="after")
    @classmethod
    def _seed_background(cls, value: tuple[float, float]) -> tuple[float, float]:
        low_ok, high_ok = RANGED_PARAMS["background_fraction"]
        if not (low_ok <= value[0] <= value[1] <= high_ok):
            raise ValueError(f"give [low, high] with {low_ok} <= low <= high <= {high_ok}, got {list(value)}")
        return value

    @field_validator("benchmark_spacings_px", "benchmark_doses", mode="after")
    @classmethod
    def _positive_bins(cls, value: tuple, info) -> tuple:
        low, high = BIN_BOUNDS[info.field_name]
        if not value or any(not (low <= v <= high) or not np.isfinite(v) for v in value):
            raise ValueError(f"give one or more numbers within {low:g} .. {high:g} (got {list(value)})")
        return value

    @model_validator(mode="after")
    def _probe_fits_the_field(self) -> "Condition":
        # The aperture must hold a few spatial frequencies of the condition's own smallest field, else
        # the probe is wider than the image and the simulator has nothing to image with.
        field_pm = self.image_size_px * min(self.pixel_size_range_pm()[0], self.seed_pixel_size_pm)
        need = 2e3 * electron_wavelength_pm(self.energy_keV) / field_pm
        if self.convergence_mrad < need:
            raise ValueError(f"convergence_mrad {self.convergence_mrad:g} at energy_keV {self.energy_keV:g} makes a "
                             f"probe wider than the {field_pm:.0f} pm field (image_size_px x the smallest "
                             f"pixel_size_pm); give at least {need:.2g} mrad (STEM probes: about 5 to 40)")
        return self

    @field_validator("specimens", mode="after")
    @classmethod
    def _some_specimen(cls, value: tuple) -> tuple:
        if not value:
            raise ValueError(f"give at least one of {[f.value for f in SpecimenFamily]}")
        return value

    # -- identity -------------------------------------------------------------------------------
    def hash(self) -> str:
        """Stable 12-hex hash of the name, version, every parameter (not the description) and the simulator revision."""
        payload = json.dumps({**self.model_dump(mode="json", exclude={"description"}),
                              "simulator_revision": SIMULATOR_REVISION}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]

    def benchmark_id(self) -> str:
        """``<name>@v<version>:<hash>``, the id of this condition's frozen benchmark set."""
        return f"{self.name}@v{self.version}:{self.hash()}"

    def flat_params(self) -> dict[str, str]:
        """``condition.<key>`` -> string, for MLflow params and tags."""
        flat = {"condition.name": self.name, "condition.version": str(self.version),
                "condition.hash": self.hash()}
        for key, value in self.model_dump(mode="json", exclude={"name", "version", "description"}).items():
            flat[f"condition.{key}"] = ",".join(value) if key == "specimens" else json.dumps(value)
        return flat

    def ranged_params(self) -> dict[str, ParamValue]:
        """The parameters that vary per image, as (low, high)."""
        return {k: getattr(self, k) for k in RANGED_PARAMS if isinstance(getattr(self, k), tuple)}

    # -- drawing --------------------------------------------------------------------------------
    def draw_params(self, rng: np.random.Generator) -> dict[str, Any]:
        """One image's physical parameters: ranges drawn per image, the specimen family at random.

        Scale parameters (:data:`LOG_UNIFORM`) are drawn log-uniformly, the others uniformly.
        ``beam_current_pA`` in the result is the effective current, ``dose_scale`` times the condition's.
        """
        params: dict[str, Any] = {"specimen": self.specimens[rng.integers(len(self.specimens))].value}
        for key in RANGED_PARAMS:
            value = getattr(self, key)
            if not isinstance(value, tuple):
                params[key] = float(value)
            elif key in LOG_UNIFORM and value[0] > 0:
                params[key] = float(np.exp(rng.uniform(np.log(value[0]), np.log(value[1]))))
            else:
                params[key] = float(rng.uniform(*value))
        params["beam_current_pA"] *= params["dose_scale"]
        for key in ("energy_keV", "convergence_mrad", "cs_um", "detector_efficiency", "read_noise_e"):
            params[key] = float(getattr(self, key))
        set_contrast(params, "abf" if rng.random() < self.bright_field_fraction else "haadf", self)
        return params

    def pixel_size_range_pm(self) -> tuple[float, float]:
        """The samplings this condition's images span (low, high), pm per pixel."""
        value = self.pixel_size_pm
        return (float(value[0]), float(value[1])) if isinstance(value, tuple) else (float(value), float(value))

    def seed_point(self) -> "Condition":
        """This condition at the seed's point: its own sampling, dose, probe and crystals, nothing ranged
        that the seed held fixed (the calibration and the seed's benchmark bin), and an ideal detector
        (:data:`~stemreg.acquisition.detector.IDEAL_DETECTOR`: the seed's noise model has none)."""
        return self.model_copy(update={**IDEAL_DETECTOR, "bright_field_fraction": 0.0,
            "pixel_size_pm": self.seed_pixel_size_pm, "dose_scale": 1.0, "source_size_pm": self.seed_source_size_pm,
            "lattice_strain": 0.02, "brightness_spread": 0.0, "background_fraction": self.seed_background_fraction,
            "specimens": tuple(f for f in self.specimens if f in SEED_SPECIMENS) or self.specimens})

    def benchmark_bins(self) -> list[BenchmarkBin]:
        """The benchmark's strata: every column spacing x dose scale, then the seed's point."""
        bins = [BenchmarkBin(f"{_fmt(s)}px@{_fmt(d)}x", float(d), spacing_px=float(s))
                for s in self.benchmark_spacings_px for d in self.benchmark_doses]
        bins.append(BenchmarkBin(f"seed:{_fmt(self.seed_pixel_size_pm)}pm@1x", 1.0,
                                 pixel_size_pm=self.seed_pixel_size_pm))
        return bins

    def _draw_one(self, rng: np.random.Generator, size_px: int, pin: BenchmarkBin | None = None,
                  seed_point: "Condition | None" = None) -> tuple[dict, Any]:
        if pin is not None and pin.pixel_size_pm is not None:
            p = (seed_point or self.seed_point()).draw_params(rng)
        else:
            p = self.draw_params(rng)
        if pin is not None:
            p["beam_current_pA"] *= pin.dose_scale / p["dose_scale"]
            p["dose_scale"] = pin.dose_scale
            if pin.spacing_px is not None:
                p["pixel_size_pm"] = family_spacing_pm(p["specimen"]) / pin.spacing_px
        return p, simulate_field(p, size_px, p["pixel_size_pm"], rng)

    def _draw(self, n: int, size_px: int, seed: int, progress: bool,
              pins: list[BenchmarkBin] | None = None) -> PairBatch:
        from tqdm.auto import tqdm

        # One child stream per image: image i does not depend on n.
        children = np.random.SeedSequence(seed).spawn(n)
        degraded = np.empty((n, size_px, size_px), dtype=np.float32)
        clean = np.empty_like(degraded)
        signal = np.empty_like(degraded)
        raw = np.empty_like(degraded)
        params, columns = [], []
        seed_point = self.seed_point() if pins is not None else None  # once, not per image of the seed bin
        for i, child in enumerate(tqdm(children, desc=f"simulate {self.name}", disable=not progress, unit="img")):
            rng = np.random.default_rng(child)
            p, result = self._draw_one(rng, size_px, None if pins is None else pins[i], seed_point)
            clean[i], signal[i] = result.clean, result.signal
            degraded[i], raw[i] = acquire(result.signal, rng, **noise_kwargs(p))
            params.append(p)
            columns.append(result.columns)
        sizes = [p["pixel_size_pm"] for p in params]
        nominal = float(np.exp(np.mean(np.log(sizes)))) if sizes else self.pixel_size_range_pm()[0]
        return PairBatch(degraded, clean, params, columns, nominal, signal,
                         [b.name for b in pins] if pins is not None else [], raw)

    def sample_pairs(self, n: int, *, size_px: int | None = None, seed: int, progress: bool = False) -> PairBatch:
        """``n`` reproducible (degraded, clean) pairs of ``size_px`` (default ``image_size_px``) squares.

        The same seed gives the same pairs; image i is the same whatever ``n``. The benchmark seed
        is refused, so training and validation never see the benchmark set.
        """
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise BadInputError(f"n must be a whole number >= 0, got {n!r}")
        low, high = IMAGE_SIZE_BOUNDS_PX
        if size_px is not None and (isinstance(size_px, bool) or not isinstance(size_px, (int, np.integer))
                                    or not low <= size_px <= high):
            raise BadInputError(f"size_px must be a whole number of pixels from {low} to {high} (or None for the "
                                f"condition's {self.image_size_px}), got {size_px!r}")
        if seed == self.benchmark_seed:
            raise BadInputError(f"seed {seed} is this condition's benchmark seed; use benchmark_set() for it "
                                "and another seed for training or validation")
        return self._draw(n, size_px or self.image_size_px, seed, progress)

    @property
    def benchmark_size(self) -> int:
        """Images in the frozen benchmark set: ``benchmark_per_bin`` per bin."""
        return self.benchmark_per_bin * len(self.benchmark_bins())

    def benchmark_set(self) -> PairBatch:
        """The frozen, stratified benchmark set from ``benchmark_seed`` (cached, copied).

        ``benchmark_per_bin`` images of ``image_size_px`` for each of :meth:`benchmark_bins`, in bin
        order; ``PairBatch.bins`` names each image's bin.
        """
        key = self.hash()
        if key not in _BENCHMARK_CACHE:
            pins = self._benchmark_pins()
            _BENCHMARK_CACHE[key] = self._draw(len(pins), self.image_size_px, self.benchmark_seed, False, pins)
        cached = _BENCHMARK_CACHE[key]
        return cached[np.arange(len(cached))]

    def _benchmark_pins(self) -> list[BenchmarkBin]:
        """Each benchmark image's bin, in image order: ``benchmark_per_bin`` per bin."""
        return [b for b in self.benchmark_bins() for _ in range(self.benchmark_per_bin)]

    def benchmark_head(self, n: int = 1) -> PairBatch:
        """The first ``n`` images of :meth:`benchmark_set`, without drawing the rest (image i does not
        depend on how many are drawn): a quick look at a model on the benchmark's own data."""
        cached = _BENCHMARK_CACHE.get(self.hash())
        if cached is not None:
            return cached[np.arange(min(n, len(cached)))]
        pins = self._benchmark_pins()[:n]
        return self._draw(len(pins), self.image_size_px, self.benchmark_seed, False, pins)

    def degrade(self, clean: np.ndarray, *, seed: int | np.random.Generator,
                pixel_size_pm: float | Sequence[float | None] | None = None, contrast: str = "haadf") -> PairBatch:
        """Apply this condition's physics to user-supplied clean (high-dose) images (N, H, W) or (H, W).

        ``pixel_size_pm``: the images' sampling where known, one for all or one per image (else one
        is drawn from the range; it matters only for defocus, whose probe is sized in pm).

        Each image is first normalised to the clean units (0.5th percentile -> 0, 99.5th -> 1); the
        returned ``clean`` is that normalised image, ``degraded`` its acquisition under this condition.
        ``contrast``: ``"abf"`` for bright-field images (counted with the ABF detector's efficiency).
        """
        clean = np.asarray(clean, dtype=np.float64)
        if clean.ndim == 2:
            clean = clean[None]
        if clean.ndim != 3 or clean.shape[1] < 2 or clean.shape[2] < 2:
            raise ValueError(f"clean images must be (N, H, W) or (H, W), got shape {clean.shape}")
        if not np.all(np.isfinite(clean)):
            raise ValueError("clean images contain NaN or Inf")
        rng = np.random.default_rng(seed)
        normalised = np.stack([normalise_user_image(c) for c in clean]) if len(clean) else clean.astype(np.float32)
        signal = np.empty_like(normalised)
        degraded = np.empty_like(normalised)
        raw = np.empty_like(normalised)
        params = []
        for i, image in enumerate(normalised):
            p = self.draw_params(rng)
            p["specimen"] = "user"
            set_contrast(p, contrast, self)
            known = pixel_size_pm[i] if isinstance(pixel_size_pm, (list, tuple, np.ndarray)) else pixel_size_pm
            if known:
                p["pixel_size_pm"] = float(known)
            signal[i] = degrade_field(image, p, p["pixel_size_pm"], rng)
            degraded[i], raw[i] = acquire(signal[i], rng, **noise_kwargs(p))
            params.append(p)
        columns = [np.zeros((0, 2), dtype=np.float32) for _ in range(len(normalised))]
        sizes = [p["pixel_size_pm"] for p in params]
        nominal = float(np.exp(np.mean(np.log(sizes)))) if sizes else float(np.sqrt(np.prod(self.pixel_size_range_pm())))
        return PairBatch(degraded, normalised, params, columns, nominal, signal, raw=raw)


_BENCHMARK_CACHE: dict[str, PairBatch] = {}


def _fmt(x: float) -> str:
    return f"{x:g}"


# Reading conditions (one converter for a name, a YAML path or a Condition) lives in condition_files.
