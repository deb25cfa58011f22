"""Registry lifecycle on a real SQLite store: aliases, gated promotion, rollback, concurrency.

Versions here are scored from real predictions of known, different quality
(the noisy input itself, Gaussian smoothing of growing width) on the
condition's real benchmark set, so their benchmark figures are ordered
without training a network per version. Smoothing widths go 0.5, 0.7, 0.8,
0.9 px: each beats the one before on the mean over bins and loses under 1 dB
in every bin (wider smoothing, 1.2 px, loses 1.8 dB at 8 px column spacing and
4x dose to 0.8 px, and the gate refuses it).
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from scipy.ndimage import gaussian_filter

from stemreg.acquisition import get_condition
from stemreg.models.binned import mean_over_bins
from stemreg.platform import registry
from stemreg.platform.errors import BadInputError
from stemreg.platform.registry import benchmark
from tiny_models import tiny_model_folder

CONDITION = "low-dose"


def _smoother(sigma_px: float):
    return (lambda image: image) if sigma_px == 0 else (lambda image: gaussian_filter(image, sigma_px))


def _register(tmp_path: Path, sigma_px: float) -> tuple[str, float, str | None]:
    """Register a version, score it from real predictions, then alias it as the pipeline does."""
    source = tmp_path / f"model-{sigma_px}"
    if not source.exists():
        tiny_model_folder(source)  # a real model: promotion loads and runs the candidate first
    version, _ = registry.register_version(str(source), CONDITION, alias_policy="none",
                                           tags={"test.sigma_px": str(sigma_px)})
    scores = benchmark.score_version(CONDITION, version.version, predict_fn=_smoother(sigma_px), columns=False)
    alias = registry.assign_initial_alias(CONDITION, version.version)
    return str(version.version), scores["psnr"], alias


def _champion() -> str:
    return str(registry.resolve(CONDITION, "champion").version)


def test_first_version_is_champion_later_ones_challenger(mlflow_store, tmp_path):
    v1, _, alias1 = _register(tmp_path, 0.8)
    v2, _, alias2 = _register(tmp_path, 1.2)
    v3, _, alias3 = _register(tmp_path, 0.5)
    assert (alias1, alias2, alias3) == ("champion", "challenger", "challenger")
    models = registry.list_condition_models()
    assert [m["name"] for m in models] == ["stem-denoiser-low-dose"]
    model = models[0]
    assert model["versions"] == [v1, v2, v3]
    assert model["aliases"] == {"champion": v1, "challenger": v3}
    assert model["champion"]["benchmark"]["psnr"] > model["champion"]["benchmark"]["noisy_psnr"]
    assert model["challenger"]["version"] == v3
    assert registry.history(CONDITION)[0]["kind"] == "initial"


def test_promote_refuses_worse_and_accepts_better(mlflow_store, tmp_path):
    v1, psnr1, _ = _register(tmp_path, 0.7)
    v2, psnr2, _ = _register(tmp_path, 0.0)          # the noisy input itself: worse
    assert psnr2 < psnr1
    with pytest.raises(registry.PromotionRefused) as refused:
        registry.promote(CONDITION)
    message = str(refused.value)
    assert f"{psnr2:.3f}" in message and f"{psnr1:.3f}" in message
    assert _champion() == v1

    v3, psnr3, _ = _register(tmp_path, 0.8)          # smoother: better on the mean, within 1 dB in every bin
    assert psnr3 > psnr1
    result = registry.promote(CONDITION)              # the challenger is v3 now
    assert (result.from_version, result.to_version) == (v1, v3)
    assert result.to_psnr == pytest.approx(psnr3, abs=1e-3)
    assert _champion() == v3
    # The promoted challenger is no longer the challenger; v2 (worse) is still refused by number.
    assert "challenger" not in registry.list_condition_models()[0]["aliases"]
    with pytest.raises(registry.PromotionRefused):
        registry.promote(CONDITION, v2)


def test_forced_promotion_needs_a_reason_and_records_who_and_why(mlflow_store, tmp_path, monkeypatch):
    _register(tmp_path, 1.2)
    v2, _, _ = _register(tmp_path, 0.5)
    with pytest.raises(BadInputError):
        registry.promote(CONDITION, force=True)
    monkeypatch.setenv("STEMREG_USER", "ada")
    result = registry.promote(CONDITION, force=True, reason="beam damage study needs v2")
    assert result.kind == "force-promote" and result.user == "ada"
    assert _champion() == v2
    version = registry.resolve(CONDITION, "champion")
    last = json.loads(version.tags["promotion.last"])
    assert last["reason"] == "beam damage study needs v2" and last["user"] == "ada"


def test_rollback_restores_the_previous_champion(mlflow_store, tmp_path):
    v1, _, _ = _register(tmp_path, 0.5)
    with pytest.raises(registry.RegistryError, match="no earlier champion"):
        registry.rollback(CONDITION)
    v2, _, _ = _register(tmp_path, 0.7)
    registry.promote(CONDITION)
    v3, _, _ = _register(tmp_path, 0.8)
    registry.promote(CONDITION)
    assert _champion() == v3
    assert registry.rollback(CONDITION).to_version == v2
    assert _champion() == v2
    assert registry.rollback(CONDITION).to_version == v1   # further back, one step at a time
    assert _champion() == v1
    kinds = [entry["kind"] for entry in registry.history(CONDITION)]
    assert kinds == ["initial", "promote", "promote", "rollback", "rollback"]


def test_unknown_model_and_missing_alias_are_bad_input(mlflow_store, tmp_path):
    with pytest.raises(registry.NotRegisteredError, match="no model registered"):
        registry.resolve(CONDITION)
    _register(tmp_path, 0.8)
    with pytest.raises(registry.NotRegisteredError, match="no challenger"):
        registry.promote(CONDITION)


def _assert_history_is_one_chain(entries: list[dict]) -> None:
    for before, after in zip(entries, entries[1:]):
        assert after["from_version"] == before["to_version"], entries


def test_concurrent_promotes_leave_one_champion_and_one_history(mlflow_store, tmp_path):
    versions = [_register(tmp_path, sigma)[0] for sigma in (0.5, 0.7, 0.8, 0.9)]
    best = versions[-1]
    errors: list[BaseException] = []

    def promote(version: str) -> None:
        try:
            registry.promote(CONDITION, version)
        except registry.PromotionRefused:
            pass
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=promote, args=(v,)) for v in versions[1:] * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    # Gated promotion: whatever the order, the best version ends as champion, exactly once in charge.
    assert _champion() == best
    entries = registry.history(CONDITION)
    _assert_history_is_one_chain(entries)
    assert entries[-1]["to_version"] == best
    promoted_to = [e["to_version"] for e in entries]
    assert len(promoted_to) == len(set(promoted_to))          # no version promoted twice


PROMOTE_LOOP = """
import sys
from stemreg.platform import registry
for version in sys.argv[1:]:
    try:
        registry.promote("low-dose", version, force=True, reason="concurrency test")
    except registry.PromotionRefused as refused:
        # Only legitimate refusal: the other process just made this version champion.
        assert "already is the champion" in str(refused), refused
"""


def test_concurrent_promoting_processes_keep_a_consistent_history(mlflow_store, tmp_path):
    versions = [_register(tmp_path, sigma)[0] for sigma in (0.5, 0.8, 1.2)]
    # Two processes force-promote in opposite orders, so they race for the alias all along.
    sequences = [[versions[1], versions[2]] * 3, [versions[2], versions[1]] * 3]
    procs = [subprocess.Popen([sys.executable, "-c", PROMOTE_LOOP, *seq], stderr=subprocess.PIPE, text=True)
             for seq in sequences]
    outputs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    entries = registry.history(CONDITION)
    _assert_history_is_one_chain(entries)
    assert _champion() == entries[-1]["to_version"]
    assert len(entries) >= 2


# --------------------------------------------------------------------------- the gate over the whole range
# Versions registered with crafted benchmark tags (written by the real tag writer), so each bin's
# figure is exactly what the gate has to judge.

BINS = [b.name for b in get_condition(CONDITION).benchmark_bins()]


def _register_with_figures(tmp_path: Path, psnr_by_bin: dict[str, float], *, bench_id: str | None = None,
                           per_bin: bool = True) -> str:
    source = tiny_model_folder(tmp_path / f"crafted-{len(list(tmp_path.glob('crafted-*')))}")
    noisy = {b: 15.0 for b in psnr_by_bin}
    scores = {"psnr": mean_over_bins(psnr_by_bin), "noisy_psnr": mean_over_bins(noisy),
              "id": bench_id or get_condition(CONDITION).benchmark_id()}
    if per_bin:
        scores["by_bin"] = {"psnr": psnr_by_bin, "noisy_psnr": noisy}
    version, _ = registry.register_version(str(source), CONDITION, tags=benchmark.version_tags(scores))
    return str(version.version)


def test_a_better_mean_that_loses_more_than_1_db_in_one_bin_is_refused(mlflow_store, tmp_path, monkeypatch):
    v1 = _register_with_figures(tmp_path, {b: 20.0 for b in BINS})
    worse_bin = BINS[-2]                                    # 64px@4x
    candidate = {b: 21.5 for b in BINS} | {worse_bin: 18.7}
    assert mean_over_bins(candidate) > 20.0
    v2 = _register_with_figures(tmp_path, candidate)
    with pytest.raises(registry.PromotionRefused) as refused:
        registry.promote(CONDITION)
    message = str(refused.value)
    assert worse_bin in message and "18.70" in message and "20.00" in message, message
    assert "more than 1 dB" in message and f"version {v2}" in message
    assert sum(b in message for b in BINS) == 1             # only the losing bin is named
    assert _champion() == v1
    monkeypatch.setenv("STEMREG_USER", "ada")
    forced = registry.promote(CONDITION, force=True, reason="the 64px bin is out of our range")
    assert forced.kind == "force-promote" and _champion() == v2
    assert registry.history(CONDITION)[-1]["reason"] == "the 64px bin is out of our range"


def test_a_better_mean_within_1_db_in_every_bin_is_promoted(mlflow_store, tmp_path):
    _register_with_figures(tmp_path, {b: 20.0 for b in BINS})
    v2 = _register_with_figures(tmp_path, {b: 20.5 for b in BINS} | {BINS[0]: 19.2})
    result = registry.promote(CONDITION)
    assert result.to_version == v2 and _champion() == v2
    assert result.to_psnr == pytest.approx(mean_over_bins({b: 20.5 for b in BINS} | {BINS[0]: 19.2}))


def test_a_worse_mean_is_refused_with_both_means(mlflow_store, tmp_path):
    _register_with_figures(tmp_path, {b: 20.0 for b in BINS})
    _register_with_figures(tmp_path, {b: 19.9 for b in BINS})
    with pytest.raises(registry.PromotionRefused, match=r"mean over bins\) 19\.900 dB does not beat .* 20\.000 dB"):
        registry.promote(CONDITION)


def test_a_champion_scored_on_another_benchmark_is_not_compared(mlflow_store, tmp_path):
    old_id = "low-dose@v2:0123456789ab"
    v1 = _register_with_figures(tmp_path, {b: 25.0 for b in BINS}, bench_id=old_id, per_bin=False)
    _register_with_figures(tmp_path, {b: 20.0 for b in BINS})
    with pytest.raises(registry.PromotionRefused) as refused:
        registry.promote(CONDITION, score_missing=False)
    message = str(refused.value)
    assert f"champion version {v1}" in message and "another benchmark" in message and old_id in message
    assert get_condition(CONDITION).benchmark_id() in message and "--rescore" in message
    assert _champion() == v1
