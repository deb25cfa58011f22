"""`stemreg adapt`: the `--promote` gate, `--frames` (noise2noise after drift alignment) and impulse repair.

Real files, a real MLflow store, the real shipped base; a tiny condition whose benchmark is two 48 px
images, so that the gate's scoring takes seconds.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from stemreg.acquisition import get_condition, load_condition
from stemreg.models import pretrained
from stemreg.models.inference import denoise_array
from stemreg.models.prediction import network_of
from stemreg.platform import registry
from stemreg.platform.cli import main
from stemreg.platform.prediction import load_model
from stemreg.platform.registry.benchmark import score_model
from stemreg.platform.training.adapt import AdaptResult, _gate_and_promote
from tests.platform.conftest import TINY_CONDITION
from tests.platform.test_adapt import _lab_files

pytestmark = [pytest.mark.skipif(not pretrained.available(), reason="the shipped pretrained base is absent"),
              pytest.mark.usefixtures("one_torch_thread")]

TINY = "tiny-adapt"
FAST = ["--epochs", "1", "--steps", "2", "--batch-size", "4", "--patch-px", "48"]


def _condition(tmp_path):
    path = tmp_path / f"{TINY}.yaml"
    path.write_text(TINY_CONDITION.format(name=TINY, current=50.0))
    return str(path)


def _champion_version(uri):
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    return client.get_model_version_by_alias(f"stem-denoiser-{TINY}", "champion")


def test_adapt_promote_passes_the_gate_within_tolerance_and_records_why(mlflow_store, tmp_path):
    cond = _condition(tmp_path)
    files = _lab_files(tmp_path)
    result = CliRunner().invoke(main, ["adapt", "--condition", cond, *files, *FAST, "--promote",
                                       "--tolerance-db", "10", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["promoted"], report["gate"]
    # both PSNRs come from the tiny condition's own benchmark (the base is scored there, not read off its card)
    assert report["gate"].startswith("adapt gate: benchmark PSNR") and "held-out lab trust" in report["gate"]
    champion = _champion_version(mlflow_store)
    assert str(champion.version) == str(report["version"])
    last = json.loads(champion.tags["promotion.last"])
    assert last["reason"] == report["gate"]
    # the registered model repairs defective pixels on every surface: the step travels in its architecture
    network = network_of(load_model(load_condition(cond)).pyfunc)
    assert network.impulse_k == 6.0 and champion.tags["adapt.impulse_k"] == "6"


def _result(psnr: float, bench_id: str, ok_adapted: int, ok_champion: int) -> AdaptResult:
    trust = {"adapted": {"ok": ok_adapted, "n": 2}, "champion": {"ok": ok_champion, "n": 2}}
    return AdaptResult(condition=TINY, mode="blind-spot", lab_files=["a.npy"], held_out_files=["b.npy"],
                       noise_corr_x=[0.5, 0.3, 0.2], struct_px=3, val_loss=0.1, trust=trust, parent="pretrained:x",
                       version="1", benchmark={"psnr": psnr, "id": bench_id})


def test_adapt_gate_refuses_a_benchmark_regression_beyond_tolerance_and_worse_held_out_trust(mlflow_store, tmp_path):
    cond = load_condition(_condition(tmp_path))
    base = pretrained.load_pretrained()[0]
    base_psnr = score_model(lambda image: denoise_array(base, image), cond, columns=False)["psnr"]
    bench_id = cond.benchmark_id()
    promoted, why = _gate_and_promote(cond, _result(base_psnr - 0.8, bench_id, 2, 2), 0.5, base)
    assert not promoted and "loses more than 0.5 dB" in why and f"{base_psnr:.2f}" in why
    promoted, why = _gate_and_promote(cond, _result(base_psnr - 0.3, bench_id, 1, 2), 0.5, base)
    assert not promoted and "held-out trust 1 ok, fewer than the champion's 2" in why
    with pytest.raises(registry.NotRegisteredError):  # nothing was promoted
        registry.resolve(cond, "champion")


def test_adapt_frames_trains_noise2noise_on_drift_aligned_repeats(mlflow_store, tmp_path):
    pairs = get_condition("low-dose").seed_point().sample_pairs(1, size_px=128, seed=7)
    signal = pairs.signal[0]
    shifts = [(0, 0), (3, -2), (-2, 4)]
    rng = np.random.default_rng(0)
    stack = np.stack([np.roll(signal, s, axis=(0, 1)) + rng.normal(0, 0.05, signal.shape) for s in shifts])
    path = tmp_path / "series.npy"
    np.save(path, stack.astype(np.float32))
    result = CliRunner().invoke(main, ["adapt", "--condition", "low-dose", str(path), "--frames", *FAST,
                                       "--no-score", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["mode"] == "noise2noise"
    found = np.abs(np.asarray(json.loads(report["lab_params"]["lab.drift_shifts_px"])))
    assert found.tolist() == np.abs(np.asarray(shifts)).tolist()  # the drift was found and undone
    client = MlflowClient(tracking_uri=mlflow_store, registry_uri=mlflow_store)
    (version,) = client.search_model_versions("name='stem-denoiser-low-dose'")
    assert version.tags["training_mode"] == "noise2noise"
    assert json.loads(version.tags["lab_files"]) == ["series.npy"]


def test_adapted_model_repairs_defective_pixels_and_keeps_that_step_when_saved(tmp_path):
    from stemreg.models.architectures import architecture_of, build_model

    pairs = get_condition("low-dose").seed_point().model_copy(update={"impulse_fraction": 0.003}).sample_pairs(
        1, size_px=96, seed=3)
    frame, clean = pairs.degraded[0], pairs.clean[0]
    base = pretrained.load_pretrained()[0]
    arch = {**architecture_of(base), "impulse_k": 6.0}
    rebuilt = build_model(arch)
    rebuilt.load_state_dict(base.state_dict())
    assert architecture_of(rebuilt)["impulse_k"] == 6.0
    err_plain = np.abs(denoise_array(base, frame) - clean)
    err_repaired = np.abs(denoise_array(rebuilt, frame) - clean)
    assert err_repaired.max() < 0.5 * err_plain.max()  # the defects no longer pass through
    assert np.array_equal(denoise_array(rebuilt, frame, impulses=False), denoise_array(base, frame))
    with pytest.raises(ValueError, match="impulse_k"):
        build_model({**arch, "impulse_k": -1})
