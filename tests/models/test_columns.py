"""Atom-column metrics: a perfect prediction scores F1 1.0 and 0 pm, a shifted or noisy one scores worse."""
from __future__ import annotations

import numpy as np
import pytest

from stemreg.models.columns import (column_spacing_px, detect_columns, score_columns, score_detections,
                                      visible_columns)

PIXEL_PM = 20.0


def _columns(size_px: int = 64, spacing_px: float = 8.0, seed: int = 0) -> np.ndarray:
    """A square lattice with sub-pixel offsets, so detection has to be sub-pixel to score 0 pm."""
    rng = np.random.default_rng(seed)
    offset = rng.uniform(2.0, spacing_px - 2.0, 2)
    rows, cols = np.meshgrid(np.arange(offset[0], size_px, spacing_px), np.arange(offset[1], size_px, spacing_px),
                             indexing="ij")
    return np.stack([rows.ravel(), cols.ravel()], axis=1)


def _render(columns: np.ndarray, size_px: int = 64, sigma_px: float = 1.3,
            brightness: np.ndarray | None = None) -> np.ndarray:
    yy, xx = np.mgrid[0:size_px, 0:size_px].astype(float)
    image = np.full((size_px, size_px), 0.02)
    weights = np.ones(len(columns)) if brightness is None else brightness
    for (r, c), b in zip(columns, weights):
        image += b * np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * sigma_px**2))
    return image.astype(np.float32)


def test_perfect_detections_score_one_and_zero_pm():
    true = _columns()
    score = score_detections(true.copy(), true, image_shape=(64, 64), pixel_size_pm=PIXEL_PM)
    assert score.f1 == 1.0 and score.precision == 1.0 and score.recall == 1.0
    assert score.position_error_pm == 0.0
    assert score.n_matched == score.n_true > 40


def test_shifted_detections_score_worse_and_far_shifts_are_not_matched():
    true = _columns()
    slightly = score_detections(true + [0.0, 1.0], true, image_shape=(64, 64), pixel_size_pm=PIXEL_PM)
    assert slightly.f1 >= 0.9 and slightly.position_error_pm == pytest.approx(PIXEL_PM, rel=1e-6)
    far = score_detections(true + [0.0, 4.0], true, image_shape=(64, 64), pixel_size_pm=PIXEL_PM)  # half a spacing
    assert far.f1 < 0.2


def test_a_perfect_image_is_detected_exactly_and_a_shifted_image_is_not():
    true = _columns(seed=1)
    perfect = score_columns(_render(true), true, pixel_size_pm=PIXEL_PM)
    assert perfect.f1 == 1.0
    assert perfect.position_error_pm < 0.03 * PIXEL_PM  # sub-pixel centroids: well under a picometre here
    shifted = score_columns(_render(true + [1.5, 0.0]), true, pixel_size_pm=PIXEL_PM)
    assert shifted.position_error_pm > 1.2 * PIXEL_PM
    assert shifted.position_error_pm > 20 * perfect.position_error_pm


def test_noise_and_missing_columns_lower_the_score():
    true = _columns(seed=2)
    rng = np.random.default_rng(0)
    clean = _render(true)
    noisy = (rng.poisson(clean * 2.0) / 2.0).astype(np.float32)
    clean_score = score_columns(clean, true, pixel_size_pm=PIXEL_PM)
    noisy_score = score_columns(noisy, true, pixel_size_pm=PIXEL_PM)
    assert noisy_score.f1 < clean_score.f1 == 1.0
    assert noisy_score.position_error_pm > clean_score.position_error_pm
    missing = _render(true[::2])  # half the columns vacant
    assert score_columns(missing, true, pixel_size_pm=PIXEL_PM).recall < 0.6


def test_columns_too_dim_to_see_in_the_clean_target_do_not_count():
    true = _columns(seed=3)
    brightness = np.where(np.arange(len(true)) % 2 == 0, 1.0, 0.02)  # oxygen next to strontium, say
    clean = _render(true, brightness=brightness)
    visible = visible_columns(true, clean)
    assert len(visible) == (brightness == 1.0).sum()
    assert score_columns(clean, true, pixel_size_pm=PIXEL_PM, clean=clean).f1 == 1.0
    assert score_columns(clean, true, pixel_size_pm=PIXEL_PM).recall < 0.6  # against all columns


def test_simulated_low_dose_clean_scores_near_one_and_the_noisy_input_lower():
    from stemreg.acquisition import get_condition

    condition = get_condition("low-dose").seed_point()  # 8 pm/px, the aberration-corrected probe
    batch = condition.sample_pairs(3, seed=11)
    on_clean, on_noisy = [], []
    for degraded, clean, columns in zip(batch.degraded, batch.clean, batch.columns):
        on_clean.append(score_columns(clean, columns, pixel_size_pm=batch.pixel_size_pm, clean=clean))
        on_noisy.append(score_columns(degraded, columns, pixel_size_pm=batch.pixel_size_pm, clean=clean))
    assert np.mean([s.f1 for s in on_clean]) >= 0.9
    assert np.mean([s.f1 for s in on_noisy]) < np.mean([s.f1 for s in on_clean])
    assert np.mean([s.position_error_pm for s in on_noisy]) > np.mean([s.position_error_pm for s in on_clean])


def test_spacing_and_bad_input():
    assert column_spacing_px(_columns(spacing_px=8.0)) == pytest.approx(8.0)
    assert len(detect_columns(np.zeros((32, 32)), spacing_px=8.0)) == 0
    with pytest.raises(ValueError, match=r"one \(H, W\) image"):
        score_columns(np.zeros((2, 32, 32)), _columns(), pixel_size_pm=PIXEL_PM)
