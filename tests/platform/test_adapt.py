"""`stemreg adapt`: a lab's raw noisy files fine-tune the champion (here the shipped base), no clean image.

Real files, a real MLflow store, the real shipped base; a tiny budget (one epoch of two steps).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient
from scipy.signal import lfilter

from stemreg.acquisition import get_condition
from stemreg.models import pretrained
from stemreg.platform.cli import main
from stemreg.platform.registry.card import version_card

pytestmark = pytest.mark.skipif(not pretrained.available(), reason="the shipped pretrained base is absent")


def _lab_files(folder, n=3, size=96):
    """Raw frames whose noise a detector's bandwidth correlated along x (first-order low-pass)."""
    pairs = get_condition("low-dose").seed_point().sample_pairs(n, size_px=size, seed=41)
    paths = []
    for i, (noisy, signal) in enumerate(zip(pairs.degraded, pairs.signal)):
        noise = lfilter([0.4], [1.0, -0.6], noisy - signal, axis=1) * 2.0  # pole 0.6, variance kept
        path = folder / f"scan_{i}.npy"
        np.save(path, (signal + noise).astype(np.float32))
        paths.append(str(path))
    return paths


def _versions(uri):
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    return client.search_model_versions("name='stem-denoiser-low-dose'")


def test_adapt_registers_a_version_whose_card_lists_the_lab_files(mlflow_store, tmp_path, one_torch_thread):
    files = _lab_files(tmp_path)
    result = CliRunner().invoke(main, ["adapt", "--condition", "low-dose", *files, "--epochs", "1", "--steps", "2",
                                       "--batch-size", "4", "--patch-px", "48", "--no-score", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["mode"] == "blind-spot" and report["struct_px"] >= 1  # the correlation was measured and masked
    assert report["held_out_files"] == [files[-1]]
    (version,) = _versions(mlflow_store)
    assert json.loads(version.tags["lab_files"]) == ["scan_0.npy", "scan_1.npy", "scan_2.npy"]
    assert version.tags["parent"].startswith("pretrained:")
    card = version_card(get_condition("low-dose"), version)
    assert "scan_0.npy" in card and "scan_2.npy" in card


@pytest.mark.parametrize("content", [b"", b"\x93NUMPY garbage, not an array"], ids=["empty", "corrupt"])
def test_a_corrupt_or_empty_lab_file_is_refused_in_one_line_and_nothing_is_registered(
        mlflow_store, tmp_path, content):
    files = _lab_files(tmp_path, n=2)
    bad = tmp_path / "broken.npy"
    bad.write_bytes(content)
    result = CliRunner().invoke(main, ["adapt", "--condition", "low-dose", *files, str(bad), "--no-score"])
    assert result.exit_code == 2
    error = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(error) == 1 and "broken.npy" in error[0], result.output
    assert _versions(mlflow_store) == []


def test_evaluate_raw_images_gives_trust_figures_per_method(mlflow_store, tmp_path):
    folder = tmp_path / "raw"
    folder.mkdir()
    _lab_files(folder, n=2)
    result = CliRunner().invoke(main, ["evaluate", "--condition", "low-dose", "--images", str(folder), "--raw",
                                       "--methods", "champion,bm3d", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["method"]: r for r in json.loads(result.stdout)["rows"]}
    assert set(rows) == {"champion", "bm3d"}
    # the shipped base was trained on the detector's bandwidth (lag-1 correlation along x up to 0.51, the
    # range's margin 0.3): these frames (0.6) are within its range
    assert rows["champion"]["verdicts"].get("out of range", 0) == 0
    assert all(sum(r["verdicts"].values()) == 2 for r in rows.values())
