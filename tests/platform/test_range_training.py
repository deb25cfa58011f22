"""Training over the range: lab targets mixed in, the shipped base on a fresh store, samplings outside the range."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from stemreg.acquisition import Calibration, write_image
from stemreg.models import pretrained
from stemreg.platform.cli import main
from tests.platform.conftest import TINY_ARCH

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _lattice(shape=(96, 96), period=6.0) -> np.ndarray:
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return 1000 + 800 * (np.cos(xx / period) * np.cos(yy / period)) ** 8


def test_train_mixes_a_labs_high_dose_images_and_records_them(tmp_path, mlflow_store):
    targets = tmp_path / "highdose"
    write_image(targets / "sto_a.tif", _lattice(), Calibration(12.0, "pm"))
    write_image(targets / "sto_b.npy", _lattice(period=5.0))
    args = ["train", "--condition", "low-dose", "--targets", str(targets), "--target-fraction", "0.5",
            "--epochs", "1", "--steps-per-epoch", "4", "--batch-size", "2", "--patch-px", "32", "--n-train", "2",
            "--n-val", "1", "--arch", json.dumps(TINY_ARCH), "--json"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    version = MlflowClient().get_model_version(out["name"], out["version"])
    assert json.loads(version.tags["lab_targets"]) == ["sto_a.tif", "sto_b.npy"]
    assert version.tags["training_data"] == "simulated+lab-targets"
    assert "2 lab high-dose image(s)" in version.description

    tiny = tmp_path / "tiny"
    write_image(tiny / "small.npy", _lattice((20, 20)))
    refused = CliRunner().invoke(main, [*args[:3], "--targets", str(tiny), *args[5:]])
    assert refused.exit_code == 2 and "smaller than the 32 px" in refused.output


@pytest.mark.skipif(not pretrained.available(), reason="no pretrained base in this checkout")
def test_denoise_on_a_fresh_store_uses_the_shipped_base_and_says_so(tmp_path, monkeypatch):
    # A fresh machine: no MLFLOW_TRACKING_URI, no mlflow.db here (a store named but absent is refused
    # instead: a typo must not fall back to the base, tests/platform/test_api.py).
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    scan = _lattice((128, 128))
    noisy = np.random.default_rng(0).poisson(scan / 50).astype(np.float32)
    write_image(tmp_path / "scan.tif", noisy, Calibration(10.0, "pm"))
    write_image(tmp_path / "coarse.tif", noisy, Calibration(200.0, "pm"))
    result = CliRunner().invoke(main, ["denoise", "scan.tif", "coarse.tif", "--condition", "low-dose",
                                       "-o", "out"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "pretrained base 'low-dose-base'" in result.output and "nothing is registered" in result.output
    # the coarse scan is outside the base's samplings: warned, still denoised
    assert "200 pm lies outside the 4-64 pm/px" in result.output
    assert (tmp_path / "out" / "scan.tif").is_file() and (tmp_path / "out" / "coarse.tif").is_file()
    assert not (tmp_path / "mlflow.db").exists()  # reading creates no store
    from stemreg.acquisition import read_image

    denoised = read_image(tmp_path / "out" / "scan.tif").data
    # it denoises: closer to the clean lattice than the noisy scan is
    clean = scan / 50
    assert np.mean((denoised - clean) ** 2) < 0.5 * np.mean((noisy - clean) ** 2)
