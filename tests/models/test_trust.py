"""The trust report judges a denoised image from its input alone (stemreg.models.trust).

The shipped low-dose base denoises real simulated images here: a low-dose image from the condition's
own range must pass, a bright-field image (dark columns on a bright field) must be flagged out of range,
and an output that removed signal (a blur) must be doubtful.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from stemreg.acquisition import get_condition
from stemreg.acquisition.dose import apply_dose_noise
from stemreg.models import pretrained
from stemreg.models.inference import denoise_array
from stemreg.models.trust import TrainedRange, trust_report

NOISE_KEYS = ("beam_current_pA", "dwell_time_us", "bias", "detector_efficiency", "read_noise_e")
RANGE = TrainedRange(pixel_size_pm=(4.0, 64.0), peak_counts=(11.8, 1092.0))


@pytest.fixture(scope="module")
def base():
    if not pretrained.available():
        pytest.skip("the shipped pretrained base is absent")
    return pretrained.load_pretrained()[0]


@pytest.fixture(scope="module")
def scan():
    """One in-range low-dose image (seed point: 8 pm/px, 1x dose) of 128 px."""
    return get_condition("low-dose").seed_point().sample_pairs(1, size_px=128, seed=31)


def test_low_dose_image_from_the_range_passes(base, scan, one_torch_thread):
    noisy = scan.degraded[0]
    report = trust_report(noisy, denoise_array(base, noisy), pixel_size_pm=8.0, trained=RANGE, with_map=True)
    assert report.verdict == "ok", report.reason
    assert 0.8 < report.figures["variance_ratio"] < 1.2
    assert report.map.shape == noisy.shape and report.map.dtype == np.float32
    assert set(report.to_dict()) == {"verdict", "reason", "figures"}


def test_bright_field_image_sent_to_the_low_dose_model_is_out_of_range(base, scan, one_torch_thread):
    signal = (1.2 - scan.signal[0]).astype(np.float32)  # dark columns on a bright field
    noisy = apply_dose_noise(signal, np.random.default_rng(5), **{k: scan.params[0][k] for k in NOISE_KEYS})
    report = trust_report(noisy, denoise_array(base, noisy), pixel_size_pm=8.0, trained=RANGE)
    assert report.verdict == "out of range"
    assert "bright-field" in report.reason


def test_removed_signal_is_doubtful_and_shows_in_the_map(scan):
    noisy = scan.degraded[0]
    blurred = ndimage.gaussian_filter(noisy, 2.5)  # a "denoiser" that takes the columns' sharpness away
    report = trust_report(noisy, blurred, pixel_size_pm=8.0, trained=RANGE, with_map=True)
    assert report.verdict == "doubtful", report.figures
    assert np.abs(report.map).max() > 4


def test_sampling_and_correlated_noise_outside_the_range_are_named(scan):
    noisy, clean = scan.degraded[0], scan.clean[0]
    report = trust_report(noisy, clean, pixel_size_pm=150.0, trained=RANGE)
    assert report.verdict == "out of range" and "sampling 150 pm/px" in report.reason
    rng = np.random.default_rng(2)
    white = rng.normal(0, 0.05, noisy.shape)
    correlated = ndimage.convolve1d(white, [0.5, 0.5, 0.5], axis=1)  # a detector's bandwidth along x
    report = trust_report(clean + correlated, clean, trained=TrainedRange())
    assert report.verdict == "out of range" and "correlated along the scan" in report.reason


def test_bad_inputs_are_refused_in_one_line():
    with pytest.raises(ValueError, match="same|shape"):
        trust_report(np.zeros((32, 32)), np.zeros((32, 16)))
    with pytest.raises(ValueError, match="16 x 16"):
        trust_report(np.zeros((8, 8)), np.zeros((8, 8)))


@pytest.mark.parametrize("radius", [1, 2])
def test_local_extrema_at_candidate_pixels_equal_the_filters_over_the_whole_image(radius):
    from stemreg.models.trust_stats import _window_extreme

    image = np.random.default_rng(radius).integers(0, 5, (13, 17)).astype(np.float64)  # ties on purpose
    rows, cols = np.nonzero(np.ones_like(image, bool))  # every pixel, the borders included
    for pick, whole in ((np.maximum, ndimage.maximum_filter), (np.minimum, ndimage.minimum_filter)):
        np.testing.assert_array_equal(_window_extreme(image, rows, cols, radius, pick),
                                      whole(image, size=2 * radius + 1)[rows, cols])
