"""The server's request and answer bodies: JSON checks, image formats, in-memory decoding and encoding.

Image bodies are decoded and encoded in memory by the same readers and
writers as `stemreg denoise` (:func:`stemreg.acquisition.io.read_image_bytes`,
:func:`~stemreg.acquisition.io.write_image_bytes`), which also validate each
image once (rank, dtype, finite values).
"""
from __future__ import annotations

import io
import math
import re
from typing import Any

import numpy as np
import tifffile

from stemreg.acquisition import ImageReadError
from stemreg.acquisition.limits import check_tiff_pages
from stemreg.acquisition.io import (Calibration, ImageWithCalibration, read_image_bytes, read_npy_header,
                                   write_image_bytes)
from stemreg.models.mlflow_model import check_shape

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


_ABS_PATH = re.compile(r"(?<![\w.:/])(?:[A-Za-z]:)?[/\\](?:[^\s'\"()\[\]:,;/\\]+[/\\])+([^\s'\"()\[\]:,;/\\]*)")


def public_message(exc: BaseException | str, limit: int = 300) -> str:
    """An error for an answer: its first line, absolute paths cut to their last part, no class name."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else "unknown error"
    text = re.sub(r"file:/*(?=/)", "", text)
    return _shorten(_ABS_PATH.sub(lambda m: m.group(1) or "<path>", text), limit)


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
    if arr.dtype == np.bool_:
        raise RequestError(400, "input holds booleans; a real-valued image (integer or float pixels) is needed",
                           accepted)
    if not np.issubdtype(arr.dtype, np.number):
        raise RequestError(400, f"input holds {arr.dtype} values, not numbers", accepted)
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise RequestError(400, "input holds complex numbers; a real-valued image is needed", accepted)
    if arr.ndim not in (2, 3):
        raise RequestError(400, f"input has rank {arr.ndim} (shape {list(arr.shape)}); "
                                "an image (H, W) or a stack (N, H, W) is needed", accepted)
    try:
        check_shape(arr.shape)  # one rule for every surface: at least 2 x 2 pixels
    except ValueError as exc:
        raise RequestError(400, str(exc), accepted) from None
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


#: A .npy header is read from this many first bytes (a version 1.0 header is at most 65545 bytes).
_NPY_PREFIX = 65545 + 64
_NPY_FLOAT32 = np.dtype("<f4")


def _npy_header(body: bytes) -> tuple[tuple[int, ...], bool, np.dtype, int] | None:
    """``(shape, fortran_order, dtype, data offset)`` of a .npy body, read from its first bytes only
    (no copy of the pixels); None when the header cannot be read."""
    head = memoryview(body)[:_NPY_PREFIX]
    for source in (head, body):  # a header longer than the prefix (format 2.0): read from the whole body
        stream = io.BytesIO(source)
        try:
            shape, fortran, dtype = read_npy_header(stream)
        except Exception:  # noqa: BLE001 - a damaged header is reported by the real reader
            if len(head) == len(body):
                return None
            continue
        return shape, fortran, dtype, stream.tell()
    return None


def _npy_view(body: bytes, header: tuple[tuple[int, ...], bool, np.dtype, int]) -> np.ndarray | None:
    """The pixels of a plain .npy body (little-endian float32, C order, finite, no side below 2 px) as
    a view of the body, not copied; None for any other body, which the general reader then reads
    (and refuses with its own message where it must)."""
    shape, fortran, dtype, offset = header
    if fortran or dtype != _NPY_FLOAT32 or len(shape) not in (2, 3):
        return None
    if len(shape) == 3 and shape[0] == 1:
        shape = shape[1:]  # (1, H, W) is one image, as the reader makes it
    if min(shape) < 2:
        return None
    count = math.prod(shape)
    if offset + 4 * count > len(body):
        return None  # truncated: the reader says so
    pixels = np.frombuffer(body, dtype=_NPY_FLOAT32, count=count, offset=offset).reshape(shape)
    return pixels if np.isfinite(pixels).all() else None


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
            header = _npy_header(body)
            return header[0] if header else None
        if fmt == "tiff":
            with tifffile.TiffFile(io.BytesIO(body)) as tif:
                check_tiff_pages(tif.filehandle, "image.tiff")  # before series parses every page
                return tuple(int(n) for n in tif.series[0].shape)
    except Exception:  # noqa: BLE001 - a damaged header is reported by the real reader
        return None
    return None


def check_size(shape: tuple[int, ...], *, max_pixels: int, what: str = "input",
               accepted: str = ACCEPTED_IMAGE) -> None:
    """413 when an image of ``shape`` holds more than ``max_pixels`` pixels."""
    pixels = math.prod(shape)
    if pixels > max_pixels:
        raise RequestError(413, f"{what} has {pixels} pixels (shape {list(shape)}), more than this server's "
                                f"cap of {max_pixels}", accepted)


def decode_image(body: bytes, fmt: str, *, max_pixels: int) -> ImageWithCalibration:
    """Read and validate an image sent as bytes, in memory, refusing one above ``max_pixels``.

    The header's declared shape is checked before decoding (a small compressed file may decode into a
    huge array); the reader then validates the pixels once (rank, dtype, finite values).

    Raises
    ------
    RequestError
        400 for a damaged or refused image, 413 above the size cap.
    """
    header = _npy_header(body) if fmt == "npy" else None
    declared = header[0] if header else peek_image_shape(body, fmt) if fmt != "npy" else None
    if declared is None and fmt == "npy":  # numpy would allocate what a damaged header claims
        raise RequestError(400, "could not read the npy image: its header is damaged or of an unknown "
                                "version", ACCEPTED_IMAGE)
    if declared is not None and math.prod(declared) > max_pixels:
        raise RequestError(413, f"the {fmt} image declares shape {list(declared)}: "
                                f"{math.prod(declared)} pixels, more than this server's cap of "
                                f"{max_pixels}", ACCEPTED_IMAGE)
    pixels = _npy_view(body, header) if header else None
    if pixels is not None:  # float32 pixels used where they arrived: no copy
        image = ImageWithCalibration(pixels, Calibration(), "npy")
    else:
        try:
            image = read_image_bytes(body, fmt, allow_stack=True, name="request", max_pixels=max_pixels)
        except ImageReadError as exc:
            raise RequestError(400, f"could not read the {fmt} image: {exc.problem}", ACCEPTED_IMAGE) from exc
        check_size(image.data.shape, max_pixels=max_pixels)
    try:
        check_shape(image.data.shape)  # the one rule: e.g. (H, W, 3) is channels, not a stack of H images
    except ValueError as exc:
        raise RequestError(400, str(exc), ACCEPTED_IMAGE) from None
    return image


def encode_image(data: np.ndarray, fmt: str, *, like: ImageWithCalibration | None = None) -> bytes:
    """A denoised image as bytes of ``fmt`` (``npy``, ``tiff``, ``png``), keeping ``like``'s calibration."""
    return write_image_bytes(data, fmt, like=like)


def encode_image_parts(data: np.ndarray, fmt: str, *,
                       like: ImageWithCalibration | None = None) -> list[bytes | memoryview]:
    """:func:`encode_image`'s bytes as pieces to send one after the other: for ``npy`` its header and
    the float32 pixels themselves (not copied); other formats in one piece."""
    if fmt != "npy":
        return [encode_image(data, fmt, like=like)]
    pixels = np.ascontiguousarray(data, dtype=_NPY_FLOAT32)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(pixels))
    return [header.getvalue(), memoryview(pixels.reshape(-1)).cast("B")]
