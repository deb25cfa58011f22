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
:func:`stemreg.platform.registry.benchmark.score_model`, so the timing is per frame;
the first call is a warm-up and is not timed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

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
    budget: TrainBudget
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


def score_method(method: str, predict: PredictFn, test: TestSet, *, source: str,
                 details: dict[str, Any] | None = None, progress: bool = False) -> MethodResult:
    """Run ``predict`` on every test image (one frame at a time) and score it with the one scorer."""
    scores = score_predictions(predict, test.degraded, test.clean, columns=test.columns,
                               pixel_size_pm=test.pixel_size_pm, desc=f"score {method}", progress=progress)
    return MethodResult(method=method, source=source, psnr=scores.psnr, ssim=scores.ssim,
                        column_f1=scores.column_f1, column_error_pm=scores.column_error_pm,
                        ms_per_mpx=0.0 if method == NOISY else scores.ms_per_mpx,
                        details=details or {}, example=scores.first_output)
