"""Classical denoisers: the variance-stabilising transform is exact, strengths come from validation images,
and every method beats the noisy input on images it was not fitted on."""
from __future__ import annotations

import numpy as np
import pytest

from stemreg.models import psnr_batch
from stemreg.models.classical import (CLASSICAL_METHODS, DEFAULT_GRIDS, NoiseModel, denoise_classical,
                                      estimate_noise_model, fit_classical, fit_noise_model, gat_forward,
                                      gat_inverse, noise_model_from_params)
from stemreg.models.noise_models import unsmear_x

GAIN, READ_STD = 0.05, 0.02  # image units per electron, Gaussian read noise in image units


def _lattice(size_px: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:size_px, 0:size_px].astype(float)
    image = np.full((size_px, size_px), 0.1)
    offset = rng.uniform(0, 8, 2)
    for r in np.arange(-8, size_px + 8, 8.0) + offset[0]:
        for c in np.arange(-8, size_px + 8, 8.0) + offset[1]:
            image += rng.choice([0.5, 1.0]) * np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * 1.4**2))
    return image


def _acquire(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Poisson-Gaussian: GAIN x Poisson(clean / GAIN) + N(0, READ_STD^2), same units as clean."""
    return (GAIN * rng.poisson(clean / GAIN) + rng.normal(0, READ_STD, clean.shape)).astype(np.float32)


def _pairs(n: int, size_px: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    clean = np.stack([_lattice(size_px, rng) for _ in range(n)]).astype(np.float32)
    return np.stack([_acquire(c, rng) for c in clean]), clean


def test_noise_model_is_recovered_from_validation_pairs_and_from_repeats():
    noisy, clean = _pairs(4, 48, seed=1)
    from_clean = fit_noise_model(noisy, clean)
    assert from_clean.gain == pytest.approx(GAIN, rel=0.15)
    rng = np.random.default_rng(2)
    second = np.stack([_acquire(c, rng) for c in clean])
    from_repeats = fit_noise_model(noisy, second, independent_repeat=True)  # no clean image needed
    assert from_repeats.gain == pytest.approx(GAIN, rel=0.15)


def test_anscombe_stabilises_variance_and_its_exact_inverse_is_unbiased_at_low_counts():
    noise = NoiseModel(gain=GAIN, offset_var=READ_STD**2)
    rng = np.random.default_rng(0)
    means_e = np.array([0.5, 2.0, 8.0, 40.0])  # electrons: where the algebraic inverse is badly biased
    samples = GAIN * rng.poisson(means_e[:, None], (4, 100_000)) + rng.normal(0, READ_STD, (4, 100_000))
    transformed = gat_forward(samples, noise)
    assert np.allclose(transformed[1:].std(axis=1), 1.0, atol=0.12)  # unit variance once counts are not tiny
    exact = gat_inverse(transformed.mean(axis=1), noise)
    assert np.allclose(exact, GAIN * means_e, rtol=0.05, atol=0.01 * GAIN)
    d = transformed.mean(axis=1)
    algebraic = ((d * GAIN / 2) ** 2 - 0.375 * GAIN**2 - noise.offset_var) / GAIN
    assert abs(algebraic[0] - GAIN * means_e[0]) > 5 * abs(exact[0] - GAIN * means_e[0])


@pytest.mark.parametrize("method", CLASSICAL_METHODS)
def test_each_method_fitted_on_validation_beats_the_noisy_input_on_other_images(method):
    val_noisy, val_clean = _pairs(2, 48, seed=10)
    test_noisy, test_clean = _pairs(2, 48, seed=20)
    grid = {k: v[::2] for k, v in DEFAULT_GRIDS[method].items()} if method == "bm3d" else None
    fitted = fit_classical(method, val_noisy, val_clean, grid=grid)
    searched = grid or DEFAULT_GRIDS[method]
    (name, values), = searched.items()
    assert fitted.params[name] in values and len(fitted.grid_scores) == len(values)
    assert fitted.val_psnr == max(score for _, score in fitted.grid_scores)
    denoised = fitted(test_noisy)
    assert denoised.shape == test_noisy.shape and denoised.dtype == np.float32
    assert np.mean(psnr_batch(denoised, test_clean)) > np.mean(psnr_batch(test_noisy, test_clean)) + 1.0


def test_single_images_and_bad_names():
    noisy, _ = _pairs(1, 32, seed=3)
    assert denoise_classical(noisy[0], "gaussian", sigma_px=1.0).shape == (32, 32)
    with pytest.raises(ValueError, match="accepted: gaussian, nlm, tv, wavelet, bm3d"):
        denoise_classical(noisy, "median")
    with pytest.raises(ValueError, match="needs a NoiseModel"):
        denoise_classical(noisy, "bm3d", sigma=1.0)


MIXED_DOSE = """\
name: mixed-dose
description: a 16x dose range, as the ranged conditions draw it
image_size_px: 48
beam_current_pA: 50
dwell_time_us: 1.4
bias: 0.2
# the detector's bandwidth, gain, offset and rounding stay drawn (the noise models cover them); line
# jumps, defective pixels and lost lines are no Gaussian noise and are left out here
line_jump: 0.0
impulse_fraction: 0.0
line_glitch_rate: 0.0
"""


def _mixed_dose_pairs(tmp_path, n: int, size_px: int, seed: int):
    from stemreg.acquisition import load_condition

    path = tmp_path / "mixed-dose.yaml"
    path.write_text(MIXED_DOSE)
    return load_condition(str(path)).sample_pairs(n, size_px=size_px, seed=seed)


def test_the_oracle_noise_model_of_each_simulated_image_makes_its_gat_noise_unit_variance(tmp_path):
    batch = _mixed_dose_pairs(tmp_path, 8, 64, seed=3)
    doses = [p["dose_scale"] for p in batch.params]
    assert max(doses) / min(doses) > 6  # the set does span the range
    repeats = batch.repeats(2, seed=4)
    single = fit_noise_model(repeats[:, 0], repeats[:, 1], independent_repeat=True)  # one model for all

    def gat_noise_var(i, model):
        dark = batch.signal[i] <= np.percentile(batch.signal[i], 30)  # the flat, background-dominated part
        # as the filters use it: a detector's low-pass undone, then the model of the white noise
        white = [gat_forward(unsmear_x(r, model.correlation_x), model.white()) for r in repeats[i]]
        diff = white[0] - white[1]
        return float((diff[dark] ** 2).mean() / 2)

    oracle = [gat_noise_var(i, noise_model_from_params(p)) for i, p in enumerate(batch.params)]
    pooled = [gat_noise_var(i, single) for i in range(len(batch))]
    assert np.allclose(oracle, 1.0, atol=0.12)  # unit variance on every image, whatever its dose
    assert max(abs(v - 1) for v in pooled) > 0.6  # one model for a 16x range is wrong on some images


def test_a_noise_model_estimated_from_the_image_alone_predicts_its_noise_level(tmp_path):
    batch = _mixed_dose_pairs(tmp_path, 8, 64, seed=3)
    for image, signal, params in zip(batch.degraded, batch.signal, batch.params):
        oracle, estimate = noise_model_from_params(params), estimate_noise_model(image)
        level = float(signal.mean())
        ratio = (estimate.gain * level + estimate.offset_var) / (oracle.gain * level + oracle.offset_var)
        assert 0.75 < ratio < 1.33


def test_bm3d_with_each_images_noise_model_beats_one_fitted_model_on_a_mixed_dose_set(tmp_path):
    batch = _mixed_dose_pairs(tmp_path, 8, 48, seed=3)
    repeats = batch.repeats(2, seed=4)
    single = fit_noise_model(repeats[:, 0], repeats[:, 1], independent_repeat=True)
    per_image = denoise_classical(batch.degraded, "bm3d", noise=[noise_model_from_params(p) for p in batch.params],
                                  sigma=1.0)
    pooled = denoise_classical(batch.degraded, "bm3d", noise=single, sigma=1.0)
    gain = np.array(psnr_batch(per_image, batch.clean)) - np.array(psnr_batch(pooled, batch.clean))
    # Better on the set as a whole: one model misjudges the noise of most images of a 16x dose range. Per image
    # the sign varies (a pooled model that overestimates the noise smooths more, which a flat field rewards);
    # the mean gain was +1.2 to +2.1 dB at seeds 3, 5 and 7.
    assert gain.mean() > 0.5


def test_noise_models_must_be_one_or_one_per_image():
    noisy, _ = _pairs(2, 32, seed=3)
    model = NoiseModel(gain=GAIN, offset_var=READ_STD**2)
    with pytest.raises(ValueError, match="3 noise models for 2 images"):
        denoise_classical(noisy, "wavelet", noise=[model] * 3, sigma=1.0)
    with pytest.raises(ValueError, match="lack read_noise_e"):
        noise_model_from_params({"beam_current_pA": 50, "dwell_time_us": 1.4, "bias": 0.2,
                                 "detector_efficiency": 0.1})
