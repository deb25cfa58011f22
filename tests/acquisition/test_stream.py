"""The training stream: clean fields rendered once, noise, dose and scan drawn afresh for every patch."""
from __future__ import annotations

import numpy as np
import pytest

from stemreg.acquisition.detector import IDEAL_DETECTOR
from stemreg.acquisition import get_condition
from stemreg.acquisition.stream import FieldPool, low_dose_draw


def test_two_steps_never_see_the_same_noise_draw():
    cond = get_condition("low-dose")
    pool = FieldPool(cond, n_fields=1, size_px=48, seed=3, refresh_per_batch=0)
    first_degraded, first_clean = pool.batch(1, 48)
    second_degraded, second_clean = pool.batch(1, 48)
    # one field, cropped whole: the same clean target both times ...
    np.testing.assert_array_equal(first_clean, second_clean)
    # ... but a different acquisition of it, in every pixel's noise
    assert not np.array_equal(first_degraded, second_degraded)
    assert np.mean(first_degraded != second_degraded) > 0.9


def test_doses_and_samplings_span_the_condition_range():
    cond = get_condition("low-dose")
    pool = FieldPool(cond, n_fields=24, size_px=64, seed=4, refresh_per_batch=0)
    sizes = [e.params["pixel_size_pm"] for e in pool.entries]
    low, high = cond.pixel_size_range_pm()
    assert all(low <= s <= high for s in sizes)
    # log-uniform: about as many fields below the geometric mid-point as above
    mid = np.sqrt(low * high)
    assert 6 <= sum(s < mid for s in sizes) <= 18
    # the noise level follows the dose drawn for each patch: the residual's spread varies by more than 2x
    spreads = []
    for _ in range(12):
        degraded, clean = pool.batch(1, 64)
        spreads.append(float(np.std(degraded - clean)))
    assert max(spreads) / min(spreads) > 2.0


def test_same_seed_same_stream_and_benchmark_seed_refused():
    cond = get_condition("low-dose")
    a = FieldPool(cond, n_fields=2, size_px=48, seed=5).batch(2, 32)
    b = FieldPool(cond, n_fields=2, size_px=48, seed=5).batch(2, 32)
    np.testing.assert_array_equal(a[0], b[0])
    with pytest.raises(ValueError, match="benchmark seed"):
        FieldPool(cond, n_fields=1, size_px=48, seed=cond.benchmark_seed)


def test_hysteresis_is_drawn_per_patch_at_the_frame_line_starts():
    cond = get_condition("hysteresis").model_copy(update={"dose_scale": 1e3, "jitter_px": 0.0, **IDEAL_DETECTOR})
    pool = FieldPool(cond, n_fields=1, size_px=64, seed=6, refresh_per_batch=0)
    degraded, clean = pool.batch(1, 64)
    error = np.abs(degraded[0] - clean[0])
    # the distortion decays along each line: the first columns are displaced, the last are not
    assert error[:, :4].mean() > 3 * error[:, -16:].mean()


def test_lab_targets_mix_in_at_the_stated_fraction():
    cond = get_condition("low-dose")
    lab = np.full((80, 80), 7.0) + np.arange(80)[None, :]  # a ramp: easy to tell from simulated fields
    pool = FieldPool(cond, n_fields=2, size_px=64, seed=8, targets=[(lab, 10.0, "ramp.tif")], target_fraction=1.0)
    assert pool.target_names == ["ramp.tif"]
    _, clean = pool.batch(4, 32)
    # every patch came from the (normalised) ramp: rows are identical, columns increase
    assert np.allclose(np.diff(clean, axis=1), np.diff(clean, axis=1)[:, :1, :1], atol=1e-4)
    with pytest.raises(ValueError, match="needs targets"):
        FieldPool(cond, n_fields=1, size_px=48, seed=9, target_fraction=0.5)


def test_a_fork_draws_the_same_stream_and_leaves_its_pool_alone():
    cond = get_condition("low-dose")
    pool = FieldPool(cond, n_fields=2, size_px=48, seed=10)  # one field re-rendered per batch
    first, second = pool.fork(), pool.fork()
    for _ in range(3):  # past the re-rendering of fields
        a, b = first.batch(2, 32), second.batch(2, 32)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    # the pool itself has not moved: it still draws what a fresh fork draws
    fresh = FieldPool(cond, n_fields=2, size_px=48, seed=10)
    np.testing.assert_array_equal(pool.batch(2, 32)[0], fresh.batch(2, 32)[0])


def test_perfect_fields_have_no_defects_nor_background_and_the_default_stream_is_unchanged():
    cond = get_condition("low-dose")
    pool = FieldPool(cond, n_fields=6, size_px=48, seed=6, refresh_per_batch=0, perfect_fraction=1.0)
    for entry in pool.entries:
        assert entry.params["vacancy_fraction"] == entry.params["substitution_fraction"] == 0.0
        assert entry.params["background_fraction"] == 0.0
    # the condition draws defects and background; perfect_fraction 0 is the stream without the option
    plain = FieldPool(cond, n_fields=2, size_px=48, seed=6, refresh_per_batch=0)
    same = FieldPool(cond, n_fields=2, size_px=48, seed=6, refresh_per_batch=0, perfect_fraction=0.0)
    assert plain.entries[0].params["vacancy_fraction"] > 0
    assert np.array_equal(plain.batch(2, 32)[0], same.batch(2, 32)[0])
    with pytest.raises(ValueError, match="perfect_fraction"):
        FieldPool(cond, n_fields=1, size_px=48, seed=6, perfect_fraction=1.5)


def test_low_dose_patches_come_from_the_bottom_quarter_of_the_dose_range():
    cond = get_condition("low-dose")  # dose_scale 0.25 to 4: the bottom quarter in log is 0.25 to 0.5
    low, high = cond.dose_scale
    top = low * (high / low) ** 0.25
    rng = np.random.default_rng(0)
    doses = np.array([low_dose_draw(cond, rng) for _ in range(500)])
    assert doses.min() >= low and doses.max() <= top and doses.max() > 0.9 * top
    # the option at 0 leaves the stream as it was
    plain = FieldPool(cond, n_fields=2, size_px=48, seed=8, refresh_per_batch=0)
    same = FieldPool(cond, n_fields=2, size_px=48, seed=8, refresh_per_batch=0, low_dose_fraction=0.0)
    assert np.array_equal(plain.batch(2, 32)[0], same.batch(2, 32)[0])
    # at 1 every patch is dosed from the bottom: with an ideal detector and HAADF only, degraded - clean is
    # the dose noise, whose variance goes as 1 / dose (geometric means 0.35x against 1x: ~2.8x the variance)
    quiet = cond.model_copy(update={**IDEAL_DETECTOR, "bright_field_fraction": 0.0})
    noisy, clean = FieldPool(quiet, n_fields=4, size_px=48, seed=8, refresh_per_batch=0,
                             low_dose_fraction=1.0).batch(24, 32)
    noisy_all, clean_all = FieldPool(quiet, n_fields=4, size_px=48, seed=8, refresh_per_batch=0).batch(24, 32)
    assert np.median(np.var(noisy - clean, axis=(1, 2))) > 2 * np.median(np.var(noisy_all - clean_all, axis=(1, 2)))
