"""Issue 19: what used to answer wrongly without a word (items 5, 7, 8) now fails in one line.

Real files, the real CLI, a real MLflow SQLite store, real sockets; the shipped pretrained base
stands in for a registered model where one is needed (no training).
"""
from __future__ import annotations

import socket
import threading

import numpy as np
import pytest
from click.testing import CliRunner

import stemreg
from stemreg.errors import BadInputError, StemregError


@pytest.fixture
def bare_cwd(tmp_path, monkeypatch):
    """A fresh folder with no store and no MLFLOW_TRACKING_URI: `stemreg` as right after pip install."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


@pytest.fixture(scope="module")
def base():
    from stemreg.platform.registry.loading import load_shipped_base

    return load_shipped_base("low-dose")


def _cli(*args, env=None):
    from stemreg.platform.cli import main

    return CliRunner().invoke(main, list(map(str, args)), env=env or {})


def _one_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip() and not line.startswith(("Usage:", "Try "))]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


# --------------------------------------------------------------------------- item 5: conditions, stores

@pytest.mark.parametrize("condition", ["no-such", ""])
def test_an_unknown_or_empty_condition_is_refused_not_answered_by_the_base(bare_cwd, condition):
    with pytest.raises(BadInputError, match="unknown condition"):  # was: the shipped base's output
        stemreg.denoise(np.ones((16, 16), np.float32), condition=condition)
    assert stemreg.load_model("low-dose").version is None  # a real condition still gets the base


def test_an_unknown_condition_is_refused_against_a_store_too(mlflow_store):
    with pytest.raises(BadInputError, match="unknown condition 'no-such'"):
        stemreg.load_model("no-such", tracking_uri=mlflow_store)


def test_a_typo_in_tracking_uri_is_refused_and_creates_no_store(bare_cwd):
    with pytest.raises(BadInputError, match="no MLflow store at sqlite:///mlfow.db"):
        stemreg.denoise(np.ones((16, 16), np.float32), condition="low-dose", tracking_uri="sqlite:///mlfow.db")
    np.save(bare_cwd / "scan.npy", np.ones((16, 16), np.float32))
    result = _cli("denoise", bare_cwd / "scan.npy", "--condition", "low-dose", "-o", bare_cwd / "out",
                  env={"MLFLOW_TRACKING_URI": f"sqlite:///{bare_cwd / 'typo.db'}"})
    assert result.exit_code == 2 and "no MLflow store at" in _one_line(result)
    assert sorted(p.name for p in bare_cwd.iterdir()) == ["scan.npy"]  # no mlfow.db, typo.db or mlflow.db made


def test_denoise_before_anything_is_trained_creates_no_store(bare_cwd):
    np.save(bare_cwd / "scan.npy", np.random.default_rng(0).random((24, 24)).astype(np.float32))
    result = _cli("denoise", bare_cwd / "scan.npy", "--condition", "low-dose", "-o", bare_cwd / "out")
    assert result.exit_code == 0, result.output
    assert not (bare_cwd / "mlflow.db").exists()  # reading creates nothing


# --------------------------------------------------------------------------- item 5: arrays and files

@pytest.mark.parametrize("array, expected", [
    (np.ones((24, 24, 3), np.float32), "3 channels last"),
    (np.ones((16, 16), bool), "booleans"),
    (np.ones((16, 16), np.complex64), "complex numbers"),
])
def test_channels_booleans_and_complex_arrays_are_refused(base, array, expected):
    with pytest.raises(BadInputError, match=expected):  # was: denoised as a stack / cast silently
        stemreg.denoise(array, model=base)


@pytest.mark.parametrize("array", [np.zeros((2, 8, 8, 2), np.float32), np.ones(16, np.float32), None, {"a": 1}],
                         ids=["N-H-W-2", "1-D", "None", "dict"])
def test_a_registered_model_refuses_a_wrong_shape_in_one_line(registered_low_dose, array):
    with pytest.raises(BadInputError) as caught:  # was: MLflow's schema error, the whole array printed
        stemreg.denoise(array, condition="low-dose", tracking_uri=registered_low_dose.tracking_uri)
    assert "\n" not in str(caught.value) and ("shape" in str(caught.value) or "None" in str(caught.value))


def test_a_channels_last_npy_is_refused_naming_the_file(bare_cwd):
    np.save(bare_cwd / "rgb.npy", np.ones((24, 24, 3), np.float32))
    result = _cli("denoise", bare_cwd / "rgb.npy", "--condition", "low-dose", "-o", bare_cwd / "out")
    assert result.exit_code == 2 and "rgb.npy" in _one_line(result) and "channels" in _one_line(result)
    assert not (bare_cwd / "out" / "rgb.npy").exists()


def test_a_two_channel_request_body_is_refused_by_the_servers_reader():
    import io

    from stemreg.platform.serving.http_io import RequestError, decode_image

    body = io.BytesIO()
    np.save(body, np.ones((1, 24, 24, 2), np.float32))
    with pytest.raises(RequestError, match="2 channels last") as caught:  # what POST /denoise decodes
        decode_image(body.getvalue(), "npy", max_pixels=10 ** 6)  # was: 24 images 24 x 2 px
    assert caught.value.status == 400


# --------------------------------------------------------------------------- item 6: overflow

def test_float64_beyond_float32_is_refused_not_turned_into_inf(base, bare_cwd):
    with pytest.raises(BadInputError, match="beyond float32's range"):  # was: "holds NaN or Inf"
        stemreg.denoise(np.full((16, 16), 1e298), model=base)
    np.save(bare_cwd / "huge.npy", np.full((16, 16), 1e298))
    with pytest.raises(BadInputError, match="huge.npy: holds values up to 1e\\+298"):
        stemreg.denoise(bare_cwd / "huge.npy", model=base)


def test_a_grey_plus_alpha_png_is_denoised_and_written(bare_cwd):
    from PIL import Image

    grey = (np.random.default_rng(1).random((24, 24)) * 255).astype(np.uint8)
    Image.merge("LA", (Image.fromarray(grey), Image.fromarray(np.full_like(grey, 255)))).save(bare_cwd / "la.png")
    result = _cli("denoise", bare_cwd / "la.png", "--condition", "low-dose", "-o", bare_cwd / "out")
    assert result.exit_code == 0, result.output  # was: denoised as a stack of 24 images, then the write failed
    assert Image.open(bare_cwd / "out" / "la.png").size == (24, 24)


def test_simulate_into_a_folder_that_cannot_exist_is_one_line(tmp_path):
    (tmp_path / "a-file").write_text("")
    result = _cli("simulate", "--condition", "low-dose", "--n", "1", "--size", "16", "--out", tmp_path / "a-file" / "x")
    assert result.exit_code == 2 and "--out" in _one_line(result)  # was: a traceback after simulating


# --------------------------------------------------------------------------- item 7: a copied project

def _tree(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*"))


def test_a_copied_project_reads_and_writes_its_own_folder(tmp_path, monkeypatch):
    import shutil

    import mlflow

    from stemreg.platform.store import configure

    original = tmp_path / "original"
    original.mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{original / 'mlflow.db'}")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "portable")
    configure()
    with mlflow.start_run() as old_run:
        mlflow.log_text("hello", "note.txt")
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    before = _tree(original)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{copy / 'mlflow.db'}")
    configure()  # was: refused (and before that: new runs wrote into original/mlruns)
    with mlflow.start_run() as run:
        mlflow.log_text("here", "note.txt")
    assert run.info.artifact_uri.startswith((copy / "mlruns").as_uri())
    assert _tree(original) == before  # nothing written into the old folder, its store included
    original.rename(tmp_path / "gone")  # the copy must not need it
    note = mlflow.artifacts.download_artifacts(run_id=old_run.info.run_id, artifact_path="note.txt",
                                               dst_path=str(tmp_path / "read"))
    assert open(note).read() == "hello"  # was: read from original/mlruns, missing once it was gone
    mlflow.set_tracking_uri(None)


def test_a_copied_then_moved_project_denoises_from_its_own_folder(registered_low_dose, tmp_path):
    import shutil
    import sqlite3

    scan = np.random.default_rng(0).random((24, 24)).astype(np.float32)
    np.save(tmp_path / "scan.npy", scan)
    expected = stemreg.denoise(scan, condition="low-dose", tracking_uri=registered_low_dose.tracking_uri)
    first = tmp_path / "first"
    shutil.copytree(registered_low_dose.store_dir, first)
    second = tmp_path / "second"
    for store in (first, second):
        if store is second:  # copy the copy, then delete the one it came from
            shutil.copytree(first, second)
            shutil.rmtree(first)
        result = _cli("denoise", tmp_path / "scan.npy", "--condition", "low-dose", "-o", store / "out",
                      env={"MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}"})
        assert result.exit_code == 0, result.output
        np.testing.assert_allclose(np.load(store / "out" / "scan.npy"), expected, atol=1e-6)  # the registered model
    with sqlite3.connect(second / "mlflow.db") as con:
        paths = [row[0] for row in con.execute("SELECT storage_location FROM model_versions UNION ALL "
                                               "SELECT artifact_uri FROM runs")]
    assert paths and all(str(second / "mlruns") in p or (second / "mlruns").as_uri() in p for p in paths), paths


# --------------------------------------------------------------------------- item 8: an unreachable server

def test_denoise_against_a_server_that_never_answers_is_one_line(bare_cwd, monkeypatch):
    import stemreg.platform.store as store

    monkeypatch.setattr(store, "REACH_TIMEOUT_S", 0.5)  # the real timeout is 5 s; the socket never answers
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections into its backlog, never reads nor answers
    np.save(bare_cwd / "scan.npy", np.ones((16, 16), np.float32))
    try:
        result = _cli("denoise", bare_cwd / "scan.npy", "--condition", "low-dose", "-o", bare_cwd / "out",
                      env={"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{silent.getsockname()[1]}"})
    finally:
        silent.close()
    assert result.exit_code == 1 and "cannot reach the MLflow tracking server" in _one_line(result)
    assert not (bare_cwd / "out" / "scan.npy").exists()  # was: retried past 60 s, then the base's output
