"""The models-from-code pyfunc: logged, loaded back, and answering like denoise_array."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from stemreg.models import (DenoiserPyfunc, ReverseHourglass, denoise_array, input_example, model_signature,
                            models_from_code_path, pip_requirements, save_artifacts)


def make_model():
    torch.manual_seed(0)
    model = ReverseHourglass(4, [4, 8, 4])
    with torch.no_grad():
        torch.nn.init.normal_(model.net[-1].weight, std=0.2)
    return model.eval()


@pytest.fixture
def trained_like_model():
    return make_model()


@pytest.fixture
def logged_model(mlflow_store, tmp_path):
    """A model logged into the real SQLite store of the ``mlflow_store`` fixture."""
    import mlflow

    artifacts = save_artifacts(make_model(), tmp_path / "artifacts")
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="model", python_model=models_from_code_path(), artifacts=artifacts,
                                       signature=model_signature(), input_example=input_example(),
                                       pip_requirements=pip_requirements())
    return info.model_uri


def test_logged_model_loads_back_and_predicts_exactly_like_denoise_array(logged_model, trained_like_model,
                                                                         tmp_path):
    import mlflow

    loaded = mlflow.pyfunc.load_model(logged_model)
    stack = np.random.default_rng(0).poisson(12, (2, 70, 90)).astype(np.float32)
    out = loaded.predict(stack)
    assert out.dtype == np.float32 and out.shape == stack.shape
    np.testing.assert_allclose(out, denoise_array(trained_like_model, stack), rtol=1e-5, atol=1e-5)
    assert not np.allclose(out, stack)  # the network did something

    # tiling options travel as params
    tiled = loaded.predict(stack[:1], params={"tile_px": 40, "overlap_px": 8})
    np.testing.assert_allclose(tiled, denoise_array(trained_like_model, stack[:1], tile_px=40, overlap_px=8),
                               rtol=1e-5, atol=1e-5)

    # the signature declares float32 stacks of any size
    spec = mlflow.models.get_model_info(logged_model).signature.inputs.inputs[0]
    assert spec.type == np.dtype(np.float32) and spec.shape == (-1, -1, -1)

    # the directory holds a state_dict, the architecture JSON and the code file; nothing pickled
    local = Path(mlflow.artifacts.download_artifacts(logged_model, dst_path=str(tmp_path / "download")))
    files = {p.name for p in local.rglob("*") if p.is_file()}
    assert {"weights.pt", "architecture.json", "pyfunc_entry.py", "MLmodel"} <= files
    assert not any(name.endswith((".pkl", ".cloudpickle")) for name in files)
    assert json.loads(next(local.rglob("architecture.json")).read_text())["kind"] == "reverse-hourglass"
    assert isinstance(torch.load(next(local.rglob("weights.pt")), weights_only=True), dict)


def test_predict_accepts_2d_arrays_nested_lists_and_dataframes(tmp_path, trained_like_model):
    from mlflow.pyfunc import PythonModelContext

    artifacts = save_artifacts(trained_like_model, tmp_path)
    wrapper = DenoiserPyfunc()
    wrapper.load_context(PythonModelContext(artifacts=artifacts, model_config={}))
    image = np.random.default_rng(2).poisson(12, (24, 30)).astype(np.float32)
    expected = denoise_array(trained_like_model, image)
    np.testing.assert_allclose(wrapper.predict(None, image), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(wrapper.predict(None, image.tolist()), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(wrapper.predict(None, pd.DataFrame(image)), expected, rtol=1e-5, atol=1e-5)
    per_cell = pd.DataFrame({"image": [image.tolist(), image.tolist()]})
    np.testing.assert_allclose(wrapper.predict(None, per_cell), np.stack([expected, expected]), rtol=1e-5,
                               atol=1e-5)
    with pytest.raises(ValueError, match="2-D"):
        wrapper.predict(None, np.zeros((2, 2, 2, 2), np.float32))


def test_unloaded_wrapper_says_how_to_load():
    with pytest.raises(RuntimeError, match="load_model"):
        DenoiserPyfunc().predict(None, np.zeros((8, 8), np.float32))


def test_a_registered_models_default_is_denoise_arrays_default(mlflow_store, tmp_path):
    """No params: the registered model answers exactly `denoise_array(network, image)` (the whole image
    with its small margin), not 256 px tiles overlapping by 16 px, which differ from it wherever the
    network sees further than 16 px (here 18 px) and at the borders."""
    import mlflow

    from stemreg.models import build_model
    from stemreg.models.mlflow_model import log_model_args
    from stemreg.platform.prediction import load_model

    torch.manual_seed(1)
    network = build_model({"kind": "reverse-hourglass", "depth": 6, "widths": [4, 4, 4, 4, 4], "kernel_size": 7})
    with torch.no_grad():
        torch.nn.init.normal_(network.net[-1].weight, std=0.2)
    network.eval()
    assert network.receptive_radius_px > 16
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="model", **log_model_args(network, tmp_path / "data"),
                                       signature=model_signature(), pip_requirements=["torch==2.13.0"])
    image = np.random.default_rng(3).poisson(12, (300, 280)).astype(np.float32)
    expected = denoise_array(network, image)
    assert {p.name: p.default for p in model_signature().params.params} == {
        "tile_px": None, "overlap_px": None, "batch_size": 8}
    # MLflow's own loader (what `mlflow models serve` runs) and stemreg's (CLI, API, `stemreg serve`)
    for pyfunc in (mlflow.pyfunc.load_model(info.model_uri), load_model(model_uri=info.model_uri).pyfunc):
        np.testing.assert_allclose(pyfunc.predict(image[None])[0], expected, rtol=1e-5, atol=1e-5)
    # explicit tiling still travels as params and is still checked
    loaded = mlflow.pyfunc.load_model(info.model_uri)
    np.testing.assert_allclose(loaded.predict(image[None], params={"tile_px": 256, "overlap_px": 16})[0],
                               denoise_array(network, image, tile_px=256, overlap_px=16), rtol=1e-5, atol=1e-5)
    with pytest.raises(Exception, match="quarter"):
        loaded.predict(image[None], params={"tile_px": 24})  # the image's default overlap, 8 px, is too wide


def test_the_work_of_a_request_follows_the_tiling_it_runs():
    from stemreg.models.inference import default_tiling
    from stemreg.models.mlflow_model import PASS_COST_PX, resolve_params, tiling_of, work_of

    network = make_model()  # receptive radius 4
    defaults = resolve_params(None)
    assert tiling_of((1, 300, 280), defaults, network) == default_tiling(network, 300, 280) == (308, 4)
    assert work_of((1, 300, 280), defaults, network) == 308 * 288 + PASS_COST_PX  # one whole-image pass
    # a large image: 1024 px tiles overlapping by the radius; an unknown network is counted at the widest
    assert tiling_of((2000, 2000), defaults, network) == (1032, 4)
    assert tiling_of((2000, 2000), defaults) == (1024 + 2 * 64, 64)
    assert work_of((2000, 2000), defaults) >= work_of((2000, 2000), defaults, network)
    given = resolve_params({"tile_px": 64, "overlap_px": 8})
    assert work_of((1, 96, 96), given, network) == 4 * 64 * 64 + PASS_COST_PX  # 2 x 2 tiles of 48 px + 2 x 8
    with pytest.raises(ValueError, match="0..128"):
        resolve_params({"overlap_px": 500})
