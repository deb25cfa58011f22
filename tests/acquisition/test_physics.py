"""The degradations obey the physics they claim: dose, bias, probe optics, scan distortions."""
from __future__ import annotations

import numpy as np
import pytest

from stemreg.acquisition import Condition, get_condition
from stemreg.acquisition.dose import apply_dose_noise, detected_electrons_per_unit_signal, electrons_per_pixel
from stemreg.acquisition.optics import electron_wavelength_pm, probe_d50_pm, probe_fwhm_pm, probe_intensity
from stemreg.acquisition.scan import apply_scan_distortion, scan_displacement_px
from stemreg.acquisition.specimens import LATTICES, SpecimenFamily, column_brightness


def test_electrons_per_pixel_at_the_seed_point():
    # 50 pA x 1.4 us / e = 437 electrons
    assert electrons_per_pixel(50.0, 1.4) == pytest.approx(50e-12 * 1.4e-6 / 1.602176634e-19)
    assert round(electrons_per_pixel(50.0, 1.4)) == 437


def test_relativistic_wavelength():
    assert electron_wavelength_pm(200.0) == pytest.approx(2.5079, rel=1e-3)
    assert electron_wavelength_pm(300.0) == pytest.approx(1.9687, rel=1e-3)


@pytest.mark.parametrize("current_pA", [20.0, 80.0])
def test_noise_variance_scales_inversely_with_dose(current_pA):
    rng = np.random.default_rng(0)
    signal = np.full((200, 200), 0.6)
    kwargs = dict(dwell_time_us=1.4, bias=0.0, read_noise_e=0.0)
    var = apply_dose_noise(signal, rng, beam_current_pA=current_pA, **kwargs).var()
    lam = detected_electrons_per_unit_signal(current_pA, 1.4)
    assert var == pytest.approx(0.6 / lam, rel=0.05)  # Poisson: Var[counts / lam] = s / lam
    var_double = apply_dose_noise(signal, rng, beam_current_pA=2 * current_pA, **kwargs).var()
    assert var / var_double == pytest.approx(2.0, rel=0.07)


def test_bias_strengthens_noise_in_dark_regions_and_keeps_the_mean():
    rng = np.random.default_rng(1)
    dark, bright = np.zeros((200, 200)), np.ones((200, 200))
    kwargs = dict(beam_current_pA=50.0, dwell_time_us=1.4, read_noise_e=0.0)
    lam = detected_electrons_per_unit_signal(50.0, 1.4)
    dark_noisy = apply_dose_noise(dark, rng, bias=0.2, **kwargs)
    assert dark_noisy.var() == pytest.approx(0.2 / lam, rel=0.07)  # Var = (s + bias (1 - s)) / lam
    assert apply_dose_noise(dark, rng, bias=0.0, **kwargs).var() == 0.0
    assert abs(dark_noisy.mean()) < 0.01
    # where the signal is bright the bias adds nothing
    assert apply_dose_noise(bright, rng, bias=0.2, **kwargs).var() == pytest.approx(1.0 / lam, rel=0.07)


def test_in_focus_probe_matches_the_diffraction_limit():
    for convergence_mrad in (20.0, 30.0):
        probe = probe_intensity((512, 512), 2.0, energy_keV=200.0, convergence_mrad=convergence_mrad)
        airy_fwhm_pm = 0.5145 * electron_wavelength_pm(200.0) / (convergence_mrad * 1e-3)
        assert probe_fwhm_pm(probe, 2.0) == pytest.approx(airy_fwhm_pm, rel=0.05)
        assert probe.sum() == pytest.approx(1.0)


def test_probe_widens_as_defocus_grows():
    widths = [probe_d50_pm(probe_intensity((512, 512), 5.0, energy_keV=200.0, convergence_mrad=25.0,
                                           defocus_nm=df), 5.0) for df in (0.0, 5.0, 10.0, 20.0, 30.0)]
    assert all(a < b for a, b in zip(widths, widths[1:])), widths
    # geometric optics: a defocused cone of half-angle alpha is about 2 alpha df wide
    assert widths[-1] == pytest.approx(2 * 0.025 * 30e3 / np.sqrt(2), rel=0.35)


def test_spherical_aberration_widens_the_probe():
    sharp = probe_intensity((256, 256), 5.0, energy_keV=200.0, convergence_mrad=25.0)
    aberrated = probe_intensity((256, 256), 5.0, energy_keV=200.0, convergence_mrad=25.0, cs_um=1000.0)
    assert probe_d50_pm(aberrated, 5.0) > 1.5 * probe_d50_pm(sharp, 5.0)


def test_defocus_condition_blurs_more_the_more_defocus():
    base = get_condition("defocus")
    detail = {}
    for df in (5.0, 30.0):
        cond = Condition(**{**base.model_dump(), "defocus_nm": df, "specimens": ["fcc-metal"]})
        batch = cond.sample_pairs(2, size_px=64, seed=2)
        detail[df] = np.mean([np.abs(np.diff(s, axis=1)).mean() / np.abs(np.diff(c, axis=1)).mean()
                              for s, c in zip(batch.signal, batch.clean)])
    assert detail[30.0] < detail[5.0] < 1.0


def test_z_contrast():
    assert column_brightness((79,)) / column_brightness((42,)) == pytest.approx((79 / 42) ** 1.7)
    sto = LATTICES[SpecimenFamily.perovskite]
    sr, ti_o = (column_brightness(s.atomic_numbers) for s in sto.sites[:2])
    assert sr > ti_o > column_brightness((8,))


def test_hysteresis_displaces_line_starts_by_the_set_amount():
    # On a ramp image f(r, c) = c the scan reads back exactly where the beam was.
    amplitude_px, decay_px = 6.0, 5.0
    dy, dx = scan_displacement_px((32, 64), hysteresis_amplitude_px=amplitude_px, hysteresis_decay_px=decay_px)
    ramp = np.tile(np.arange(96, dtype=float), (64, 1))
    read = apply_scan_distortion(ramp, dy, dx, origin_px=(16, 16)) - 16
    expected = np.arange(64) + amplitude_px * np.exp(-np.arange(64) / decay_px)
    np.testing.assert_allclose(read, np.broadcast_to(expected, (32, 64)), atol=1e-6)
    assert read[:, 0] == pytest.approx(amplitude_px)


def test_hysteresis_condition_shifts_the_first_pixels_of_every_line():
    base = get_condition("hysteresis")
    cond = Condition(**{**base.model_dump(), "hysteresis_amplitude_px": 5.0, "hysteresis_decay_px": 1.0,
                        "jitter_px": 0.0})
    batch = cond.sample_pairs(2, size_px=64, seed=9)
    for signal, clean in zip(batch.signal, batch.clean):
        # pixel 0 of each line sees the specimen 5 px further along; far from the line start, nothing moves
        np.testing.assert_allclose(signal[:, 0], clean[:, 5], atol=1e-3 * clean.max())
        np.testing.assert_allclose(signal[:, 20:], clean[:, 20:], atol=1e-3 * clean.max())


def test_jitter_and_drift_shift_rows():
    rng = np.random.default_rng(0)
    dy, dx = scan_displacement_px((64, 64), rng, jitter_px=1.0)
    assert np.all(dy == 0) and np.allclose(dx, dx[:, :1])  # one offset per line
    assert 0.6 < dx[:, 0].std() < 1.4
    dy, dx = scan_displacement_px((64, 64), rng, drift_px=10.0)
    total = np.hypot(dy[-1, -1], dx[-1, -1])
    assert total == pytest.approx(10.0, rel=0.01) and np.hypot(dy[0, 0], dx[0, 0]) == 0.0
