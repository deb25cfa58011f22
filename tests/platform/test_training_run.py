"""Training runs: what lands in MLflow, and fine-tuning from a registered parent."""
from __future__ import annotations

import json

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from stemreg.acquisition import get_condition
from stemreg.models import psnr
from stemreg.platform.errors import BadInputError
from stemreg.platform.training import train_and_register
from tests.platform.conftest import TINY_ARCH, TINY_DATA, TINY_TRAIN

# Two cores shared by many processes: more torch threads only spin (6-15x slower training).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def fixture_store(registered_low_dose, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registered_low_dose.tracking_uri)
    mlflow.set_tracking_uri(registered_low_dose.tracking_uri)
    mlflow.set_registry_uri(registered_low_dose.tracking_uri)
    yield MlflowClient(registered_low_dose.tracking_uri, registered_low_dose.tracking_uri)
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


def test_run_holds_params_epoch_metrics_panel_and_model(registered_low_dose, fixture_store):
    client = fixture_store
    run = client.get_run(registered_low_dose.run_id)
    params = run.data.params
    assert params["condition.name"] == "low-dose"
    assert params["condition.hash"] == get_condition("low-dose").hash()
    assert json.loads(params["architecture"])["widths"] == TINY_ARCH["widths"]
    assert int(params["train.epochs"]) == TINY_TRAIN["epochs"]
    assert float(params["flops_per_pixel"]) > 0
    history = client.get_metric_history(run.info.run_id, "val_psnr")
    assert sorted(m.step for m in history) == list(range(1, TINY_TRAIN["epochs"] + 1))
    assert {"train_loss", "val_ssim", "benchmark_psnr"} <= set(run.data.metrics)
    panel = [f.path for f in client.list_artifacts(run.info.run_id, "panels")]
    assert panel == ["panels/validation_panel.png"]
    local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path=panel[0])
    assert open(local, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_registered_version_carries_tags_description_and_works(registered_low_dose, fixture_store):
    client = fixture_store
    version = client.get_model_version_by_alias(registered_low_dose.name, "champion")
    tags = version.tags
    assert tags["condition"] == "low-dose" and tags["condition.hash"] == get_condition("low-dose").hash()
    assert json.loads(tags["architecture"])["depth"] == TINY_ARCH["depth"]
    assert float(tags["benchmark.psnr"]) > float(tags["benchmark.noisy_psnr"])
    assert "val_psnr" in tags and version.description
    model = mlflow.pyfunc.load_model(registered_low_dose.model_uri)
    assert model.metadata.signature is not None
    pair = get_condition("low-dose").sample_pairs(1, size_px=64, seed=123)
    denoised = np.asarray(model.predict(pair.degraded))
    assert denoised.shape == pair.degraded.shape
    assert psnr(denoised[0], pair.clean[0]) > psnr(pair.degraded[0], pair.clean[0])


def test_fine_tuning_records_its_parent_and_refuses_another_architecture(mlflow_store):
    parent = train_and_register("low-dose", arch=TINY_ARCH, config=TINY_TRAIN, progress=False, **TINY_DATA)
    other = {**TINY_ARCH, "widths": [8, 8, 8]}
    with pytest.raises(BadInputError, match="differs"):
        train_and_register("low-dose", arch=other, config=TINY_TRAIN, init_from=parent.model_uri,
                           progress=False, **TINY_DATA)
    # The same seed as the parent: the same two validation images, so the first epochs are compared on
    # one yardstick (two images drawn over the whole range, bright field and detector included, differ
    # by more than an epoch's gain).
    child = train_and_register("low-dose", config={**TINY_TRAIN, "epochs": 1, "lr": 1e-3}, seed=0,
                               init_from="models:/stem-denoiser-low-dose@champion", progress=False, **TINY_DATA)
    assert child.alias == "challenger"
    assert child.architecture == parent.architecture
    tags = MlflowClient().get_model_version(child.name, child.version).tags
    assert tags["parent"] == "models:/stem-denoiser-low-dose@champion"
    # Starting from trained weights: its first epoch already beats the parent's first epoch from scratch.
    client = MlflowClient()
    first = {r: [m.value for m in client.get_metric_history(r, "val_psnr") if m.step == 1][0]
             for r in (parent.run_id, child.run_id)}
    assert first[child.run_id] > first[parent.run_id]


# ---------------------------------------------------------------- a lab's own noisy files, no clean image

LAB_TRAIN = {"epochs": 2, "steps_per_epoch": 20, "batch_size": 8, "patch_px": 32, "lr": 3e-3}
#: Known drift of frames 1.. relative to frame 0, (row, col) pixels.
DRIFT_PX = [(0, 0), (3, -2), (-4, 5), (6, 1)]
MARGIN_PX = 8


@pytest.fixture(scope="module")
def drifting_field():
    """Four noisy low-dose frames of one area with known drift, and (kept apart) the clean field."""
    pair = get_condition("low-dose").sample_pairs(1, size_px=128 + 2 * MARGIN_PX, seed=4242)
    repeats = pair.repeats(len(DRIFT_PX), seed=17)[0]
    size = 128

    def view(image, dy, dx):
        return image[MARGIN_PX + dy:MARGIN_PX + dy + size, MARGIN_PX + dx:MARGIN_PX + dx + size]

    frames = np.stack([view(r, dy, dx) for r, (dy, dx) in zip(repeats, DRIFT_PX)])
    return frames, view(pair.clean[0], 0, 0)


def _spy_on_train(monkeypatch):
    """Record what the real `stemreg.models.train` is given when training on lab files (it still runs)."""
    from stemreg.platform.training import lab

    calls = []
    real = lab.train

    def recording_train(model, config, *, train_data, val_data, **kwargs):
        calls.append({"train_data": train_data, "val_data": val_data})
        return real(model, config, train_data=train_data, val_data=val_data, **kwargs)

    monkeypatch.setattr(lab, "train", recording_train)
    return calls


def test_noise2noise_on_drifting_frame_files_beats_the_noisy_frame_without_a_clean_image(
        drifting_field, mlflow_store, tmp_path, monkeypatch, one_torch_thread):
    from stemreg.acquisition import write_image
    from stemreg.platform.training import train_from_lab_files

    frames, clean = drifting_field
    folder = tmp_path / "series"
    for i, frame in enumerate(frames):
        write_image(folder / f"frame_{i:02d}.tif", frame)
    calls = _spy_on_train(monkeypatch)
    result = train_from_lab_files("low-dose", mode="noise2noise", frames=folder, arch=TINY_ARCH, config=LAB_TRAIN,
                                  score=False, progress=False)

    # what the trainer got: noisy pixel values from the files only, arrays (no (noisy, clean) tuple)
    (call,) = calls
    assert isinstance(call["val_data"], np.ndarray) and call["val_data"].ndim == 4
    file_values = np.unique(frames)
    for given in (call["train_data"], call["val_data"]):
        assert np.isin(given, file_values).all()
    # the drift was found exactly (frame i shows the area moved by its drift; rolling it back aligns it)
    run = MlflowClient().get_run(result.run_id)
    assert json.loads(run.data.params["lab.drift_shifts_px"]) == [[dy, dx] for dy, dx in DRIFT_PX]
    assert run.data.params["training_data"] == "lab-files"
    assert "val_psnr" not in run.data.metrics  # no PSNR is claimed from lab data
    m = result.metrics
    assert np.isfinite(m["val_loss"]) and m["val_loss"] > m["val_noise_floor"] > 0
    tags = MlflowClient().get_model_version(result.name, result.version).tags
    assert tags["training_data"] == "lab-files" and tags["val_metric"] == "held-out noise2noise loss"

    # judged against the clean field it never saw, through the registered model
    model = mlflow.pyfunc.load_model(result.model_uri)
    denoised = np.asarray(model.predict(frames[:1]))[0]
    assert psnr(denoised, clean) > psnr(frames[0], clean) + 3.0


def test_blind_spot_on_single_noisy_image_files_beats_the_noisy_input(mlflow_store, tmp_path, monkeypatch,
                                                                      one_torch_thread):
    from stemreg.acquisition import write_image
    from stemreg.platform.training import train_from_lab_files

    # The seed's point (an amorphous background under every field): since conditions v4 the range also
    # holds nearly black fields, on which 4 tiny 96 px images give a blind-spot net too little signal to judge
    # it by (gain 0.6 dB there); the claim here is that blind-spot training on single files works at all.
    seed_point = get_condition("low-dose").seed_point()
    pairs = seed_point.sample_pairs(4, size_px=96, seed=4343)
    for i, noisy in enumerate(pairs.degraded):
        write_image(tmp_path / "singles" / f"image_{i}.npy", noisy)
    calls = _spy_on_train(monkeypatch)
    result = train_from_lab_files("low-dose", mode="blind-spot", images=tmp_path / "singles", arch=TINY_ARCH,
                                  config=LAB_TRAIN, register=False, score=False, progress=False)
    (call,) = calls
    assert isinstance(call["val_data"], np.ndarray) and call["val_data"].ndim == 3
    assert np.isin(call["train_data"], np.unique(pairs.degraded)).all()
    assert np.isfinite(result.metrics["val_loss"])
    network = mlflow.pyfunc.load_model(result.logged_model_uri)
    test = seed_point.sample_pairs(2, size_px=96, seed=4444)
    denoised = np.asarray(network.predict(test.degraded))
    gain = np.mean([psnr(d, c) - psnr(n, c) for d, n, c in zip(denoised, test.degraded, test.clean)])
    assert gain > 2.0


@pytest.mark.parametrize("kwargs, message", [
    ({"mode": "noise2noise", "images": "x"}, "give --frames"),
    ({"mode": "blind-spot", "frames": "x"}, "give --images"),
    ({"mode": "supervised", "frames": "x"}, "not 'supervised'"),
])
def test_lab_files_need_the_source_that_fits_the_mode(kwargs, message):
    from stemreg.platform.training import load_lab_data

    with pytest.raises(BadInputError, match=message):
        load_lab_data(**kwargs)


def test_one_image_is_not_a_frame_series_and_small_frames_are_refused(tmp_path):
    from stemreg.platform.training import load_lab_data

    np.save(tmp_path / "one.npy", np.ones((64, 64), np.float32))
    with pytest.raises(BadInputError, match="needs a stack"):
        load_lab_data("noise2noise", frames=tmp_path / "one.npy")
    np.save(tmp_path / "small.npy", np.random.default_rng(0).poisson(5, (3, 40, 40)).astype(np.float32))
    with pytest.raises(BadInputError, match="smaller --patch-px"):
        load_lab_data("noise2noise", frames=tmp_path / "small.npy", patch_px=32, align=False)
