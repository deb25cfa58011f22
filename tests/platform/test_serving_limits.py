"""`stemreg serve`: every request's work bounded before it starts, every refusal a JSON answer.

A real server on a free localhost port over a real SQLite registry (this module's own, built by
`test_serving`'s helpers). Each test names the defect it guards against.
"""
from __future__ import annotations

import io
import json
import socket
import threading
import time

import numpy as np
import pytest
from test_serving import (CONDITION, MAX_PIXELS, NAME, champion_v1, noisy_stack, post_json, request,  # noqa: F401
                          set_champion, store, wait_healthy)


@pytest.fixture(scope="module")
def server(store):  # noqa: F811 - the module's own server, with short timeouts and a small pool
    from stemreg.platform.serving import make_server

    set_champion(store["versions"][0])
    srv = make_server(CONDITION, port=0, max_pixels=MAX_PIXELS, poll_seconds=0, tracking_uri=store["uri"],
                      workers=3, queued=2, socket_timeout=1.0, body_timeout=1.5).start_background()
    wait_healthy(srv.url)
    yield srv
    srv.stop()


@pytest.fixture()
def url(server, champion_v1):  # noqa: F811
    server.holder.refresh()
    return server.url


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _npy_header_only(shape: tuple[int, ...]) -> bytes:
    """A .npy whose header declares `shape` (float32) but which holds only 16 bytes of pixels."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buf.getvalue() + b"\0" * 16


def _no_internals(answer: dict) -> None:
    text = json.dumps(answer)
    assert "Traceback" not in text and "/tmp/" not in text and "/work/" not in text
    assert not any(f"{cls}:" in text for cls in ("ValueError", "RuntimeError", "MlflowException",
                                                  "RecursionError", "OSError", "KeyError"))


# --------------------------------------------------------------------------- params and work budget

@pytest.mark.parametrize("params, accepted", [
    ({"tile_px": 0}, "16..4096"),            # was 500
    ({"batch_size": -1}, "1..64"),           # was 500
    ({"tile_px": 2402, "overlap_px": 1200}, "0..128"),  # was 12 s and +3.6 GB
    ({"tile_px": 64, "overlap_px": 16}, "quarter"),
    ({"tile_px": "big"}, "16..4096"),
    ({"batch_size": 2.5}, "1..64"),
    ({"colour": 1}, "tile_px"),
])
def test_bad_params_are_400_naming_the_accepted_range(url, params, accepted):
    started = time.monotonic()
    status, answer = post_json(url, "/invocations", {"inputs": [[1, 2], [3, 4]], "params": params})
    assert status == 400, answer
    assert accepted in answer["error"]
    assert time.monotonic() - started < 5
    _no_internals(answer)


def test_a_stack_asking_too_much_work_is_413_before_inference(url, server):
    # 2,000 images of 2 x 2 px: 8,000 pixels (under the pixel cap) but 250 forward passes of padded tiles.
    stack = np.ones((2000, 2, 2), np.float32).tolist()
    started = time.monotonic()
    status, answer = post_json(url, "/invocations", {"inputs": stack})
    assert status == 413, answer
    assert str(server.max_work) in answer["error"] and "tile_px" in answer["error"]
    assert time.monotonic() - started < 5
    # the same images in a few requests of 20 are served
    assert post_json(url, "/invocations", {"inputs": stack[:20]})[0] == 200


@pytest.mark.parametrize("payload, words", [
    ({"inputs": [[1.0]]}, "at least 2 x 2"),                      # 1x1: was accepted by /invocations
    ({"inputs": [[[1.0, 2.0]]]}, "at least 2 x 2"),
    ({"inputs": [[True, False], [False, True]]}, "booleans"),   # was accepted by /invocations
])
def test_one_smallest_image_rule_on_invocations(url, payload, words):
    status, answer = post_json(url, "/invocations", payload)
    assert status == 400 and words in answer["error"], answer


@pytest.mark.parametrize("array, words", [
    (np.ones((1, 1), np.float32), "at least 2 x 2"),
    (np.ones((2, 2), bool), "dtype bool"),
])
def test_one_smallest_image_rule_on_denoise(url, array, words):
    status, _, body = request(url, "POST", "/denoise", _npy(array))
    assert status == 400 and words in json.loads(body)["error"]


def test_the_pyfunc_itself_keeps_the_same_rule(store):
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(f"models:/{NAME}/{store['versions'][0]}")
    for bad in (np.ones((1, 1, 1), np.float32), np.ones((1, 2, 2), bool)):
        with pytest.raises(Exception, match="at least 2 x 2|booleans|dtype of input bool"):
            model.predict(bad)
    with pytest.raises(Exception, match="16..4096"):
        model.predict(np.ones((1, 4, 4), np.float32), params={"tile_px": 0})


# --------------------------------------------------------------------------- .npy header

def test_npy_declaring_huge_shape_is_413_before_allocation(url):
    status, _, body = request(url, "POST", "/denoise", _npy_header_only((100_000, 100_000)))
    answer = json.loads(body)
    assert status == 413, answer  # was 400 "Unable to allocate 37.3 GiB"
    assert "10000000000 pixels" in answer["error"]


def test_truncated_npy_within_the_cap_is_a_clear_400(url):
    status, _, body = request(url, "POST", "/denoise", _npy_header_only((40, 40)))
    answer = json.loads(body)
    assert status == 400 and "truncated" in answer["error"], answer


# --------------------------------------------------------------------------- JSON depth, methods

@pytest.mark.parametrize("depth", [10, 100_000])
def test_json_nested_deep_is_400(url, depth):
    body = b'{"inputs": ' + b"[" * depth + b"1" + b"]" * depth + b"}"
    status, answer = post_json(url, "/invocations", body)
    assert status == 400, answer  # 100,000 deep was 500 RecursionError
    _no_internals(answer)


@pytest.mark.parametrize("method, status", [("DELETE", 405), ("PUT", 405), ("PATCH", 405), ("FOO", 501)])
def test_every_method_gets_a_json_answer(url, method, status):
    got, headers, body = request(url, method, "/invocations", b"{}")
    assert got == status and headers["Content-Type"] == "application/json"  # was an HTML 501 page
    assert json.loads(body)["error"]


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends before it closes (headers and body may come in separate packets)."""
    reply = b""
    try:
        while chunk := sock.recv(65536):
            reply += chunk
    except socket.timeout:
        pass
    return reply


def test_a_malformed_request_line_gets_a_json_400(url):
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"GARBAGE\r\n\r\n")
        reply = _read_until_closed(sock)
    assert reply.startswith(b"HTTP/1.") and b" 400 " in reply.split(b"\r\n")[0]
    assert b'"error"' in reply and b"<html" not in reply.lower()


# --------------------------------------------------------------------------- timeouts and the pool

def test_a_body_shorter_than_its_content_length_does_not_hold_the_connection(url):
    host, port = url.removeprefix("http://").rsplit(":", 1)
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"inputs\":")
        reply = b""
        while chunk := sock.recv(65536):  # the server closes the connection after its answer
            reply += chunk
    assert time.monotonic() - started < 5  # was 45 s and more
    assert b" 408 " in reply.split(b"\r\n")[0] and b"did not arrive in time" in reply


def test_idle_connections_are_bounded_by_the_pool_and_answered_503(url, server):
    host, port = url.removeprefix("http://").rsplit(":", 1)
    before = threading.active_count()
    socks = [socket.create_connection((host, int(port)), timeout=5) for _ in range(12)]
    try:
        time.sleep(0.3)
        # at most `workers` threads serve connections (the pool may already hold some)
        assert threading.active_count() - before <= server.workers
        refused = 0
        for sock in socks[server.workers + server.queued:]:
            reply = _read_until_closed(sock)
            refused += b" 503 " in reply.split(b"\r\n")[0] and b"busy" in reply
        assert refused == len(socks) - server.workers - server.queued
    finally:
        for sock in socks:
            sock.close()
    time.sleep(1.5)  # the idle ones time out; the server serves again
    assert request(url, "GET", "/health")[0] == 200


# --------------------------------------------------------------------------- dynamic batching

def test_concurrent_requests_share_forward_calls_and_get_their_own_answers(store):
    from stemreg.models.prediction import predict
    from stemreg.platform.registry.loading import load_pyfunc
    from stemreg.platform.serving import make_server

    calls = []

    class Counting:
        def __init__(self, pyfunc):
            self.pyfunc, self.metadata = pyfunc, pyfunc.metadata

        def predict(self, data, params=None):
            calls.append(np.asarray(data).shape[0])
            time.sleep(0.05)  # long enough for the other requests to queue behind this one
            return self.pyfunc.predict(data, params=params)

    reference = load_pyfunc(f"models:/{NAME}/{store['versions'][0]}")
    srv = make_server(CONDITION, port=0, poll_seconds=0, tracking_uri=store["uri"],
                      loader=lambda uri: Counting(load_pyfunc(uri))).start_background()
    try:
        wait_healthy(srv.url)
        images = [noisy_stack(1, 24, seed=i)[0] for i in range(8)]
        answers: dict[int, np.ndarray] = {}

        def client(i: int) -> None:
            status, answer = post_json(srv.url, "/invocations", {"inputs": images[i][None].tolist()})
            assert status == 200
            answers[i] = np.asarray(answer["predictions"], np.float32)[0]

        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(answers) == list(range(8))
        assert len(calls) < 8 and max(calls) > 1  # batched: fewer forward calls than requests
        for i, image in enumerate(images):
            np.testing.assert_allclose(answers[i], predict(reference, image), rtol=1e-4, atol=1e-4)
    finally:
        srv.stop()
