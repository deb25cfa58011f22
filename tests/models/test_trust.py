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


def _fit_variance_by_masks(detail, level, n_bins=12):
    """The noise fit as first written (a boolean mask per quantile bin): the reference for the fast one."""
    step = max(1, detail.size // 65536)
    detail, level = detail.ravel()[::step], level.ravel()[::step]
    edges = np.unique(np.quantile(level, np.linspace(0, 1, n_bins + 1)))
    which = np.clip(np.searchsorted(edges, level, side="right") - 1, 0, max(len(edges) - 2, 0))
    centres, variances, counts = [], [], []
    for b in range(max(len(edges) - 1, 1)):
        d = detail[which == b]
        if d.size >= 32:
            centres.append(level[which == b].mean())
            variances.append((1.4826 * np.median(np.abs(d - np.median(d)))) ** 2)
            counts.append(d.size)
    gain, offset = np.polyfit(centres, variances, 1, w=np.sqrt(np.asarray(counts, float)))
    gain = max(float(gain), 0.0)
    low = float(np.min(centres))
    if offset + gain * low <= 0:
        offset = max(float(np.min(variances)), 1e-20) - gain * low
    return gain, float(offset)


def test_the_fast_statistics_give_the_same_numbers_as_their_definitions(scan):
    """The trust report's cheaper paths (selection-network median, one sort for the noise fit's bins,
    the spectral boxes' medians at once) give the very numbers of the plain definitions, ties and
    borders included, so every verdict stays what it was."""
    from stemreg.models import trust_stats as ts

    ring = np.ones((3, 3), bool)
    ring[1, 1] = False
    rng = np.random.default_rng(4)
    noisy, clean = scan.degraded[0].astype(np.float64), scan.clean[0].astype(np.float64)
    images = [noisy, clean, np.round(noisy * 3), rng.integers(0, 4, (17, 23)).astype(np.float64)]
    for image in images:  # the upper of the middle two of 8, borders mirrored: scipy's median filter
        np.testing.assert_array_equal(ts.ring_median(image),
                                      ndimage.median_filter(image, footprint=ring, mode="reflect"))
    detail = ts._diff4(noisy, 0)
    for level in (clean[2:-2], np.round(clean[2:-2] * 4)):  # the second with ties across bin edges
        assert ts._fit_variance(detail, level) == _fit_variance_by_masks(detail, level)
    for residual in (noisy - clean, noisy - ndimage.gaussian_filter(noisy, 2)):
        spectrum = ts._power(residual)
        peaks = [(64, 70), (3, 100), (125, 66), (60, 127), (0, 64)]  # inside, and cut by each border
        boxes = []
        for py, px in peaks:
            box = spectrum[max(py - 5, 0):py + 6, max(px - 5, 0):px + 6].copy()
            y0, x0 = max(py - 5, 0), max(px - 5, 0)
            box[py - 1 - y0:py + 2 - y0, px - 1 - x0:px + 2 - x0] = np.nan
            boxes.append(float(np.nanmedian(box)))
        assert ts._box_medians(spectrum, peaks) == boxes
