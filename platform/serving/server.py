"""Serve a condition's registered denoiser over HTTP, and follow its alias.

One process serves one condition: the model version that an alias
(`champion` by default) of `stem-denoiser-<condition>` points to. The server
speaks MLflow's scoring protocol on `POST /invocations` (same parsing and the
same JSON answer as `mlflow models serve`, because it runs MLflow's own
parser and encoder on the same pyfunc), and adds `POST /denoise` for raw image
files (.npy, .tif/.tiff, .png), `GET /model`, `POST /reload`, `GET /health`,
`GET /ping` and `GET /version`.

Only the standard library's `http.server` is used: no extra dependency, and
the server binds 127.0.0.1 unless told otherwise (it has no authentication,
like MLflow's).
"""
from __future__ import annotations

import io
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.pyfunc.scoring_server import infer_and_parse_data, predictions_to_json

from stemreg.platform.errors import BadInputError, StemregError
from stemreg.platform.serving.holder import DEFAULT_ALIAS, ModelHolder, ServedModel
from stemreg.platform.serving.http_io import (_RESPONSE_TYPES, ACCEPTED_JSON, JSON_INPUT_KEYS,
                                              RequestError, _shorten, check_image_array, decode_image,
                                              detect_image_format, encode_image)

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
#: 4096 x 4096 pixels: a large STEM frame, well within memory for the tiled model.
DEFAULT_MAX_PIXELS = 4096 * 4096
DEFAULT_POLL_SECONDS = 30.0


class _Handler(BaseHTTPRequestHandler):
    """Routes requests to the holder; every refusal is a JSON error naming the problem."""

    server: "DenoiserHTTPServer"
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse the connection
    server_version = "stemreg-serve"

    ROUTES = {
        ("GET", "/ping"): "_ping", ("GET", "/health"): "_ping", ("GET", "/version"): "_version",
        ("GET", "/model"): "_model", ("POST", "/invocations"): "_invocations",
        ("POST", "/denoise"): "_denoise", ("POST", "/reload"): "_reload",
    }

    # -- plumbing ----------------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _dispatch(self) -> None:
        path = urlsplit(self.path).path.rstrip("/") or "/"
        route = self.ROUTES.get((self.command, path))
        try:
            if route is None:
                methods = sorted(m for (m, p) in self.ROUTES if p == path)
                if methods:
                    raise RequestError(405, f"{self.command} is not allowed on {path}",
                                       f"{' or '.join(methods)} {path}")
                endpoints = ", ".join(f"{m} {p}" for (m, p) in self.ROUTES)
                raise RequestError(404, f"no endpoint {self.command} {path}", endpoints)
            getattr(self, route)()
        except RequestError as exc:
            self._send_json(exc.status, exc.payload())
        except StemregError as exc:  # the library's own refusals: bad input 400, others 409
            status = 400 if isinstance(exc, BadInputError) else 409
            self._send_json(status, RequestError(status, str(exc)).payload())
        except Exception as exc:  # noqa: BLE001 - the server must survive anything one request does
            log.exception("error serving %s %s", self.command, self.path)
            self._send_json(500, {"error": f"internal error: {type(exc).__name__}: {exc}",
                                  "error_code": "INTERNAL_ERROR"})

    do_GET = _dispatch
    do_POST = _dispatch

    def _read_body(self) -> bytes:
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            self.close_connection = True  # a chunked body we will not read would poison the connection
            raise RequestError(411, "the request has no Content-Length",
                               "a request body with a Content-Length header")
        try:
            length = int(length_header)
        except ValueError as exc:
            self.close_connection = True
            raise RequestError(400, f"bad Content-Length {length_header!r}",
                               "a non-negative integer") from exc
        if length < 0:
            self.close_connection = True
            raise RequestError(400, f"bad Content-Length {length}", "a non-negative integer")
        if length > self.server.max_body_bytes:
            # Don't read (or buffer) an oversized body; close the connection instead.
            self.close_connection = True
            raise RequestError(413, f"request body of {length} bytes is larger than this server's "
                                    f"cap of {self.server.max_body_bytes} bytes "
                                    f"(--max-pixels {self.server.max_pixels})",
                               f"at most {self.server.max_pixels} pixels per request")
        return self.rfile.read(length)

    # -- endpoints ---------------------------------------------------------------------------
    def _ping(self) -> None:
        holder = self.server.holder
        if holder.loaded:
            self._send(200, b"\n", "application/json")  # what MLflow's /ping answers
            return
        detail = f"; last load failed: {holder.load_error}" if holder.load_error else ""
        self._send_json(503, {"error": f"model not loaded yet{detail}", "status": "loading"})

    def _version(self) -> None:
        self._send(200, mlflow.__version__.encode(), "application/json")

    def _model(self) -> None:
        holder = self.server.holder
        served = holder.current
        if served is None:
            raise RequestError(503, "the model is not loaded yet; retry when GET /health answers 200")
        info = served.describe()
        info["last_refresh"] = holder.last_refresh.as_dict() if holder.last_refresh else None
        info["poll_seconds"] = self.server.poll_seconds
        info["max_pixels"] = self.server.max_pixels
        self._send_json(200, info)

    def _reload(self) -> None:
        self._read_body()  # drain whatever came, so keep-alive stays in step
        result = self.server.holder.refresh()
        payload = result.as_dict()
        if result.error:
            payload["error"] = (f"reload failed, still serving version {result.previous_version}: "
                                f"{result.error}")
            self._send_json(500, payload)
        else:
            self._send_json(200, payload)

    def _invocations(self) -> None:
        content_type = (self.headers.get("Content-Type") or "application/json").split(";")[0].strip()
        body = self._read_body()
        if content_type.lower() != "application/json":
            raise RequestError(415, f"Content-Type {content_type!r} is not served on /invocations",
                               "application/json (" + ACCEPTED_JSON + "); images go to POST /denoise")
        if not body:
            raise RequestError(400, "empty request body", ACCEPTED_JSON)
        try:
            request = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise RequestError(400, f"bad JSON: {exc}", ACCEPTED_JSON) from exc
        if not isinstance(request, dict):
            raise RequestError(400, f"the JSON is a {type(request).__name__}, not an object",
                               ACCEPTED_JSON)
        keys = [k for k in request if k in JSON_INPUT_KEYS]
        if len(keys) != 1:
            found = ", ".join(map(repr, request)) or "none"
            raise RequestError(400, f"the JSON must hold exactly one input key; found keys: {found}",
                               ACCEPTED_JSON)
        key = keys[0]
        if key == "inputs" and isinstance(request[key], dict):
            raise RequestError(400, '"inputs" holds named tensors; this model takes one unnamed tensor',
                               ACCEPTED_JSON)
        holder = self.server.holder
        if not holder.loaded:
            raise RequestError(503, "the model is not loaded yet; retry when GET /health answers 200")
        try:
            # MLflow's own parser: the same array (dtype from the signature) `mlflow models serve` builds.
            data = infer_and_parse_data({key: request[key]}, holder.input_schema())
        except MlflowException as exc:
            raise RequestError(400, f"could not parse {key!r}: {_shorten(exc.message)}",
                               ACCEPTED_JSON) from exc
        checked = check_image_array(data.to_numpy() if hasattr(data, "to_numpy") else data,
                                    max_pixels=self.server.max_pixels)
        if hasattr(data, "to_numpy") and holder.takes_stacks_only():
            # A table of numbers is one image (rows x columns). MLflow's schema check refuses
            # DataFrames for a tensor signature; we hand the model the array instead.
            data = np.asarray(checked, dtype=np.float32)
        try:
            # A lone (H, W) image is answered as (H, W) even by a model signed for stacks,
            # where `mlflow models serve` would refuse it: a convenience beyond MLflow.
            predictions, _ = holder.denoise(data, request.get("params"))
        except MlflowException as exc:  # schema enforcement and the like: the input's fault
            raise RequestError(400, f"the model refused the input: {_shorten(exc.message)}",
                               ACCEPTED_JSON) from exc
        out = io.StringIO()
        predictions_to_json(predictions, out)  # MLflow's encoder: the same JSON as its server
        self._send(200, out.getvalue().encode(), "application/json")

    def _denoise(self) -> None:
        query = parse_qs(urlsplit(self.path).query)
        format_hint = (query.get("format") or [None])[0]
        body = self._read_body()
        fmt = detect_image_format(body, content_type=self.headers.get("Content-Type"),
                                  format_hint=format_hint)
        image = decode_image(body, fmt, max_pixels=self.server.max_pixels)  # validated once, in memory
        predictions, served = self.server.holder.denoise(image.data)
        denoised = np.asarray(predictions, dtype=np.float32).reshape(image.data.shape)
        payload = encode_image(denoised, fmt, like=image)
        self._send(200, payload, _RESPONSE_TYPES[fmt],
                   headers={"X-Model-Version": served.version, "X-Model-Name": served.name})


class DenoiserHTTPServer(ThreadingHTTPServer):
    """`ThreadingHTTPServer` carrying the holder, the size cap and the alias poller.

    Parameters
    ----------
    holder
        The model holder (loaded or not yet).
    host, port
        Where to listen; port 0 picks a free one (see :attr:`port`).
    max_pixels
        The most pixels one request may carry (413 above it).
    poll_seconds
        How often the alias is re-read; 0 or less turns polling off
        (`POST /reload` still works).
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, holder: ModelHolder, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 max_pixels: int = DEFAULT_MAX_PIXELS,
                 poll_seconds: float = DEFAULT_POLL_SECONDS) -> None:
        if max_pixels <= 0:
            raise BadInputError(f"--max-pixels {max_pixels} must be a positive number of pixels")
        self.holder = holder
        self.max_pixels = int(max_pixels)
        # JSON spends up to ~25 characters per float; image files far fewer bytes per pixel.
        self.max_body_bytes = 65536 + 32 * self.max_pixels
        self.poll_seconds = float(poll_seconds)
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self._serving = False
        try:
            super().__init__((host, port), _Handler)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from exc

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        host = self.server_address[0]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            self.holder.refresh()  # also retries a first load that failed

    def _load_then(self, on_failure: Callable[[Exception], None] | None,
                   on_loaded: Callable[[ServedModel], None] | None = None) -> None:
        try:
            served = self.holder.load()
        except Exception as exc:  # noqa: BLE001 - reported through /health and on_failure
            log.error("could not load %s@%s: %s", self.holder.name, self.holder.alias, exc)
            if on_failure:
                on_failure(exc)
            return
        if on_loaded:
            on_loaded(served)

    def start_background(self, *, load: bool = True,
                         on_load_failure: Callable[[Exception], None] | None = None) -> "DenoiserHTTPServer":
        """Serve from daemon threads (and load the model in one, unless already loaded).

        Returns `self`; `/health` answers 503 until the model is in.
        """
        self._start_threads(load=load, on_load_failure=on_load_failure)
        self._serving = True
        thread = threading.Thread(target=self.serve_forever, name="stemreg-serve", daemon=True)
        thread.start()
        self._workers.append(thread)
        return self

    def _start_threads(self, *, load: bool, on_load_failure: Callable[[Exception], None] | None,
                       on_loaded: Callable[[ServedModel], None] | None = None) -> None:
        if load and not self.holder.loaded:
            loader = threading.Thread(target=self._load_then, args=(on_load_failure, on_loaded),
                                      name="stemreg-load", daemon=True)
            loader.start()
            self._workers.append(loader)
        if self.poll_seconds > 0:
            poller = threading.Thread(target=self._poll, name="stemreg-poll", daemon=True)
            poller.start()
            self._workers.append(poller)

    def run(self, *, on_load_failure: Callable[[Exception], None] | None = None,
            on_loaded: Callable[[ServedModel], None] | None = None) -> None:
        """Serve in this thread until :meth:`stop` (or Ctrl-C); loading and polling run beside it."""
        self._start_threads(load=True, on_load_failure=on_load_failure, on_loaded=on_loaded)
        self._serving = True
        try:
            self.serve_forever(poll_interval=0.2)
        finally:
            self._stop.set()

    def stop(self) -> None:
        """Stop serving and polling, close the socket, and wait for our threads."""
        self._stop.set()
        if self._serving:  # shutdown() waits for serve_forever, which must have started
            self.shutdown()
            self._serving = False
        self.server_close()
        for thread in self._workers:
            if thread is not threading.current_thread():
                thread.join(timeout=10)

    def __enter__(self) -> "DenoiserHTTPServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def make_server(condition: str, *, alias: str = DEFAULT_ALIAS, host: str = DEFAULT_HOST,
                port: int = DEFAULT_PORT, max_pixels: int = DEFAULT_MAX_PIXELS,
                poll_seconds: float = DEFAULT_POLL_SECONDS, tracking_uri: str | None = None,
                loader: Callable[[str], Any] | None = None) -> DenoiserHTTPServer:
    """Check that `condition@alias` exists, then bind a server for it (model not loaded yet).

    Call :meth:`DenoiserHTTPServer.start_background` or :meth:`DenoiserHTTPServer.run`.

    Raises
    ------
    BadInputError
        Unknown condition, nothing registered, no version with the alias, bad
        size cap.
    """
    holder = ModelHolder(condition, alias, tracking_uri=tracking_uri, loader=loader)
    holder.resolve()  # start-up errors before we take a port
    return DenoiserHTTPServer(holder, host=host, port=port, max_pixels=max_pixels,
                              poll_seconds=poll_seconds)
