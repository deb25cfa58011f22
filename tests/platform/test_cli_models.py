"""The models CLI: models, denoise, promote, rollback, train and pipeline argument handling."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient
from scipy.ndimage import gaussian_filter

from stemreg.acquisition import get_condition
from stemreg.acquisition.io import Calibration, read_image, write_image
from stemreg.models import psnr
from stemreg.platform import registry
from stemreg.platform.registry import benchmark
from stemreg.platform.registry.naming import benchmark_of
from stemreg.platform.cli import main
from tiny_models import tiny_model_folder

# Two cores shared by many processes: more torch threads only spin (6-15x slower training).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def fixture_env(registered_low_dose, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registered_low_dose.tracking_uri)
    monkeypatch.chdir(tmp_path)
    return registered_low_dose


def _invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_models_lists_the_champion_with_benchmark_figures(fixture_env):
    result = _invoke("models", "--json")
    assert result.exit_code == 0, result.output
    models = json.loads(result.output)
    low_dose = next(m for m in models if m["name"] == "stem-denoiser-low-dose")
    assert low_dose["aliases"]["champion"] == fixture_env.version
    bench = low_dose["champion"]["benchmark"]
    assert bench["psnr"] > bench["noisy_psnr"]
    bins = [b.name for b in get_condition("low-dose").benchmark_bins()]
    assert list(bench["by_bin"]["psnr"]) == bins and list(bench["by_bin"]["noisy_psnr"]) == bins
    text = _invoke("models")
    assert "stem-denoiser-low-dose" in text.output and "champion" in text.output
    # The per-bin table: a row per bin with the noisy input's and the champion's PSNR, then the mean.
    lines = text.output.splitlines()
    assert any("PSNR (dB) per bin" in line and f"champion v{fixture_env.version}" in line for line in lines)
    for name in bins:
        row = next(line for line in lines if line.split() and line.split()[0] == name)
        assert row.split()[1:] == [f"{bench['by_bin']['noisy_psnr'][name]:.2f}", f"{bench['by_bin']['psnr'][name]:.2f}"]
    mean_row = next(line for line in lines if line.strip().startswith("mean over bins"))
    assert mean_row.split()[-2:] == [f"{bench['noisy_psnr']:.2f}", f"{bench['psnr']:.2f}"]


@pytest.mark.parametrize("suffix", [".npy", ".tif", ".png"])
def test_denoise_round_trip_keeps_format_shape_and_calibration(fixture_env, tmp_path, suffix):
    pair = get_condition("low-dose").sample_pairs(1, size_px=80, seed=321)
    noisy, clean = pair.degraded[0], pair.clean[0]
    src = tmp_path / "in" / f"frame{suffix}"
    write_image(src, noisy, Calibration(pixel_size=0.025, unit="nm"))
    out_dir = tmp_path / "out"
    result = _invoke("denoise", str(src), "--condition", "low-dose", "-o", str(out_dir), "--json", "--trust-map")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["version"] == fixture_env.version
    # every file gets a trust verdict judged from its input alone, and its map beside the output
    assert report["files"][0]["trust"]["verdict"] in ("ok", "doubtful", "out of range")
    assert read_image(out_dir / "frame.trust.tif").data.shape == noisy.shape
    out = read_image(out_dir / f"frame{suffix}")
    assert out.data.shape == noisy.shape
    assert out.calibration.pixel_size == pytest.approx(0.025)
    assert out.calibration.unit == "nm"
    assert psnr(out.data, clean) > psnr(read_image(src).data, clean)


def test_denoise_bad_input_exits_2_with_a_reason(fixture_env, tmp_path):
    missing = _invoke("denoise", str(tmp_path / "nope.npy"), "--condition", "low-dose", "-o", str(tmp_path))
    assert missing.exit_code == 2 and "no such file" in missing.output
    np.save(tmp_path / "x.npy", np.zeros((16, 16), np.float32))
    unknown = _invoke("denoise", str(tmp_path / "x.npy"), "--condition", "no-such-condition", "-o", "o")
    assert unknown.exit_code == 2 and "no-such-condition" in unknown.output
    (tmp_path / "notes.txt").write_text("hello")
    wrong = _invoke("denoise", str(tmp_path / "notes.txt"), "--condition", "low-dose", "-o", "o")
    assert wrong.exit_code == 2 and ".txt" in wrong.output


def test_denoise_without_a_challenger_exits_2(mlflow_store, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((16, 16), np.float32))
    result = _invoke("denoise", str(tmp_path / "x.npy"), "--condition", "defocus", "--alias", "challenger",
                     "-o", str(tmp_path / "o"))
    assert result.exit_code == 2
    assert "no model registered for condition 'defocus'" in result.output


def _register_scored(tmp_path, sigma_px: float) -> str:
    source = tiny_model_folder(tmp_path / f"m{sigma_px}")  # promotion loads and runs the candidate
    version, _ = registry.register_version(str(source), "low-dose", alias_policy="none")
    benchmark.score_version("low-dose", version.version, predict_fn=lambda image: gaussian_filter(image, sigma_px),
                            columns=False)
    registry.assign_initial_alias("low-dose", version.version)
    return str(version.version)


def test_promote_and_rollback_commands(mlflow_store, tmp_path, monkeypatch):
    # two images per bin (the suite's default is one): the smoothing case below needs a mean win that
    # loses more than 1 dB in a bin, which a one-image benchmark does not hold
    monkeypatch.setenv("STEMREG_BENCHMARK_MAX_PER_BIN", "2")
    v1 = _register_scored(tmp_path, 0.7)
    v2 = _register_scored(tmp_path, 0.8)
    promoted = _invoke("promote", "--condition", "low-dose", "--json")
    assert promoted.exit_code == 0, promoted.output
    assert json.loads(promoted.output)["to_version"] == v2
    v3 = _register_scored(tmp_path, 0.5)
    refused = _invoke("promote", "--condition", "low-dose", "--version", v3)
    assert refused.exit_code == 1 and "does not beat" in refused.output
    # Wider smoothing beats the mean but loses more than 1 dB in some bins (fine sampling, where it blurs
    # the columns): refused, and the reason names exactly the bins it loses, from the stored figures.
    v4 = _register_scored(tmp_path, 1.2)
    lossy = _invoke("promote", "--condition", "low-dose", "--version", v4, "--json")
    assert lossy.exit_code == 1
    reason = json.loads(lossy.output.splitlines()[0])["reason"]
    client = MlflowClient()
    champion_bins = benchmark_of(client.get_model_version_by_alias("stem-denoiser-low-dose", "champion"))
    v4_bins = benchmark_of(client.get_model_version("stem-denoiser-low-dose", v4))
    lost = {b for b, v in champion_bins["by_bin"]["psnr"].items() if v4_bins["by_bin"]["psnr"][b] < v - 1.0}
    assert v4_bins["psnr"] > champion_bins["psnr"] and lost, "the case must be a mean win with a bin loss"
    assert "loses more than 1 dB" in reason
    assert {b for b in champion_bins["by_bin"]["psnr"] if f"{b} " in reason} == lost
    bad = _invoke("promote", "--condition", "low-dose", "--version", "latest")
    assert bad.exit_code == 2
    rolled = _invoke("rollback", "--condition", "low-dose", "--json")
    assert rolled.exit_code == 0, rolled.output
    assert json.loads(rolled.output)["to_version"] == v1
    assert str(registry.resolve("low-dose").version) == v1


def test_train_and_pipeline_refuse_bad_input(mlflow_store):
    assert _invoke("train", "--condition", "no-such-condition").exit_code == 2
    bad_arch = _invoke("train", "--condition", "low-dose", "--arch", "{not json")
    assert bad_arch.exit_code == 2 and "JSON" in bad_arch.output
    bad_kind = _invoke("train", "--condition", "low-dose", "--arch", '{"kind": "transformer"}')
    assert bad_kind.exit_code == 2 and "transformer" in bad_kind.output
    assert _invoke("pipeline", "--conditions", "low-dose,nope").exit_code == 2
    for command in ("train", "models", "denoise", "promote", "rollback", "pipeline"):
        assert _invoke(command, "--help").exit_code == 0


def test_pipeline_without_a_shared_base_trains_every_condition_from_scratch(mlflow_store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default Optuna storage is not touched: no trials
    result = _invoke("pipeline", "--conditions", "blur,low-dose", "--epochs", "1", "--steps-per-epoch", "1",
                     "--n-train", "1", "--no-share-base", "--trials", "0", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    low, blur = report["outcomes"]
    assert (low["condition"], blur["condition"]) == ("low-dose", "blur")
    # Same architecture as the low-dose champion, yet no fine-tune: no parent, no init weights.
    assert blur["parent"] is None
    client = MlflowClient()
    version = client.get_model_version("stem-denoiser-blur", blur["version"])
    assert "parent" not in version.tags
    base = client.get_model_version("stem-denoiser-low-dose", low["version"])
    assert version.tags["architecture"] == base.tags["architecture"]


def test_train_on_a_lab_frame_stack_is_self_supervised_and_registered(mlflow_store, tmp_path, one_torch_thread):
    pair = get_condition("low-dose").sample_pairs(1, size_px=96, seed=99)
    np.save(tmp_path / "series.npy", pair.repeats(3, seed=1)[0])  # noisy frames only, no drift
    arch = '{"kind": "reverse-hourglass", "depth": 4, "widths": [8, 16, 8], "kernel_size": 3}'
    result = _invoke("train", "--condition", "low-dose", "--frames", str(tmp_path / "series.npy"), "--arch", arch,
                     "--epochs", "1", "--steps-per-epoch", "3", "--batch-size", "4", "--patch-px", "32", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    assert report["mode"] == "noise2noise" and report["version"] == "1"
    assert report["metrics"]["val_loss"] > report["metrics"]["val_noise_floor"] > 0
    assert report["benchmark"]["psnr"] is not None  # scored on the condition's simulated benchmark set


@pytest.mark.parametrize("args, message", [
    (["--frames", "missing.tif"], "no such file"),
    (["--frames", "one.npy"], "needs a stack"),
    (["--frames", "one.npy", "--mode", "supervised"], "needs clean targets"),
    (["--frames", "one.npy", "--images", "."], "not both"),
    (["--images", ".", "--n-train", "4"], "the files are the data"),
    (["--no-align"], "goes with --frames"),
])
def test_train_on_lab_files_refuses_bad_input(mlflow_store, tmp_path, args, message):
    np.save(tmp_path / "one.npy", np.ones((64, 64), np.float32))
    result = _invoke("train", "--condition", "low-dose", *args)
    assert result.exit_code == 2 and message in result.output, result.output


def _dm_writer():
    """tests/acquisition/dm_writer.py: builds real DM3/DM4 files (RosettaSciIO reads them but cannot write them)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("dm_writer", Path(__file__).parents[1] / "acquisition" / "dm_writer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_denoise_a_dm3_file_writes_hspy_with_its_calibration(fixture_env, tmp_path):
    pair = get_condition("low-dose").sample_pairs(1, size_px=80, seed=322)
    noisy, clean = pair.degraded[0], pair.clean[0]
    (tmp_path / "in").mkdir()
    src = _dm_writer().write_dm(tmp_path / "in" / "scan.dm3", noisy.astype(np.float32), pixel_size=0.008, unit="nm")
    result = _invoke("denoise", str(src), "--condition", "low-dose", "-o", str(tmp_path / "out"), "--json")
    assert result.exit_code == 0, result.output
    out = read_image(tmp_path / "out" / "scan.hspy")        # DM cannot be written: HyperSpy's format instead
    assert out.data.shape == noisy.shape
    assert out.calibration.pixel_size_pm() == pytest.approx(8.0, rel=1e-5)
    assert psnr(out.data, clean) > psnr(noisy, clean)


def test_models_of_an_unknown_condition_exits_2(mlflow_store):
    result = _invoke("models", "-c", "no-such")
    assert result.exit_code == 2 and "unknown condition 'no-such'" in result.output
