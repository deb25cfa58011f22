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


# -- specimens: the structure families, defects, the non-periodic case ------------------------------------
from scipy.spatial import cKDTree  # noqa: E402

from stemreg.acquisition.optics import convolve, imaging_transfer  # noqa: E402
from stemreg.acquisition.specimens import draw_specimen, render_columns  # noqa: E402

# Nearest projected column distance of each family (pm): SrTiO3 [001] a/2 (Sr or Ti-O to O), 1H-MoS2 [001]
# a/sqrt(3) (Mo to S2), GaAs [110] a/4 (the Ga-As dumbbell), Au [110] a sqrt(3/8).
NEAREST_PM = {"perovskite": 390.5 / 2, "dichalcogenide": 316.0 / np.sqrt(3), "dumbbell": 565.3 / 4,
              "fcc-metal": 407.8 * np.sqrt(3 / 8)}


@pytest.mark.parametrize("family", sorted(NEAREST_PM))
def test_each_family_has_its_projected_structure(family):
    rng = np.random.default_rng(0)
    specimen = draw_specimen(family, (3000.0, 3000.0), rng)
    distances, _ = cKDTree(specimen.positions_pm).query(specimen.positions_pm, k=2)
    nearest = np.median(distances[:, 1])
    assert nearest == pytest.approx(NEAREST_PM[family], rel=0.03)  # within the +-2 % lattice strain
    # HAADF Z-contrast: the heaviest column is the brightest
    heaviest = {"perovskite": (38,), "dichalcogenide": (42,), "dumbbell": (33,), "fcc-metal": (79,)}[family]
    assert specimen.brightness.max() == pytest.approx(column_brightness(heaviest))


def test_vacancies_remove_columns_and_substitutions_change_their_brightness():
    def draw(**kwargs):
        return draw_specimen("perovskite", (4000.0, 4000.0), np.random.default_rng(1), **kwargs)

    perfect, vacant = draw(), draw(vacancy_fraction=0.3)
    assert len(vacant.positions_pm) / len(perfect.positions_pm) == pytest.approx(0.7, abs=0.05)
    substituted = draw(substitution_fraction=1.0)
    sr, la = column_brightness((38,)), column_brightness((57,))
    assert np.sum(np.isclose(perfect.brightness, sr)) > 0 and not np.any(np.isclose(perfect.brightness, la))
    assert not np.any(np.isclose(substituted.brightness, sr)) and np.sum(np.isclose(substituted.brightness, la)) > 0
    assert len(substituted.positions_pm) == len(perfect.positions_pm)  # a substitution keeps the column


def test_nanoparticle_edge_leaves_part_of_the_field_to_the_amorphous_support():
    covered = []
    for seed in range(8):
        specimen = draw_specimen("nanoparticle", (1500.0, 1500.0), np.random.default_rng(seed))
        assert specimen.background > 0  # the amorphous support is always there
        # fraction of a 10 x 10 grid of field cells that hold a column
        cells = {tuple(c) for c in np.floor(specimen.positions_pm / 150.0).astype(int) if np.all((c >= 0) & (c < 10))}
        covered.append(len(cells) / 100)
    covered = np.array(covered)
    # not periodic over the field: the particle covers some of it, the support the rest
    assert np.all(covered < 0.95) and np.mean(covered) > 0.1
    # the particle's thickness raises the signal between its columns; the support gets no pedestal
    specimen = draw_specimen("nanoparticle", (1500.0, 1500.0), np.random.default_rng(3))
    potential = render_columns(specimen, (188, 188), 8.0)
    row_c, col_c, radius = np.asarray(specimen.particle_pm) / 8.0
    distance = np.hypot(*np.indices(potential.shape) - np.array([row_c, col_c])[:, None, None])
    inside, outside = potential[distance < radius - 10], potential[distance > radius + 20]  # edge: 3 px erf
    assert inside.size and outside.size
    assert np.percentile(inside, 10) > 0.02 * potential.max() and outside.max() < 1e-6 * potential.max()


def test_source_size_widens_the_imaged_columns():
    specimen = draw_specimen("fcc-metal", (1000.0, 1000.0), np.random.default_rng(2))
    potential = render_columns(specimen, (128, 128), 8.0)
    widths = []
    for source_size_pm in (0.0, 15.0, 30.0):
        image = convolve(potential, imaging_transfer((128, 128), 8.0, energy_keV=200.0, convergence_mrad=30.0,
                                                     source_size_pm=source_size_pm))
        peak = np.unravel_index(np.argmax(image[20:-20, 20:-20]), (88, 88))
        row = image[peak[0] + 20, peak[1] + 20 - 12: peak[1] + 20 + 13]
        widths.append(np.sum(row > row.max() / 2))  # pixels above half maximum through the brightest column
    assert widths[0] < widths[1] < widths[2], widths
