"""Conditions: named, versioned, hashed specs from which pairs are drawn reproducibly."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import maximum_filter

from stemreg.acquisition import (Condition, PairBatch, UnknownConditionError, get_condition, list_conditions,
                                 load_condition)

BUILT_IN = {"low-dose", "defocus", "blur", "hysteresis"}


def test_the_four_built_in_conditions_are_listed_and_distinct():
    conditions = list_conditions()
    assert BUILT_IN <= {c.name for c in conditions}
    assert len({c.hash() for c in conditions}) == len(conditions)
    assert len({c.benchmark_seed for c in conditions}) == len(conditions)


def test_unknown_condition_names_the_known_ones():
    with pytest.raises(UnknownConditionError) as info:
        get_condition("no-such-condition")
    for name in BUILT_IN:
        assert name in str(info.value)


def test_low_dose_sits_at_the_seed_point_and_the_others_keep_its_dose():
    for cond in list_conditions():
        assert (cond.beam_current_pA, cond.dwell_time_us, cond.bias) == (50.0, 1.4, 0.2)
    low, high = get_condition("defocus").defocus_nm  # the others vary their own parameter over a range
    assert 0 < low < high


def test_hash_is_stable_and_tracks_parameters_and_version():
    cond = get_condition("defocus")
    assert cond.hash() == get_condition("defocus").hash()
    assert len(cond.hash()) == 12 and int(cond.hash(), 16) >= 0
    changed = Condition(**{**cond.model_dump(), "defocus_nm": (cond.defocus_nm[0], cond.defocus_nm[1] + 1)})
    bumped = Condition(**{**cond.model_dump(), "version": cond.version + 1})
    reworded = Condition(**{**cond.model_dump(), "description": "other words"})
    assert changed.hash() != cond.hash() and bumped.hash() != cond.hash()
    assert reworded.hash() == cond.hash()


def test_flat_params_are_strings_for_mlflow():
    cond = get_condition("defocus")
    flat = cond.flat_params()
    assert flat["condition.name"] == "defocus"
    assert flat["condition.hash"] == cond.hash()
    assert flat["condition.defocus_nm"] == f"[{cond.defocus_nm[0]}, {cond.defocus_nm[1]}]"
    assert flat["condition.beam_current_pA"] == "50.0"
    assert all(isinstance(v, str) for v in flat.values())


def test_same_seed_same_pairs_and_image_i_does_not_depend_on_n():
    cond = get_condition("hysteresis")
    a = cond.sample_pairs(3, size_px=48, seed=11)
    b = cond.sample_pairs(3, size_px=48, seed=11)
    c = cond.sample_pairs(5, size_px=48, seed=11)
    d = cond.sample_pairs(3, size_px=48, seed=12)
    assert isinstance(a, PairBatch) and len(a) == 3
    assert a.degraded.shape == a.clean.shape == (3, 48, 48)
    assert a.degraded.dtype == a.clean.dtype == np.float32
    np.testing.assert_array_equal(a.degraded, b.degraded)
    np.testing.assert_array_equal(a.degraded, c.degraded[:3])
    assert a.params == c.params[:3]
    assert not np.array_equal(a.degraded, d.degraded)
    assert a.params[0]["hysteresis_amplitude_px"] != d.params[0]["hysteresis_amplitude_px"]


def test_ranges_are_drawn_within_their_bounds():
    cond = get_condition("blur")
    batch = cond.sample_pairs(6, size_px=32, seed=3)
    drawn = [p["blur_sigma_px"] for p in batch.params]
    low, high = cond.blur_sigma_px
    assert all(low <= v <= high for v in drawn) and len(set(drawn)) == 6


def test_clean_and_degraded_share_units_around_zero_to_one():
    batch = get_condition("low-dose").sample_pairs(8, size_px=64, seed=5)
    for degraded, clean in zip(batch.degraded, batch.clean):
        assert 0.9 <= np.percentile(clean, 99.5) <= 1.1
        assert clean.min() >= -1e-3
        # unbiased noise: the degraded image has the clean image's mean
        assert abs(degraded.mean() - clean.mean()) < 0.05 * clean.mean() + 0.02


def test_benchmark_set_is_frozen_and_its_seed_is_refused_elsewhere():
    cond = get_condition("low-dose")
    first, second = cond.benchmark_set(), cond.benchmark_set()
    assert len(first) == cond.benchmark_size
    np.testing.assert_array_equal(first.degraded, second.degraded)
    first.degraded[0] += 1.0  # callers get a copy: the frozen set is not changed by them
    np.testing.assert_array_equal(cond.benchmark_set().degraded, second.degraded)
    # the condition's point, scaled by each bin's dose
    assert all(p["beam_current_pA"] == pytest.approx(50.0 * p["dose_scale"]) and p["dwell_time_us"] == 1.4
               and p["bias"] == 0.2 for p in first.params)
    assert sorted({p["dose_scale"] for p in first.params}) == [0.25, 1.0, 4.0]
    with pytest.raises(ValueError, match="benchmark seed"):
        cond.sample_pairs(2, seed=cond.benchmark_seed)


def test_columns_come_with_every_simulated_image_and_lie_on_bright_spots():
    batch = get_condition("low-dose").seed_point().sample_pairs(6, size_px=64, seed=8)
    found = []
    for clean, columns, params in zip(batch.clean, batch.columns, batch.params):
        assert columns.ndim == 2 and columns.shape[1] == 2
        assert len(columns) >= 1 or params["specimen"] == "nanoparticle"  # a small field may miss the particle
        if len(columns) == 0:
            continue
        assert columns.min() >= 0 and columns.max() <= 63
        inner = columns[(columns.min(axis=1) >= 3) & (columns.max(axis=1) <= 60)]
        rows, cols = np.round(inner).astype(int).T
        is_peak = clean >= maximum_filter(clean, size=5)
        near_peak = maximum_filter(is_peak, size=5)  # a local maximum within 2 px of the column
        found.extend(near_peak[rows, cols])
    assert np.mean(found) > 0.8  # the columns are the bright spots
    # a SrTiO3 [001] field of W pm holds about (W / 390.5)^2 cells x 4 columns
    perovskite = Condition(name="sto", specimens=["perovskite"], vacancy_fraction=0.0, pixel_size_pm=8.0)
    width_pm = 64 * perovskite.pixel_size_pm
    n_columns = len(perovskite.sample_pairs(1, size_px=64, seed=1).columns[0])
    assert 0.6 * 4 * (width_pm / 390.5) ** 2 < n_columns < 1.6 * 4 * (width_pm / 390.5) ** 2


def test_repeats_are_independent_acquisitions_of_the_same_field():
    batch = get_condition("low-dose").sample_pairs(2, size_px=32, seed=4)
    reps = batch.repeats(200, seed=1)
    assert reps.shape == (2, 200, 32, 32) and reps.dtype == np.float32
    np.testing.assert_array_equal(reps, batch.repeats(200, seed=1))
    assert not np.array_equal(reps[:, 0], reps[:, 1])
    # the average of many acquisitions converges on the noise-free signal (here: the clean image)
    err_one = np.abs(reps[:, 0] - batch.clean).mean()
    err_avg = np.abs(reps.mean(axis=1) - batch.clean).mean()
    assert err_avg < err_one / 8


def test_degrade_user_images():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    user = 1000 + 500 * np.sin(xx / 3.0) ** 2 * np.cos(yy / 4.0) ** 2 + rng.normal(0, 5, (64, 64))
    batch = get_condition("blur").degrade(np.stack([user, user]), seed=2)
    assert batch.degraded.shape == batch.clean.shape == (2, 64, 64)
    assert all(c.shape == (0, 2) for c in batch.columns)
    assert 0.9 < np.percentile(batch.clean[0], 99.5) < 1.1
    # the blur condition smooths: the noise-free degraded signal has less fine detail than the clean image
    detail = lambda im: np.abs(np.diff(im, axis=1)).mean()  # noqa: E731
    assert detail(batch.signal[0]) < detail(batch.clean[0])
    assert batch.repeats(2, seed=0).shape == (2, 2, 64, 64)
    with pytest.raises(ValueError, match="NaN"):
        get_condition("blur").degrade(np.full((8, 8), np.nan), seed=0)


def test_yaml_condition_round_trip_and_clear_errors(tmp_path):
    path = tmp_path / "my-scope.yaml"
    path.write_text("name: my-scope\nversion: 2\nbeam_current_pA: [20, 80]\ndefocus_nm: 12\n"
                    "specimens: [perovskite]\nbenchmark_seed: 7\n")
    cond = load_condition(path)
    assert cond.name == "my-scope" and cond.beam_current_pA == (20.0, 80.0) and cond.defocus_nm == 12.0
    assert load_condition(str(path)).hash() == cond.hash()
    assert {p["specimen"] for p in cond.sample_pairs(3, size_px=32, seed=1).params} == {"perovskite"}
    assert load_condition("low-dose") == get_condition("low-dose")

    bad_key = tmp_path / "bad.yaml"
    bad_key.write_text("name: bad\nbeam_curent_pA: 5\n")
    with pytest.raises(ValueError, match="beam_curent_pA"):
        load_condition(bad_key)
    bad_range = tmp_path / "range.yaml"
    bad_range.write_text("name: bad\ndefocus_nm: [30, 5]\n")
    with pytest.raises(ValueError, match="low <= high"):
        load_condition(bad_range)
    with pytest.raises(ValueError, match="no such condition file"):
        load_condition(tmp_path / "missing.yaml")
    # Not YAML, and a tag that would build a Python object: one line each (YAML's own messages span lines).
    for text in ("name: [unclosed\n  beam_current_pA: 5\n", "name: !!python/object/apply:os.system ['true']\n"):
        broken = tmp_path / "broken.yaml"
        broken.write_text(text)
        with pytest.raises(ValueError, match="cannot read the condition YAML") as caught:
            load_condition(broken)
        assert len(str(caught.value).splitlines()) == 1


def test_hash_changes_when_the_simulator_physics_changes(monkeypatch):
    import stemreg.acquisition.conditions as conditions

    cond = get_condition("low-dose")
    before = cond.hash()
    monkeypatch.setattr(conditions, "SIMULATOR_REVISION", conditions.SIMULATOR_REVISION + 1)
    assert cond.hash() != before  # a benchmark drawn by other physics never shares a benchmark id


def test_benchmark_is_stratified_by_sampling_and_dose_with_the_seed_point_kept():
    cond = get_condition("low-dose")
    bins = cond.benchmark_bins()
    names = [b.name for b in bins]
    assert names[:3] == ["8px@0.25x", "8px@1x", "8px@4x"] and names[-1] == "seed:8pm@1x"
    assert len(bins) == 4 * 3 + 1
    bench = cond.benchmark_set()
    assert len(bench) == cond.benchmark_per_bin * len(bins) and bench.bins[0] == "8px@0.25x"
    for name in ("8px@1x", "64px@1x"):
        idx = [i for i, b in enumerate(bench.bins) if b == name]
        spacing = float(name.split("px")[0])
        from stemreg.acquisition.specimens import family_spacing_pm
        # each image's pixel size puts its lattice's columns `spacing` px apart
        assert all(family_spacing_pm(bench.params[i]["specimen"]) / bench.params[i]["pixel_size_pm"]
                   == pytest.approx(spacing) for i in idx)
    seed = [i for i, b in enumerate(bench.bins) if b.startswith("seed")]
    assert all(bench.params[i]["pixel_size_pm"] == 8.0 and bench.params[i]["dose_scale"] == 1.0 for i in seed)


def test_changing_a_range_changes_the_benchmark_id():
    cond = get_condition("low-dose")
    narrower = cond.model_copy(update={"pixel_size_pm": (5.0, 40.0)})
    assert narrower.benchmark_id() != cond.benchmark_id()


@pytest.mark.parametrize("line, field", [("cs_um: .nan", "cs_um"), ("cs_um: 1e300", "cs_um"),
                                         ("beam_current_pA: 1e30", "beam_current_pA"),
                                         ("read_noise_e: .inf", "read_noise_e")])
def test_impossible_microscopes_are_refused_with_the_field_named(tmp_path, line, field):
    path = tmp_path / "scope.yaml"
    path.write_text(f"name: scope\n{line}\n")
    with pytest.raises(ValueError, match=f"invalid condition: {field}"):
        load_condition(path)


def test_benchmark_head_is_the_benchmark_sets_first_images_without_drawing_the_rest(monkeypatch):
    from stemreg.acquisition import conditions

    monkeypatch.setattr(conditions, "_BENCHMARK_CACHE", {})
    cond = get_condition("low-dose")
    head = cond.benchmark_head(2)
    assert not conditions._BENCHMARK_CACHE  # drew two images, not the set
    full = cond.benchmark_set()
    np.testing.assert_array_equal(head.degraded, full.degraded[:2])
    np.testing.assert_array_equal(cond.benchmark_head(1).clean, full.clean[:1])  # from the cache now


def test_a_smaller_benchmark_for_smoke_runs_has_its_own_id_and_bad_caps_are_refused(monkeypatch):
    monkeypatch.delenv("STEMREG_BENCHMARK_MAX_PER_BIN", raising=False)  # the suite sets it (tests/conftest.py)
    full = get_condition("low-dose")
    assert full.benchmark_per_bin == 8 and full.benchmark_size == 8 * len(full.benchmark_bins())
    monkeypatch.setenv("STEMREG_BENCHMARK_MAX_PER_BIN", "2")
    small = get_condition("low-dose")
    assert small.benchmark_per_bin == 2 and small.benchmark_id() != full.benchmark_id()
    monkeypatch.setenv("STEMREG_BENCHMARK_MAX_PER_BIN", "20")  # a cap, not a count: the YAML's 8 stays
    assert get_condition("low-dose").benchmark_id() == full.benchmark_id()
    for bad in ("0", "two", "-3"):
        monkeypatch.setenv("STEMREG_BENCHMARK_MAX_PER_BIN", bad)
        with pytest.raises(ValueError, match="STEMREG_BENCHMARK_MAX_PER_BIN.*1 to 1000"):
            get_condition("low-dose")
