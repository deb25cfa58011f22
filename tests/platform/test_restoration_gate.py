"""Restoration conditions are promoted on the atom columns as well as PSNR (a real registry store)."""
from __future__ import annotations

from pathlib import Path

import pytest

from stemreg.acquisition import get_condition
from stemreg.models.binned import mean_over_bins
from stemreg.platform import registry
from stemreg.platform.registry import benchmark
from tiny_models import tiny_model_folder

CONDITION = "blur"
BINS = [b.name for b in get_condition(CONDITION).benchmark_bins()]


def _register(tmp_path: Path, psnr: float, f1_by_bin: dict[str, float], error_pm: float = 10.0) -> str:
    """A real (tiny) model registered with crafted benchmark figures, written by the real tag writer."""
    source = tiny_model_folder(tmp_path / f"crafted-{len(list(tmp_path.glob('crafted-*')))}")
    psnr_by_bin = {b: psnr for b in BINS}
    errors = {b: error_pm for b in BINS}
    scores = {"psnr": psnr, "noisy_psnr": 15.0, "column_f1": mean_over_bins(f1_by_bin),
              "column_error_pm": error_pm, "id": get_condition(CONDITION).benchmark_id(),
              "by_bin": {"psnr": psnr_by_bin, "noisy_psnr": {b: 15.0 for b in BINS}, "column_f1": f1_by_bin,
                         "column_error_pm": errors}}
    version, _ = registry.register_version(str(source), CONDITION, tags=benchmark.version_tags(scores))
    return str(version.version)


def _champion() -> str:
    return str(registry.resolve(CONDITION, "champion").version)


def test_a_restoration_that_wins_psnr_by_smoothing_columns_away_is_refused(mlflow_store, tmp_path):
    v1 = _register(tmp_path, 25.0, {b: 0.80 for b in BINS})
    smoother = _register(tmp_path, 26.0, {b: 0.80 for b in BINS} | {BINS[0]: 0.55, BINS[1]: 0.60})
    with pytest.raises(registry.PromotionRefused) as refused:
        registry.promote(CONDITION, version=smoother)
    message = str(refused.value)
    assert "column F1" in message and BINS[0] in message and "0.550 vs 0.800" in message, message
    assert _champion() == v1
    sharper = _register(tmp_path, 25.5, {b: 0.82 for b in BINS})
    assert registry.promote(CONDITION, version=sharper).to_version == sharper
    assert _champion() == sharper
    blurred_positions = _register(tmp_path, 26.0, {b: 0.82 for b in BINS}, error_pm=14.0)
    with pytest.raises(registry.PromotionRefused, match=r"position error .* 14\.0 pm exceeds"):
        registry.promote(CONDITION, version=blurred_positions)
