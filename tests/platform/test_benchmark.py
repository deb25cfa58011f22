"""Benchmark scoring on the condition's real frozen benchmark set."""
from __future__ import annotations

import mlflow
import pytest
from scipy.ndimage import gaussian_filter

from stemreg.acquisition import get_condition
from stemreg.platform import registry
from stemreg.platform.registry import benchmark


def test_identity_scores_as_the_noisy_input_and_smoothing_scores_higher():
    cond = get_condition("low-dose")
    identity = benchmark.score_model(lambda image: image, cond)
    smoothed = benchmark.score_model(lambda image: gaussian_filter(image, 1.2), cond)
    assert identity["psnr"] == pytest.approx(identity["noisy_psnr"])
    assert identity["ssim"] == pytest.approx(identity["noisy_ssim"])
    assert smoothed["psnr"] > identity["psnr"] + 3
    assert smoothed["noisy_psnr"] == pytest.approx(identity["noisy_psnr"])   # same frozen set
    assert identity["n_images"] == cond.benchmark_size
    assert identity["id"] == cond.benchmark_id()
    assert identity["ms_per_mpx"] > 0 and identity["psnr_std"] >= 0


def test_score_version_writes_version_tags_and_run_metrics(mlflow_store, tmp_path):
    with mlflow.start_run() as run:
        pass
    source = tmp_path / "model"
    source.mkdir()
    version, _ = registry.register_version(str(source), "low-dose", run_id=run.info.run_id, alias_policy="none")
    scores = benchmark.score_version("low-dose", version.version, predict_fn=lambda image: gaussian_filter(image, 1.0))
    tags = registry.resolve("low-dose", str(version.version)).tags
    assert float(tags["benchmark.psnr"]) == pytest.approx(scores["psnr"], abs=1e-3)
    assert tags["benchmark.id"] == get_condition("low-dose").benchmark_id()
    metrics = mlflow.get_run(run.info.run_id).data.metrics
    assert metrics["benchmark_psnr"] == pytest.approx(scores["psnr"])
    assert metrics["benchmark_ms_per_mpx"] > 0
