"""What the leaderboard scores on and trains with: the test set and the (never benchmark) training draws."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stemreg.acquisition import read_image
from stemreg.acquisition.io import READ_SUFFIXES
from stemreg.acquisition.optics import degradation_psf
from stemreg.models.classical import NoiseModel, fit_noise_model, noise_model_from_params
from stemreg.models.config import TrainBudget, off_benchmark
from stemreg.platform.errors import BadInputError


def derived_seed(condition: Any, seed: int, purpose: str) -> int:
    """A seed for training / validation data that is never the benchmark's (see :func:`off_benchmark`)."""
    offset = {"train": 1, "val": 2, "repeats": 3, "classical": 4, "images": 5}[purpose]
    (value,) = off_benchmark((1_000_003 * (seed + 1) + 7919 * offset,), int(condition.benchmark_seed))
    return value


#: The bin of images that belong to no benchmark stratum (a user's images).
ALL_IMAGES = "all images"


@dataclass
class TestSet:
    """What the methods are scored on: per-image lists (user images may differ in size).

    ``pixel_sizes_pm[i]`` is image i's sampling, ``bins[i]`` its benchmark stratum, and
    ``noise_models[i]`` its Poisson-Gaussian noise model when the acquisition is known (the
    simulation's exact one: the *oracle*), else None (the classical filters then estimate it from
    the image itself).
    """

    degraded: list[np.ndarray]
    clean: list[np.ndarray]
    columns: list[np.ndarray]
    pixel_sizes_pm: list[float]
    description: str
    bins: list[str] = field(default_factory=list)
    noise_models: list[NoiseModel | None] = field(default_factory=list)
    degradations: list[dict[str, Any] | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.degraded)
        self.bins = list(self.bins) or [ALL_IMAGES] * n
        self.noise_models = list(self.noise_models) or [None] * n
        self.degradations = list(self.degradations) or [None] * n
        self.pixel_sizes_pm = [float(p) for p in self.pixel_sizes_pm]
        lengths = {len(self.clean), len(self.pixel_sizes_pm), len(self.bins), len(self.noise_models)}
        if lengths != {n}:
            raise ValueError(f"a test set needs one clean image, pixel size, bin and noise model per image "
                             f"({n} images)")

    @property
    def noise_source(self) -> str:
        """How the classical filters get each image's noise model (said in the leaderboard)."""
        known = sum(m is not None for m in self.noise_models)
        if known == len(self.noise_models):
            return "oracle noise model per image"
        if known == 0:
            return "noise model estimated per image from the image itself"
        return f"oracle noise model for {known} image(s), estimated from the image for the others"


def oracle_degradation(params: dict[str, Any]) -> dict[str, Any]:
    """What a classical restoration is handed about one simulated image (the *oracle*): its exact PSF
    (None without blur or defocus), its line-start hysteresis and its line jitter's spread."""
    return {"psf": degradation_psf(params, float(params["pixel_size_pm"])),
            "hysteresis_amplitude_px": float(params.get("hysteresis_amplitude_px", 0.0)),
            "hysteresis_decay_px": float(params.get("hysteresis_decay_px", 8.0)),
            "jitter_px": float(params.get("jitter_px", 0.0))}


def oracle_noise_models(batch: Any) -> list[NoiseModel]:
    """The exact noise model of each simulated image of a ``PairBatch``, from its acquisition parameters."""
    return [noise_model_from_params(p) for p in batch.params]


def benchmark_test_set(condition: Any) -> TestSet:
    """The condition's frozen, stratified benchmark set, with each image's sampling, bin and noise model."""
    bench = condition.benchmark_set()
    return TestSet(degraded=list(np.asarray(bench.degraded, np.float32)),
                   clean=list(np.asarray(bench.clean, np.float32)),
                   columns=[np.asarray(c, float).reshape(-1, 2) for c in bench.columns],
                   pixel_sizes_pm=list(bench.pixel_sizes_pm),
                   description=f"benchmark set of {condition.name} (seed {condition.benchmark_seed})",
                   bins=list(bench.bins), noise_models=oracle_noise_models(bench),
                   degradations=[oracle_degradation(p) for p in bench.params])


IMAGE_SUFFIXES = tuple(READ_SUFFIXES)


def user_test_set(condition: Any, images_dir: str | Path, *, seed: int = 0) -> TestSet:
    """A user's high-dose images from ``images_dir``, degraded by the condition's physics.

    Column metrics are not available for them (no simulated positions).

    Raises
    ------
    ValueError
        The folder is missing or holds no readable image.
    """
    folder = Path(images_dir)
    if not folder.is_dir():
        raise BadInputError(f"--images {folder}: not a folder; give a folder of high-dose images "
                         f"({', '.join(IMAGE_SUFFIXES)})")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise BadInputError(f"--images {folder}: no image files found; accepted suffixes: {', '.join(IMAGE_SUFFIXES)}")
    degraded, clean, columns, sizes, noise, degradations = [], [], [], [], [], []
    base = derived_seed(condition, seed, "images")
    for i, path in enumerate(paths):
        image = read_image(path)
        data = np.asarray(image.data, np.float32)
        if data.ndim != 2 or min(data.shape) < 16:
            raise BadInputError(f"{path}: expected one 2-D image of at least 16x16 px, got shape {data.shape}")
        batch = condition.degrade(data[None], seed=base + i, pixel_size_pm=image.calibration.pixel_size_pm())
        degraded.append(np.asarray(batch.degraded[0], np.float32))
        clean.append(np.asarray(batch.clean[0], np.float32))
        columns.append(np.zeros((0, 2)))
        sizes.append(float(batch.pixel_sizes_pm[0]))
        noise.append(noise_model_from_params(batch.params[0]))  # we degraded it: its noise is known
        degradations.append(oracle_degradation(batch.params[0]))
    return TestSet(degraded=degraded, clean=clean, columns=columns, pixel_sizes_pm=sizes, noise_models=noise,
                   degradations=degradations, description=f"{len(paths)} image(s) from {folder} degraded as {condition.name}")


class _Data:
    """Training / validation data shared by all methods of one evaluation (never the benchmark).

    Drawn lazily, so that scoring a registered champion alone simulates nothing.
    """

    def __init__(self, condition: Any, budget: TrainBudget, seed: int) -> None:
        self.condition, self.budget, self.seed = condition, budget, seed
        self._train: Any = None
        self._val: Any = None
        self._repeats: np.ndarray | None = None

    def _train_batch(self) -> Any:
        if self._train is None:
            self._train = self.condition.sample_pairs(self.budget.n_train, size_px=self.budget.train_size_px,
                                                      seed=derived_seed(self.condition, self.seed, "train"))
        return self._train

    def _val_batch(self) -> Any:
        if self._val is None:
            n_val = max(self.budget.n_val, self.budget.n_classical_val)
            self._val = self.condition.sample_pairs(n_val, size_px=self.budget.train_size_px,
                                                    seed=derived_seed(self.condition, self.seed, "val"))
        return self._val

    @property
    def train_degraded(self) -> np.ndarray:
        return np.asarray(self._train_batch().degraded, np.float32)

    @property
    def train_clean(self) -> np.ndarray:
        return np.asarray(self._train_batch().clean, np.float32)

    @property
    def train_repeats(self) -> np.ndarray:
        """``(N, k, H, W)`` noisy repeats of the training fields (what SDnDTI trains on)."""
        if self._repeats is None:
            self._repeats = np.asarray(self._train_batch().repeats(
                self.budget.repeats, seed=derived_seed(self.condition, self.seed, "repeats")), np.float32)
        return self._repeats

    def val_degradations(self, n: int) -> list[dict[str, Any]]:
        """The oracle degradation of each of the first ``n`` validation images (:func:`oracle_degradation`)."""
        return [oracle_degradation(p) for p in self._val_batch().params[:n]]

    def val_noise_models(self, n: int) -> list[NoiseModel]:
        """The exact noise model of each of the first ``n`` validation images (drawn across the ranges)."""
        return oracle_noise_models(self._val_batch()[np.arange(n)])

    def noise_model(self, n: int) -> Any:
        """The Poisson-Gaussian noise model from two repeats of the first ``n`` validation fields.

        Repeats share the scan distortion and blur, so their difference is pure noise, even where
        the clean target (in focus, undistorted) differs from the degraded image by more than noise.
        """
        pair = np.asarray(self._val_batch()[np.arange(n)].repeats(
            2, seed=derived_seed(self.condition, self.seed, "classical")), np.float32)
        return fit_noise_model(pair[:, 0], pair[:, 1], independent_repeat=True)

    @property
    def val_degraded(self) -> np.ndarray:
        return np.asarray(self._val_batch().degraded, np.float32)

    def provenance(self, test: "TestSet") -> dict[str, Any]:
        """Seeds of every draw and a check that no drawn image is a test image.

        Raises
        ------
        RuntimeError
            When a training or validation field equals a test field (the scores would be dishonest).
        """
        seeds = {p: derived_seed(self.condition, self.seed, p) for p in ("train", "val", "repeats", "classical")}
        test_prints = {_fingerprint(image) for image in test.clean} | {_fingerprint(image) for image in test.degraded}
        drawn = {"train": self._train, "val": self._val}
        overlaps: dict[str, int] = {}
        for name, batch in drawn.items():
            if batch is None:
                continue
            images = list(np.asarray(batch.clean, np.float32)) + list(np.asarray(batch.degraded, np.float32))
            overlaps[name] = sum(_fingerprint(image) in test_prints for image in images)
        if self._repeats is not None:
            overlaps["repeats"] = sum(_fingerprint(image) in test_prints
                                      for image in self._repeats.reshape(-1, *self._repeats.shape[2:]))
        if any(overlaps.values()):
            raise RuntimeError(f"training/validation data share images with the test set {overlaps}; "
                               "the leaderboard would be dishonest")
        return {"seeds": seeds, "benchmark_seed": int(getattr(self.condition, "benchmark_seed", -1)),
                "images_drawn": {name: int(len(batch)) for name, batch in drawn.items() if batch is not None},
                "test_images_in_fitting_data": overlaps}

    @property
    def val_clean(self) -> np.ndarray:
        return np.asarray(self._val_batch().clean, np.float32)


def merge_provenance(here: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One evaluation's provenance from this process's and that of each row fitted elsewhere (a worker
    process, or the run that cached it): the same seeds, every draw, every overlap count."""
    merged = {**here, "images_drawn": dict(here["images_drawn"]),
              "test_images_in_fitting_data": dict(here["test_images_in_fitting_data"])}
    for row in rows:
        for name, n in row.get("images_drawn", {}).items():
            merged["images_drawn"][name] = max(n, merged["images_drawn"].get(name, 0))
        for name, n in row.get("test_images_in_fitting_data", {}).items():
            merged["test_images_in_fitting_data"][name] = n + merged["test_images_in_fitting_data"].get(name, 0)
    return merged


def _fingerprint(image: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(image, np.float32).tobytes()).hexdigest()
