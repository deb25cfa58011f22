"""Throw bad inputs at `stemreg serve` (HTTP), image files and the `stemreg denoise` CLI; classify outcomes.

Every case is an input a user or client could send by mistake (or on purpose). Each outcome is one of

- ``clear``:  a refusal naming the problem: HTTP 4xx/501 with a JSON ``error`` of one line, no
  absolute path or exception class; CLI exit 1 or 2 with one line and no traceback;
- ``silent``: accepted (HTTP 2xx, exit 0) although the input is bad;
- ``hang``:   no answer within the client's timeout;
- ``500``:    HTTP 5xx, or a CLI traceback / other exit code;
- ``lost``:   the connection dropped without an answer.

A tiny untrained model is registered in a temporary store, served in-process on a free port.

    python benchmarks/fuzz_inputs.py [--verbose]

Exits 1 unless every case is ``clear``.
"""
from __future__ import annotations

import argparse
import collections
import http.client
import io
import json
import os
import re
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TIMEOUT_S = 20.0
_INTERNALS = re.compile(r"(/tmp/|/work/|/root/|/home/|Traceback|\w+Error:|\w+Exception:)")


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _npy_header(shape: tuple, descr: str = "<f4", extra: bytes = b"\0" * 16) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue() + extra


def _deep(depth: int) -> bytes:
    return b'{"inputs": ' + b"[" * depth + b"1" + b"]" * depth + b"}"


def _ok2() -> list:
    return [[1.0, 2.0], [3.0, 4.0]]


def json_cases() -> list[tuple[str, bytes]]:
    """Bad /invocations bodies (Content-Type application/json)."""
    j = lambda obj: json.dumps(obj).encode()  # noqa: E731
    cases = [
        ("empty body", b""), ("not json", b"hello"), ("truncated json", b'{"inputs": [[1, 2]'),
        ("json list", b"[1, 2]"), ("json string", b'"x"'), ("json null", b"null"), ("json number", b"3"),
        ("no input key", j({"x": 1})), ("two input keys", j({"inputs": _ok2(), "instances": _ok2()})),
        ("named tensors", j({"inputs": {"a": _ok2()}})), ("inputs null", j({"inputs": None})),
        ("inputs string", j({"inputs": "abc"})), ("inputs number", j({"inputs": 3})),
        ("rank 1", j({"inputs": [1, 2, 3]})), ("rank 4", j({"inputs": [[[[1.0] * 2] * 2]]})),
        ("ragged", j({"inputs": [[1, 2], [3]]})), ("strings in image", j({"inputs": [["a", "b"], ["c", "d"]]})),
        ("nulls in image", j({"inputs": [[None, 1], [1, 1]]})), ("1x1", j({"inputs": [[1.0]]})),
        ("1x5", j({"inputs": [[1.0] * 5]})), ("booleans", b'{"inputs": [[true, false], [false, true]]}'),
        ("mixed bool", b'{"inputs": [[1, true], [2, 3]]}'), ("empty list", j({"inputs": []})),
        ("empty rows", j({"inputs": [[]]})), ("NaN", b'{"inputs": [[NaN, 1], [1, 1]]}'),
        ("Infinity", b'{"inputs": [[Infinity, 1], [1, 1]]}'), ("huge number", b'{"inputs": [[1e999, 1], [1, 1]]}'),
        ("deep 10", _deep(10)), ("deep 1000", _deep(1000)), ("deep 100000", _deep(100_000)),
        ("objects in rows", j({"inputs": [[{"a": 1}, 1], [1, 1]]})),
        ("too many pixels", j({"inputs": np.zeros((1, 70, 70)).tolist()})),
        ("stack of 2000 2x2", j({"inputs": np.ones((2000, 2, 2)).tolist()})),
        ("dataframe_split bad", j({"dataframe_split": {"columns": ["a"], "data": "x"}})),
        ("dataframe_records strings", j({"dataframe_records": [{"a": "x"}, {"a": "y"}]})),
        ("dataframe_split 1 column", j({"dataframe_split": {"columns": ["a"], "data": [[1], [2]]}})),
        ("params not object", j({"inputs": _ok2(), "params": [1]})),
        ("invalid utf-8", b'{"inputs": "\xff\xfe"}'),
    ]
    for params in ({"tile_px": 0}, {"tile_px": -5}, {"tile_px": 10**9}, {"tile_px": 2402, "overlap_px": 1200},
                   {"overlap_px": -1}, {"overlap_px": 64, "tile_px": 64}, {"batch_size": 0},
                   {"batch_size": -1}, {"batch_size": 10**6}, {"tile_px": "x"}, {"tile_px": 1.5},
                   {"tile_px": True}, {"tile_px": None, "batch_size": [1]}, {"unknown": 1}, {"tile_px": 1e300}):
        cases.append((f"params {params}", j({"inputs": _ok2(), "params": params})))
    return cases


def image_cases() -> list[tuple[str, bytes]]:
    """Bad image bodies, used both for POST /denoise and as files given to `stemreg denoise`."""
    good = _npy(np.ones((8, 8), np.float32))
    return [
        ("npy empty", b""), ("npy magic only", b"\x93NUMPY"), ("npy truncated header", good[:20]),
        ("npy truncated data", good[:-10]), ("npy 1e10 px header", _npy_header((100_000, 100_000))),
        ("npy 6000^2 declared", _npy_header((6000, 6000))), ("npy negative dim", _npy_header((-1, 8))),
        ("npy object dtype", _npy_header((2, 2), "|O")), ("npy string dtype", _npy(np.array([["a", "b"], ["c", "d"]]))),
        ("npy complex", _npy(np.ones((4, 4), np.complex64))), ("npy bool", _npy(np.ones((4, 4), bool))),
        ("npy 1x1", _npy(np.ones((1, 1), np.float32))), ("npy 1-D", _npy(np.ones(16, np.float32))),
        ("npy 4-D", _npy(np.ones((2, 2, 4, 4), np.float32))), ("npy 0x8", _npy(np.ones((0, 8), np.float32))),
        ("npy NaN", _npy(np.array([[np.nan, 1], [1, 1]], np.float32))),
        ("npy Inf", _npy(np.array([[np.inf, 1], [1, 1]], np.float32))),
        ("npy structured", _npy(np.zeros((4, 4), dtype=[("a", "<f4"), ("b", "<i4")]))),
        ("npy bad version", good[:6] + b"\x09\x00" + good[8:]),
        ("npy garbage header", b"\x93NUMPY\x01\x00\x10\x00{'descr': zzz}   \n" + b"\0" * 16),
        ("tiff magic only", b"II*\x00"), ("tiff garbage", b"II*\x00" + os.urandom(200)),
        ("png magic only", b"\x89PNG\r\n\x1a\n"), ("png huge IHDR", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
                                                   + (60000).to_bytes(4, "big") * 2 + b"\x08\x00\x00\x00\x00" + b"\0" * 8),
        ("png garbage", b"\x89PNG\r\n\x1a\n" + os.urandom(100)), ("random bytes", os.urandom(64)),
        ("text", b"hello world"),
    ]


def raw_cases() -> list[tuple[str, bytes]]:
    """Raw bytes on a socket: malformed requests."""
    body = json.dumps({"inputs": _ok2()}).encode()
    post = b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    return [
        ("garbage request line", b"GARBAGE\r\n\r\n"), ("bad http version", b"GET /ping HTTP/9.9\r\n\r\n"),
        ("long content-length, short body", post + b"Content-Length: 1000\r\n\r\n" + body),
        ("no content-length", post + b"\r\n" + body), ("negative content-length", post + b"Content-Length: -5\r\n\r\n"),
        ("non-numeric content-length", post + b"Content-Length: abc\r\n\r\n"),
        ("huge content-length", post + b"Content-Length: 99999999999999\r\n\r\n"),
        ("chunked body", post + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        ("header too long", b"GET /ping HTTP/1.1\r\nX: " + b"a" * 70000 + b"\r\n\r\n"),
        ("too many headers", b"GET /ping HTTP/1.1\r\n" + b"X: y\r\n" * 150 + b"\r\n"),
    ]


def method_cases() -> list[tuple[str, str, str]]:
    return [("DELETE /invocations", "DELETE", "/invocations"), ("PUT /invocations", "PUT", "/invocations"),
            ("PATCH /model", "PATCH", "/model"), ("OPTIONS /ping", "OPTIONS", "/ping"),
            ("FOO /ping", "FOO", "/ping"), ("GET /nothing", "GET", "/nothing"),
            ("POST /ping", "POST", "/ping"), ("GET /invocations", "GET", "/invocations")]


def classify_http(status: int | None, body: bytes, *, hung: bool = False) -> str:
    if hung:
        return "hang"
    if status is None:
        return "lost"
    if status >= 500 and status not in (501, 505):  # unsupported method / HTTP version: protocol refusals
        return "500"
    if status < 400:
        return "silent"
    try:
        error = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        return "500"  # a refusal no client can read is no clear error
    return "clear" if "\n" not in error and not _INTERNALS.search(json.dumps(json.loads(body))) else "500"


def http_exchange(port: int, method: str, path: str, body: bytes | None, ctype: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_S)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": ctype})
        resp = conn.getresponse()
        return classify_http(resp.status, resp.read())
    except TimeoutError:
        return "hang"
    except (ConnectionError, http.client.HTTPException):
        return "lost"
    finally:
        conn.close()


def raw_exchange(port: int, data: bytes) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as sock:
        try:
            sock.sendall(data)
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        except TimeoutError:
            return "hang"
        except ConnectionError:
            if not reply:
                return "lost"
    head, _, body = reply.partition(b"\r\n\r\n")
    match = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    return classify_http(int(match.group(1)) if match else None, body)


def classify_cli(result) -> str:
    text = result.output.strip()
    if result.exit_code == 0:
        return "silent"
    if result.exit_code not in (1, 2) or "Traceback" in text or (result.exception is not None
                                                                and not isinstance(result.exception, SystemExit)):
        return "500"
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("Usage:")
             and not line.startswith("Try ")]
    return "clear" if len(lines) == 1 else "500"


def register_tiny_model(root: Path) -> str:
    import mlflow
    import torch

    from stemreg.models.architectures import build_model
    from stemreg.models.mlflow_model import log_model_args, model_signature

    uri = f"sqlite:///{root / 'mlflow.db'}"
    os.chdir(root)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    mlflow.set_experiment("fuzz")
    torch.manual_seed(0)
    net = build_model({"kind": "reverse-hourglass", "depth": 3, "widths": [4, 4], "kernel_size": 3})
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="model", **log_model_args(net, tmp), signature=model_signature(),
                                       pip_requirements=["torch"])
    version = mlflow.register_model(info.model_uri, "stem-denoiser-low-dose")
    mlflow.MlflowClient().set_registered_model_alias("stem-denoiser-low-dose", "champion", version.version)
    return uri


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", action="store_true", help="print every case, not only the bad ones")
    args = parser.parse_args()

    from click.testing import CliRunner

    from stemreg.platform.cli import main as cli
    from stemreg.platform.serving import make_server

    root = Path(tempfile.mkdtemp(prefix="stemreg-fuzz-"))
    uri = register_tiny_model(root)
    outcomes: list[tuple[str, str, str]] = []  # (surface, case, outcome)
    server = make_server("low-dose", port=0, max_pixels=64 * 64, poll_seconds=0, tracking_uri=uri,
                         socket_timeout=2.0, body_timeout=3.0).start_background()
    try:
        deadline = time.monotonic() + 120
        while not server.holder.loaded and time.monotonic() < deadline:
            time.sleep(0.2)
        for name, body in json_cases():
            outcomes.append(("http /invocations", name, http_exchange(server.port, "POST", "/invocations", body,
                                                                      "application/json")))
        outcomes.append(("http /invocations", "wrong content type",
                         http_exchange(server.port, "POST", "/invocations", b"abc", "text/plain")))
        for name, body in image_cases():
            outcomes.append(("http /denoise", name, http_exchange(server.port, "POST", "/denoise", body,
                                                                  "application/octet-stream")))
        outcomes.append(("http /denoise", "unknown ?format", http_exchange(server.port, "POST", "/denoise?format=gif",
                                                                          b"abc", "image/gif")))
        for name, data in raw_cases():
            outcomes.append(("http raw", name, raw_exchange(server.port, data)))
        for name, method, path in method_cases():
            outcomes.append(("http method", name, http_exchange(server.port, method, path, b"", "application/json")))
    finally:
        server.stop()

    runner = CliRunner()
    env = {"MLFLOW_TRACKING_URI": uri}
    files = root / "files"
    files.mkdir()
    suffix = {"npy": ".npy", "tiff": ".tif", "png": ".png"}
    for name, body in image_cases():
        fmt = "tiff" if name.startswith("tiff") else "png" if name.startswith("png") else "npy"
        path = files / (re.sub(r"\W+", "_", name) + suffix[fmt])
        path.write_bytes(body)
        result = runner.invoke(cli, ["denoise", str(path), "--condition", "low-dose", "-o", str(root / "out")], env=env)
        outcomes.append(("cli file", name, classify_cli(result)))
    good = files / "good.npy"
    np.save(good, np.random.default_rng(0).random((16, 16), dtype=np.float32))
    (files / "d1").mkdir()
    (files / "d2").mkdir()
    np.save(files / "d1" / "same.npy", np.ones((8, 8), np.float32))
    np.save(files / "d2" / "same.npy", np.ones((8, 8), np.float32))
    blocker = files / "blocker"
    blocker.write_text("x")
    cli_cases = [
        ("missing file", ["denoise", str(files / "nope.npy"), "--condition", "low-dose", "-o", "o"]),
        ("unknown suffix", ["denoise", str(blocker), "--condition", "low-dose", "-o", "o"]),
        ("unknown condition", ["denoise", str(good), "--condition", "no-such", "-o", "o"]),
        ("unknown alias", ["denoise", str(good), "--condition", "low-dose", "--alias", "nope", "-o", "o"]),
        ("two inputs one output", ["denoise", str(files / "d1/same.npy"), str(files / "d2/same.npy"),
                                   "--condition", "low-dose", "-o", str(root / "o2")]),
        ("same input twice", ["denoise", str(good), str(good), "--condition", "low-dose", "-o", str(root / "o3")]),
        ("output under a file", ["denoise", str(good), "--condition", "low-dose", "-o", str(blocker / "x")]),
        ("output in /proc", ["denoise", str(good), "--condition", "low-dose", "-o", "/proc/stemreg-x"]),
        ("output is input dir", ["denoise", str(good), "--condition", "low-dose", "-o", str(files)]),
        ("no inputs", ["denoise", "--condition", "low-dose", "-o", "o"]),
        ("serve unknown condition", ["serve", "--condition", "no-such", "--port", "0"]),
        ("serve bad port", ["serve", "--condition", "low-dose", "--port", "99999"]),
        ("serve zero max-pixels", ["serve", "--condition", "low-dose", "--port", "0", "--max-pixels", "0"]),
    ]
    for name, argv in cli_cases:
        outcomes.append(("cli args", name, classify_cli(runner.invoke(cli, argv, env=env))))

    counts = collections.Counter(outcome for _, _, outcome in outcomes)
    for surface, name, outcome in outcomes:
        if args.verbose or outcome != "clear":
            print(f"  {outcome:6s}  {surface:18s}  {name}")
    by_surface = collections.Counter(surface for surface, _, _ in outcomes)
    print(f"{len(outcomes)} bad inputs: " + ", ".join(f"{k} {v}" for k, v in sorted(by_surface.items())))
    print("outcomes: " + ", ".join(f"{k} {counts.get(k, 0)}" for k in ("clear", "silent", "hang", "500", "lost")))
    return 0 if counts.get("clear", 0) == len(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
