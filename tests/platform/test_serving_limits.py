"""`stemreg serve`: every request's work bounded before it starts, every refusal a JSON answer.

A real server on a free localhost port over a real SQLite registry (this module's own, built by
`test_serving`'s helpers). Each test names the defect it guards against.
"""
from __future__ import annotations

import io
import json
import re
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from test_serving import (CONDITION, MAX_PIXELS, NAME, champion_v1, noisy_stack, post_json, request,  # noqa: F401
                          set_champion, store, wait_healthy)


@pytest.fixture(scope="module")
def server(store):  # noqa: F811 - the module's own server, with short timeouts and a small pool
    from stemreg.platform.serving import make_server

    set_champion(store["versions"][0])
    srv = make_server(CONDITION, port=0, max_pixels=MAX_PIXELS, poll_seconds=0, tracking_uri=store["uri"],
                      workers=3, queued=2, socket_timeout=1.0, header_timeout=1.5, request_timeout=1.5).start_background()
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


# --------------------------------------------------------------------------- slow and lying clients (issue 19)

HEADER_TIMEOUT_S = 1.5
REQUEST_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def slow_server(store):  # noqa: F811 - small deadlines, few workers, few connections
    from stemreg.platform.serving import make_server

    set_champion(store["versions"][0])
    srv = make_server(CONDITION, port=0, max_pixels=MAX_PIXELS, poll_seconds=0, tracking_uri=store["uri"],
                      workers=2, queued=2, socket_timeout=1.0, header_timeout=HEADER_TIMEOUT_S,
                      request_timeout=REQUEST_TIMEOUT_S, max_connections=48).start_background()
    wait_healthy(srv.url)
    yield srv
    srv.stop()


def _connect(srv) -> socket.socket:
    return socket.create_connection(("127.0.0.1", srv.port), timeout=30)


def _reply(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    reply = b""
    try:
        while chunk := sock.recv(65536):
            reply += chunk
    except OSError:
        pass
    return reply


def _status(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.") else 0


def _trickle(sock: socket.socket, data: bytes, pause_s: float, stop: threading.Event) -> None:
    for i in range(len(data)):
        if stop.is_set():
            return
        try:
            sock.sendall(data[i:i + 1])
        except OSError:  # the server answered and closed: what the test waits for
            return
        time.sleep(pause_s)


def test_slow_clients_do_not_lock_out_ping(slow_server):
    # More slow clients than workers + queued (4) and than max_connections (48): each sends a
    # header line now and then. The old slow_server gave each a thread and answered /ping 503.
    slow = [_connect(slow_server) for _ in range(60)]
    try:
        for sock in slow:
            sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\n")
        for _ in range(3):
            status, _, body = request(slow_server.url, "GET", "/ping", timeout=10)
            assert status == 200, body
            status, _, _ = request(slow_server.url, "GET", "/health", timeout=10)
            assert status == 200
        assert slow_server.connections <= 48  # the slowest header readers were pushed out for newcomers
        # and the slow ones that remain are answered 408 once their header deadline has passed
        reply = _reply(slow[-1])
        assert _status(reply) == 408 and b"headers did not arrive in time" in reply
    finally:
        for sock in slow:
            sock.close()


def test_a_trickled_body_gets_408_at_the_whole_request_deadline(slow_server):
    # One byte every 0.25 s never leaves the socket silent for socket_timeout (1 s); the old slow_server
    # reset its timeout with every byte and answered once all 40 had come (10 s).
    body = json.dumps({"inputs": [[1.0, 2.0], [3.0, 4.0]]}).encode().ljust(40)
    stop = threading.Event()
    with _connect(slow_server) as sock:
        sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode())
        started = time.monotonic()
        sender = threading.Thread(target=_trickle, args=(sock, body, 0.25, stop), daemon=True)
        sender.start()
        reply = _reply(sock)
        elapsed = time.monotonic() - started
        stop.set()
    assert _status(reply) == 408 and b"body did not arrive in time" in reply, reply[:300]
    assert elapsed < 0.25 * len(body) - 1  # answered before the trickle ended (deadline: 2 s)


def test_trickled_headers_get_408_at_the_header_deadline(slow_server):
    head = b"GET /ping HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: y\r\n" * 8 + b"\r\n"
    stop = threading.Event()
    with _connect(slow_server) as sock:
        started = time.monotonic()
        threading.Thread(target=_trickle, args=(sock, head, 0.1, stop), daemon=True).start()
        reply = _reply(sock)
        elapsed = time.monotonic() - started
        stop.set()
    assert _status(reply) == 408, reply[:300]
    assert elapsed < 0.1 * len(head) - 2  # (15 s of trickle; the header deadline is 1.5 s)


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_a_lying_content_length_allocates_nothing_it_claims(store, champion_v1):  # noqa: F811
    from stemreg.platform.serving import make_server

    # Default body cap (537 MB for 4096^2 pixels): the old server allocated what each client declared.
    srv = make_server(CONDITION, port=0, poll_seconds=0, tracking_uri=store["uri"],
                      request_timeout=30.0).start_background()
    liars = []
    try:
        wait_healthy(srv.url)
        before = _rss_mb()
        for _ in range(3):
            sock = _connect(srv)
            sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         + f"Content-Length: {300 << 20}\r\n\r\n".encode() + b"[" * 1000)
            liars.append(sock)
        deadline = time.monotonic() + 20
        while srv.buffered_bytes < 3 * 1000 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert 3 * 1000 <= srv.buffered_bytes <= 3 * (128 << 10)  # what arrived, doubled at most
        assert _rss_mb() - before < 150  # was +900 MB
        assert request(srv.url, "GET", "/ping", timeout=10)[0] == 200
    finally:
        for sock in liars:
            sock.close()
        srv.stop()


def test_bodies_held_at_once_are_capped(store, champion_v1):  # noqa: F811
    from stemreg.platform.serving import make_server

    srv = make_server(CONDITION, port=0, max_pixels=MAX_PIXELS, poll_seconds=0, tracking_uri=store["uri"],
                      max_buffered_bytes=300_000).start_background()
    try:
        wait_healthy(srv.url)
        part = b"1" * 200_000
        first, second = _connect(srv), _connect(srv)
        for sock in (first, second):
            sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         + f"Content-Length: {srv.max_body_bytes}\r\n\r\n".encode())
        first.sendall(part)
        time.sleep(0.5)
        second.sendall(part)
        reply = _reply(second)
        assert _status(reply) == 503 and b"too many large bodies at once" in reply
        first.close()
        second.close()
    finally:
        srv.stop()


def test_tiff_decompression_bomb_is_refused_before_it_inflates(slow_server, tiff_bomb):
    status, _, body = request(slow_server.url, "POST", "/denoise", tiff_bomb(64 << 20, side_px=32))
    assert status == 400 and "decompression bomb" in json.loads(body)["error"]  # was 200


def test_keep_alive_pipelining_and_expect_100_continue(slow_server):
    payload = json.dumps({"inputs": [[1.0, 2.0], [3.0, 4.0]]}).encode()
    post = (b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(payload)}\r\n".encode())
    with _connect(slow_server) as sock:
        sock.sendall(post + b"Expect: 100-continue\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue")
        # the body, then two more requests at once on the same connection; the last one closes it
        sock.sendall(payload + b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n" + post + b"Connection: close\r\n\r\n"
                     + payload)
        reply = _reply(sock)
    statuses = [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", reply)]
    assert statuses == [200, 200, 200], reply[:500]
    assert reply.count(b'"predictions"') == 2


def test_a_big_answer_reaches_a_slow_reader(slow_server):
    image = np.random.default_rng(0).random((4, 48, 48)).astype(np.float32)
    buf = io.BytesIO()
    np.save(buf, image)
    with _connect(slow_server) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"POST /denoise HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                     + f"Content-Length: {len(buf.getvalue())}\r\n\r\n".encode() + buf.getvalue())
        time.sleep(0.5)  # the answer waits in the slow_server while this client does not read
        reply = _reply(sock)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert _status(head) == 200 and np.load(io.BytesIO(body)).shape == image.shape


def test_a_json_body_of_more_values_than_pixels_is_413_before_parsing(slow_server):
    # 2 bytes per value: within the body cap (32 bytes per pixel), but parsed it would take ~32 bytes
    # of Python objects per value.
    n = slow_server.max_pixels + 70_000
    body = b'{"inputs": [' + b"0," * n + b"0]}"
    assert len(body) < slow_server.max_body_bytes
    status, _, answer = request(slow_server.url, "POST", "/invocations", body, {"Content-Type": "application/json"})
    assert status == 413 and "values, more than this server's cap" in json.loads(answer)["error"]


def test_numbers_sent_as_strings_are_400(url):
    status, answer = post_json(url, "/invocations", {"inputs": [["1.0", "2.0"], ["3.0", "4.0"]]})
    assert status == 400 and "holds strings" in answer["error"], answer  # was 200: cast silently
