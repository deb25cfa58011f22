"""Bright field: ABF images drawn within a condition, columns dark on a bright background, their own noise."""
from __future__ import annotations

import numpy as np
from scipy.ndimage import map_coordinates

from stemreg.acquisition import get_condition
from stemreg.acquisition.detector import IDEAL_DETECTOR
from stemreg.acquisition.dose import detected_electrons_per_unit_signal
from stemreg.acquisition.specimens import SpecimenFamily


def test_low_dose_draws_both_contrasts_and_the_seed_point_only_haadf():
    condition = get_condition("low-dose")
    drawn = [condition.draw_params(np.random.default_rng(s))["contrast"] for s in range(40)]
    assert 0.1 < drawn.count("abf") / len(drawn) < 0.6 and "haadf" in drawn
    seed = condition.seed_point()
    assert all(seed.draw_params(np.random.default_rng(s))["contrast"] == "haadf" for s in range(10))


def test_bright_field_columns_are_dark_on_a_bright_background_with_the_abf_detectors_noise():
    condition = get_condition("low-dose").model_copy(update={
        "bright_field_fraction": 1.0, "specimens": (SpecimenFamily.perovskite, SpecimenFamily.fcc_metal), "pixel_size_pm": 16.0,
        "dose_scale": 1.0, "bias": 0.0, **IDEAL_DETECTOR})
    batch = condition.sample_pairs(3, size_px=96, seed=5)
    for clean, degraded, columns, p in zip(batch.clean, batch.degraded, batch.columns, batch.params):
        assert p["contrast"] == "abf" and p["detector_efficiency"] == condition.bf_detector_efficiency
        at_columns = map_coordinates(clean, columns.T, order=1)
        background = np.percentile(clean, 90)
        assert np.median(clean) > 0.6 and np.median(at_columns) < np.median(clean)
        # the deepest dips reach about 1 - exp(-abf_depth) below the background, and nothing is negative
        depth = 1 - np.percentile(clean, 1) / background
        assert 0.3 * (1 - np.exp(-p["abf_depth"])) < depth < 1.5 * (1 - np.exp(-p["abf_depth"]))
        assert clean.min() > 0
        # shot noise at the bright background: Var = s / lam with the ABF detector's (larger) lam
        lam = detected_electrons_per_unit_signal(p["beam_current_pA"], p["dwell_time_us"], p["detector_efficiency"])
        bright = clean > np.percentile(clean, 70)
        ratio = np.mean((degraded - clean)[bright] ** 2) / np.mean(clean[bright] / lam)
        assert 0.85 < ratio < 1.15


def test_column_scores_find_the_dark_columns_of_a_bright_field_image():
    from stemreg.models.columns import score_columns

    condition = get_condition("low-dose").model_copy(update={
        "bright_field_fraction": 1.0, "specimens": (SpecimenFamily.perovskite,), "pixel_size_pm": 12.0, **IDEAL_DETECTOR})
    batch = condition.sample_pairs(1, size_px=96, seed=2)
    score = score_columns(batch.clean[0], batch.columns[0], pixel_size_pm=12.0, clean=batch.clean[0])
    assert score.f1 > 0.95
