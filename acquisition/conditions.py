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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from stemreg.acquisition.dose import DETECTOR_EFFICIENCY, READ_NOISE_E, apply_dose_noise
from stemreg.acquisition.errors import UnknownConditionError
from stemreg.acquisition.microscope import degrade_field, normalise_user_image, simulate_field
from stemreg.acquisition.specimens import SpecimenFamily

CONDITIONS_DIR = Path(__file__).with_name("conditions")
# Revision of the simulator's physics (specimens, optics, noise constants). It enters every condition's hash,
# so that a benchmark set drawn by changed physics never carries an old benchmark id.
# 2: effective source 15 pm (was 10), amorphous background correlation 250 pm (was 150), detector
#    efficiency recalibrated to 0.10 (was 0.07); a diffuse pedestal inside nanoparticles.
SIMULATOR_REVISION = 2
ParamValue = Union[float, tuple[float, float]]

# Parameters that may be a range, drawn per image; the bounds each must respect.
RANGED_PARAMS: dict[str, tuple[float, float]] = {
    "beam_current_pA": (1e-6, np.inf),
    "dwell_time_us": (1e-6, np.inf),
    "bias": (0.0, np.inf),
    "defocus_nm": (-1e4, 1e4),
    "source_size_pm": (0.0, 1e3),
    "blur_sigma_px": (0.0, 50.0),
    "hysteresis_amplitude_px": (-100.0, 100.0),
    "hysteresis_decay_px": (0.1, 1e4),
    "jitter_px": (0.0, 20.0),
    "drift_px": (0.0, 100.0),
    "vacancy_fraction": (0.0, 1.0),
    "substitution_fraction": (0.0, 1.0),
    "background_fraction": (0.0, 10.0),
}
NOISE_KEYS = ("beam_current_pA", "dwell_time_us", "bias", "detector_efficiency", "read_noise_e")


@dataclass
class PairBatch:
    """Degraded/clean pairs with what made them.

    ``degraded`` and ``clean`` are (N, H, W) float32 in the same units: the clean image is the
    in-focus, undistorted noise-free HAADF signal divided by its 99.5th percentile (so it spans
    about [0, 1]); ``degraded`` is the condition's acquisition of it in the same units (detected
    counts divided by the detected electrons per unit signal). ``columns[i]`` holds the (K, 2)
    (row, col) pixel positions of image i's atomic columns ((0, 2) for user images).
    """

    degraded: np.ndarray
    clean: np.ndarray
    params: list[dict]
    columns: list[np.ndarray]
    pixel_size_pm: float
    signal: np.ndarray | None = field(default=None, repr=False)  # noise-free degraded signal, for repeats

    def __len__(self) -> int:
        return len(self.degraded)

    def __getitem__(self, index: int | slice | np.ndarray) -> "PairBatch":
        """A sub-batch (always a batch, also for an int index)."""
        idx = np.atleast_1d(np.arange(len(self))[index])
        return PairBatch(self.degraded[idx], self.clean[idx], [self.params[i] for i in idx],
                         [self.columns[i] for i in idx], self.pixel_size_pm,
                         None if self.signal is None else self.signal[idx])

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
            noise = {key: params[key] for key in NOISE_KEYS}
            out[i] = apply_dose_noise(np.broadcast_to(self.signal[i], out.shape[1:]), rng, **noise)
        return out


class Condition(BaseModel):
    """A named, versioned acquisition condition (frozen; unknown keys are refused).

    Each physical parameter is a value or a ``[low, high]`` range drawn uniformly per image.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    version: int = Field(1, ge=1)
    description: str = ""
    specimens: tuple[SpecimenFamily, ...] = tuple(SpecimenFamily)
    image_size_px: int = Field(128, ge=16, le=4096)
    pixel_size_pm: float = Field(8.0, gt=0, le=1000)
    energy_keV: float = Field(200.0, gt=0, le=3000)
    convergence_mrad: float = Field(30.0, gt=0, le=200)
    cs_um: float = 0.0
    detector_efficiency: float = Field(DETECTOR_EFFICIENCY, gt=0, le=1)
    read_noise_e: float = Field(READ_NOISE_E, ge=0)
    beam_current_pA: ParamValue = 50.0
    dwell_time_us: ParamValue = 1.4
    bias: ParamValue = 0.2
    defocus_nm: ParamValue = 0.0
    # Standard deviation of the Gaussian effective source (partial spatial coherence, instabilities):
    # 15 pm (35 pm FWHM) widens the 43 pm diffraction-limited 30 mrad probe, with the 8 pm thermal
    # column width, to the ~60 pm column FWHM of aberration-corrected 200 kV HAADF images.
    source_size_pm: ParamValue = 15.0
    blur_sigma_px: ParamValue = 0.0
    hysteresis_amplitude_px: ParamValue = 0.0
    hysteresis_decay_px: ParamValue = 8.0
    jitter_px: ParamValue = 0.0
    drift_px: ParamValue = 0.0
    vacancy_fraction: ParamValue = 0.02
    substitution_fraction: ParamValue = 0.02
    background_fraction: ParamValue = (1.0, 3.0)
    benchmark_seed: int = 20260917
    benchmark_size: int = Field(32, ge=1, le=10000)

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
        """One image's physical parameters: ranges drawn uniformly, the specimen family at random."""
        params: dict[str, Any] = {"specimen": self.specimens[rng.integers(len(self.specimens))].value}
        for key in RANGED_PARAMS:
            value = getattr(self, key)
            params[key] = float(rng.uniform(*value)) if isinstance(value, tuple) else float(value)
        for key in ("energy_keV", "convergence_mrad", "cs_um", "detector_efficiency", "read_noise_e"):
            params[key] = float(getattr(self, key))
        return params

    def _draw(self, n: int, size_px: int, seed: int, progress: bool) -> PairBatch:
        from tqdm.auto import tqdm

        # One child stream per image: image i does not depend on n.
        children = np.random.SeedSequence(seed).spawn(n)
        degraded = np.empty((n, size_px, size_px), dtype=np.float32)
        clean = np.empty_like(degraded)
        signal = np.empty_like(degraded)
        params, columns = [], []
        for i, child in enumerate(tqdm(children, desc=f"simulate {self.name}", disable=not progress, unit="img")):
            rng = np.random.default_rng(child)
            p = self.draw_params(rng)
            result = simulate_field(p, size_px, self.pixel_size_pm, rng)
            clean[i], signal[i] = result.clean, result.signal
            degraded[i] = apply_dose_noise(result.signal, rng, **{k: p[k] for k in NOISE_KEYS})
            params.append(p)
            columns.append(result.columns)
        return PairBatch(degraded, clean, params, columns, float(self.pixel_size_pm), signal)

    def sample_pairs(self, n: int, *, size_px: int | None = None, seed: int, progress: bool = False) -> PairBatch:
        """``n`` reproducible (degraded, clean) pairs of ``size_px`` (default ``image_size_px``) squares.

        The same seed gives the same pairs; image i is the same whatever ``n``. The benchmark seed
        is refused, so training and validation never see the benchmark set.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if seed == self.benchmark_seed:
            raise ValueError(f"seed {seed} is this condition's benchmark seed; use benchmark_set() for it "
                             "and another seed for training or validation")
        return self._draw(n, size_px or self.image_size_px, seed, progress)

    def benchmark_set(self) -> PairBatch:
        """The frozen benchmark set: ``benchmark_size`` images from ``benchmark_seed`` (cached, copied)."""
        key = self.hash()
        if key not in _BENCHMARK_CACHE:
            _BENCHMARK_CACHE[key] = self._draw(self.benchmark_size, self.image_size_px, self.benchmark_seed, False)
        cached = _BENCHMARK_CACHE[key]
        return cached[np.arange(len(cached))]

    def degrade(self, clean: np.ndarray, *, seed: int | np.random.Generator) -> PairBatch:
        """Apply this condition's physics to user-supplied clean (high-dose) images (N, H, W) or (H, W).

        Each image is first normalised to the clean units (0.5th percentile -> 0, 99.5th -> 1); the
        returned ``clean`` is that normalised image, ``degraded`` its acquisition under this condition.
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
        params = []
        for i, image in enumerate(normalised):
            p = self.draw_params(rng)
            p["specimen"] = "user"
            signal[i] = degrade_field(image, p, self.pixel_size_pm, rng)
            degraded[i] = apply_dose_noise(signal[i], rng, **{k: p[k] for k in NOISE_KEYS})
            params.append(p)
        columns = [np.zeros((0, 2), dtype=np.float32) for _ in range(len(normalised))]
        return PairBatch(degraded, normalised, params, columns, float(self.pixel_size_pm), signal)


_BENCHMARK_CACHE: dict[str, PairBatch] = {}


def _read_yaml(path: Path) -> Condition:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read the condition YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a condition YAML must be a mapping of keys to values, got {type(data).__name__}")
    try:
        return Condition(**data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'condition'}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"{path}: invalid condition: {problems}") from exc


def list_conditions() -> list[Condition]:
    """The built-in conditions, sorted by name."""
    return sorted((_read_yaml(p) for p in CONDITIONS_DIR.glob("*.yaml")), key=lambda c: c.name)


def get_condition(name: str) -> Condition:
    """A built-in condition by name; :class:`UnknownConditionError` lists the known names."""
    conditions = {c.name: c for c in list_conditions()}
    if name not in conditions:
        raise UnknownConditionError(name, conditions)
    return conditions[name]


def load_condition(path_or_name: str | Path) -> Condition:
    """A built-in condition name, or the path of a condition YAML file."""
    text = str(path_or_name)
    path = Path(text)
    if text.endswith((".yaml", ".yml")) or path.is_file():
        if not path.is_file():
            raise ValueError(f"{path}: no such condition file")
        return _read_yaml(path)
    return get_condition(text)
