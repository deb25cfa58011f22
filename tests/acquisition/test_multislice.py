"""The multislice library: a tiny real one (abTEM, committed, 2 KB) read, tiled and mixed into training.

multislice_tiny/ was built with abTEM 1.0.11 by
``build_library(DIR, (Crystal("SrTiO3-001", "perovskite", (0.8,)),), phonons=1, scan_sampling_pm=40,
potential_sampling_pm=8, min_lateral_nm=0.8)``: one SrTiO3 [001] unit cell, 0.8 nm thick, 10 x 10
probe positions, HAADF and ABF. Building needs abTEM (an optional extra); reading does not.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stemreg.acquisition import get_condition
from stemreg.acquisition.multislice import cell_field, library_targets, load_library
from stemreg.acquisition.stream import FieldPool

TINY = Path(__file__).with_name("multislice_tiny")


def test_the_tiny_library_holds_haadf_and_abf_of_one_cell_with_sr_brightest():
    (cell,) = load_library(TINY)
    assert cell.name == "SrTiO3-001" and cell.family == "perovskite" and cell.haadf.shape == cell.abf.shape
    haadf, abf = cell.haadf[0], cell.abf[0]
    # Sr (Z 38) at the corner outshines Ti-O at the centre in HAADF; both are dips in ABF
    assert haadf[0, 0] > haadf[5, 5] > 10 * np.median(haadf)
    assert abf[0, 0] < abf[5, 5] < np.median(abf)


def test_cell_field_tiles_the_cell_at_any_sampling_and_orientation():
    (cell,) = load_library(TINY)
    haadf = cell_field(cell, contrast="haadf", thickness_index=0, size_px=96, pixel_size_pm=12.0,
                       rng=np.random.default_rng(1))
    abf = cell_field(cell, contrast="abf", thickness_index=0, size_px=96, pixel_size_pm=12.0,
                     rng=np.random.default_rng(1))
    assert haadf.shape == (96, 96)
    # a periodic tiling keeps the cell's mean, and the bright HAADF columns are the dark ABF ones
    assert abs(haadf.mean() / cell.haadf[0].mean() - 1) < 0.1
    assert np.corrcoef(haadf.ravel(), abf.ravel())[0, 1] < -0.5
    # about (96 * 12 / 390.5)^2 = 8.7 unit cells, a Sr and a Ti-O column each (Ti-O at 0.84 of Sr):
    # count the bright maxima
    from scipy.ndimage import maximum_filter

    peaks = (haadf == maximum_filter(haadf, size=9)) & (haadf > 0.6 * haadf.max())
    assert 12 <= peaks.sum() <= 24


@pytest.mark.parametrize("shape", [(10, 10), (21, 29)])
def test_band_limited_upsampling_passes_through_the_cells_samples_for_odd_and_even_scans(shape):
    # abTEM fits a whole number of probe positions into the cell: Au [110] at 20 pm gives 21 x 29,
    # and an odd size once put the zero frequency one bin off (a modulated, striped cell)
    from stemreg.acquisition.multislice import _upsampled

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    cell = 1 + np.cos(2 * np.pi * yy / shape[0]) * np.sin(4 * np.pi * xx / shape[1]) + 0.01 * rng.random(shape)
    big = _upsampled(cell, 4)
    np.testing.assert_allclose(big[::4, ::4], cell, atol=1e-9)


def test_training_mixes_library_fields_with_the_fast_renderers():
    (cell,) = load_library(TINY)
    condition = get_condition("low-dose")
    targets = library_targets([cell], 4, size_px=64, pixel_size_range_pm=(8.0, 16.0), seed=3,
                              bright_field_fraction=0.5)
    assert all(name.startswith("multislice:SrTiO3-001:") for _, _, name in targets)
    pool = FieldPool(condition, n_fields=1, size_px=64, seed=9, refresh_per_batch=0, targets=targets,
                     target_fraction=1.0)
    # an ABF field is counted with the ABF detector's efficiency, a HAADF one with the HAADF detector's
    by_name = {e.source: e.params["detector_efficiency"] for e in pool.targets}
    for name, efficiency in by_name.items():
        expected = condition.bf_detector_efficiency if ":abf:" in name else condition.detector_efficiency
        assert efficiency == expected
    degraded, clean = pool.batch(4, 32)
    library_clean = [e.rendered.clean for e in pool.targets]
    for patch in clean:  # every clean patch is a crop of a library field
        assert any(np.any([np.allclose(patch, f[r:r + 32, c:c + 32]) for r in range(33) for c in range(33)])
                   for f in library_clean)
    assert np.isfinite(degraded).all()


def test_a_missing_library_says_how_to_build_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="stemreg multislice"):
        load_library(tmp_path)
