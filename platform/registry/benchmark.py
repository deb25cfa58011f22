"""Score a denoiser on a condition's frozen benchmark set and store the figures.

Every registered version is scored here; the figures go on the version as
`benchmark.*` tags (what promotion compares) and on the producing run as
`benchmark_*` metrics (what the MLflow UI charts). The benchmark is stratified
by sampling x dose: each figure is reported per bin and as the unweighted mean
over bins (the headline `benchmark.psnr` etc.), beside the noisy input's.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any

import numpy as np
from mlflow.entities import Metric

from stemreg.models.binned import mean_over_bins, per_bin
from stemreg.models.metrics import psnr_batch, ssim_batch
from stemreg.models.scoring import PredictFn, score_predictions
from stemreg.models.prediction import predict_fn as predict_fn_of
from stemreg.platform.registry.card import refresh_cards
from stemreg.platform.registry.loading import open_version
from stemreg.platform.registry.naming import BY_BIN_SUFFIX, as_condition, benchmark_id, model_name
from stemreg.platform.store import client as make_client

log = logging.getLogger(__name__)


def score_model(predict_fn: PredictFn, condition: Any, *, columns: bool = True,
                progress: bool = False) -> dict[str, Any]:
    """Score any `(H, W) -> (H, W)` predict function on the condition's stratified benchmark set.

    Parameters
    ----------
    predict_fn
        Takes one float32 image `(H, W)` and returns the denoised `(H, W)`.
        Images go one at a time, as frames come from a microscope, so the
        latency is per frame.
    condition
        Condition name or `Condition`.
    columns
        Also score atom-column detection (F1, position error in pm, each image at its own
        pixel size); about 0.1 s per image.
    progress
        Show a tqdm bar.

    Returns
    -------
    dict
        `psnr`, `ssim` (of the prediction against the clean target), `noisy_psnr`, `noisy_ssim`
        (of the input) and, with `columns`, `column_f1`, `column_error_pm`: each the UNWEIGHTED
        MEAN OVER BINS of the bin means (:mod:`stemreg.models.binned`); `psnr_std`, `ssim_std`
        over images; `by_bin` ({figure: {bin: mean}} for the same figures); `ms_per_mpx`
        (inference wall time per megapixel, first call excluded as warm-up), `n_images`,
        `n_bins`, `image_px`, `id` (see :func:`benchmark_id`), all measured by
        :func:`stemreg.models.scoring.score_predictions`.
    """
    cond = as_condition(condition)
    bench = cond.benchmark_set()
    degraded = np.asarray(bench.degraded, dtype=np.float32)
    clean = np.asarray(bench.clean, dtype=np.float32)
    scores = score_predictions(predict_fn, degraded, clean, columns=bench.columns if columns else None,
                               pixel_size_pm=bench.pixel_sizes_pm, desc=f"benchmark {cond.name}",
                               progress=progress)
    per_image = {"psnr": scores.psnr, "ssim": scores.ssim,
                 "noisy_psnr": psnr_batch(degraded, clean), "noisy_ssim": ssim_batch(degraded, clean)}
    if columns:
        per_image.update(column_f1=scores.column_f1, column_error_pm=scores.column_error_pm)
    by_bin = {key: per_bin(values, bench.bins) for key, values in per_image.items()}
    return {
        **{key: mean_over_bins(figures) for key, figures in by_bin.items()},
        "psnr_std": float(np.std(scores.psnr)), "ssim_std": float(np.std(scores.ssim)),
        "ms_per_mpx": scores.ms_per_mpx,
        "n_images": int(degraded.shape[0]), "n_bins": len(by_bin["psnr"]), "image_px": int(degraded.shape[-1]),
        "id": benchmark_id(cond),
        "by_bin": by_bin,
    }


def version_tags(scores: dict[str, Any]) -> dict[str, str]:
    """`benchmark.*` tag values for a score dict.

    Headline figures (means over bins) at full precision; per-bin figures as one compact JSON
    tag per figure, `benchmark.<figure>_by_bin` (PSNR to 0.001 dB, others to 4 decimals; about
    300 characters each); the timing to 0.1 ms, already finer than its run-to-run noise.
    """
    def text(key: str, value: Any) -> str:
        if key == "ms_per_mpx" and isinstance(value, float):
            return f"{value:.1f}"
        return repr(value) if isinstance(value, float) else str(value)

    tags = {f"benchmark.{k}": text(k, v) for k, v in scores.items() if k != "by_bin"}
    for figure, values in scores.get("by_bin", {}).items():
        digits = 3 if figure.endswith("psnr") or figure.endswith("_pm") else 4
        tags[f"benchmark.{figure}{BY_BIN_SUFFIX}"] = json.dumps(
            {name: round(v, digits) if np.isfinite(v) else None for name, v in values.items()},
            separators=(",", ":"))
    return tags


def metric_bin_name(bin_name: str) -> str:
    """A bin name as MLflow accepts in a metric name (`@` is not allowed): `8px@0.25x` -> `8px_0.25x`."""
    return bin_name.replace("@", "_")


def run_metrics(scores: dict[str, Any]) -> dict[str, float]:
    """`benchmark_*` run metrics for a score dict: headline numbers, and `benchmark_<figure>/<bin>` per bin."""
    out = {f"benchmark_{k}": float(v) for k, v in scores.items()
           if isinstance(v, (int, float)) and np.isfinite(v)}
    for figure, values in scores.get("by_bin", {}).items():
        out.update({f"benchmark_{figure}/{metric_bin_name(name)}": float(v) for name, v in values.items()
                    if np.isfinite(v)})
    return out


def record_scores(condition: Any, version: str | int, scores: dict[str, Any], *,
                  run_id: str | None = None) -> None:
    """Write scores as tags on the model version and as metrics on `run_id` (default: its run).

    Then rewrite the version's model card (its description) with the figures.
    """
    client = make_client()
    name = model_name(condition)
    for key, value in version_tags(scores).items():
        client.set_model_version_tag(name, str(version), key, value)
    run_id = run_id or client.get_model_version(name, str(version)).run_id
    if run_id:
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, 0) for k, v in run_metrics(scores).items()]
        for start in range(0, len(metrics), 1000):   # log_batch takes at most 1000 metrics
            client.log_batch(run_id, metrics=metrics[start:start + 1000])
    refresh_cards(client, as_condition(condition), str(version))


def score_version(condition: Any, version: str | int, *, predict_fn: PredictFn | None = None,
                  run_id: str | None = None, columns: bool = True, progress: bool = False) -> dict[str, Any]:
    """Score a registered version of `stem-denoiser-<condition>` and store the figures.

    Parameters
    ----------
    condition
        Condition name or `Condition`.
    version
        The version number.
    predict_fn
        Use this instead of loading the registered pyfunc (same model, already in memory).

    Raises
    ------
    ModelLoadError
        The version cannot be loaded (missing artifacts, weights damaged or not matching the
        sha256 recorded at registration).
    run_id
        Run to log the `benchmark_*` metrics to; default the version's own run.
    columns
        Also score atom-column detection (see :func:`score_model`).
    progress
        Show a tqdm bar.

    Returns
    -------
    dict
        See :func:`score_model`.
    """
    cond = as_condition(condition)
    if predict_fn is None:  # loaded as it is served: its own artifacts, sha256 verified
        client = make_client()
        predict_fn = predict_fn_of(open_version(client, client.get_model_version(model_name(cond), str(version))))
    scores = score_model(predict_fn, cond, columns=columns, progress=progress)
    record_scores(cond, version, scores, run_id=run_id)
    log.info("%s v%s: benchmark PSNR %.2f dB (noisy %.2f dB), SSIM %.3f (means over bins), %.0f ms/Mpx",
             model_name(cond), version,
             scores["psnr"], scores["noisy_psnr"], scores["ssim"], scores["ms_per_mpx"])
    return scores
