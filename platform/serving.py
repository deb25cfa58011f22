"""Serve a condition's registered denoiser over HTTP, and follow its alias.

One process serves one condition: the model version that an alias
(`champion` by default) of `stem-denoiser-<condition>` points to. The server
speaks MLflow's scoring protocol on `POST /invocations` (same parsing and the
same JSON answer as `mlflow models serve`, because it runs MLflow's own
parser and encoder on the same pyfunc), and adds `POST /denoise` for raw image
files (.npy, .tif/.tiff, .png), `GET /model`, `POST /reload`, `GET /health`,
`GET /ping` and `GET /version`.

The loaded model sits behind a lock in a :class:`ModelHolder`. A poller (and
`POST /reload`) re-reads the alias; when it points to another version, that
version is loaded beside the old one and swapped in, so a moved champion is
served without a restart. A failed load leaves the old model serving.

Only the standard library's `http.server` is used: no extra dependency, and
the server binds 127.0.0.1 unless told otherwise (it has no authentication,
like MLflow's).
"""
from __future__ import annotations

import datetime as _dt
import io
import json
import logging
import math
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import numpy as np

from stemreg.platform.errors import BadInput

log = logging.getLogger(__name__)

DEFAULT_ALIAS = "champion"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
#: 4096 x 4096 pixels: a large STEM frame, well within memory for the tiled model.
DEFAULT_MAX_PIXELS = 4096 * 4096
DEFAULT_POLL_SECONDS = 30.0
MODEL_NAME_PREFIX = "stem-denoiser-"

#: MLflow scoring-protocol keys we accept on /invocations.
JSON_INPUT_KEYS = ("inputs", "instances", "dataframe_split", "dataframe_records")
ACCEPTED_JSON = ('a JSON object with exactly one of "inputs" or "instances" (one float image (H, W) '
                 'or a stack (N, H, W) as nested lists) or "dataframe_split" / "dataframe_records" '
                 '(one image as a table of numbers), optionally with "params" '
                 '(tile_px, overlap_px, batch_size)')
ACCEPTED_IMAGE = ("the raw bytes of one .npy, .tif/.tiff or .png image, 2-D (H, W) or a stack "
                  "(N, H, W), finite values; format from the file's magic bytes, else from "
                  "Content-Type (application/x-npy, image/tiff, image/png) or ?format=npy|tiff|png")

# Magic bytes -> format; the body's own signature beats any header.
_MAGIC = (
    (b"\x93NUMPY", "npy"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"II+\x00", "tiff"),  # BigTIFF
    (b"MM\x00+", "tiff"),
    (b"\x89PNG\r\n\x1a\n", "png"),
)
_FORMAT_NAMES = {"npy": "npy", "tif": "tiff", "tiff": "tiff", "png": "png"}
_CONTENT_TYPES = {
    "application/x-npy": "npy", "application/npy": "npy", "application/x-numpy": "npy",
    "image/tiff": "tiff", "image/tif": "tiff", "image/png": "png",
}
_RESPONSE_TYPES = {"npy": "application/x-npy", "tiff": "image/tiff", "png": "image/png"}


def model_name(condition: str) -> str:
    """The registered model name of a condition: `stem-denoiser-<condition>`."""
    try:  # the registry owns the naming rule when it is there
        from stemreg.platform.registry import model_name as registry_model_name
    except ImportError:
        return f"{MODEL_NAME_PREFIX}{condition}"
    return registry_model_name(condition)


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _shorten(text: str, limit: int = 600) -> str:
    """MLflow's messages quote the whole input; an error answer needs only the start."""
    text = str(text)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text) - limit} more characters)"


class RequestError(Exception):
    """A request the server refuses: HTTP status, what was wrong, what is accepted."""

    def __init__(self, status: int, error: str, accepted: str | None = None) -> None:
        super().__init__(error)
        self.status = int(status)
        self.error = error
        self.accepted = accepted

    def payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.error}
        if self.accepted:
            body["accepted"] = self.accepted
        # MLflow's scoring server names its error class; clients may look for it.
        body["error_code"] = _ERROR_CODES.get(self.status) or (
            "BAD_REQUEST" if 400 <= self.status < 500 else "INTERNAL_ERROR")
        return body


_ERROR_CODES = {404: "ENDPOINT_NOT_FOUND", 413: "RESOURCE_LIMIT_EXCEEDED", 503: "TEMPORARILY_UNAVAILABLE"}


# --------------------------------------------------------------------------- input checks

def check_image_array(array: Any, *, max_pixels: int, accepted: str = ACCEPTED_JSON) -> np.ndarray:
    """Refuse what the denoiser cannot take: wrong rank, empty, non-numeric, NaN/Inf, too large.

    Parameters
    ----------
    array
        Anything `numpy.asarray` accepts (a parsed request).
    max_pixels
        The most pixels (N x H x W) one request may carry.
    accepted
        The sentence naming accepted input, for the error.

    Returns
    -------
    numpy.ndarray
        The same values as a numeric array (not copied when already one).

    Raises
    ------
    RequestError
        400 naming the problem, 413 when larger than `max_pixels`.
    """
    try:
        arr = np.asarray(array)
    except (ValueError, TypeError) as exc:  # ragged nested lists
        raise RequestError(400, f"input is not a rectangular array: {exc}", accepted) from exc
    if arr.dtype == object:
        raise RequestError(400, "input is not a rectangular array of numbers (ragged or mixed rows)",
                           accepted)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise RequestError(400, f"input holds {arr.dtype} values, not numbers", accepted)
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise RequestError(400, "input holds complex numbers; a real-valued image is needed", accepted)
    if arr.ndim not in (2, 3):
        raise RequestError(400, f"input has rank {arr.ndim} (shape {list(arr.shape)}); "
                                "an image (H, W) or a stack (N, H, W) is needed", accepted)
    if arr.size == 0:
        raise RequestError(400, f"input is empty (shape {list(arr.shape)})", accepted)
    if arr.size > max_pixels:
        raise RequestError(413, f"input has {arr.size} pixels (shape {list(arr.shape)}), more than "
                                f"this server's cap of {max_pixels}", accepted)
    if np.issubdtype(arr.dtype, np.floating):
        finite = np.isfinite(arr)
        if not finite.all():
            n_nan = int(np.isnan(arr).sum())
            n_inf = int(arr.size - finite.sum() - n_nan)
            raise RequestError(400, f"input holds {n_nan} NaN and {n_inf} infinite values; "
                                    "all pixels must be finite", accepted)
    return arr


def detect_image_format(body: bytes, *, content_type: str | None = None,
                        format_hint: str | None = None) -> str:
    """Which image format a request body is: `npy`, `tiff` or `png`.

    The magic bytes decide; Content-Type and `?format=` only help when the
    body has no known signature (they cannot turn a non-image into one).

    Raises
    ------
    RequestError
        400 when the body is empty or no known image.
    """
    if not body:
        raise RequestError(400, "empty request body: no image sent", ACCEPTED_IMAGE)
    for magic, fmt in _MAGIC:
        if body.startswith(magic):
            return fmt
    if format_hint and format_hint.lower().lstrip(".") not in _FORMAT_NAMES:
        raise RequestError(400, f"unknown ?format={format_hint!r}", ACCEPTED_IMAGE)
    declared = (_FORMAT_NAMES.get((format_hint or "").lower().lstrip("."))
                or _CONTENT_TYPES.get((content_type or "").split(";")[0].strip().lower()))
    what = f"declared as {declared}, but " if declared else ""
    raise RequestError(400, f"not an image: {what}the body starts with {body[:8]!r}, which is no "
                            ".npy, TIFF or PNG signature", ACCEPTED_IMAGE)


def peek_image_shape(body: bytes, fmt: str) -> tuple[int, ...] | None:
    """The array shape a body's header declares, without decoding the pixels.

    Lets the size cap refuse a small, highly compressed file that would
    decode into a huge array (a "decompression bomb") before it is decoded.
    Returns None when the header cannot be read; the full reader then says why.
    """
    try:
        if fmt == "png":
            # The IHDR chunk always comes first: width and height, big-endian, at bytes 16-24.
            if len(body) < 24 or body[12:16] != b"IHDR":
                return None
            return (int.from_bytes(body[20:24], "big"), int.from_bytes(body[16:20], "big"))
        if fmt == "npy":
            stream = io.BytesIO(body)
            version = np.lib.format.read_magic(stream)
            shape, _, _ = np.lib.format._read_array_header(stream, version)  # noqa: SLF001
            return tuple(int(n) for n in shape)
        if fmt == "tiff":
            import tifffile

            with tifffile.TiffFile(io.BytesIO(body)) as tif:
                return tuple(int(n) for n in tif.series[0].shape)
    except Exception:  # noqa: BLE001 - a damaged header is reported by the real reader
        return None
    return None


def decode_image(body: bytes, fmt: str) -> Any:
    """Read an image sent as bytes with :func:`stemreg.acquisition.read_image`.

    Going through the same reader as `stemreg denoise` keeps the calibration
    rules (TIFF resolution tags, ...) in one place.

    Returns
    -------
    stemreg.acquisition.ImageWithCalibration
    """
    from stemreg.acquisition import ImageReadError, read_image

    with tempfile.TemporaryDirectory(prefix="stemreg-serve-") as tmp:
        path = Path(tmp) / f"request.{fmt}"
        path.write_bytes(body)
        try:
            return read_image(path, allow_stack=True)
        except ImageReadError as exc:
            problem = getattr(exc, "problem", None) or str(exc)
            raise RequestError(400, f"could not read the {fmt} image: {problem}",
                               ACCEPTED_IMAGE) from exc
        except (ValueError, OSError, EOFError) as exc:  # a reader's own complaint on a damaged file
            raise RequestError(400, f"could not read the {fmt} image: {exc}", ACCEPTED_IMAGE) from exc


def encode_image(data: np.ndarray, fmt: str, *, like: Any = None) -> bytes:
    """Write a denoised image as bytes of `fmt`, keeping the input's calibration.

    Parameters
    ----------
    data
        Float32 `(H, W)` or `(N, H, W)`.
    fmt
        `npy`, `tiff` or `png`.
    like
        The :class:`~stemreg.acquisition.ImageWithCalibration` that came in;
        its calibration goes out with the result.
    """
    from stemreg.acquisition import write_image

    calibration = getattr(like, "calibration", None)
    with tempfile.TemporaryDirectory(prefix="stemreg-serve-") as tmp:
        path = Path(tmp) / f"denoised.{fmt}"
        write_image(path, data, calibration, like=like)
        return path.read_bytes()


# --------------------------------------------------------------------------- the model

def _benchmark_of(tags: dict[str, str]) -> dict[str, Any]:
    """The version's benchmark figures (`benchmark.*` tags), as the registry reads them."""
    from types import SimpleNamespace

    try:
        from stemreg.platform.registry import benchmark_of
    except ImportError:
        return {k[len("benchmark."):]: v for k, v in tags.items() if k.startswith("benchmark.")}
    try:
        return benchmark_of(SimpleNamespace(tags=tags))
    except (TypeError, ValueError):  # a malformed figure must not break /model
        return {k[len("benchmark."):]: v for k, v in tags.items() if k.startswith("benchmark.")}


@dataclass
class ServedModel:
    """One loaded model version and what `/model` says about it."""

    name: str
    version: str
    alias: str
    condition: str
    pyfunc: Any = field(repr=False)
    tags: dict[str, str]
    run_id: str | None
    loaded_at: str
    load_seconds: float

    @property
    def model_uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    def metrics(self) -> dict[str, float]:
        """Figures from the version's tags (`benchmark.*`, `val_*`, ...), as numbers."""
        out: dict[str, float] = {}
        for key, value in self.tags.items():
            if key.startswith(("benchmark.", "val_", "validation.", "metric.")):
                try:
                    number = float(value)
                except (TypeError, ValueError):
                    continue  # benchmark.id and the like are not figures
                if math.isfinite(number):
                    out[key] = number
        return out

    def describe(self) -> dict[str, Any]:
        architecture: Any = self.tags.get("architecture")
        if architecture is not None:
            try:
                architecture = json.loads(architecture)
            except ValueError:
                pass
        return {
            "name": self.name, "version": self.version, "alias": self.alias,
            "condition": self.condition, "model_uri": self.model_uri, "run_id": self.run_id,
            "metrics": self.metrics(), "architecture": architecture,
            "benchmark": _benchmark_of(self.tags), "tags": dict(self.tags),
            "loaded_at": self.loaded_at, "load_seconds": round(self.load_seconds, 3),
        }


@dataclass
class RefreshResult:
    """What one look at the alias found and did."""

    changed: bool
    version: str | None
    previous_version: str | None
    error: str | None = None
    checked_at: str = field(default_factory=_utc_now)

    def as_dict(self) -> dict[str, Any]:
        return {"changed": self.changed, "version": self.version,
                "previous_version": self.previous_version, "error": self.error,
                "checked_at": self.checked_at}


def _is_missing(exc: Exception) -> bool:
    """True when an MLflow error means 'no such model / alias' rather than a broken store."""
    code = getattr(exc, "error_code", "")
    return code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")


def _load_pyfunc(model_uri: str) -> Any:
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(model_uri)


class ModelHolder:
    """The model version an alias points to, loaded, behind a lock.

    Parameters
    ----------
    condition
        Condition name; the model is `stem-denoiser-<condition>`.
    alias
        The alias to follow (`champion`, `challenger`, ...).
    tracking_uri
        MLflow tracking + registry store; default :func:`stemreg.platform.store.tracking_uri`.
    loader
        `model_uri -> pyfunc`; default `mlflow.pyfunc.load_model`.
    """

    def __init__(self, condition: str, alias: str = DEFAULT_ALIAS, *, tracking_uri: str | None = None,
                 loader: Callable[[str], Any] | None = None) -> None:
        import mlflow
        from mlflow import MlflowClient

        from stemreg.platform import store

        if not condition or not condition.strip():
            raise BadInput("--condition is empty; give a condition name such as low-dose")
        if not alias or not alias.strip():
            raise BadInput("--alias is empty; give an alias such as champion or challenger")
        self.condition = condition
        self.alias = alias
        self.name = model_name(condition)
        self.tracking_uri = tracking_uri or store.tracking_uri()
        if self.tracking_uri.startswith("sqlite:///"):
            db_path = Path(self.tracking_uri[len("sqlite:///"):].split("?", 1)[0])
            if not db_path.is_file():  # opening it would create an empty store as a side effect
                raise BadInput(
                    f"no MLflow store at {db_path} (tracking URI {self.tracking_uri}); run "
                    f"`stemreg train --condition {condition}` here first, or set "
                    "MLFLOW_TRACKING_URI to the store that holds the models")
        # models:/ URIs resolve through MLflow's global registry URI: point it at our store.
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        self.client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        self._loader = loader or _load_pyfunc
        self._current: ServedModel | None = None
        self._swap_lock = threading.Lock()      # guards _current
        self._predict_lock = threading.Lock()   # one inference at a time: CPU cores, atomic swap
        self._refresh_lock = threading.Lock()   # one load at a time (poller vs /reload)
        self.last_refresh: RefreshResult | None = None
        self.load_error: str | None = None

    # -- resolving -------------------------------------------------------------------------
    def _known_conditions(self) -> list[str]:
        try:
            from stemreg.acquisition import list_conditions
        except ImportError:
            return []
        return sorted(getattr(c, "name", str(c)) for c in list_conditions())

    def _registered_conditions(self) -> list[str]:
        try:
            found = self.client.search_registered_models(filter_string=f"name LIKE '{MODEL_NAME_PREFIX}%'")
        except Exception:  # noqa: BLE001 - only used to word an error message
            return []
        return sorted(m.name[len(MODEL_NAME_PREFIX):] for m in found)

    def resolve(self) -> Any:
        """The `ModelVersion` the alias points to now.

        Raises
        ------
        BadInput
            Unknown condition (neither built in nor registered), no model
            registered for it, or no version carrying the alias yet.
        """
        from mlflow.exceptions import MlflowException

        try:
            registered = self.client.get_registered_model(self.name)
        except MlflowException as exc:
            if not _is_missing(exc):
                raise
            known = self._known_conditions()
            registered_names = self._registered_conditions()
            if known and self.condition not in known:
                raise BadInput(
                    f"unknown condition {self.condition!r}; known conditions: {', '.join(known)}; "
                    f"registered models exist for: {', '.join(registered_names) or 'none yet'}") from exc
            raise BadInput(
                f"no model registered for condition {self.condition!r} (no {self.name} in "
                f"{self.tracking_uri}); registered models exist for: "
                f"{', '.join(registered_names) or 'none yet'}; train one with "
                f"`stemreg train --condition {self.condition}`") from exc
        try:
            return self.client.get_model_version_by_alias(self.name, self.alias)
        except MlflowException as exc:
            if not _is_missing(exc):
                raise
            aliases = getattr(registered, "aliases", {}) or {}
            held = ", ".join(f"{a} -> v{v}" for a, v in sorted(aliases.items())) or "none"
            raise BadInput(
                f"{self.name} has no version with alias {self.alias!r} yet (aliases: {held}); "
                f"promote one with `stemreg promote --condition {self.condition}`") from exc

    # -- loading ---------------------------------------------------------------------------
    def _load_version(self, version: Any) -> ServedModel:
        uri = f"models:/{self.name}/{version.version}"
        started = time.perf_counter()
        pyfunc = self._loader(uri)
        return ServedModel(
            name=self.name, version=str(version.version), alias=self.alias, condition=self.condition,
            pyfunc=pyfunc, tags=dict(getattr(version, "tags", {}) or {}),
            run_id=getattr(version, "run_id", None), loaded_at=_utc_now(),
            load_seconds=time.perf_counter() - started)

    def load(self) -> ServedModel:
        """Resolve the alias and load that version (the first load; errors propagate)."""
        with self._refresh_lock:
            try:
                served = self._load_version(self.resolve())
            except Exception as exc:
                self.load_error = f"{type(exc).__name__}: {exc}"
                raise
            with self._swap_lock:
                self._current = served
            self.load_error = None
        log.info("serving %s v%s (%s) for condition %s", served.name, served.version, self.alias,
                 self.condition)
        return served

    def refresh(self) -> RefreshResult:
        """Look at the alias again; load and swap in the version it points to if it moved.

        Never raises: a store or load failure is logged and reported, and the
        model already loaded keeps serving.
        """
        with self._refresh_lock:
            before = self.current
            previous = before.version if before else None
            try:
                version = self.resolve()
                if before is not None and str(version.version) == before.version:
                    result = RefreshResult(False, previous, previous)
                else:
                    served = self._load_version(version)
                    with self._predict_lock, self._swap_lock:  # no inference straddles the swap
                        self._current = served
                    self.load_error = None
                    log.info("alias %s of %s moved: now serving v%s (was v%s)", self.alias,
                             self.name, served.version, previous)
                    result = RefreshResult(True, served.version, previous)
            except Exception as exc:  # noqa: BLE001 - keep serving whatever goes wrong
                message = f"{type(exc).__name__}: {exc}"
                log.error("could not refresh %s@%s, still serving v%s: %s", self.name, self.alias,
                          previous, message)
                result = RefreshResult(False, previous, previous, error=message)
            self.last_refresh = result
            return result

    @property
    def current(self) -> ServedModel | None:
        with self._swap_lock:
            return self._current

    @property
    def loaded(self) -> bool:
        return self.current is not None

    def input_schema(self) -> Any:
        served = self.current
        return served.pyfunc.metadata.get_input_schema() if served else None

    def takes_stacks_only(self) -> bool:
        """True when the model's signature declares a rank-3 tensor `(N, H, W)` input."""
        schema = self.input_schema()
        if schema is None or not getattr(schema, "is_tensor_spec", lambda: False)():
            return False
        shapes = [tuple(getattr(spec, "shape", ()) or ()) for spec in schema.inputs]
        return len(shapes) == 1 and len(shapes[0]) == 3

    def denoise(self, data: np.ndarray, params: dict | None = None) -> tuple[Any, ServedModel]:
        """Predict on an image `(H, W)` or stack `(N, H, W)`; a lone image comes back `(H, W)`.

        Models signed for stacks only get a lone image as a stack of one,
        which MLflow's schema check would otherwise refuse.
        """
        lone = isinstance(data, np.ndarray) and data.ndim == 2 and self.takes_stacks_only()
        predictions, served = self.predict(data[None] if lone else data, params)
        if lone:
            predictions = np.asarray(predictions)[0]
        return predictions, served

    def predict(self, data: Any, params: dict | None = None) -> tuple[Any, ServedModel]:
        """Run the loaded pyfunc on `data`; returns the raw predictions and the model used."""
        with self._predict_lock:
            served = self.current
            if served is None:
                raise RequestError(503, "the model is not loaded yet; retry when GET /health answers 200")
            if params:
                return served.pyfunc.predict(data, params=params), served
            return served.pyfunc.predict(data), served


# --------------------------------------------------------------------------- HTTP

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
        import mlflow

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
        from mlflow.exceptions import MlflowException
        from mlflow.pyfunc.scoring_server import infer_and_parse_data, predictions_to_json

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
        declared = peek_image_shape(body, fmt)
        if declared is not None and math.prod(declared) > self.server.max_pixels:
            raise RequestError(413, f"the {fmt} image declares shape {list(declared)}: "
                                    f"{math.prod(declared)} pixels, more than this server's cap of "
                                    f"{self.server.max_pixels}", ACCEPTED_IMAGE)
        image = decode_image(body, fmt)
        data = check_image_array(image.data, max_pixels=self.server.max_pixels, accepted=ACCEPTED_IMAGE)
        data = np.ascontiguousarray(data, dtype=np.float32)
        predictions, served = self.server.holder.denoise(data)
        denoised = np.asarray(predictions, dtype=np.float32).reshape(data.shape)
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
            raise BadInput(f"--max-pixels {max_pixels} must be a positive number of pixels")
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
    BadInput
        Unknown condition, nothing registered, no version with the alias, bad
        size cap.
    """
    holder = ModelHolder(condition, alias, tracking_uri=tracking_uri, loader=loader)
    holder.resolve()  # start-up errors before we take a port
    return DenoiserHTTPServer(holder, host=host, port=port, max_pixels=max_pixels,
                              poll_seconds=poll_seconds)
