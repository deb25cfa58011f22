"""`stemreg simulate` output carries each detector effect at the value drawn for it.

Each test writes a small condition YAML, runs `stemreg simulate`, reads raw.npy, degraded.npy,
clean.npy and simulation.json back and measures the effect from the pixels: the fast-scan noise
correlation, the ADU gain and offset, the quantisation, the saturation, the defective pixels, the
line jumps and the lost lines. The low-dose condition has no defocus, blur or scan distortion, so
the noise-free degraded signal is the clean image smeared by the detector's low-pass.
"""
from __future__ import annotations

import json

import numpy as np
import yaml
from click.testing import CliRunner

from stemreg.acquisition.detector import FULL_SCALE_ADU, fast_scan_lowpass
from stemreg.acquisition.dose import detected_electrons_per_unit_signal
from stemreg.models.noise_models import noise_model_from_params
from stemreg.platform.cli import main

BASE = {"name": "detector-test", "specimens": ["perovskite", "fcc-metal"], "pixel_size_pm": 16.0,
        "dose_scale": 1.0, "bias": 0.0, "source_size_pm": 20.0, "vacancy_fraction": 0.0,
        "substitution_fraction": 0.0, "background_fraction": 1.0, "brightness_spread": 0.0}


def simulate(tmp_path, name: str, n: int, size: int, **params):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**BASE, **params}))
    out = tmp_path / name
    result = CliRunner().invoke(main, ["simulate", "--condition", str(path), "--n", str(n), "--size", str(size),
                                       "--seed", "11", "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    sidecar = json.loads((out / "simulation.json").read_text())
    return (np.load(out / "raw.npy").astype(np.float64), np.load(out / "degraded.npy").astype(np.float64),
            np.load(out / "clean.npy").astype(np.float64), [im["params"] for im in sidecar["images"]])


def lam_of(p: dict) -> float:
    return detected_electrons_per_unit_signal(p["beam_current_pA"], p["dwell_time_us"], p["detector_efficiency"])


def lag1(r: np.ndarray, axis: int) -> float:
    a, b = (r[:, :-1], r[:, 1:]) if axis == 1 else (r[:-1], r[1:])
    return float(np.sum(a * b) / np.sqrt(np.sum(a * a) * np.sum(b * b)))


def test_bandwidth_correlates_the_noise_along_x_only_and_the_adc_has_the_drawn_gain_and_offset(tmp_path):
    raw, degraded, clean, params = simulate(
        tmp_path, "adc", 4, 96, bandwidth_px=[0.3, 1.5], gain_adu_per_e=[2.0, 20.0], dark_offset_adu=[1000.0, 30000.0],
        impulse_fraction=0.0, line_jump=0.0, line_glitch_rate=0.0)
    taus = [p["bandwidth_px"] for p in params]
    assert np.ptp(taus) > 0.2, "the bandwidth is drawn per image"
    for r_adu, d, c, p in zip(raw, degraded, clean, params):
        lam, gain, offset = lam_of(p), p["gain_adu_per_e"], p["dark_offset_adu"]
        expected = fast_scan_lowpass(c, p["bandwidth_px"])
        residual = d - expected
        # the noise's lag-1 correlation is the low-pass's pole along x, nothing along y
        assert abs(lag1(residual, 1) - np.exp(-1 / p["bandwidth_px"])) < 0.05, (p["bandwidth_px"], lag1(residual, 1))
        assert abs(lag1(residual, 0)) < 0.04
        # the oracle noise model (BM3D's) follows: the variance and the correlation it predicts are measured
        model = noise_model_from_params(p)
        predicted = model.gain * np.clip(expected, 0, None) + model.offset_var
        assert 0.85 < np.mean(residual**2) / np.mean(predicted) < 1.15
        assert model.correlation_x == np.exp(-1 / p["bandwidth_px"])
        # ADU: whole numbers; a straight line through the expected signal with the drawn gain and offset
        assert np.array_equal(r_adu, np.round(r_adu)) and r_adu.min() >= 0 and r_adu.max() <= FULL_SCALE_ADU
        slope, intercept = np.polyfit(expected.ravel(), r_adu.ravel(), 1)
        assert abs(slope / (gain * lam) - 1) < 0.03
        assert abs(intercept - offset) < 0.02 * gain * lam + 1
        # degraded is the ADU frame in signal units with the known calibration: quantised in steps of 1/(gain lam)
        assert np.allclose(d * gain * lam + offset, r_adu, atol=1e-3 * gain * lam + 0.02)


def test_a_high_offset_and_gain_saturate_the_bright_columns_at_full_scale(tmp_path):
    raw, _, clean, params = simulate(tmp_path, "sat", 2, 64, bandwidth_px=0.0, gain_adu_per_e=100.0,
                                     dark_offset_adu=58000.0, dose_scale=4.0, impulse_fraction=0.0, line_jump=0.0,
                                     line_glitch_rate=0.0)
    for r_adu, c, p in zip(raw, clean, params):
        lam = lam_of(p)
        expected = p["dark_offset_adu"] + p["gain_adu_per_e"] * lam * c
        sigma = p["gain_adu_per_e"] * np.sqrt(lam * np.clip(c, 0, None) + p["read_noise_e"] ** 2)
        above, below = expected > FULL_SCALE_ADU + 5 * sigma, expected < FULL_SCALE_ADU - 5 * sigma
        assert above.sum() > 20 and below.sum() > 20
        assert np.all(r_adu[above] == FULL_SCALE_ADU) and np.all(r_adu[below] < FULL_SCALE_ADU)
        assert r_adu.max() == FULL_SCALE_ADU


def test_defective_pixels_line_jumps_and_lost_lines_at_their_drawn_rates(tmp_path):
    n, size = 4, 128
    raw, degraded, clean, params = simulate(
        tmp_path, "defects", n, size, bandwidth_px=0.0, gain_adu_per_e=10.0, dark_offset_adu=5000.0,
        impulse_fraction=[0.004, 0.012], line_jump=[0.03, 0.06], line_glitch_rate=[0.02, 0.05])
    lost_found, lost_expected, defects_found, defects_expected = 0, 0.0, 0, 0.0
    for r_adu, d, c, p in zip(raw, degraded, clean, params):
        lam = lam_of(p)
        repeated = np.r_[False, np.all(r_adu[1:] == r_adu[:-1], axis=1)]
        dark = np.abs(np.median(d, axis=1)) < 0.05   # a lost line reads the offset alone; every row has signal
        lost = repeated | dark
        lost_found += int(lost.sum())
        lost_expected += p["line_glitch_rate"] * size
        residual = (d - c)[~lost]
        jumps = np.median(residual, axis=1)
        # the rows' levels scatter by the drawn jump (plus a little shot noise in a row's median)
        assert abs(np.std(jumps) / p["line_jump"] - 1) < 0.3, (np.std(jumps), p["line_jump"])
        residual = residual - jumps[:, None]
        sigma = np.sqrt(np.clip(c[~lost], 0, None) / lam + (p["read_noise_e"] / lam) ** 2)
        defects_found += int((np.abs(residual) > 6 * sigma + 0.02).sum())
        # hot pixels and spikes always stand out; a dead pixel only where there was signal to lose
        dead_visible = np.mean(c[~lost] > 6 * sigma + 0.1)
        defects_expected += p["impulse_fraction"] * residual.size * (2 + dead_visible) / 3
    assert abs(lost_found - lost_expected) < 3 * np.sqrt(lost_expected) + 2, (lost_found, lost_expected)
    assert abs(defects_found - defects_expected) < 0.2 * defects_expected, (defects_found, defects_expected)
