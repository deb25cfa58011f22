"""Score a denoiser on a condition's frozen benchmark set and store the figures.

Every registered version is scored here; the figures go on the version as
`benchmark.*` tags (what promotion compares) and on the producing run as
`benchmark_*` metrics (what the MLflow UI charts).
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable

import numpy as np

log = logging.getLogger(__name__)

PredictFn = Callable[[np.ndarray], np.ndarray]


def as_condition(condition: Any):
    """A `Condition` from a name or a `Condition` (unknown names raise `UnknownConditionError`)."""
    if isinstance(condition, str):
        from stemreg.acquisition import load_condition

        return load_condition(condition)
    return condition


def benchmark_id(condition: Any) -> str:
    """`<condition>@v<version>:<hash>`: which frozen benchmark set a score belongs to."""
    cond = as_condition(condition)
    if hasattr(cond, "benchmark_id"):
        return cond.benchmark_id()
    return f"{cond.name}@v{cond.version}:{cond.hash()}"


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
        `n_images`, `image_px`, `id` (see :func:`benchmark_id`).
    """
    from tqdm import tqdm

    from stemreg.models.metrics import psnr_batch, ssim_batch

    cond = as_condition(condition)
    bench = cond.benchmark_set()
    degraded = np.asarray(bench.degraded, dtype=np.float32)
    clean = np.asarray(bench.clean, dtype=np.float32)
    predict_fn(degraded[0])  # warm-up: lazy init, allocator, thread pools
    outputs = []
    seconds = 0.0
    for image in tqdm(degraded, desc=f"benchmark {cond.name}", disable=not progress, leave=False):
        start = time.perf_counter()
        out = predict_fn(image)
        seconds += time.perf_counter() - start
        outputs.append(np.asarray(out, dtype=np.float32).reshape(image.shape))
    pred = np.stack(outputs)
    psnrs, ssims = psnr_batch(pred, clean), ssim_batch(pred, clean)
    noisy_psnrs, noisy_ssims = psnr_batch(degraded, clean), ssim_batch(degraded, clean)
    megapixels = degraded.size / 1e6
    return {
        "psnr": float(np.mean(psnrs)), "psnr_std": float(np.std(psnrs)),
        "ssim": float(np.mean(ssims)), "ssim_std": float(np.std(ssims)),
        "noisy_psnr": float(np.mean(noisy_psnrs)), "noisy_ssim": float(np.mean(noisy_ssims)),
        "ms_per_mpx": 1000.0 * seconds / megapixels,
        "n_images": int(degraded.shape[0]), "image_px": int(degraded.shape[-1]),
        "id": benchmark_id(cond),
    }


def pyfunc_predict_fn(model_uri: str) -> PredictFn:
    """A predict function from an MLflow model URI (loads the pyfunc once)."""
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(model_uri)
    # The signature takes stacks (N, H, W): a single image goes as a stack of one.
    return lambda image: np.asarray(model.predict(np.asarray(image, dtype=np.float32)[None]), dtype=np.float32)[0]


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
    from stemreg.platform.registry import model_name
    from stemreg.platform.store import client as make_client

    client = make_client()
    name = model_name(condition)
    for key, value in version_tags(scores).items():
        client.set_model_version_tag(name, str(version), key, value)
    run_id = run_id or client.get_model_version(name, str(version)).run_id
    if run_id:
        from mlflow.entities import Metric

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
    from stemreg.platform.registry import model_name

    cond = as_condition(condition)
    if predict_fn is None:
        predict_fn = pyfunc_predict_fn(f"models:/{model_name(cond)}/{version}")
    scores = score_model(predict_fn, cond, progress=progress)
    record_scores(cond, version, scores, run_id=run_id)
    log.info("%s v%s: benchmark PSNR %.2f dB (noisy %.2f dB), SSIM %.3f, %.0f ms/Mpx", model_name(cond), version,
             scores["psnr"], scores["noisy_psnr"], scores["ssim"], scores["ms_per_mpx"])
    return scores
