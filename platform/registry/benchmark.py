"""Score a denoiser on a condition's frozen benchmark set and store the figures.

Every registered version is scored here; the figures go on the version as
`benchmark.*` tags (what promotion compares) and on the producing run as
`benchmark_*` metrics (what the MLflow UI charts).
"""
from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from mlflow.entities import Metric

from stemreg.models.metrics import psnr_batch, ssim_batch
from stemreg.models.scoring import PredictFn, score_predictions
from stemreg.models.prediction import pyfunc_predict_fn
from stemreg.platform.registry.naming import as_condition, benchmark_id, model_name
from stemreg.platform.store import client as make_client

log = logging.getLogger(__name__)


def score_model(predict_fn: PredictFn, condition: Any, *, progress: bool = False) -> dict[str, Any]:
    """Score any `(H, W) -> (H, W)` predict function on the condition's benchmark set.

    Parameters
    ----------
    predict_fn
        Takes one float32 image `(H, W)` and returns the denoised `(H, W)`.
        Images go one at a time, as frames come from a microscope, so the
        latency is per frame.
    condition
        Condition name or `Condition`.
    progress
        Show a tqdm bar.

    Returns
    -------
    dict
        `psnr`, `psnr_std`, `ssim`, `ssim_std` (of the prediction against the
        clean target), `noisy_psnr`, `noisy_ssim` (of the input), `ms_per_mpx`
        (inference wall time per megapixel, first call excluded as warm-up),
        `n_images`, `image_px`, `id` (see :func:`benchmark_id`), all measured by
        :func:`stemreg.models.scoring.score_predictions`.
    """
    cond = as_condition(condition)
    bench = cond.benchmark_set()
    degraded = np.asarray(bench.degraded, dtype=np.float32)
    clean = np.asarray(bench.clean, dtype=np.float32)
    scores = score_predictions(predict_fn, degraded, clean, desc=f"benchmark {cond.name}", progress=progress)
    noisy_psnrs, noisy_ssims = psnr_batch(degraded, clean), ssim_batch(degraded, clean)
    return {
        "psnr": float(np.mean(scores.psnr)), "psnr_std": float(np.std(scores.psnr)),
        "ssim": float(np.mean(scores.ssim)), "ssim_std": float(np.std(scores.ssim)),
        "noisy_psnr": float(np.mean(noisy_psnrs)), "noisy_ssim": float(np.mean(noisy_ssims)),
        "ms_per_mpx": scores.ms_per_mpx,
        "n_images": int(degraded.shape[0]), "image_px": int(degraded.shape[-1]),
        "id": benchmark_id(cond),
    }


def version_tags(scores: dict[str, Any]) -> dict[str, str]:
    """`benchmark.*` tag values for a score dict.

    Quality figures at full precision (promotion compares them); the timing to 0.1 ms, which is
    already finer than its run-to-run noise.
    """
    def text(key: str, value: Any) -> str:
        if key == "ms_per_mpx" and isinstance(value, float):
            return f"{value:.1f}"
        return repr(value) if isinstance(value, float) else str(value)

    return {f"benchmark.{k}": text(k, v) for k, v in scores.items()}


def run_metrics(scores: dict[str, Any]) -> dict[str, float]:
    """`benchmark_*` run metrics for a score dict (numbers only)."""
    return {f"benchmark_{k}": float(v) for k, v in scores.items() if isinstance(v, (int, float))}


def record_scores(condition: Any, version: str | int, scores: dict[str, Any], *,
                  run_id: str | None = None) -> None:
    """Write scores as tags on the model version and as metrics on `run_id` (default: its run)."""
    client = make_client()
    name = model_name(condition)
    for key, value in version_tags(scores).items():
        client.set_model_version_tag(name, str(version), key, value)
    run_id = run_id or client.get_model_version(name, str(version)).run_id
    if run_id:
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in run_metrics(scores).items()])


def score_version(condition: Any, version: str | int, *, predict_fn: PredictFn | None = None,
                  run_id: str | None = None, progress: bool = False) -> dict[str, Any]:
    """Score a registered version of `stem-denoiser-<condition>` and store the figures.

    Parameters
    ----------
    condition
        Condition name or `Condition`.
    version
        The version number.
    predict_fn
        Use this instead of loading the registered pyfunc (same model, already in memory).
    run_id
        Run to log the `benchmark_*` metrics to; default the version's own run.
    progress
        Show a tqdm bar.

    Returns
    -------
    dict
        See :func:`score_model`.
    """
    cond = as_condition(condition)
    if predict_fn is None:
        predict_fn = pyfunc_predict_fn(f"models:/{model_name(cond)}/{version}")
    scores = score_model(predict_fn, cond, progress=progress)
    record_scores(cond, version, scores, run_id=run_id)
    log.info("%s v%s: benchmark PSNR %.2f dB (noisy %.2f dB), SSIM %.3f, %.0f ms/Mpx", model_name(cond), version,
             scores["psnr"], scores["noisy_psnr"], scores["ssim"], scores["ms_per_mpx"])
    return scores
