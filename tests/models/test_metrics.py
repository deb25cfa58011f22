"""PSNR and SSIM: one definition, data range from the clean target."""
from __future__ import annotations

import numpy as np
import pytest

from stemreg.models import psnr, psnr_batch, ssim, ssim_batch


@pytest.fixture
def pair():
    rng = np.random.default_rng(3)
    target = rng.uniform(2.0, 5.0, (32, 40)).astype(np.float32)
    return target + rng.normal(0, 0.1, target.shape).astype(np.float32), target


def test_psnr_uses_the_targets_max_minus_min_as_data_range(pair):
    pred, target = pair
    span = float(target.max() - target.min())
    mse = float(np.mean((pred.astype(np.float64) - target) ** 2))
    assert psnr(pred, target) == pytest.approx(10 * np.log10(span ** 2 / mse), rel=1e-6)


def test_metrics_do_not_depend_on_the_images_units_or_offset(pair):
    pred, target = pair
    assert psnr(pred * 7 + 100, target * 7 + 100) == pytest.approx(psnr(pred, target), rel=1e-5)
    assert ssim(pred * 7 + 100, target * 7 + 100) == pytest.approx(ssim(pred, target), rel=1e-4)


def test_a_better_prediction_scores_higher(pair):
    pred, target = pair
    better = target + (pred - target) * 0.3
    assert psnr(better, target) > psnr(pred, target) + 5
    assert ssim(better, target) > ssim(pred, target)
    assert ssim(target, target) == pytest.approx(1.0)


def test_batch_variants_give_one_figure_per_image(pair):
    pred, target = pair
    stack_pred, stack_target = np.stack([pred, target]), np.stack([target, target])
    scores = psnr_batch(stack_pred, stack_target)
    assert scores.shape == (2,) and scores[0] == pytest.approx(psnr(pred, target)) and np.isinf(scores[1])
    assert ssim_batch(stack_pred, stack_target).shape == (2,)


def test_mismatched_shapes_are_refused(pair):
    pred, target = pair
    with pytest.raises(ValueError, match="shape"):
        psnr(pred[:-1], target)
    with pytest.raises(ValueError, match="psnr_batch"):
        psnr(np.stack([pred]), np.stack([target]))
