"""Model cards: the description of a really trained, registered and scored version, and of its model."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from stemreg.acquisition import get_condition
from stemreg.platform import registry


@pytest.fixture
def card_env(registered_low_dose, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registered_low_dose.tracking_uri)
    return registered_low_dose


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_version_card_holds_every_section_with_real_figures(card_env, tmp_path):
    cond = get_condition("low-dose")
    client = MlflowClient(card_env.tracking_uri, card_env.tracking_uri)
    mv = client.get_model_version(card_env.name, card_env.version)
    card = mv.description
    assert len(card) <= 5000                                     # MLflow's SQL column
    # What it restores, and the condition with its spec and trained ranges.
    assert "### What it restores" in card and cond.description.rstrip(".") in card
    assert f"### Condition `low-dose` v{cond.version} (hash `{cond.hash()}`)" in card
    assert "```yaml" in card and "pixel_size_pm: [4.0, 64.0]" in card and "dose_scale: [0.25, 4.0]" in card
    assert "- sampling: 4–64 pm/px (log-uniform)" in card
    assert "- dose: 0.25–4 × the condition's 50 pA × 1.4 µs" in card
    # The benchmark per bin beside the noisy input, from the version's own tags.
    bench = registry.benchmark_of(mv)
    assert f"### Benchmark `{cond.benchmark_id()}`" in card
    by_bin = bench["by_bin"]
    rows = {line.split()[0]: line.split()[1:] for line in card.splitlines() if line.split()}
    for bin_ in cond.benchmark_bins():
        b = bin_.name
        assert rows[b] == [f"{by_bin['noisy_psnr'][b]:.2f}", f"{by_bin['psnr'][b]:.2f}",
                           f"{by_bin['psnr'][b] - by_bin['noisy_psnr'][b]:+.2f}",
                           f"{by_bin['noisy_ssim'][b]:.3f}", f"{by_bin['ssim'][b]:.3f}"], b
    mean_row = next(line for line in card.splitlines() if line.startswith("mean over bins"))
    assert mean_row.split()[3:] == [f"{bench['noisy_psnr']:.2f}", f"{bench['psnr']:.2f}",
                                    f"{bench['psnr'] - bench['noisy_psnr']:+.2f}", f"{bench['noisy_ssim']:.3f}",
                                    f"{bench['ssim']:.3f}"]
    assert "Atom-column F1" in card
    assert bench["psnr"] > bench["noisy_psnr"]
    assert "BM3D" not in card                                    # no BM3D figures tagged: none shown
    # Lineage, with the digests of the very files that were logged.
    assert "### Lineage" in card and f"run: `{card_env.run_id}`" in card and "trained from scratch" in card
    # the version's own artifact location: no models:/ lookup through a process-wide registry URI
    source = client.get_model_version_download_uri(card_env.name, card_env.version)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(tmp_path)))
    weights, architecture = next(local.rglob("weights.pt")), next(local.rglob("architecture.json"))
    assert mv.tags["weights_sha256"] == _sha256(weights)
    assert mv.tags["architecture_sha256"] == _sha256(architecture)
    assert f"weights sha256: `{_sha256(weights)}`" in card
    # How to call it.
    for call in ("stemreg denoise scan.tif --condition low-dose -o denoised/", "stemreg serve --condition low-dose",
                 "mlflow models serve -m models:/stem-denoiser-low-dose@champion",
                 'stemreg.denoise(image, condition="low-dose")'):
        assert call in card, call


def test_model_card_shows_the_champion_per_bin(card_env):
    client = MlflowClient(card_env.tracking_uri, card_env.tracking_uri)
    card = client.get_registered_model(card_env.name).description
    mv = client.get_model_version(card_env.name, card_env.version)
    by_bin = registry.benchmark_of(mv)["by_bin"]
    lines = card.splitlines()
    assert any(line.split() == ["bin", "noisy", "input", "champion", f"v{card_env.version}"] for line in lines)
    assert any(line.split() == ["8px@0.25x", f"{by_bin['noisy_psnr']['8px@0.25x']:.2f}",
                                f"{by_bin['psnr']['8px@0.25x']:.2f}"] for line in lines)
    assert "### Condition `low-dose`" in card and "mlflow models serve" in card and len(card) <= 5000


def test_a_card_for_a_version_with_bm3d_figures_shows_them(card_env):
    client = MlflowClient(card_env.tracking_uri, card_env.tracking_uri)
    mv = client.get_model_version(card_env.name, card_env.version)
    bm3d = {b.name: 24.0 + i / 10 for i, b in enumerate(get_condition("low-dose").benchmark_bins())}
    mv.tags["benchmark.bm3d_psnr_by_bin"] = json.dumps(bm3d)   # in memory only: the store is shared
    card = registry.version_card(get_condition("low-dose"), mv)
    header = next(line for line in card.splitlines() if line.startswith("bin "))
    assert header.split()[:6] == ["bin", "noisy", "PSNR", "BM3D", "PSNR", "PSNR"]
    assert next(line for line in card.splitlines() if line.startswith("8px@0.25x ")).split()[2] == "24.00"
