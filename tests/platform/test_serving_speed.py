"""`stemreg serve`'s fast paths give the same answers as the general ones.

The JSON answer is MLflow's bytes; an .npy body is used where it arrived and the answer's pixels are
sent as they are, byte for byte what the general reader and writer give; forward calls run side by side
(``parallel``) with dynamic batching, and every request still gets its own image's answer.
"""
from __future__ import annotations

import http.client
import io
import json
import sys
import threading
import time

import numpy as np
import pytest

CONDITION = "low-dose"
NAME = f"stem-denoiser-{CONDITION}"


def _npy(a: np.ndarray, *, fortran: bool = False) -> bytearray:
    buf = io.BytesIO()
    np.save(buf, np.asfortranarray(a) if fortran else a)
    return bytearray(buf.getvalue())  # what the server reads a body into


# --------------------------------------------------------------------------- JSON answers

def _mlflow_answer(value) -> bytes:
    from mlflow.pyfunc.scoring_server import predictions_to_json

    out = io.StringIO()
    predictions_to_json(value, out)
    return out.getvalue().encode()


@pytest.mark.parametrize("shape", [(7, 5), (1, 33, 17), (3, 8, 8)])
def test_json_answer_reads_back_as_mlflows_values(shape):
    """Every number a client parses from our answer is the float64 it parses from MLflow's."""
    from stemreg.platform.serving.json_io import predictions_json

    rng = np.random.default_rng(0)
    tiny = (rng.normal(size=shape) * 1e-6).astype(np.float32)  # exponents: spelt 1e-6, not 1e-06
    huge = (rng.normal(size=shape) * 1e20).astype(np.float32)
    for values in (rng.normal(size=shape).astype(np.float32), (rng.poisson(20.0, shape) / 20.0).astype(np.float32),
                   rng.normal(size=shape), tiny, huge, np.zeros(shape, np.float32) * -1.0):
        ours, theirs = json.loads(predictions_json(values)), json.loads(_mlflow_answer(values))
        assert set(ours) == set(theirs) == {"predictions"}
        ours_arr, theirs_arr = np.array(ours["predictions"]), np.array(theirs["predictions"])
        assert ours_arr.dtype == theirs_arr.dtype == np.float64 and ours_arr.shape == shape
        assert np.array_equal(ours_arr, theirs_arr)
        assert np.array_equal(np.signbit(ours_arr), np.signbit(theirs_arr))


def test_json_answer_of_anything_else_is_mlflows_bytes():
    import pandas as pd

    from stemreg.platform.serving.json_io import predictions_json

    not_finite = np.array([[1.0, np.nan], [np.inf, 2.0]], np.float32)
    for value in (pd.DataFrame({"a": [1.5, 2.0]}), np.arange(4), [1.0, 2.0], not_finite, np.float32(2.5)):
        assert predictions_json(value) == _mlflow_answer(value)


@pytest.mark.parametrize("key, value", [
    ("inputs", [[[1.5, 2.0], [3.0, 4.25]]]), ("instances", [[1, 2], [3, 4]]),
    ("inputs", [[0.1, 1e-30], [1e30, -2]]), ("inputs", 3.0), ("inputs", [{"a": 1}])])
def test_json_inputs_parse_to_mlflows_array(key, value):
    """One unnamed float32 tensor: the array MLflow's `infer_and_parse_data` builds, dtype included."""
    import copy

    from mlflow.models.signature import infer_signature
    from mlflow.pyfunc.scoring_server import infer_and_parse_data

    from stemreg.platform.serving.json_io import parse_inputs

    schema = infer_signature(np.zeros((1, 4, 4), np.float32)).inputs
    try:
        theirs = infer_and_parse_data({key: copy.deepcopy(value)}, schema)
    except Exception as exc:  # noqa: BLE001 - then ours must refuse it too
        with pytest.raises(type(exc)):
            parse_inputs(key, value, schema)
        return
    ours = parse_inputs(key, value, schema)
    assert type(ours) is type(theirs)
    if isinstance(theirs, np.ndarray):
        assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs)


def test_json_body_parser_is_strict_first_and_lenient_after():
    from stemreg.platform.serving.json_io import holds_booleans, parse_json_body

    assert parse_json_body(b'{"inputs": [[1, 2.5]]}') == {"inputs": [[1, 2.5]]}
    nan = parse_json_body(b'{"inputs": [[NaN, 1]]}')  # the standard library's reading: refused later as NaN
    assert np.isnan(nan["inputs"][0][0])
    with pytest.raises(ValueError):
        parse_json_body(b'{"inputs": [[1, 2]')
    with pytest.raises(RecursionError):
        parse_json_body(b"[" * 100_000 + b"]" * 100_000)
    assert holds_booleans(b'{"inputs": [[true, 1]]}') and not holds_booleans(b'{"inputs": [[1, 2]], "x": "true"}')


# --------------------------------------------------------------------------- npy bodies

@pytest.mark.parametrize("shape", [(16, 24), (3, 8, 8), (1, 9, 9)])
def test_a_float32_npy_body_is_used_where_it_arrived(shape):
    from stemreg.acquisition.io import read_image_bytes
    from stemreg.platform.serving import decode_image

    x = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    body = _npy(x)
    got = decode_image(body, "npy", max_pixels=10**6)
    want = read_image_bytes(bytes(body), "npy", allow_stack=True)
    assert got.data.dtype == want.data.dtype and got.data.shape == want.data.shape
    np.testing.assert_array_equal(got.data, want.data)
    assert np.shares_memory(got.data, np.frombuffer(body, dtype=np.uint8))  # no copy


@pytest.mark.parametrize("make", [lambda x: x.astype(">f4"), lambda x: x.astype(np.float64),
                                  lambda x: x.astype(np.uint16), lambda x: x[None, :, :, None]])
def test_other_npy_bodies_take_the_general_reader(make):
    from stemreg.acquisition.io import read_image_bytes
    from stemreg.platform.serving import decode_image

    x = make((np.random.default_rng(2).poisson(9.0, (12, 10))).astype(np.float32))
    body = _npy(x)
    got = decode_image(body, "npy", max_pixels=10**6)
    np.testing.assert_array_equal(got.data, read_image_bytes(bytes(body), "npy", allow_stack=True).data)
    assert got.data.dtype == np.float32


def test_fortran_order_and_refused_npy_bodies_answer_as_before():
    from stemreg.platform.serving import RequestError, decode_image

    x = np.arange(48, dtype=np.float32).reshape(6, 8)
    np.testing.assert_array_equal(decode_image(_npy(x, fortran=True), "npy", max_pixels=10**6).data, x)
    bad = x.copy()
    bad[2, 3] = np.nan
    for body, words in ((_npy(bad), "NaN"), (_npy(x[:1]), "too small"), (_npy(x)[:-8], "truncated")):
        with pytest.raises(RequestError) as err:
            decode_image(body, "npy", max_pixels=10**6)
        assert err.value.status == 400 and words in err.value.error
    with pytest.raises(RequestError) as err:
        decode_image(_npy(x), "npy", max_pixels=47)
    assert err.value.status == 413


def test_npy_answer_in_pieces_is_the_writers_bytes():
    from stemreg.platform.serving import encode_image
    from stemreg.platform.serving.http_io import encode_image_parts

    for x in (np.random.default_rng(3).normal(size=(5, 7)).astype(np.float32),
              np.zeros((2, 4, 4), np.float32)):
        parts = encode_image_parts(x, "npy")
        assert b"".join(bytes(p) for p in parts) == encode_image(x, "npy")
        assert np.shares_memory(np.frombuffer(parts[1], np.uint8), x)  # the pixels, not a copy
    assert encode_image_parts(np.ones((4, 4), np.float32), "tiff") == [encode_image(np.ones((4, 4), np.float32),
                                                                                      "tiff")]


# --------------------------------------------------------------------------- threads

def test_configure_threads_shares_the_cores_among_forward_calls():
    import torch

    from stemreg.platform.serving import configure_threads

    before, interval = torch.get_num_threads(), sys.getswitchinterval()
    try:
        assert configure_threads(4, 2) == (2, 2) and torch.get_num_threads() == 2
        assert configure_threads(2) == (2, 1) and torch.get_num_threads() == 1
        assert configure_threads(1, 3) == (3, 1)
        assert sys.getswitchinterval() < interval
    finally:
        torch.set_num_threads(before)
        sys.setswitchinterval(interval)


# --------------------------------------------------------------------------- concurrent requests

@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A SQLite registry holding one tiny untrained hourglass (the serving tests') as the champion."""
    import mlflow
    from test_serving import serving_store

    with serving_store(tmp_path_factory.mktemp("serving-speed-store"), "serving-speed-tests", (0,)) as store:
        store["pyfunc"] = mlflow.pyfunc.load_model(f"models:/{NAME}/{store['versions'][0]}")
        yield store


@pytest.mark.parametrize("parallel, batch_images", [(2, 16), (3, 4), (2, 1)])
def test_concurrent_requests_each_get_their_own_answer(store, parallel, batch_images):
    from stemreg.platform.serving import make_server

    rng = np.random.default_rng(4)
    images = [(rng.poisson(20.0, (n, n)) / 20.0).astype(np.float32) for n in (24, 24, 24, 40, 24, 40, 24, 32)]
    want = [store["pyfunc"].predict(x[None])[0] for x in images]
    stack = (rng.poisson(20.0, (3, 24, 24)) / 20.0).astype(np.float32)
    want_stack = store["pyfunc"].predict(stack)
    failures: list[str] = []
    with make_server(CONDITION, port=0, poll_seconds=0, tracking_uri=store["uri"], parallel=parallel,
                     batch_images=batch_images) as srv:
        srv.start_background()
        deadline = time.monotonic() + 60
        while not srv.holder.loaded:
            assert time.monotonic() < deadline, "the model did not load"
            time.sleep(0.05)

        def client(i: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
            for round_ in range(4):
                if i == len(images) and round_ % 2:  # a stack and a JSON request among the images
                    conn.request("POST", "/invocations", body=json.dumps({"inputs": stack.tolist()}),
                                 headers={"Content-Type": "application/json"})
                    resp = conn.getresponse()
                    got, expected = np.asarray(json.loads(resp.read())["predictions"]), want_stack
                else:
                    x, expected = (stack, want_stack) if i == len(images) else (images[i], want[i])
                    conn.request("POST", "/denoise", body=bytes(_npy(x)))
                    resp = conn.getresponse()
                    got = np.load(io.BytesIO(resp.read()))
                if resp.status != 200 or not np.allclose(got, expected, rtol=1e-5, atol=1e-5):
                    failures.append(f"client {i} round {round_}: status {resp.status}")
            conn.close()

        threads = [threading.Thread(target=client, args=(i,)) for i in range(len(images) + 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not any(t.is_alive() for t in threads), "a request never got its answer"
        assert srv.holder.parallel == parallel and not srv.holder._queue
    assert not failures, failures
