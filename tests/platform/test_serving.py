"""`stemreg serve`: a real HTTP server on a free localhost port, over a real MLflow registry.

The store is this module's own (SQLite in a temp dir) because the hot-swap
tests move the `champion` alias, which other modules' shared fixtures must
not see.
"""
from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
from pathlib import Path
import re
import subprocess
import tempfile
import threading
import time

import numpy as np
import pytest
from tests.platform.conftest import stop_server

CONDITION = "low-dose"
NAME = f"stem-denoiser-{CONDITION}"
MAX_PIXELS = 4 * 48 * 48  # small cap, so the 413 test sends little


# --------------------------------------------------------------------------- helpers

def request(url: str, method: str, path: str, body: bytes | None = None,
            headers: dict | None = None, timeout: float = 60) -> tuple[int, dict, bytes]:
    """One HTTP exchange on a fresh connection: (status, headers, body)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def post_json(url: str, path: str, payload, **kw) -> tuple[int, object]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    status, _, data = request(url, "POST", path, body, {"Content-Type": "application/json"}, **kw)
    return status, json.loads(data)


def get_json(url: str, path: str) -> tuple[int, object]:
    status, _, data = request(url, "GET", path)
    return status, json.loads(data)


def wait_healthy(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if request(url, "GET", "/health", timeout=5)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url}/health did not answer 200 within {timeout_s} s")


def noisy_stack(n: int, size_px: int, *, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.poisson(30.0, size=(n, size_px, size_px)) / 30.0).astype(np.float32)


def log_and_register(seed: int) -> str:
    """Log a tiny (untrained) reverse hourglass as a pyfunc and register it; returns the version."""
    import mlflow
    import torch

    from stemreg.models.architectures import build_model
    from stemreg.models.mlflow_model import log_model_args, model_signature

    torch.manual_seed(seed)
    net = build_model({"kind": "reverse-hourglass", "depth": 3, "widths": [4, 4], "kernel_size": 3})
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="model", **log_model_args(net, tmp), signature=model_signature(),
                                       # explicit requirements: MLflow's inference of them costs ~17 s
                                       pip_requirements=["torch==2.13.0"])
    version = mlflow.register_model(info.model_uri, NAME)
    mlflow.MlflowClient().set_model_version_tag(NAME, version.version, "benchmark.psnr", str(20.0 + seed))
    return str(version.version)


def set_champion(version: str) -> None:
    import mlflow

    mlflow.MlflowClient().set_registered_model_alias(NAME, "champion", version)


# --------------------------------------------------------------------------- fixtures

@contextlib.contextmanager
def serving_store(root: Path, experiment: str, seeds: tuple[int, ...]):
    """A real SQLite registry in ``root`` (artifacts there too) with :func:`log_and_register` of each
    seed, the first version champion; MLflow's URIs and the working directory point at it inside.
    Yields ``{"uri", "versions", "root"}``."""
    import mlflow

    uri = f"sqlite:///{root / 'mlflow.db'}"
    old_cwd = os.getcwd()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # artifacts land under root
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        mlflow.set_experiment(experiment)
        versions = [log_and_register(seed) for seed in seeds]
        set_champion(versions[0])
        try:
            yield {"uri": uri, "versions": versions, "root": root}
        finally:
            mlflow.set_tracking_uri(None)
            mlflow.set_registry_uri(None)
    os.chdir(old_cwd)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A real SQLite registry with two versions of stem-denoiser-low-dose; v1 is champion."""
    with serving_store(tmp_path_factory.mktemp("serving-store"), "serving-tests", (1, 2)) as store:
        yield store


@pytest.fixture(autouse=True)
def _mlflow_points_at_store(store):
    """MLflow's global URIs at this module's store for every test: a session fixture created mid-module
    (``registered_low_dose``) points them at its own store, and the helpers here use the globals."""
    import mlflow

    mlflow.set_tracking_uri(store["uri"])
    mlflow.set_registry_uri(store["uri"])


@pytest.fixture(scope="module")
def pyfuncs(store):
    """Each version loaded straight through mlflow.pyfunc, the reference answer."""
    import mlflow.pyfunc

    return {v: mlflow.pyfunc.load_model(f"models:/{NAME}/{v}") for v in store["versions"]}


@pytest.fixture()
def champion_v1(store):
    """Make sure v1 is champion when a test starts (hot-swap tests move it)."""
    set_champion(store["versions"][0])
    return store["versions"][0]


@pytest.fixture(scope="module")
def server(store):
    from stemreg.platform.serving import make_server

    set_champion(store["versions"][0])
    srv = make_server(CONDITION, port=0, max_pixels=MAX_PIXELS, poll_seconds=0,
                      tracking_uri=store["uri"]).start_background()
    wait_healthy(srv.url)
    yield srv
    srv.stop()


@pytest.fixture()
def url(server, champion_v1):
    server.holder.refresh()  # back to v1 if a previous test moved it
    return server.url


# --------------------------------------------------------------------------- health, model

def test_health_ping_and_model_describe_the_champion(url, store):
    assert request(url, "GET", "/health")[0] == 200
    assert request(url, "GET", "/ping")[0] == 200
    status, info = get_json(url, "/model")
    assert status == 200
    assert info["name"] == NAME and info["condition"] == CONDITION and info["alias"] == "champion"
    assert info["version"] == store["versions"][0]
    assert info["metrics"]["benchmark.psnr"] == pytest.approx(21.0)
    assert info["architecture"] is None or info["architecture"]["kind"] == "reverse-hourglass"
    assert re.match(r"\d{4}-\d\d-\d\dT", info["loaded_at"])


def test_health_is_503_until_the_model_is_loaded(store, champion_v1):
    from stemreg.platform.registry.loading import load_pyfunc as _load_pyfunc
    from stemreg.platform.serving import make_server

    gate = threading.Event()

    def slow_loader(uri: str):
        gate.wait(30)
        return _load_pyfunc(uri)

    srv = make_server(CONDITION, port=0, poll_seconds=0, tracking_uri=store["uri"], loader=slow_loader)
    try:
        srv.start_background()
        assert request(srv.url, "GET", "/health")[0] == 503
        status, body = post_json(srv.url, "/invocations", {"inputs": noisy_stack(1, 8, seed=0).tolist()})
        assert status == 503 and "not loaded" in body["error"]
        gate.set()
        wait_healthy(srv.url)
        assert get_json(srv.url, "/model")[1]["version"] == champion_v1
    finally:
        gate.set()
        srv.stop()


# --------------------------------------------------------------------------- JSON round trips

@pytest.mark.parametrize("key", ["inputs", "instances"])
def test_invocations_answer_what_the_pyfunc_answers(url, pyfuncs, champion_v1, key):
    x = noisy_stack(2, 24, seed=3)
    status, body = post_json(url, "/invocations", {key: x.tolist()})
    assert status == 200, body
    got = np.asarray(body["predictions"], dtype=np.float32)
    want = pyfuncs[champion_v1].predict(x)
    assert got.shape == x.shape
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert not np.allclose(got, x)  # the model did something


def test_invocations_with_trust_add_the_report_beside_mlflows_predictions(url, pyfuncs, champion_v1):
    x = noisy_stack(2, 24, seed=3)
    status, plain = post_json(url, "/invocations", {"inputs": x.tolist()})
    assert status == 200 and set(plain) == {"predictions"}  # MLflow's answer, unchanged by default
    status, body = post_json(url, "/invocations?trust=1", {"inputs": x.tolist()})
    assert status == 200, body
    assert body["predictions"] == plain["predictions"]
    assert body["trust"]["verdict"] in ("ok", "doubtful", "out of range") and body["trust"]["reason"]
    assert 0 < body["trust"]["figures"]["variance_ratio"]


def test_invocations_take_a_lone_image_and_answer_it_as_an_image(url, pyfuncs, champion_v1):
    x = noisy_stack(1, 20, seed=4)[0]
    status, body = post_json(url, "/invocations", {"inputs": x.tolist()})
    assert status == 200, body
    got = np.asarray(body["predictions"], dtype=np.float32)
    assert got.shape == x.shape
    np.testing.assert_allclose(got, pyfuncs[champion_v1].predict(x[None])[0], rtol=1e-6, atol=1e-6)


def test_invocations_take_dataframe_split_as_one_image(url, pyfuncs, champion_v1):
    x = noisy_stack(1, 12, seed=13)[0]
    payload = {"dataframe_split": {"columns": [f"c{i}" for i in range(12)], "data": x.tolist()}}
    status, body = post_json(url, "/invocations", payload)
    assert status == 200, body
    np.testing.assert_allclose(np.asarray(body["predictions"]), pyfuncs[champion_v1].predict(x[None])[0],
                               rtol=1e-6, atol=1e-6)


def test_invocations_pass_params_to_the_model(url, pyfuncs, champion_v1):
    x = noisy_stack(1, 40, seed=5)
    params = {"tile_px": 24, "overlap_px": 4}
    status, body = post_json(url, "/invocations", {"inputs": x.tolist(), "params": params})
    assert status == 200, body
    want = pyfuncs[champion_v1].predict(x, params=params)
    np.testing.assert_allclose(np.asarray(body["predictions"]), want, rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------- image round trips

def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def test_denoise_npy_round_trip(url, pyfuncs, champion_v1):
    x = noisy_stack(1, 32, seed=6)[0]
    status, headers, body = request(url, "POST", "/denoise", _npy_bytes(x))
    assert status == 200, body[:300]
    got = np.load(io.BytesIO(body))
    assert got.shape == x.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, pyfuncs[champion_v1].predict(x[None])[0], rtol=1e-6, atol=1e-6)
    assert headers["X-Model-Version"] == champion_v1
    # the trust report's verdict and reason, judged from the input and the output alone
    assert headers["X-Stemreg-Trust"].split("; ")[0] in ("ok", "doubtful", "out of range")


def test_denoise_npy_stack_round_trip(url, pyfuncs, champion_v1):
    x = noisy_stack(2, 16, seed=7)
    status, _, body = request(url, "POST", "/denoise", _npy_bytes(x))
    assert status == 200, body[:300]
    np.testing.assert_allclose(np.load(io.BytesIO(body)), pyfuncs[champion_v1].predict(x),
                               rtol=1e-6, atol=1e-6)


def test_denoise_tiff_round_trip_keeps_the_calibration(url, pyfuncs, champion_v1, tmp_path):
    from stemreg.acquisition import read_image, write_image
    from stemreg.acquisition import Calibration

    x = noisy_stack(1, 32, seed=8)[0]
    path = tmp_path / "in.tif"
    write_image(path, x, Calibration(pixel_size=12.5, unit="pm"))
    sent = read_image(path)
    status, headers, body = request(url, "POST", "/denoise", path.read_bytes())
    assert status == 200, body[:300]
    assert headers["Content-Type"] == "image/tiff"
    out = tmp_path / "out.tif"
    out.write_bytes(body)
    got = read_image(out)
    assert got.calibration.unit == sent.calibration.unit
    assert got.calibration.pixel_size == pytest.approx(sent.calibration.pixel_size)
    np.testing.assert_allclose(got.data, pyfuncs[champion_v1].predict(sent.data[None])[0],
                               rtol=1e-5, atol=1e-5)


def test_denoise_of_a_scan_outside_the_trained_samplings_says_so(registered_low_dose, tmp_path):
    import threading

    from stemreg.acquisition import Calibration, write_image
    from stemreg.platform.serving import make_server

    # a version registered by training: its tags carry the condition's samplings (4-64 pm/px)
    srv = make_server("low-dose", port=0, poll_seconds=0, tracking_uri=registered_low_dose.tracking_uri)
    srv.holder.load()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}"
        answers = {}
        for pm in (12.5, 200.0):
            path = tmp_path / f"scan{pm}.tif"
            write_image(path, noisy_stack(1, 32, seed=9)[0], Calibration(pixel_size=pm, unit="pm"))
            answers[pm] = request(url, "POST", "/denoise", path.read_bytes())
    finally:
        srv.stop()
    assert answers[12.5][0] == 200 and "X-Stemreg-Warning" not in answers[12.5][1]
    status, headers, body = answers[200.0]
    assert status == 200, body[:300]  # denoised anyway
    assert "200 pm lies outside the 4-64 pm/px" in headers["X-Stemreg-Warning"]


def test_denoise_png_round_trip(url, pyfuncs, champion_v1, tmp_path):
    import imageio.v3 as iio

    from stemreg.acquisition import read_image

    rng = np.random.default_rng(9)
    x = rng.poisson(40.0, size=(32, 32)).clip(0, 255).astype(np.uint8)
    status, headers, body = request(url, "POST", "/denoise", iio.imwrite("<bytes>", x, extension=".png"))
    assert status == 200, body[:300]
    assert headers["Content-Type"] == "image/png" and body.startswith(b"\x89PNG")
    out = tmp_path / "out.png"
    out.write_bytes(body)
    got = read_image(out).data
    want = pyfuncs[champion_v1].predict(x.astype(np.float32)[None])[0]
    assert got.shape == x.shape
    # PNG goes out as 16 bits over the result's value range: that is the only loss.
    step = (want.max() - want.min()) / 65535
    np.testing.assert_allclose(got, want, atol=step, rtol=0)


# --------------------------------------------------------------------------- bad input

BAD_JSON = [
    (b"{not json", 400, "bad JSON"),
    (b"", 400, "empty"),
    (json.dumps([1, 2, 3]).encode(), 400, "not an object"),
    (json.dumps({"images": [[1.0]]}).encode(), 400, "exactly one input key"),
    (json.dumps({"inputs": [[1.0, 2.0], [3.0]]}).encode(), 400, ""),
    (json.dumps({"inputs": [1.0, 2.0, 3.0]}).encode(), 400, "rank 1"),
    (json.dumps({"inputs": [[[[1.0]]]]}).encode(), 400, "rank 4"),
    (json.dumps({"inputs": [[[1.0, float("nan")], [1.0, 2.0]]]}).encode(), 400, "NaN"),
    (json.dumps({"inputs": [[[1.0, float("inf")], [1.0, 2.0]]]}).encode(), 400, "infinite"),
    (json.dumps({"inputs": [[[]]]}).encode(), 400, "empty"),
    (json.dumps({"inputs": np.ones((1, 100, 100)).tolist()}).encode(), 413, "cap"),
]


@pytest.mark.parametrize("body, status, words", BAD_JSON, ids=[w or "ragged" for _, _, w in BAD_JSON])
def test_bad_json_gets_a_4xx_naming_the_problem_and_the_server_goes_on(url, body, status, words):
    got, answer = post_json(url, "/invocations", body)
    assert got == status, answer
    assert words in answer["error"] and answer["accepted"]
    assert request(url, "GET", "/health")[0] == 200
    ok, _ = post_json(url, "/invocations", {"inputs": noisy_stack(1, 8, seed=0).tolist()})
    assert ok == 200


BAD_IMAGES = [
    (b"hello, this is text", 400, "not an image"),
    (b"", 400, "empty"),
    (_npy_bytes(np.ones(16, np.float32)), 400, "1 dimension"),
    (_npy_bytes(np.ones((2, 2, 4, 4), np.float32)), 400, "4 dimension"),
    (_npy_bytes(np.array([[1.0, np.nan], [np.inf, 1.0]], np.float32)), 400, "NaN"),
    (_npy_bytes(np.ones((0, 8), np.float32)), 400, "too small"),
    (_npy_bytes(np.array([["a", "b"], ["c", "d"]])), 400, "dtype"),
    (_npy_bytes(np.ones((100, 100), np.float32)), 413, "cap"),
    (b"\x93NUMPY garbage that is no array", 400, "could not read"),
    (b"\x89PNG\r\n\x1a\n truncated", 400, "could not read"),
]


@pytest.mark.parametrize("body, status, words", BAD_IMAGES, ids=[w for _, _, w in BAD_IMAGES])
def test_bad_images_get_a_4xx_naming_the_problem_and_the_server_goes_on(url, body, status, words):
    got, _, data = request(url, "POST", "/denoise", body, {"Content-Type": "application/octet-stream"})
    answer = json.loads(data)
    assert got == status, answer
    assert words in answer["error"] and answer["accepted"]
    ok, _, _ = request(url, "POST", "/denoise", _npy_bytes(noisy_stack(1, 8, seed=0)[0]))
    assert ok == 200


def test_oversized_body_is_refused_before_it_is_read(url, server):
    body = b"0" * (server.max_body_bytes + 1)
    status, headers, data = request(url, "POST", "/denoise", body)
    assert status == 413 and "larger than" in json.loads(data)["error"]
    assert request(url, "GET", "/health")[0] == 200


def test_unknown_endpoint_and_wrong_method_are_named(url):
    status, _, data = request(url, "GET", "/nope")
    assert status == 404 and "/invocations" in json.loads(data)["accepted"]
    status, _, data = request(url, "GET", "/invocations")
    assert status == 405 and "POST" in json.loads(data)["accepted"]


def test_non_json_content_type_on_invocations_is_415(url):
    status, _, data = request(url, "POST", "/invocations", b"a,b\n1,2\n", {"Content-Type": "text/csv"})
    assert status == 415 and "/denoise" in json.loads(data)["accepted"]


# --------------------------------------------------------------------------- hot swap

def test_moved_champion_is_served_after_reload_without_restart(url, store, pyfuncs, champion_v1):
    v1, v2 = store["versions"]
    x = noisy_stack(1, 16, seed=10)
    set_champion(v2)
    status, answer = post_json(url, "/reload", {})
    assert status == 200 and answer["changed"] and answer["version"] == v2
    assert answer["previous_version"] == v1
    assert get_json(url, "/model")[1]["version"] == v2
    got = np.asarray(post_json(url, "/invocations", {"inputs": x.tolist()})[1]["predictions"])
    np.testing.assert_allclose(got, pyfuncs[v2].predict(x), rtol=1e-6, atol=1e-6)
    assert not np.allclose(got, pyfuncs[v1].predict(x), atol=1e-4)
    # Nothing moved since: a second reload changes nothing.
    status, answer = post_json(url, "/reload", {})
    assert status == 200 and not answer["changed"]


def test_requests_during_a_swap_get_one_version_or_the_other_never_an_error(url, store, pyfuncs,
                                                                              champion_v1):
    v1, v2 = store["versions"]
    x = noisy_stack(1, 16, seed=12)
    answers = {v: pyfuncs[v].predict(x) for v in (v1, v2)}
    results: list[tuple[int, np.ndarray | None]] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            status, body = post_json(url, "/invocations", {"inputs": x.tolist()})
            results.append((status, np.asarray(body.get("predictions"), dtype=np.float32)))

    threads = [threading.Thread(target=client) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for version in (v2, v1, v2, v1):
            set_champion(version)
            assert post_json(url, "/reload", {})[0] == 200
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert results and all(status == 200 for status, _ in results)
    for _, got in results:
        assert any(np.allclose(got, want, rtol=1e-6, atol=1e-6) for want in answers.values())


def test_poller_picks_up_a_moved_champion(store, champion_v1):
    from stemreg.platform.serving import make_server

    v1, v2 = store["versions"]
    with make_server(CONDITION, port=0, poll_seconds=0.2, tracking_uri=store["uri"]) as srv:
        srv.start_background()
        wait_healthy(srv.url)
        assert get_json(srv.url, "/model")[1]["version"] == v1
        set_champion(v2)
        deadline = time.monotonic() + 30
        while get_json(srv.url, "/model")[1]["version"] != v2:
            assert time.monotonic() < deadline, "poller never loaded the moved champion"
            time.sleep(0.1)


def test_failed_load_keeps_the_old_model_serving(url, store, champion_v1, caplog):
    import mlflow

    client = mlflow.MlflowClient()
    broken = client.create_model_version(NAME, source=str(store["root"] / "no-such-model"))
    try:
        set_champion(broken.version)
        with caplog.at_level("ERROR", logger="stemreg.platform.serving"):
            status, answer = post_json(url, "/reload", {})
        assert status == 500 and f"still serving version {champion_v1}" in answer["error"]
        assert any("could not refresh" in r.message for r in caplog.records)
        assert get_json(url, "/model")[1]["version"] == champion_v1
        assert post_json(url, "/invocations", {"inputs": noisy_stack(1, 8, seed=0).tolist()})[0] == 200
    finally:
        set_champion(champion_v1)
        client.delete_model_version(NAME, broken.version)


# --------------------------------------------------------------------------- start-up errors

def test_unknown_condition_is_a_clear_start_up_error(store):
    from stemreg.platform.errors import BadInputError
    from stemreg.platform.serving import make_server

    with pytest.raises(BadInputError, match="no-such-condition") as excinfo:
        make_server("no-such-condition", port=0, tracking_uri=store["uri"])
    assert "known conditions" in str(excinfo.value) and "low-dose" in str(excinfo.value)


def test_missing_store_is_a_start_up_error_and_no_empty_store_is_made(tmp_path):
    from stemreg.platform.errors import BadInputError
    from stemreg.platform.serving import make_server

    db = tmp_path / "mlflow.db"
    with pytest.raises(BadInputError, match="no MLflow store"):
        make_server(CONDITION, port=0, tracking_uri=f"sqlite:///{db}")
    assert not db.exists()


def test_no_champion_yet_is_a_clear_start_up_error(store):
    import mlflow

    from stemreg.platform.errors import BadInputError
    from stemreg.platform.serving import make_server

    mlflow.MlflowClient().create_registered_model("stem-denoiser-serving-test-empty")
    with pytest.raises(BadInputError, match="no version with alias 'champion'"):
        make_server("serving-test-empty", port=0, tracking_uri=store["uri"])


# --------------------------------------------------------------------------- the real CLI

def _cli_env(store) -> dict:
    return {**os.environ, "MLFLOW_TRACKING_URI": store["uri"], "PYTHONUNBUFFERED": "1"}


def test_cli_serve_refuses_an_unknown_condition_with_exit_2(store):
    out = subprocess.run(["stemreg", "serve", "--condition", "no-such-condition", "--port", "0"],
                         env=_cli_env(store), cwd=store["root"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "no-such-condition" in out.stderr and "Traceback" not in out.stderr


def test_cli_serve_serves_the_champion(store, pyfuncs, champion_v1):
    proc = subprocess.Popen(["stemreg", "serve", "--condition", CONDITION, "--port", "0",
                             "--poll-seconds", "0"], env=_cli_env(store), cwd=store["root"],
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        url = None
        deadline = time.monotonic() + 120
        while url is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                pytest.fail(f"stemreg serve exited with {proc.returncode}")
            found = re.search(r"http://127\.0\.0\.1:\d+", line)
            url = found.group(0) if found else None
        assert url, "stemreg serve never said where it listens"
        wait_healthy(url, timeout_s=120)
        x = noisy_stack(1, 16, seed=11)
        status, body = post_json(url, "/invocations", {"inputs": x.tolist()})
        assert status == 200
        np.testing.assert_allclose(np.asarray(body["predictions"]), pyfuncs[champion_v1].predict(x),
                                   rtol=1e-6, atol=1e-6)
        assert get_json(url, "/model")[1]["version"] == champion_v1
    finally:
        stop_server(proc)
