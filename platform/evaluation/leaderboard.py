"""The leaderboard: every denoiser on one condition's benchmark, scored the same way.

Methods (``METHODS``):

- ``hourglass``: the registered champion of the condition when there is one
  (what a user gets), else the seed's reverse hourglass trained here, supervised,
  with the budget;
- ``hourglass-family``: the family's multi-scale member trained here with the
  same data draws and steps as the other CNNs (the equal-budget comparison);
- ``autoencoder``: the STEM denoising autoencoder (Gambini et al. 2023),
  supervised, same data and budget;
- ``sdndti``: a DnCNN trained noise2noise on repeated noisy acquisitions of
  the training fields (SDnDTI, Tian et al. 2022): no clean image at all;
- ``n2v``: the reverse hourglass trained blind-spot (Noise2Void) on the
  single noisy training images: no clean image at all;
- ``gaussian``, ``nlm``, ``tv``, ``wavelet``, ``bm3d``: classical filters,
  strengths fitted on a validation set drawn across the condition's ranges;
  the GAT-based ones get each test image's own noise model, the simulation's
  exact one on the benchmark (the most favourable setting for BM3D), see
  :mod:`stemreg.models.classical`.

The benchmark is stratified (sampling x dose, plus the seed's point): every
figure is reported per bin and as the unweighted mean over bins
(:mod:`stemreg.models.binned`), so that no stratum outweighs another.

The noisy input is always the first row. Training and validation images are
drawn with seeds other than the benchmark's; nothing is cached between
conditions. The self-supervised methods get no validation set either (a lab
without clean images has none): they keep their last epoch.

Each method's predict function sees one frame at a time, as in
:func:`stemreg.platform.registry.benchmark.score_model`, so the timing is per frame;
the first call is a warm-up and is not timed.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stemreg.models.binned import mean_over_bins
from stemreg.models.config import TrainBudget
from stemreg.models.scoring import PredictFn, score_predictions
from stemreg.platform.evaluation.data import TestSet
from stemreg.platform.evaluation.methods import NOISY

#: Leaderboard columns: (key, heading, higher is better)
METRICS: tuple[tuple[str, str, bool], ...] = (
    ("psnr", "PSNR (dB)", True),
    ("ssim", "SSIM", True),
    ("column_f1", "column F1", True),
    ("column_error_pm", "column error (pm)", False),
    ("ms_per_mpx", "ms / Mpx", False),
)


#: Figures scored per image (and so reported per bin).
PER_IMAGE = ("psnr", "ssim", "column_f1", "column_error_pm")
_BIN_NAME = re.compile(r"^(?P<spacing>[0-9.]+)px@(?P<dose>[0-9.]+)x$")


def grid_bin(name: str) -> tuple[float, float] | None:
    """``(spacing_px, dose_scale)`` of a sampling x dose bin name such as ``"8px@0.25x"``; None otherwise."""
    match = _BIN_NAME.match(name)
    return (float(match["spacing"]), float(match["dose"])) if match else None


def _finite_mean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


@dataclass
class MethodResult:
    """Per-image scores of one method on the test images; ``bins[i]`` is image i's benchmark stratum."""

    method: str
    source: str
    psnr: np.ndarray
    ssim: np.ndarray
    column_f1: np.ndarray
    column_error_pm: np.ndarray
    ms_per_mpx: float
    details: dict[str, Any] = field(default_factory=dict)
    example: np.ndarray | None = None  # the first test image's output, for the gallery
    bins: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.bins = list(self.bins) or ["all images"] * len(self.psnr)

    def by_bin(self, key: str) -> dict[str, float]:
        """The mean of one per-image figure in each bin (NaN-aware; NaN where a bin has no finite value)."""
        values = np.asarray(getattr(self, key), float)
        labels = np.asarray(self.bins, dtype=object)
        return {name: _finite_mean(values[labels == name]) for name in dict.fromkeys(self.bins)}

    def row(self) -> dict[str, Any]:
        """One leaderboard row: the unweighted mean over bins of each figure, and its pooled within-bin std."""
        out: dict[str, Any] = {"method": self.method, "source": self.source}
        labels = np.asarray(self.bins, dtype=object)
        for key in PER_IMAGE:
            by_bin = {b: v for b, v in self.by_bin(key).items() if math.isfinite(v)}
            out[key] = mean_over_bins(by_bin)
            values = np.asarray(getattr(self, key), float)
            variances = [np.var(v[np.isfinite(v)]) for v in (values[labels == b] for b in by_bin)]
            out[f"{key}_std"] = float(np.sqrt(np.mean(variances))) if variances else float("nan")
        out["ms_per_mpx"] = float(self.ms_per_mpx)
        return out


@dataclass
class Leaderboard:
    """The result of :func:`evaluate`: every figure per bin and as the unweighted mean over bins."""

    condition: str
    benchmark_id: str
    budget: TrainBudget
    test_set: str
    n_images: int
    image_shape: tuple[int, int]
    results: list[MethodResult]
    run_id: str | None = None
    artifacts: list[str] = field(default_factory=list)
    seconds: float = 0.0
    provenance: dict[str, Any] = field(default_factory=dict)
    noise_source: str = ""

    @property
    def bins(self) -> list[str]:
        """The bins in benchmark order."""
        return list(dict.fromkeys(self.results[0].bins)) if self.results else []

    def key_bins(self) -> list[str]:
        """The bins the printed table shows: the seed's point, the hardest (coarsest sampling, lowest dose)
        and the easiest (finest sampling, highest dose)."""
        grid = {name: grid_bin(name) for name in self.bins if grid_bin(name) is not None}
        keys = [name for name in self.bins if name.startswith("seed:")]
        if grid:
            keys.append(min(grid, key=lambda n: (grid[n][0], grid[n][1])))
            keys.append(max(grid, key=lambda n: (grid[n][0], grid[n][1])))
        return list(dict.fromkeys(keys))

    def per_bin(self) -> dict[str, dict[str, dict[str, float]]]:
        """``{method: {bin: {figure: value}}}``, with ``psnr_gain_db`` over the noisy input and ``n_images``."""
        noisy = next((r.by_bin("psnr") for r in self.results if r.method == NOISY), {})
        counts = {b: self.results[0].bins.count(b) for b in self.bins} if self.results else {}
        table: dict[str, dict[str, dict[str, float]]] = {}
        for result in self.results:
            figures = {key: result.by_bin(key) for key in PER_IMAGE}
            table[result.method] = {
                b: {"n_images": counts[b], **{key: figures[key][b] for key in PER_IMAGE},
                    "psnr_gain_db": figures["psnr"][b] - noisy.get(b, float("nan"))}
                for b in self.bins}
        return table

    def rows(self) -> list[dict[str, Any]]:
        """One row per method: means over bins, the PSNR gain over the noisy input, and the key bins."""
        per_bin = self.per_bin()
        rows = []
        for result in self.results:
            row = result.row()
            gains = {b: v["psnr_gain_db"] for b, v in per_bin[result.method].items()
                     if math.isfinite(v["psnr_gain_db"])}
            row["psnr_gain_db"] = mean_over_bins(gains)
            for b in self.key_bins():
                row[f"psnr@{b}"] = per_bin[result.method][b]["psnr"]
                row[f"ssim@{b}"] = per_bin[result.method][b]["ssim"]
            rows.append(row)
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {"condition": self.condition, "benchmark_id": self.benchmark_id, "budget": self.budget.name,
                "test_set": self.test_set, "n_images": self.n_images, "image_shape": list(self.image_shape),
                "aggregate": "unweighted mean over bins (std: pooled within-bin std over images)",
                "bins": self.bins, "key_bins": self.key_bins(), "classical_noise_model": self.noise_source,
                "run_id": self.run_id, "seconds": round(self.seconds, 2), "rows": _json_safe(self.rows()),
                "per_bin": _json_safe(self.per_bin()),
                "details": _json_safe({r.method: r.details for r in self.results}),
                "provenance": _json_safe(self.provenance)}

    def markdown(self) -> str:
        """The leaderboard as a markdown table: means over bins (best in bold), then PSNR / SSIM in the key bins."""
        rows = self.rows()
        best: dict[str, float] = {}
        for key, _, higher in METRICS:
            values = [r[key] for r in rows if r["method"] != NOISY and math.isfinite(r[key])]
            if values:
                best[key] = max(values) if higher else min(values)
        keys = self.key_bins()
        head = ("| method | " + " | ".join(h for _, h, _ in METRICS[:1]) + " | gain (dB) | "
                + " | ".join(h for _, h, _ in METRICS[1:]) + " | "
                + " | ".join(f"PSNR / SSIM @ {b}" for b in keys) + (" |" if keys else "|"))
        lines = [head, "|" + "---|" * (len(METRICS) + 2 + len(keys))]
        for r in rows:
            cells = []
            for key, _, _ in METRICS:
                cell = _format(key, r[key], None)  # the std is in the CSV / JSON
                if key in best and r["method"] != NOISY and r[key] == best[key]:
                    cell = f"**{cell}**"
                cells.append(cell)
            gain = "" if r["method"] == NOISY else f"{r['psnr_gain_db']:+.2f}"
            cells.insert(1, gain)
            cells += [f"{_format('psnr', r[f'psnr@{b}'], None)} / {_format('ssim', r[f'ssim@{b}'], None)}"
                      for b in keys]
            lines.append(f"| {r['method']} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def csv(self) -> str:
        rows = self.rows()
        keys = list(rows[0].keys())
        lines = [",".join(keys)]
        for r in rows:
            lines.append(",".join(_csv_cell(r[k]) for k in keys))
        return "\n".join(lines) + "\n"

    def per_bin_csv(self) -> str:
        """The full per-bin table: one line per method and bin."""
        keys = ["n_images", *PER_IMAGE, "psnr_gain_db"]
        lines = [",".join(["method", "bin", *keys])]
        for method, by_bin in self.per_bin().items():
            for b, figures in by_bin.items():
                lines.append(",".join([method, _csv_cell(b), *(_csv_cell(figures[k]) for k in keys)]))
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


def score_method(method: str, predict: PredictFn | list[PredictFn], test: TestSet, *, source: str,
                 details: dict[str, Any] | None = None, progress: bool = False) -> MethodResult:
    """Run ``predict`` on every test image (one frame at a time) and score it with the one scorer."""
    scores = score_predictions(predict, test.degraded, test.clean, columns=test.columns,
                               pixel_size_pm=test.pixel_sizes_pm, desc=f"score {method}", progress=progress)
    return MethodResult(method=method, source=source, psnr=scores.psnr, ssim=scores.ssim,
                        column_f1=scores.column_f1, column_error_pm=scores.column_error_pm,
                        ms_per_mpx=0.0 if method == NOISY else scores.ms_per_mpx,
                        details=details or {}, example=scores.first_output, bins=test.bins)
