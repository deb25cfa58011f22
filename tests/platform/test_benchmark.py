"""Benchmark scoring on the condition's real frozen benchmark set."""
from __future__ import annotations

import json

import mlflow
import pytest
from scipy.ndimage import gaussian_filter

from stemreg.acquisition import get_condition
from stemreg.models.binned import mean_over_bins
from stemreg.models.scoring import score_predictions
from stemreg.platform import registry
from stemreg.platform.registry import benchmark


def test_identity_scores_as_the_noisy_input_and_smoothing_scores_higher():
    from stemreg.acquisition.detector import IDEAL_DETECTOR

    # HAADF through an ideal detector: the dose ordering below is the shot noise's; saturation, lost
    # lines and bright-field images (simulator revision 5) make one image's noisy PSNR say little of it
    cond = get_condition("low-dose").model_copy(update={**IDEAL_DETECTOR, "bright_field_fraction": 0.0})
    identity = benchmark.score_model(lambda image: image, cond, columns=False)
    smoothed = benchmark.score_model(lambda image: gaussian_filter(image, 1.2), cond, columns=False)
    assert identity["psnr"] == pytest.approx(identity["noisy_psnr"])
    assert identity["ssim"] == pytest.approx(identity["noisy_ssim"])
    assert smoothed["psnr"] > identity["psnr"] + 3
    assert smoothed["noisy_psnr"] == pytest.approx(identity["noisy_psnr"])   # same frozen set
    assert identity["n_images"] == cond.benchmark_size
    assert identity["id"] == cond.benchmark_id()
    assert identity["ms_per_mpx"] > 0 and identity["psnr_std"] >= 0
    # Per bin: every bin of the condition, and the headline is the unweighted mean over bins.
    bins = [b.name for b in cond.benchmark_bins()]
    for scores in (identity, smoothed):
        for figure in ("psnr", "ssim", "noisy_psnr", "noisy_ssim"):
            assert list(scores["by_bin"][figure]) == bins
            assert scores[figure] == pytest.approx(mean_over_bins(scores["by_bin"][figure]))
    assert identity["by_bin"]["psnr"] == pytest.approx(identity["by_bin"]["noisy_psnr"])
    assert smoothed["by_bin"]["noisy_psnr"] == pytest.approx(identity["by_bin"]["noisy_psnr"])
    # Low dose is noisier than high dose at the same sampling.
    noisy = identity["by_bin"]["noisy_psnr"]
    assert noisy["16px@0.25x"] < noisy["16px@1x"] < noisy["16px@4x"]
    assert identity["n_bins"] == len(bins)


def test_column_metrics_use_each_images_own_pixel_size():
    bench = get_condition("low-dose").benchmark_set()
    pick = [0, len(bench) - 1]                  # finest and seed bins: different samplings
    sizes = bench.pixel_sizes_pm[pick]
    assert sizes[0] != pytest.approx(sizes[1])
    smooth = lambda image: gaussian_filter(image, 0.8)  # noqa: E731
    both = score_predictions(smooth, bench.degraded[pick], bench.clean[pick],
                             columns=[bench.columns[i] for i in pick], pixel_size_pm=sizes)
    for k, i in enumerate(pick):
        alone = score_predictions(smooth, bench.degraded[i:i + 1], bench.clean[i:i + 1],
                                  columns=[bench.columns[i]], pixel_size_pm=float(sizes[k]))
        assert both.column_error_pm[k] == pytest.approx(alone.column_error_pm[0])
    with pytest.raises(ValueError, match="2 images"):
        score_predictions(smooth, bench.degraded[pick], bench.clean[pick], pixel_size_pm=[1.0, 2.0, 3.0])


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
    # Per-bin figures: compact JSON tags, well under MLflow's smallest tag limit, read back by benchmark_of.
    for figure in ("psnr", "ssim", "noisy_psnr", "noisy_ssim", "column_f1", "column_error_pm"):
        assert len(tags[f"benchmark.{figure}_by_bin"]) < 600
        assert json.loads(tags[f"benchmark.{figure}_by_bin"]) == pytest.approx(scores["by_bin"][figure], abs=1e-3)
    read = registry.benchmark_of(registry.resolve("low-dose", str(version.version)))
    assert read["by_bin"]["psnr"]["8px@0.25x"] == pytest.approx(scores["by_bin"]["psnr"]["8px@0.25x"], abs=1e-3)
    assert 0 < scores["column_f1"] <= 1 and scores["column_error_pm"] > 0
    metrics = mlflow.get_run(run.info.run_id).data.metrics
    assert metrics["benchmark_psnr"] == pytest.approx(scores["psnr"])
    assert metrics["benchmark_ms_per_mpx"] > 0
    assert metrics["benchmark_psnr/8px_0.25x"] == pytest.approx(scores["by_bin"]["psnr"]["8px@0.25x"])
    assert metrics["benchmark_noisy_psnr/seed:8pm_1x"] == pytest.approx(scores["by_bin"]["noisy_psnr"]["seed:8pm@1x"])
