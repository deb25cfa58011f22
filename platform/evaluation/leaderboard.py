"""The leaderboard: every denoiser on one condition's benchmark, scored the same way.

Methods (``METHODS``):

- ``hourglass``: the registered champion of the condition when there is one,
  else a reverse hourglass trained here, supervised, with the budget;
- ``autoencoder``: the STEM denoising autoencoder (Gambini et al. 2023),
  supervised, same data and budget;
- ``sdndti``: a DnCNN trained noise2noise on repeated noisy acquisitions of
  the training fields (SDnDTI, Tian et al. 2022): no clean image at all;
- ``n2v``: the reverse hourglass trained blind-spot (Noise2Void) on the
  single noisy training images: no clean image at all;
- ``gaussian``, ``nlm``, ``tv``, ``wavelet``, ``bm3d``: classical filters,
  strengths fitted on a validation set (see :mod:`stemreg.models.classical`).

The noisy input is always the first row. Training and validation images are
drawn with seeds other than the benchmark's; nothing is cached between
conditions. The self-supervised methods get no validation set either (a lab
without clean images has none): they keep their last epoch.

Each method's predict function sees one frame at a time, as in
:func:`stemreg.platform.benchmark.score_model`, so the timing is per frame;
the first call is a warm-up and is not timed.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

log = logging.getLogger(__name__)

PredictFn = Callable[[np.ndarray], np.ndarray]

LEARNED_METHODS: tuple[str, ...] = ("hourglass", "autoencoder", "sdndti", "n2v")
CLASSICAL: tuple[str, ...] = ("gaussian", "nlm", "tv", "wavelet", "bm3d")
METHODS: tuple[str, ...] = LEARNED_METHODS + CLASSICAL
NOISY = "noisy"

METHOD_DESCRIPTIONS: dict[str, str] = {
    NOISY: "noisy input (no denoising)",
    "hourglass": "reverse-hourglass CNN, supervised",
    "autoencoder": "STEM denoising autoencoder (Gambini et al. 2023), supervised",
    "sdndti": "DnCNN trained noise2noise on repeats (SDnDTI, Tian et al. 2022), no clean data",
    "n2v": "reverse hourglass trained blind-spot (Noise2Void), no clean data",
    "gaussian": "Gaussian filter, width fitted on validation",
    "nlm": "non-local means in the Anscombe domain, h fitted on validation",
    "tv": "total variation (Chambolle) in the Anscombe domain, weight fitted on validation",
    "wavelet": "wavelet BayesShrink in the Anscombe domain, sigma fitted on validation",
    "bm3d": "BM3D, generalised Anscombe + exact unbiased inverse, sigma fitted on validation",
}

#: Leaderboard columns: (key, heading, higher is better)
METRICS: tuple[tuple[str, str, bool], ...] = (
    ("psnr", "PSNR (dB)", True),
    ("ssim", "SSIM", True),
    ("column_f1", "column F1", True),
    ("column_error_pm", "column error (pm)", False),
    ("ms_per_mpx", "ms / Mpx", False),
)

HOURGLASS_ARCH: dict[str, Any] = {"kind": "reverse-hourglass", "depth": 8}
AUTOENCODER_ARCH: dict[str, Any] = {"kind": "autoencoder", "base_width": 32, "levels": 2}
DNCNN_ARCH: dict[str, Any] = {"kind": "dncnn", "depth": 10, "width": 48}


@dataclass(frozen=True)
class Budget:
    """How much data and training every learned method gets (the same for all of them).

    Attributes
    ----------
    name
        ``tiny`` (smoke tests), ``quick`` (CPU, minutes), ``full`` (GPU).
    n_train, n_val
        Training fields and validation images drawn from the condition.
    train_size_px
        Size of the training / validation images (None: the condition's).
    repeats
        Noisy acquisitions per training field for noise2noise (SDnDTI).
    epochs, steps_per_epoch, batch_size, patch_px, lr
        Passed to :class:`stemreg.models.TrainConfig`.
    n_classical_val
        Validation images the classical strengths are fitted on.
    """

    name: str
    n_train: int
    n_val: int
    train_size_px: int | None
    repeats: int
    epochs: int
    steps_per_epoch: int
    batch_size: int
    patch_px: int
    lr: float = 1e-3
    n_classical_val: int = 4

    def train_config(self, mode: str, *, seed: int, device: str = "auto") -> Any:
        from stemreg.models import TrainConfig

        return TrainConfig(mode=mode, epochs=self.epochs, steps_per_epoch=self.steps_per_epoch,
                           batch_size=self.batch_size, patch_px=self.patch_px, lr=self.lr, seed=seed,
                           device=device)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


BUDGETS: dict[str, Budget] = {
    "tiny": Budget("tiny", n_train=4, n_val=2, train_size_px=None, repeats=2, epochs=2, steps_per_epoch=15,
                   batch_size=8, patch_px=32, lr=2e-3, n_classical_val=2),
    "quick": Budget("quick", n_train=24, n_val=4, train_size_px=None, repeats=3, epochs=6, steps_per_epoch=60,
                    batch_size=16, patch_px=64, lr=2e-3, n_classical_val=4),
    "full": Budget("full", n_train=256, n_val=16, train_size_px=None, repeats=4, epochs=40, steps_per_epoch=250,
                   batch_size=32, patch_px=96, lr=1e-3, n_classical_val=8),
}


@dataclass
class MethodResult:
    """Per-image scores of one method on the test images."""

    method: str
    source: str
    psnr: np.ndarray
    ssim: np.ndarray
    column_f1: np.ndarray
    column_error_pm: np.ndarray
    ms_per_mpx: float
    details: dict[str, Any] = field(default_factory=dict)
    example: np.ndarray | None = None  # the first test image's output, for the gallery

    def row(self) -> dict[str, Any]:
        """One leaderboard row: mean and std of each metric (NaN-aware)."""
        out: dict[str, Any] = {"method": self.method, "source": self.source}
        for key in ("psnr", "ssim", "column_f1", "column_error_pm"):
            values = np.asarray(getattr(self, key), float)
            finite = values[np.isfinite(values)]
            out[key] = float(finite.mean()) if finite.size else float("nan")
            out[f"{key}_std"] = float(finite.std()) if finite.size else float("nan")
        out["ms_per_mpx"] = float(self.ms_per_mpx)
        return out


@dataclass
class Leaderboard:
    """The result of :func:`evaluate`."""

    condition: str
    benchmark_id: str
    budget: Budget
    test_set: str
    n_images: int
    image_shape: tuple[int, int]
    results: list[MethodResult]
    run_id: str | None = None
    artifacts: list[str] = field(default_factory=list)
    seconds: float = 0.0
    provenance: dict[str, Any] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        return [r.row() for r in self.results]

    def to_dict(self) -> dict[str, Any]:
        return {"condition": self.condition, "benchmark_id": self.benchmark_id, "budget": self.budget.name,
                "test_set": self.test_set, "n_images": self.n_images, "image_shape": list(self.image_shape),
                "run_id": self.run_id, "seconds": round(self.seconds, 2), "rows": _json_safe(self.rows()),
                "details": _json_safe({r.method: r.details for r in self.results}),
                "provenance": _json_safe(self.provenance)}

    def markdown(self) -> str:
        """The leaderboard as a markdown table, mean +- std per metric, best value in bold."""
        rows = self.rows()
        best: dict[str, float] = {}
        for key, _, higher in METRICS:
            values = [r[key] for r in rows if r["method"] != NOISY and math.isfinite(r[key])]
            if values:
                best[key] = max(values) if higher else min(values)
        head = "| method | " + " | ".join(h for _, h, _ in METRICS) + " |"
        lines = [head, "|" + "---|" * (len(METRICS) + 1)]
        for r in rows:
            cells = []
            for key, _, _ in METRICS:
                cell = _format(key, r[key], r.get(f"{key}_std"))
                if key in best and r["method"] != NOISY and r[key] == best[key]:
                    cell = f"**{cell}**"
                cells.append(cell)
            lines.append(f"| {r['method']} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def csv(self) -> str:
        rows = self.rows()
        keys = list(rows[0].keys())
        lines = [",".join(keys)]
        for r in rows:
            lines.append(",".join(_csv_cell(r[k]) for k in keys))
        return "\n".join(lines) + "\n"


def _format(key: str, mean: float, std: float | None) -> str:
    if not math.isfinite(mean):
        return "n/a"
    digits = {"psnr": 2, "ssim": 3, "column_f1": 3, "column_error_pm": 1, "ms_per_mpx": 0}[key]
    text = f"{mean:.{digits}f}"
    if std is not None and math.isfinite(std):
        text += f" ± {std:.{digits}f}"
    return text


def _csv_cell(value: Any) -> str:
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value:.6g}"
    text = str(value)
    return f'"{text}"' if "," in text else text


def _json_safe(value: Any) -> Any:
    """NaN/inf -> None and numpy scalars -> Python, recursively (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


# ------------------------------------------------------------------ inputs

def parse_methods(methods: str | Sequence[str] | None) -> list[str]:
    """Validate a method list (comma-separated text or a sequence); None means all.

    Raises
    ------
    ValueError
        Naming the unknown methods and the accepted ones.
    """
    if methods is None:
        return list(METHODS)
    names = [m.strip().lower() for m in (methods.split(",") if isinstance(methods, str) else methods)]
    names = [m for m in names if m and m != NOISY]  # the noisy row is always there
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; accepted: {', '.join(METHODS)}")
    if not names:
        raise ValueError(f"no method given; accepted: {', '.join(METHODS)}")
    return list(dict.fromkeys(names))


def get_budget(budget: str | Budget) -> Budget:
    if isinstance(budget, Budget):
        return budget
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; accepted: {', '.join(BUDGETS)}")
    return BUDGETS[budget]


def derived_seed(condition: Any, seed: int, purpose: str) -> int:
    """A seed for training / validation data that is never the benchmark's seed."""
    offset = {"train": 1, "val": 2, "repeats": 3, "classical": 4, "images": 5}[purpose]
    value = 1_000_003 * (seed + 1) + 7919 * offset
    return value + 1 if value == int(condition.benchmark_seed) else value


@dataclass
class TestSet:
    """What the methods are scored on: per-image lists (user images may differ in size)."""

    degraded: list[np.ndarray]
    clean: list[np.ndarray]
    columns: list[np.ndarray]
    pixel_size_pm: float
    description: str


def benchmark_test_set(condition: Any) -> TestSet:
    """The condition's frozen benchmark set."""
    bench = condition.benchmark_set()
    return TestSet(degraded=list(np.asarray(bench.degraded, np.float32)),
                   clean=list(np.asarray(bench.clean, np.float32)),
                   columns=[np.asarray(c, float).reshape(-1, 2) for c in bench.columns],
                   pixel_size_pm=float(bench.pixel_size_pm),
                   description=f"benchmark set of {condition.name} (seed {condition.benchmark_seed})")


IMAGE_SUFFIXES = (".npy", ".tif", ".tiff", ".png", ".dm3", ".dm4", ".emd", ".h5", ".hspy", ".mrc", ".ser")


def user_test_set(condition: Any, images_dir: str | Path, *, seed: int = 0) -> TestSet:
    """A user's high-dose images from ``images_dir``, degraded by the condition's physics.

    Column metrics are not available for them (no simulated positions).

    Raises
    ------
    ValueError
        The folder is missing or holds no readable image.
    """
    from stemreg.acquisition import read_image

    folder = Path(images_dir)
    if not folder.is_dir():
        raise ValueError(f"--images {folder}: not a folder; give a folder of high-dose images "
                         f"({', '.join(IMAGE_SUFFIXES)})")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(f"--images {folder}: no image files found; accepted suffixes: {', '.join(IMAGE_SUFFIXES)}")
    degraded, clean, columns = [], [], []
    base = derived_seed(condition, seed, "images")
    for i, path in enumerate(paths):
        image = read_image(path)
        data = np.asarray(image.data, np.float32)
        if data.ndim != 2 or min(data.shape) < 16:
            raise ValueError(f"{path}: expected one 2-D image of at least 16x16 px, got shape {data.shape}")
        batch = condition.degrade(data[None], seed=base + i)
        degraded.append(np.asarray(batch.degraded[0], np.float32))
        clean.append(np.asarray(batch.clean[0], np.float32))
        columns.append(np.zeros((0, 2)))
    return TestSet(degraded=degraded, clean=clean, columns=columns, pixel_size_pm=float(condition.pixel_size_pm),
                   description=f"{len(paths)} image(s) from {folder} degraded as {condition.name}")


# ------------------------------------------------------------------ scoring

def score_method(method: str, predict: PredictFn, test: TestSet, *, source: str,
                 details: dict[str, Any] | None = None, progress: bool = False) -> MethodResult:
    """Run ``predict`` on every test image (one frame at a time) and score it."""
    from tqdm.auto import tqdm

    from stemreg.models.metrics import psnr, ssim
    from stemreg.platform.columns import score_columns

    predict(test.degraded[0])  # warm-up, not timed
    seconds, pixels = 0.0, 0
    psnrs, ssims, f1s, errors = [], [], [], []
    example = None
    for i, (image, clean, cols) in enumerate(tqdm(list(zip(test.degraded, test.clean, test.columns)),
                                                  desc=f"score {method}", disable=not progress, leave=False)):
        start = time.perf_counter()
        out = np.asarray(predict(image), np.float32).reshape(image.shape)
        seconds += time.perf_counter() - start
        pixels += image.size
        if i == 0:
            example = out
        psnrs.append(psnr(out, clean))
        ssims.append(ssim(out, clean))
        if len(cols):
            score = score_columns(out, cols, pixel_size_pm=test.pixel_size_pm, clean=clean)
            f1s.append(score.f1)
            errors.append(score.position_error_pm)
        else:
            f1s.append(float("nan"))
            errors.append(float("nan"))
    ms_per_mpx = 0.0 if method == NOISY else 1000.0 * seconds / (pixels / 1e6)
    return MethodResult(method=method, source=source, psnr=np.array(psnrs), ssim=np.array(ssims),
                        column_f1=np.array(f1s), column_error_pm=np.array(errors), ms_per_mpx=ms_per_mpx,
                        details=details or {}, example=example)


# ------------------------------------------------------------------ methods

class _Data:
    """Training / validation data shared by all methods of one evaluation (never the benchmark).

    Drawn lazily, so that scoring a registered champion alone simulates nothing.
    """

    def __init__(self, condition: Any, budget: Budget, seed: int) -> None:
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

    def noise_model(self, n: int) -> Any:
        """The Poisson-Gaussian noise model from two repeats of the first ``n`` validation fields.

        Repeats share the scan distortion and blur, so their difference is pure noise, even where
        the clean target (in focus, undistorted) differs from the degraded image by more than noise.
        """
        from stemreg.models.classical import fit_noise_model

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


def _fingerprint(image: np.ndarray) -> str:
    import hashlib

    return hashlib.sha1(np.ascontiguousarray(image, np.float32).tobytes()).hexdigest()


def _cnn_predict(model: Any, device: Any) -> PredictFn:
    from stemreg.models import denoise_array

    return lambda image: denoise_array(model, image, device=device)


def _train_cnn(method: str, arch: dict[str, Any], mode: str, train_data: Any, data: _Data, budget: Budget, *,
               seed: int, device: str, use_val: bool, progress: bool) -> tuple[PredictFn, dict[str, Any]]:
    from stemreg.models import build_model, pick_device, train

    model = build_model(dict(arch))
    config = budget.train_config(mode, seed=seed, device=device)
    val = (data.val_degraded[:budget.n_val], data.val_clean[:budget.n_val]) if use_val else None
    result = train(model, config, train_data=train_data, val_data=val, progress=progress)
    details = {"architecture": arch, "mode": mode, "epochs": budget.epochs,
               "steps_per_epoch": budget.steps_per_epoch, "batch_size": budget.batch_size,
               "patch_px": budget.patch_px, "train_seconds": round(result.seconds, 2),
               "best_epoch": result.best_epoch, "best_val_psnr": result.best_val_psnr,
               "final_train_loss": result.history[-1]["train_loss"] if result.history else None,
               "clean_images_seen": mode == "supervised"}
    return _cnn_predict(result.model, pick_device(device)), details


def _registered_champion(condition: Any) -> tuple[PredictFn, str, dict[str, Any]] | None:
    """The condition's registered champion as a predict function, or None when there is none."""
    import mlflow

    from stemreg.platform import registry
    from stemreg.platform.benchmark import pyfunc_predict_fn
    from stemreg.platform.store import tracking_uri

    # the registry lookup (MlflowClient) and the pyfunc load (fluent API) must see the same store
    mlflow.set_tracking_uri(tracking_uri())
    mlflow.set_registry_uri(tracking_uri())
    try:
        version = registry.resolve(condition, registry.CHAMPION)
    except registry.NotRegisteredError:
        return None
    except Exception as exc:  # noqa: BLE001 - an unreachable/odd registry means "train here", said in the log
        log.warning("could not look up a registered champion for %s (%s); training one here", condition.name, exc)
        return None
    uri = registry.model_uri(condition, registry.CHAMPION)
    predict = pyfunc_predict_fn(uri)
    details = {"model_uri": uri, "version": version.version, "architecture": version.tags.get("architecture"),
               "registered_benchmark_id": version.tags.get("benchmark.id")}
    return predict, f"registered champion v{version.version}", details


def _build_method(method: str, condition: Any, data: _Data, budget: Budget, *, seed: int, device: str,
                  use_registry: bool, progress: bool) -> tuple[PredictFn, str, dict[str, Any]]:
    """A predict function for one method, trained or fitted on the shared non-benchmark data."""
    if method == "hourglass":
        if use_registry:
            found = _registered_champion(condition)
            if found is not None:
                return found
        predict, details = _train_cnn(method, HOURGLASS_ARCH, "supervised",
                                      (data.train_degraded, data.train_clean), data, budget, seed=seed,
                                      device=device, use_val=True, progress=progress)
        return predict, f"trained here ({budget.name})", details
    if method == "autoencoder":
        predict, details = _train_cnn(method, AUTOENCODER_ARCH, "supervised",
                                      (data.train_degraded, data.train_clean), data, budget, seed=seed,
                                      device=device, use_val=True, progress=progress)
        return predict, f"trained here ({budget.name})", details
    if method == "sdndti":
        predict, details = _train_cnn(method, DNCNN_ARCH, "noise2noise", data.train_repeats, data, budget,
                                      seed=seed, device=device, use_val=False, progress=progress)
        details["repeats"] = budget.repeats
        return predict, f"trained here ({budget.name}, {budget.repeats} repeats)", details
    if method == "n2v":
        predict, details = _train_cnn(method, HOURGLASS_ARCH, "blind-spot", data.train_degraded, data, budget,
                                      seed=seed, device=device, use_val=False, progress=progress)
        return predict, f"trained here ({budget.name})", details
    if method in CLASSICAL:
        from stemreg.models.classical import fit_classical

        n = budget.n_classical_val
        val_degraded, val_clean = data.val_degraded[:n], data.val_clean[:n]
        noise = data.noise_model(n) if method != "gaussian" else None
        fitted = fit_classical(method, val_degraded, val_clean, noise=noise)
        return fitted, f"fitted on {n} validation images", fitted.describe()
    raise ValueError(f"unknown method {method!r}; accepted: {', '.join(METHODS)}")


# ------------------------------------------------------------------ the whole evaluation

def evaluate(condition: Any, *, methods: str | Sequence[str] | None = None, budget: str | Budget = "quick",
             images_dir: str | Path | None = None, seed: int = 0, device: str = "auto",
             use_registry: bool = True, log_to_mlflow: bool = True, progress: bool = True,
             output_dir: str | Path | None = None) -> Leaderboard:
    """Score every method on a condition and (optionally) log the leaderboard as one MLflow run.

    Parameters
    ----------
    condition
        Condition name, YAML path or ``Condition``.
    methods
        Subset of :data:`METHODS` (comma-separated text or a list); default all.
    budget
        ``"tiny"``, ``"quick"``, ``"full"`` or a :class:`Budget`.
    images_dir
        Score on these high-dose images degraded by the condition instead of
        the frozen benchmark set.
    seed
        Seed of the training / validation draws and of the training itself.
    device
        Torch device for the CNNs (``auto``: CUDA when available).
    use_registry
        Use the condition's registered champion for ``hourglass`` when there is one.
    log_to_mlflow
        Log one MLflow run with the table, bar chart and gallery.
    progress
        Show tqdm progress bars.
    output_dir
        Also write the artifacts here (default: a temporary folder).

    Returns
    -------
    Leaderboard
    """
    import tempfile

    from tqdm.auto import tqdm

    from stemreg.platform.benchmark import as_condition, benchmark_id

    started = time.perf_counter()
    cond = as_condition(condition)
    method_list = parse_methods(methods)
    plan = get_budget(budget)
    test = user_test_set(cond, images_dir, seed=seed) if images_dir is not None else benchmark_test_set(cond)
    data = _Data(cond, plan, seed)

    results = [score_method(NOISY, lambda image: image, test, source="input",
                            details={"description": METHOD_DESCRIPTIONS[NOISY]})]
    bar = tqdm(method_list, desc=f"evaluate {cond.name}", disable=not progress, unit="method")
    for method in bar:
        bar.set_postfix(method=method)
        predict, source, details = _build_method(method, cond, data, plan, seed=seed, device=device,
                                                 use_registry=use_registry, progress=progress)
        details = {"description": METHOD_DESCRIPTIONS[method], **details}
        results.append(score_method(method, predict, test, source=source, details=details, progress=progress))
        log.info("%s: PSNR %.2f dB (%s)", method, float(np.mean(results[-1].psnr)), source)
    bar.close()

    board = Leaderboard(condition=cond.name, benchmark_id=benchmark_id(cond), budget=plan,
                        test_set=test.description, n_images=len(test.degraded),
                        image_shape=tuple(test.degraded[0].shape), results=results,
                        provenance=data.provenance(test))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(output_dir) if output_dir is not None else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        board.seconds = time.perf_counter() - started
        paths = write_artifacts(board, test, folder)
        board.artifacts = [p.name for p in paths]
        if log_to_mlflow:
            board.run_id = log_leaderboard(board, cond, paths, method_list)
    board.seconds = time.perf_counter() - started
    return board


# ------------------------------------------------------------------ artifacts

def write_artifacts(board: Leaderboard, test: TestSet, folder: Path) -> list[Path]:
    """Write leaderboard.csv / .json / .md, leaderboard_bars.png and gallery.png into ``folder``."""
    paths = []
    for name, text in (("leaderboard.csv", board.csv()),
                       ("leaderboard.json", json.dumps(board.to_dict(), indent=2)),
                       ("leaderboard.md", board.markdown() + "\n")):
        path = folder / name
        path.write_text(text)
        paths.append(path)
    paths.append(bar_chart(board, folder / "leaderboard_bars.png"))
    paths.append(gallery(board, test, folder / "gallery.png"))
    return paths


def bar_chart(board: Leaderboard, path: Path) -> Path:
    """PSNR and SSIM per method, mean with std error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = board.rows()
    names = [r["method"] for r in rows]
    colours = ["0.6" if n == NOISY else ("tab:red" if n == "hourglass" else
               "tab:orange" if n in LEARNED_METHODS else "tab:blue") for n in names]
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.1 * len(names) * 2), 4.2))
    for ax, (key, label) in zip(axes, (("psnr", "PSNR (dB)"), ("ssim", "SSIM"))):
        means = [r[key] for r in rows]
        stds = [r[f"{key}_std"] for r in rows]
        ax.bar(range(len(names)), means, yerr=stds, color=colours, capsize=3)
        ax.set_xticks(range(len(names)), names, rotation=40, ha="right")
        ax.set_ylabel(label)
        finite = [m for m in means if math.isfinite(m)]
        if key == "psnr" and finite:
            ax.set_ylim(min(finite) - 3, max(finite) + 2)  # dB differences, not absolute values, matter
        ax.grid(axis="y", alpha=0.3)
        for i, m in enumerate(means):
            if math.isfinite(m):
                ax.text(i, m, f"{m:.2f}" if key == "psnr" else f"{m:.3f}", ha="center", va="bottom", fontsize=7)
    fig.suptitle(f"{board.condition}: {board.n_images} images, budget {board.budget.name} "
                 f"(grey: input, red: hourglass, orange: other CNNs, blue: classical)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def gallery(board: Leaderboard, test: TestSet, path: Path, *, crop_px: int = 96) -> Path:
    """Before / after: one row per method, the same crop of the first test image.

    Columns: the noisy input (before), the method's output (after), and the
    absolute error of the output against the clean target; a first row shows
    the clean target.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clean, noisy = test.clean[0], test.degraded[0]
    h, w = clean.shape
    size = min(crop_px, h, w)
    r0, c0 = (h - size) // 2, (w - size) // 2
    window = (slice(r0, r0 + size), slice(c0, c0 + size))
    low, high = np.percentile(clean, [0.5, 99.5])
    high = high if high > low else low + 1.0
    # one error scale for every row (the noisy input's), so rows compare at a glance
    error_max = max(float(np.percentile(np.abs(noisy - clean), 99)), 1e-6)
    rows = [r for r in board.results if r.example is not None]
    fig, axes = plt.subplots(len(rows) + 1, 3, figsize=(6.0, 2.0 * (len(rows) + 1)), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    axes[0, 1].imshow(clean[window], cmap="gray", vmin=low, vmax=high, interpolation="nearest")
    axes[0, 1].set_title("clean target", fontsize=8)
    for i, result in enumerate(rows, start=1):
        before, after = axes[i, 0], axes[i, 1]
        before.imshow(noisy[window], cmap="gray", vmin=low, vmax=high, interpolation="nearest")
        before.set_title("before (noisy)", fontsize=7)
        after.imshow(result.example[window], cmap="gray", vmin=low, vmax=high, interpolation="nearest")
        after.set_title(f"{result.method}: {result.psnr[0]:.2f} dB, SSIM {result.ssim[0]:.3f}", fontsize=7)
        axes[i, 2].imshow(np.abs(result.example - clean)[window], cmap="magma", vmin=0, vmax=error_max,
                          interpolation="nearest")
        axes[i, 2].set_title("|after - clean|", fontsize=7)
    fig.suptitle(f"{board.condition}: {size}x{size} px crop of test image 0", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def log_leaderboard(board: Leaderboard, condition: Any, paths: list[Path], methods: list[str]) -> str:
    """Log the leaderboard as one MLflow run; returns its run id."""
    import mlflow
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

    from stemreg.platform.store import configure

    configure()
    with mlflow.start_run(run_name=f"evaluate-{board.condition}") as run:
        mlflow.set_tags({"stemreg.kind": "evaluation", "condition": board.condition,
                         "benchmark.id": board.benchmark_id, "test_set": board.test_set,
                         MLFLOW_RUN_NOTE: (
                             f"Leaderboard of {len(methods)} method(s) on {board.test_set} ({board.n_images} "
                             f"images), {board.budget.name} training budget for the CNNs. Artifacts: the "
                             f"table (CSV, Markdown), a bar chart and a before/after gallery, one row per "
                             f"method.")})
        params = dict(condition.flat_params())
        params.update({"evaluate.budget": board.budget.name, "evaluate.methods": ",".join(methods),
                       "evaluate.n_images": str(board.n_images)})
        params.update({f"budget.{k}": str(v) for k, v in board.budget.to_dict().items() if k != "name"})
        mlflow.log_params(params)
        metrics = {}
        for row in board.rows():
            for key, _, _ in METRICS:
                value = row[key]
                if math.isfinite(value):
                    metrics[f"{row['method']}.{key}"] = value
        mlflow.log_metrics(metrics)
        for path in paths:
            mlflow.log_artifact(str(path))
        try:
            table = {k: [_json_safe(r[k]) for r in board.rows()] for k in board.rows()[0]}
            mlflow.log_table(data=table, artifact_file="leaderboard_table.json")
        except Exception as exc:  # noqa: BLE001 - the CSV/JSON artifacts already hold the table
            log.warning("mlflow.log_table failed (%s); the CSV and JSON artifacts hold the table", exc)
        return run.info.run_id
