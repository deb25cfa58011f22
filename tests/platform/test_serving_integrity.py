"""Model integrity at load, no code run from the artifact store, and `stemreg denoise` outputs.

A real SQLite registry per module (models logged by `test_serving`'s helper through
`log_model_args`), the real CLI and a real server.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from test_serving import (CONDITION, NAME, log_and_register, noisy_stack, post_json, serving_store, set_champion,
                          wait_healthy)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model_dir(client, version: str) -> Path:
    uri = client.get_model_version_download_uri(NAME, version)
    return Path(uri.removeprefix("file://"))


def _weights(client, version: str) -> Path:
    return next(_model_dir(client, version).rglob("weights.pt"))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """v1 good (champion), v2 with truncated weights, v3 good with correct sha256 tags, v4 good
    with a wrong weights_sha256."""
    import mlflow

    with serving_store(tmp_path_factory.mktemp("integrity-store"), "integrity-tests", (1, 2, 3, 4)) as store:
        client = mlflow.MlflowClient()
        versions = store["versions"]
        weights = _weights(client, versions[1])
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        for version, digest in ((versions[2], None), (versions[3], "0" * 64)):
            data = _weights(client, version)
            client.set_model_version_tag(NAME, version, "weights_sha256",
                                         digest or hashlib.sha256(data.read_bytes()).hexdigest())
            arch = data.with_name("architecture.json").read_bytes()
            client.set_model_version_tag(NAME, version, "architecture_sha256", hashlib.sha256(arch).hexdigest())
        yield {**store, "client": client}


def _denoise_cli(store, tmp_path, *inputs: str, outdir: str | None = None):
    from stemreg.platform.cli import main

    env = {"MLFLOW_TRACKING_URI": store["uri"]}
    return CliRunner().invoke(main, ["denoise", *inputs, "--condition", CONDITION, "-o",
                                     outdir or str(tmp_path / "out")], env=env)


@pytest.fixture()
def image(tmp_path) -> Path:
    path = tmp_path / "frame.npy"
    np.save(path, noisy_stack(1, 24, seed=0)[0])
    return path


# --------------------------------------------------------------------------- loader_module

def test_new_models_store_no_code_and_name_the_installed_loader(store):
    model_dir = _model_dir(store["client"], store["versions"][0])
    assert not list(model_dir.rglob("*.py"))  # was pyfunc_entry.py, executed on load
    mlmodel = (model_dir / "MLmodel").read_text()
    assert "loader_module: stemreg.models.mlflow_model" in mlmodel


def test_an_old_models_from_code_model_loads_without_running_its_stored_code(tmp_path, monkeypatch):
    import mlflow

    from stemreg.models.architectures import build_model
    from stemreg.models.mlflow_model import model_signature, save_artifacts
    from stemreg.models.prediction import predict
    from stemreg.platform.registry.loading import load_pyfunc

    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "code-ran"
    entry = tmp_path / "entry.py"
    entry.write_text(textwrap.dedent(f"""
        from pathlib import Path
        Path({str(marker)!r}).write_text("ran")
        from mlflow.models import set_model
        from stemreg.models.mlflow_model import DenoiserPyfunc
        set_model(DenoiserPyfunc())
    """))
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        net = build_model({"kind": "reverse-hourglass", "depth": 3, "widths": [4, 4], "kernel_size": 3})
        with mlflow.start_run():
            info = mlflow.pyfunc.log_model(name="model", python_model=str(entry),
                                           artifacts=save_artifacts(net, tmp_path / "art"),
                                           signature=model_signature(), pip_requirements=["torch"])
        marker.unlink(missing_ok=True)  # logging may run it; loading must not
        model_dir = Path(mlflow.artifacts.download_artifacts(info.model_uri))
        model = load_pyfunc(str(model_dir))
        assert not marker.exists()
        assert predict(model, noisy_stack(1, 16, seed=1)[0]).shape == (16, 16)
    finally:
        mlflow.set_tracking_uri(None)


# --------------------------------------------------------------------------- integrity at load

def test_truncated_weights_are_one_line_in_denoise_naming_the_version_and_the_fix(store, tmp_path, image):
    set_champion(store["versions"][1])
    try:
        result = _denoise_cli(store, tmp_path, str(image))
    finally:
        set_champion(store["versions"][0])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output  # was a 46-line traceback
    assert f"version {store['versions'][1]}" in lines[0]
    assert f"stemreg rollback --condition {CONDITION}" in lines[0]


def test_a_weights_sha256_mismatch_refuses_to_load(store, tmp_path, image):
    set_champion(store["versions"][3])
    try:
        result = _denoise_cli(store, tmp_path, str(image))
    finally:
        set_champion(store["versions"][0])
    assert result.exit_code == 1
    assert "weights_sha256" in result.output and f"version {store['versions'][3]}" in result.output
    assert not (tmp_path / "out" / "frame.npy").exists()


def test_matching_sha256_tags_load_and_denoise(store, tmp_path, image):
    set_champion(store["versions"][2])
    try:
        result = _denoise_cli(store, tmp_path, str(image))
    finally:
        set_champion(store["versions"][0])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "frame.npy").is_file()


def test_reload_of_a_broken_version_answers_json_without_paths_and_keeps_serving(store):
    from stemreg.platform.serving import make_server

    srv = make_server(CONDITION, port=0, poll_seconds=0, tracking_uri=store["uri"]).start_background()
    try:
        wait_healthy(srv.url)
        for broken in (store["versions"][1], store["versions"][3]):
            set_champion(broken)
            status, answer = post_json(srv.url, "/reload", {})
            assert status == 500 and answer["error_code"] == "RELOAD_FAILED"  # was 500 with absolute paths
            assert f"still serving version {store['versions'][0]}" in answer["error"]
            assert str(store["root"]) not in json.dumps(answer) and "Error:" not in answer["error"]
            assert post_json(srv.url, "/invocations", {"inputs": noisy_stack(1, 8, seed=0).tolist()})[0] == 200
    finally:
        set_champion(store["versions"][0])
        srv.stop()


# --------------------------------------------------------------------------- denoise outputs

def test_two_inputs_with_one_output_name_are_refused_before_any_work(store, tmp_path):
    for folder in ("d1", "d2"):
        (tmp_path / folder).mkdir()
        np.save(tmp_path / folder / "same.npy", noisy_stack(1, 16, seed=2)[0])
    result = _denoise_cli(store, tmp_path, str(tmp_path / "d1/same.npy"), str(tmp_path / "d2/same.npy"))
    assert result.exit_code == 2, result.output  # was: one file written, two reported
    assert "would both be written to" in result.output
    assert not (tmp_path / "out").exists()


def test_an_unwritable_output_directory_is_one_line(store, tmp_path, image):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = _denoise_cli(store, tmp_path, str(image), outdir=str(blocker / "sub"))
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "cannot create the output directory" in result.output


def test_outputs_are_written_atomically_and_replacing_is_reported(store, tmp_path, image):
    first = _denoise_cli(store, tmp_path, str(image))
    second = _denoise_cli(store, tmp_path, str(image))
    assert first.exit_code == 0 and second.exit_code == 0
    assert "replaced" not in first.output and "replaced the existing file" in second.output
    assert sorted(os.listdir(tmp_path / "out")) == ["frame.npy"]  # no temporary file left behind


# --------------------------------------------------------------------------- moved project

def test_a_copied_project_reads_its_own_artifacts(tmp_path, monkeypatch):
    import shutil

    import mlflow

    from stemreg.platform.prediction import load_model

    original = tmp_path / "original"
    original.mkdir()
    monkeypatch.chdir(original)
    uri = f"sqlite:///{original / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        mlflow.set_experiment("moved")
        version = log_and_register(5)
        set_champion(version)
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    shutil.rmtree(original / "mlruns")  # the original's artifacts are gone: the copy must not need them
    monkeypatch.chdir(tmp_path)
    loaded = load_model(CONDITION, tracking_uri=f"sqlite:///{copy / 'mlflow.db'}")
    assert loaded.version == version
    assert loaded.pyfunc.predict(noisy_stack(1, 8, seed=0)).shape == (1, 8, 8)


# --------------------------------------------------------------------------- promotion checks the candidate

def _promote_cli(store, *args: str):
    from stemreg.platform.cli import main

    return CliRunner().invoke(main, ["promote", "--condition", CONDITION, *args],
                              env={"MLFLOW_TRACKING_URI": store["uri"]})


def _stored_state(client) -> dict:
    """Everything a promotion could change: the model's tags, aliases and description, every version's."""
    model = client.get_registered_model(NAME)
    versions = {v.version: (dict(v.tags), v.description, sorted(v.aliases))
                for v in client.search_model_versions(f"name='{NAME}'")}
    return {"tags": dict(model.tags), "aliases": dict(model.aliases), "description": model.description,
            "versions": versions}


@pytest.mark.parametrize("which, words", [(1, "cannot be read (truncated or corrupt?)"), (3, "weights_sha256")])
def test_force_promoting_a_version_that_cannot_load_is_refused_in_one_line_and_changes_nothing(
        store, which, words):
    client, broken = store["client"], store["versions"][which]
    before = _stored_state(client)
    result = _promote_cli(store, "--version", broken, "--force", "--reason", "x")
    assert result.exit_code == 1, result.output  # was: force-promoted, then every server failed to load it
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert f"version {broken}" in lines[0] and words in lines[0]
    assert f"the champion stays version {store['versions'][0]}" in lines[0] and "register" in lines[0]
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == store["versions"][0]
    assert _stored_state(client) == before


def test_a_version_answering_nan_is_refused_before_any_alias_moves(store, tmp_path):
    import torch

    from stemreg.platform import registry
    from stemreg.platform.registry import PromotionRefused

    client = store["client"]
    version = log_and_register(7)
    weights = _weights(client, version)
    state = torch.load(weights, weights_only=True)
    torch.save({k: torch.full_like(v, float("nan")) for k, v in state.items()}, weights)
    before = _stored_state(client)
    with pytest.raises(PromotionRefused, match=rf"version {version} .*not finite"):
        registry.promote(CONDITION, version, force=True, reason="x")
    assert _stored_state(client) == before


def test_rolling_back_to_a_version_damaged_since_is_refused_in_one_line_and_changes_nothing(store):
    from stemreg.platform.cli import main

    client = store["client"]
    earlier, later = log_and_register(9), log_and_register(10)
    try:
        for version in (earlier, later):
            assert _promote_cli(store, "--version", version, "--force", "--reason", "x").exit_code == 0
        weights = _weights(client, earlier)
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        before = _stored_state(client)
        result = CliRunner().invoke(main, ["rollback", "--condition", CONDITION, "--reason", "x"],
                                    env={"MLFLOW_TRACKING_URI": store["uri"]})
        assert result.exit_code == 1, result.output  # was: rolled back, then every server failed to load it
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and "Traceback" not in result.output, result.output
        assert f"version {earlier} cannot be rolled back to" in lines[0] and "truncated or corrupt" in lines[0]
        assert f"the champion stays version {later}" in lines[0] and "stemreg promote" in lines[0]
        assert _stored_state(client) == before
    finally:
        set_champion(store["versions"][0])


def test_a_champion_damaged_since_is_not_rescored_from_bad_weights(store):
    """Re-scoring the champion loads it as serving does (sha256 verified): refused in one line without
    --force; with --force the good candidate replaces it."""
    from stemreg.platform import registry
    from stemreg.platform.registry import PromotionRefused

    client = store["client"]
    damaged, candidate = log_and_register(11), log_and_register(12)
    try:
        set_champion(damaged)
        weights = _weights(client, damaged)
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        before = _stored_state(client)
        with pytest.raises(PromotionRefused, match=rf"champion version {damaged} cannot be loaded to score it.*"
                                                   r"truncated or corrupt.*--force"):
            registry.promote(CONDITION, candidate, rescore=True)
        after = _stored_state(client)
        assert after["aliases"] == before["aliases"]  # the candidate was scored (tags); nothing moved
        result = registry.promote(CONDITION, candidate, rescore=True, force=True, reason="champion damaged")
        assert result.to_version == candidate
        assert str(client.get_model_version_by_alias(NAME, "champion").version) == candidate
    finally:
        set_champion(store["versions"][0])


def test_a_good_version_still_force_promotes(store):
    good = store["versions"][2]  # correct sha256 tags
    try:
        result = _promote_cli(store, "--version", good, "--force", "--reason", "x")
        assert result.exit_code == 0, result.output
        assert "force-promoted" in result.output
        assert str(store["client"].get_model_version_by_alias(NAME, "champion").version) == good
    finally:
        set_champion(store["versions"][0])


# --------------------------------------------------------------------------- one verified path, every surface

def _foreign_copy(client, version: str, target: Path, marker: Path, *, code_path: bool) -> Path:
    """A copy of ``version``'s model whose MLmodel names a loader module that writes ``marker``."""
    shutil.copytree(_model_dir(client, version), target)
    module = target.parent / "stemreg_test_foreign_loader.py"
    module.write_text(f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
                      "def _load_pyfunc(path):\n    raise RuntimeError('foreign loader ran')\n")
    mlmodel = yaml.safe_load((target / "MLmodel").read_text())
    flavor = mlmodel["flavors"]["python_function"]
    flavor["loader_module"] = "stemreg_test_foreign_loader"
    if code_path:
        flavor["model_code_path"] = "code.py"
    (target / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    return target


@pytest.fixture(scope="module")
def foreign(store, tmp_path_factory):
    """A version of the store whose MLmodel names a foreign loader_module that writes a marker if run."""
    root = tmp_path_factory.mktemp("foreign")
    marker = root / "foreign-code-ran"
    model = _foreign_copy(store["client"], store["versions"][0], root / "foreign" / "model", marker, code_path=False)
    version = store["client"].create_model_version(NAME, source=str(model)).version
    sys.path.insert(0, str(model.parent))
    try:
        yield {"version": str(version), "marker": marker}
    finally:
        sys.path.remove(str(model.parent))


def test_napari_refuses_weights_whose_sha256_does_not_match(store, monkeypatch):
    from stemreg.errors import StemregError
    from stemreg_napari import denoise_image

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    with pytest.raises(StemregError, match="weights_sha256"):  # was: loaded and denoised without a word
        denoise_image(noisy_stack(1, 16, seed=0)[0], condition=CONDITION, alias=store["versions"][3])
    assert denoise_image(noisy_stack(1, 16, seed=0)[0], condition=CONDITION, alias="champion").data.shape == (16, 16)


def test_napari_runs_no_code_named_by_the_artifact_store(store, foreign, monkeypatch):
    from stemreg.errors import StemregError
    from stemreg_napari import denoise_image

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    with pytest.raises(StemregError, match="loader"):
        denoise_image(noisy_stack(1, 16, seed=0)[0], condition=CONDITION, alias=foreign["version"])
    assert not foreign["marker"].exists()  # was: mlflow.pyfunc.load_model imported the foreign module


def test_a_foreign_loader_with_a_model_code_path_is_refused(store, tmp_path):
    from stemreg.platform.registry.loading import ModelLoadError, load_pyfunc

    marker = tmp_path / "ran"
    model = _foreign_copy(store["client"], store["versions"][0], tmp_path / "model", marker, code_path=True)
    with pytest.raises(ModelLoadError, match="stemreg_test_foreign_loader"):  # was: let through the check
        load_pyfunc(str(model))
    assert not marker.exists()


@pytest.mark.parametrize("which, expected", [(1, "truncated or corrupt"), (3, "weights_sha256")])
def test_train_from_loads_through_the_verified_path_in_one_line(store, which, expected):
    from stemreg.errors import StemregError
    from stemreg.platform.training import load_parent

    uri = f"models:/{NAME}/{store['versions'][which]}"
    with pytest.raises(StemregError, match=expected) as caught:  # was: a traceback / loaded unverified
        load_parent(uri, None)
    assert len(str(caught.value).splitlines()) == 1 and str(caught.value).startswith(f"--from {uri}")
    network, arch = load_parent(f"models:/{NAME}@champion", None)
    assert arch["kind"] == "reverse-hourglass" and network.training


def test_train_from_truncated_weights_is_one_line_on_the_cli(store, tmp_path):
    from click.testing import CliRunner

    from stemreg.platform.cli import main

    result = CliRunner().invoke(main, ["train", "--condition", CONDITION, "--from", f"models:/{NAME}/{store['versions'][1]}",
                                       "--epochs", "1"], env={"MLFLOW_TRACKING_URI": store["uri"]})
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1 and "Traceback" not in result.output, result.output
    assert "truncated or corrupt" in lines[0]
