"""The request handler of `stemreg serve`: routes, body reading with deadlines, JSON errors.

Every answer, refusals included, is JSON; no answer names an absolute path or an exception class.
"""
from __future__ import annotations

import io
import json
import logging
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException

from stemreg.models.mlflow_model import PASS_COST_PX, resolve_params
from stemreg.platform.config import SERVE
from stemreg.platform.prediction import sampling_warning
from stemreg.platform.trust import header_for, served_report
from stemreg.platform.errors import BadInputError, StemregError
from stemreg.platform.serving.http_io import (_RESPONSE_TYPES, ACCEPTED_JSON, JSON_INPUT_KEYS,
                                              RequestError, _shorten, check_image_array, decode_image,
                                              detect_image_format, encode_image_parts, public_message)
from stemreg.platform.serving.json_io import holds_booleans, parse_inputs, parse_json_body, predictions_json

log = logging.getLogger(__name__)

# The defaults live in one typed home (platform/config.py, SERVE); these names are kept for their importers.
DEFAULT_HOST, DEFAULT_PORT, DEFAULT_MAX_PIXELS, DEFAULT_POLL_SECONDS = (SERVE.host, SERVE.port, SERVE.max_pixels,
                                                                        SERVE.poll_seconds)
DEFAULT_WORKERS, DEFAULT_QUEUED = SERVE.workers, SERVE.queued
DEFAULT_SOCKET_TIMEOUT_S, DEFAULT_HEADER_TIMEOUT_S = SERVE.socket_timeout_s, SERVE.header_timeout_s
DEFAULT_REQUEST_TIMEOUT_S, DEFAULT_MAX_CONNECTIONS = SERVE.request_timeout_s, SERVE.max_connections
#: Commas a JSON body may hold beyond one per pixel (params, dataframe keys and the like).
_JSON_SLACK_VALUES = 65536
#: JSON inputs are at most 3 lists deep (a stack of rows of numbers).
_MAX_INPUT_DEPTH = 3


def default_max_work(max_pixels: int) -> int:
    """The work budget (see :func:`stemreg.models.mlflow_model.work_of`): twice the pixel cap
    (tiling overlap on the largest image) plus 64 forward passes."""
    return 2 * int(max_pixels) + 64 * PASS_COST_PX


def _list_depth(value: Any) -> int:
    depth = 0
    while isinstance(value, list) and value and depth < 64:
        value, depth = value[0], depth + 1
    return depth


def _first_leaf(value: Any) -> Any:
    while isinstance(value, list) and value:
        value = value[0]
    return value


def _error_code(status: int) -> str:
    return {404: "ENDPOINT_NOT_FOUND", 413: "RESOURCE_LIMIT_EXCEEDED",
            503: "TEMPORARILY_UNAVAILABLE"}.get(status) or ("BAD_REQUEST" if 400 <= status < 500
                                                          else "INTERNAL_ERROR")


class _Handler(BaseHTTPRequestHandler):
    """Routes requests to the holder; every refusal is a JSON error naming the problem."""

    server: Any  # the DenoiserHTTPServer (stemreg.platform.serving.server) that made this handler
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse the connection
    server_version = "stemreg-serve"
    # Headers and body go out as separate writes: without TCP_NODELAY the body's last segment can
    # wait for the client's delayed ACK of the headers.
    disable_nagle_algorithm = True

    ROUTES = {
        ("GET", "/ping"): "_ping", ("GET", "/health"): "_ping", ("GET", "/version"): "_version",
        ("GET", "/model"): "_model", ("POST", "/invocations"): "_invocations",
        ("POST", "/denoise"): "_denoise", ("POST", "/reload"): "_reload",
    }

    # -- plumbing ---------------------------------------------------------------------------
    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if self.request_version == "HTTP/0.9":  # its answers would carry no status line
            self.send_error(505, "HTTP/0.9 is not served; send HTTP/1.0 or HTTP/1.1")
            return False
        return True

    def handle_expect_100(self) -> bool:
        return True  # the front end has sent "100 Continue" already, and read the body since

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (bad request line, unsupported method, ...) as JSON too."""
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "error"
        self.close_connection = True
        if getattr(self, "request_version", "HTTP/0.9") == "HTTP/0.9":
            self.request_version = "HTTP/1.0"  # an unparsable request line still gets a status line
        try:
            self._send_json(code, {"error": message or phrase, "error_code": _error_code(code)})
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes | list[bytes | memoryview], content_type: str,
              headers: dict | None = None) -> None:
        """One answer; ``body`` may come in pieces (written one after the other, never joined)."""
        parts = body if isinstance(body, list) else [body]
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(sum(memoryview(part).nbytes for part in parts)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            for part in parts:
                self.wfile.write(part)

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
            self._send_json(status, RequestError(status, public_message(exc)).payload())
        except RecursionError:
            self._send_json(400, RequestError(400, "the request is nested too deeply",
                                              ACCEPTED_JSON).payload())
        except Exception:  # noqa: BLE001 - the server must survive anything one request does
            log.exception("error serving %s %s", self.command, self.path)
            self._send_json(500, {"error": "internal error while serving this request; the server's "
                                           "log has the details", "error_code": "INTERNAL_ERROR"})

    do_GET = _dispatch
    do_POST = _dispatch
    do_PUT = _dispatch
    do_DELETE = _dispatch
    do_PATCH = _dispatch
    do_OPTIONS = _dispatch

    def _read_body(self) -> bytearray:
        """The body, read in full by the front end (which refused a bad or oversized Content-Length)."""
        if self.headers.get("Content-Length") is None:
            self.close_connection = True
            raise RequestError(411, "the request has no Content-Length",
                               "a request body with a Content-Length header")
        return self.body

    # -- endpoints ---------------------------------------------------------------------------
    def _ping(self) -> None:
        holder = self.server.holder
        if holder.loaded:
            self._send(200, b"\n", "application/json")  # what MLflow's /ping answers
            return
        detail = f"; last load failed: {public_message(holder.load_error)}" if holder.load_error else ""
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
        info["max_work"] = self.server.max_work
        self._send_json(200, info)

    def _reload(self) -> None:
        self._read_body()  # drain whatever came, so keep-alive stays in step
        result = self.server.holder.refresh()
        payload = result.as_dict()
        if result.error:
            payload["error"] = (f"reload failed, still serving version {result.previous_version}: "
                                f"{public_message(result.error)}")
            payload["error_code"] = "RELOAD_FAILED"
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
        # Parsed, every number becomes a Python object of ~32 bytes: a body of "0,0,0,..." within the
        # byte cap would take GBs. Values are separated by commas, so count those before parsing.
        values = body.count(b",") + 1
        if values > self.server.max_pixels + _JSON_SLACK_VALUES:
            raise RequestError(413, f"the JSON holds about {values} values, more than this server's cap of "
                                    f"{self.server.max_pixels} pixels", ACCEPTED_JSON)
        try:
            request = parse_json_body(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise RequestError(400, f"bad JSON: {exc}", ACCEPTED_JSON) from exc
        except RecursionError:
            raise RequestError(400, "the JSON is nested too deeply; an image needs at most "
                                    f"{_MAX_INPUT_DEPTH} levels of lists", ACCEPTED_JSON) from None
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
        if holds_booleans(body):  # MLflow's parser would turn them into 0.0 and 1.0 silently
            raise RequestError(400, "input holds booleans (true/false); a real-valued image (integer or "
                                    "float pixels) is needed", ACCEPTED_JSON)
        depth = _list_depth(request[key]) if key in ("inputs", "instances") else 0
        if depth and isinstance(_first_leaf(request[key]), str):  # MLflow would cast "1.0" to 1.0 silently
            raise RequestError(400, f'"{key}" holds strings; pixels are JSON numbers', ACCEPTED_JSON)
        if depth > _MAX_INPUT_DEPTH:
            raise RequestError(400, f'"{key}" has rank {depth if depth < 64 else "64 or more"} (lists nested '
                                    f"that deep); an image (H, W) or a stack (N, H, W) is needed", ACCEPTED_JSON)
        params = request.get("params")
        if params is not None and not isinstance(params, dict):
            raise RequestError(400, '"params" must be an object', ACCEPTED_JSON)
        try:
            options = resolve_params(params)
        except ValueError as exc:
            raise RequestError(400, str(exc), ACCEPTED_JSON) from None
        holder = self.server.holder
        if not holder.loaded:
            raise RequestError(503, "the model is not loaded yet; retry when GET /health answers 200")
        try:
            # MLflow's own parsing: the same array (dtype from the signature) `mlflow models serve` builds.
            data = parse_inputs(key, request[key], holder.input_schema())
        except MlflowException as exc:
            raise RequestError(400, f"could not parse {key!r}: {_shorten(exc.message)}",
                               ACCEPTED_JSON) from exc
        except (ValueError, TypeError) as exc:
            raise RequestError(400, f"could not parse {key!r}: {public_message(exc)}", ACCEPTED_JSON) from None
        checked = check_image_array(data.to_numpy() if hasattr(data, "to_numpy") else data,
                                    max_pixels=self.server.max_pixels)
        # Only the params the client gave go on, checked; MLflow fills in the rest from the model's
        # signature, as `mlflow models serve` does, and the budget counts that same tiling.
        given = {key: options[key] for key in (params or {})}
        self._check_work(checked.shape, given)
        if hasattr(data, "to_numpy") and holder.takes_stacks_only():
            # A table of numbers is one image (rows x columns). MLflow's schema check refuses
            # DataFrames for a tensor signature; we hand the model the array instead.
            data = np.asarray(checked, dtype=np.float32)
        try:
            # A lone (H, W) image is answered as (H, W) even by a model signed for stacks,
            # where `mlflow models serve` would refuse it: a convenience beyond MLflow.
            predictions, served = holder.denoise(data, given)
        except MlflowException as exc:  # schema enforcement and the like: the input's fault
            raise RequestError(400, f"the model refused the input: {_shorten(exc.message)}",
                               ACCEPTED_JSON) from exc
        body, headers = predictions_json(predictions), {}
        if (parse_qs(urlsplit(self.path).query).get("trust") or ["0"])[0] in ("1", "true"):
            # opt-in, so the default answer stays MLflow's byte for byte; MLflow's clients read
            # "predictions" and keep other keys
            report = served_report(served, checked, predictions)
            if report is not None:
                body = body[:-1] + b', "trust": ' + json.dumps(report.to_dict()).encode() + b"}"
                headers["X-Stemreg-Trust"] = report.header()
        self._send(200, body, "application/json", headers=headers)

    def _check_work(self, shape: tuple[int, ...], params: dict | None) -> None:
        try:
            self.server.holder.check_work(tuple(shape), params, self.server.max_work)
        except OverflowError as exc:
            raise RequestError(413, str(exc), ACCEPTED_JSON) from None
        except ValueError as exc:  # a given tiling this image's shape makes invalid
            raise RequestError(400, str(exc), ACCEPTED_JSON) from None

    def _denoise(self) -> None:
        query = parse_qs(urlsplit(self.path).query)
        format_hint = (query.get("format") or [None])[0]
        body = self._read_body()
        fmt = detect_image_format(body, content_type=self.headers.get("Content-Type"),
                                  format_hint=format_hint)
        image = decode_image(body, fmt, max_pixels=self.server.max_pixels)  # validated once, in memory
        self._check_work(image.data.shape, None)
        predictions, served = self.server.holder.denoise(image.data)
        denoised = np.asarray(predictions, dtype=np.float32).reshape(image.data.shape)
        payload = encode_image_parts(denoised, fmt, like=image)  # npy: the pixels are sent, not copied
        headers = {"X-Model-Version": served.version, "X-Model-Name": served.name}
        warning = sampling_warning(served, image.calibration.pixel_size_pm())
        if warning:  # still denoised; the client is told, as `stemreg denoise` tells its user
            headers["X-Stemreg-Warning"] = warning
        trust = header_for(served, image.data, denoised, image.calibration.pixel_size_pm())
        if trust:  # the trust report's verdict and reason (stemreg.platform.trust), judged without truth
            headers["X-Stemreg-Trust"] = trust
        self._send(200, payload, _RESPONSE_TYPES[fmt], headers=headers)


class _Answer:
    """A handler's ``wfile``: keeps the pieces of the answer (not joined) for the front end to send."""

    def __init__(self) -> None:
        self.parts: list[bytes | memoryview] = []

    def write(self, data: bytes | memoryview) -> int:
        self.parts.append(data)
        return memoryview(data).nbytes

    def flush(self) -> None:
        pass


def answer_request(server: Any, head: bytes, body: bytearray, client_address: Any) -> tuple[list, bool]:
    """Answer one request read in full (``head``: request line and headers) with :class:`_Handler`.

    Returns
    -------
    (the answer's pieces, whether to close the connection after it)
    """
    handler = _Handler.__new__(_Handler)  # not its __init__, which would read a socket
    handler.server, handler.client_address, handler.request = server, client_address, None
    handler.rfile, handler.wfile, handler.body = io.BytesIO(head), _Answer(), body
    handler.close_connection = True
    handler.handle_one_request()
    return handler.wfile.parts, handler.close_connection
