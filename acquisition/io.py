"""Reading and writing microscope images with their calibration.

Formats: DM3/DM4 (read), EMD Velox (read) and Berkeley/NCEM (read, write) and
HSPY (read, write) through RosettaSciIO; TIFF through tifffile (resolution tags
or ImageJ metadata carry the pixel size; RGB is read as grey); PNG (16-bit, with the value range and
the calibration in text chunks); NPY (calibration in a ``<name>.npy.json``
sidecar). Every problem becomes an :class:`ImageReadError` naming the file.
"""
from __future__ import annotations

import io
import json
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from stemreg.acquisition.errors import ImageReadError
from stemreg.acquisition.limits import READ_MAX_PIXELS, check_hdf5, check_pixels, check_png, check_tiff
from stemreg.acquisition.tiff_meta import tiff_pixel_size
from stemreg.acquisition.metadata import (PNG_GREY_MODES, UNIT_TO_PM, check_float32_range, checked_calibration,
                                          one_channel, value_range)

READ_SUFFIXES = {".npy": "npy", ".tif": "tiff", ".tiff": "tiff", ".png": "png", ".dm3": "dm3", ".dm4": "dm4",
                 ".emd": "emd", ".hspy": "hspy", ".hdf5": "hspy"}
WRITE_SUFFIXES = {".npy": "npy", ".tif": "tiff", ".tiff": "tiff", ".png": "png", ".emd": "emd", ".hspy": "hspy"}
# Lengths in picometres per unit, for the spellings microscope software uses.
PNG_KEY = "stemreg"


@dataclass(frozen=True)
class Calibration:
    """Pixel size and its unit (``None`` when the file holds none)."""

    pixel_size: float | None = None
    unit: str | None = None

    def pixel_size_pm(self) -> float | None:
        """The pixel size in picometres, or ``None`` if absent or in an unknown unit."""
        if self.pixel_size is None or self.unit is None or self.unit not in UNIT_TO_PM:
            return None
        return float(self.pixel_size * UNIT_TO_PM[self.unit])

    def to_dict(self) -> dict[str, Any]:
        return {"pixel_size": self.pixel_size, "unit": self.unit}


@dataclass
class ImageWithCalibration:
    """A float32 image (H, W) or stack (N, H, W), its calibration and the format it came from."""

    data: np.ndarray
    calibration: Calibration = field(default_factory=Calibration)
    format: str = "npy"


def _format_of(path: Path, table: dict[str, str], verb: str) -> str:
    fmt = table.get(path.suffix.lower())
    if fmt is None:
        raise ImageReadError(path, f"cannot {verb} {path.suffix or 'files without a suffix'!r}; "
                                   f"accepted: {', '.join(sorted(table))}")
    return fmt


# -- readers: each returns (array, Calibration) --------------------------------------------------
class _Rewind:
    """Use an open stream in a ``with`` block and put it back at its start afterwards."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream

    def __enter__(self) -> BinaryIO:
        self.stream.seek(0)
        return self.stream

    def __exit__(self, *exc: object) -> None:
        self.stream.seek(0)


def read_npy_header(stream: BinaryIO) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` from a .npy header, read with numpy's public API; the
    stream is left at the first data byte.

    Raises
    ------
    ValueError
        No .npy magic, an unknown format version, or a damaged header.
    """
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
    elif version in ((2, 0), (3, 0)):  # 3.0 differs only in the header's text encoding
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
    else:
        raise ValueError(f"unknown .npy format version {version}")
    return tuple(int(n) for n in shape), bool(fortran), np.dtype(dtype)


def _read_npy(path: Path | BinaryIO, max_pixels: int | None = None) -> tuple[np.ndarray, Calibration]:
    # The header first: its dtype and its size against the bytes present, before numpy allocates.
    with (open(path, "rb") if isinstance(path, Path) else _Rewind(path)) as stream:
        shape, _, dtype = read_npy_header(stream)
        start = stream.tell()
        stream.seek(0, io.SEEK_END)
        available = stream.tell() - start
    if dtype.kind not in "uif":
        raise ImageReadError(path if isinstance(path, Path) else Path("image.npy"),
                             f"has dtype {dtype}, not a real-valued image (accepted: integer or floating point pixels)")
    if any(n < 0 for n in shape):
        raise ImageReadError(path if isinstance(path, Path) else Path("image.npy"),
                             f"declares a negative dimension in shape {list(shape)}: damaged header")
    check_pixels(shape, path if isinstance(path, Path) else Path("image.npy"), max_pixels)
    needed = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if needed > available:
        raise ImageReadError(path if isinstance(path, Path) else Path("image.npy"),
                             f"declares shape {list(shape)} ({needed} bytes of pixels) but holds {available}: "
                             "truncated or damaged")
    data = np.load(path, allow_pickle=False)
    calibration = Calibration()
    if not isinstance(path, Path):
        return data, calibration  # bytes in memory: no sidecar
    sidecar = path.with_name(path.name + ".json")
    if sidecar.is_file():
        try:
            meta = json.loads(sidecar.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ImageReadError(path, f"its calibration sidecar {sidecar.name} is not readable JSON ({exc}); "
                                       "fix or remove it") from None
        calibration = Calibration(*checked_calibration(meta, path, f"calibration sidecar {sidecar.name}"))
    return data, calibration


def _read_tiff(path: Path | BinaryIO, max_pixels: int | None = None) -> tuple[np.ndarray, Calibration]:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        check_tiff(tif, path if isinstance(path, Path) else Path("image.tiff"), max_pixels)  # before decoding
        data = one_channel(tif.series[0].asarray(), tif.series[0].axes, path)
        calibration = Calibration(*tiff_pixel_size(tif))
    return data, calibration


def _read_png(path: Path | BinaryIO, max_pixels: int | None = None) -> tuple[np.ndarray, Calibration]:
    from PIL import Image

    name = path if isinstance(path, Path) else Path("image.png")
    check_png(path, name, max_pixels)  # before decoding: the declared size, and no more data than it needs
    with Image.open(path) as im:
        im.load()
        info = dict(im.info)
        if im.mode in ("P", "PA"):  # palette indices are no intensities: read the colours they stand for
            im = im.convert("RGBA")
        elif im.mode not in PNG_GREY_MODES + ("RGB", "RGBA", "LA", "1"):
            raise ImageReadError(name, f"has PIL mode {im.mode}; accepted: grey levels (L, I;16, I, F), "
                                       "grey + alpha (LA), RGB(A) or palette PNGs")
        data = np.asarray(im)
    try:
        meta = json.loads(info[PNG_KEY]) if PNG_KEY in info else {}
    except (TypeError, ValueError) as exc:
        raise ImageReadError(name, f"its {PNG_KEY!r} text chunk is not JSON ({exc})") from None
    calibration = Calibration(*checked_calibration(meta, name, f"{PNG_KEY!r} text chunk"))
    if data.ndim == 3 and data.shape[-1] == 2:
        data = data[..., 0]  # grey + alpha: the grey levels (the alpha is no signal)
    elif data.ndim == 3 and data.shape[-1] in (3, 4):
        data = data[..., :3].astype(np.float64).mean(axis=-1)  # a grey image saved as RGB(A)
    span = value_range(meta, name, f"{PNG_KEY!r} text chunk")
    if span is not None:
        low, high = span
        full = float(np.iinfo(np.uint16).max if np.asarray(data).dtype == np.uint16 else 255)
        data = low + np.asarray(data, dtype=np.float64) / full * (high - low)
    return data, calibration


def _pick_signal(signals: list[dict], path: Path) -> dict:
    """The image among a file's signals: 2-D ones first, a HAADF one among several."""
    images = [s for s in signals if np.ndim(s["data"]) >= 2 and len(s.get("axes", [])) >= 2]
    if not images:
        raise ImageReadError(path, "holds no image (only spectra or scalars)")
    haadf = [s for s in images if "haadf" in str(s.get("metadata", {}).get("General", {}).get("title", "")).lower()]
    return (haadf or images)[0]


def _read_rsciio(path: Path, fmt: str, max_pixels: int | None = None) -> tuple[np.ndarray, Calibration]:
    if fmt in ("dm3", "dm4"):
        from rsciio.digitalmicrograph import file_reader
    else:
        check_hdf5(path, path, max_pixels)  # before HDF5 inflates a chunk: bounded, filters known
        if fmt == "emd":
            from rsciio.emd import file_reader
        else:
            from rsciio.hspy import file_reader
    signal = _pick_signal(file_reader(str(path), lazy=True), path)  # lazy: the declared shape first
    check_pixels(tuple(np.shape(signal["data"])), path, max_pixels)
    data = np.asarray(signal["data"])
    axes = [a for a in signal["axes"] if not a.get("navigate", False)] or signal["axes"]
    x_axis = axes[-1]
    units = x_axis.get("units")
    scale = x_axis.get("scale")
    if units and str(units) not in ("<undefined>", "px") and scale:
        return data, Calibration(float(scale), str(units))
    return data, Calibration()


def _validate(data: Any, path: Path, allow_stack: bool) -> np.ndarray:
    data = np.asarray(data)
    if data.dtype.kind not in "uif":
        raise ImageReadError(path, f"has dtype {data.dtype}, not a real-valued image "
                                   "(accepted: integer or floating point pixels)")
    if data.ndim > 2:
        data = data.reshape([n for n in data.shape if n != 1] or [1])  # drop singleton axes (1, H, W)
        data = data if data.ndim >= 2 else data.reshape(1, -1)
    if data.ndim == 3 and not allow_stack:
        raise ImageReadError(path, f"is a 3-D stack of shape {data.shape} where one 2-D image is expected "
                                   "(give one image per file, or use a command that takes stacks)")
    if data.ndim not in (2, 3):
        raise ImageReadError(path, f"has {data.ndim} dimension(s) {data.shape}; expected a 2-D image (H, W)"
                                   + (" or a stack (N, H, W)" if allow_stack else ""))
    if min(data.shape[-2:]) < 2:
        raise ImageReadError(path, f"is too small ({data.shape}); an image needs at least 2 x 2 pixels")
    bad = ~np.isfinite(data)
    if bad.any():
        raise ImageReadError(path, f"contains {int(bad.sum())} NaN or Inf value(s)")
    check_float32_range(data, path)
    return data.astype(np.float32, copy=False)  # a float32 body is used as read, not copied


def read_image(path: str | Path, *, allow_stack: bool = False,
               max_pixels: int = READ_MAX_PIXELS) -> ImageWithCalibration:
    """Read one image (or a stack where ``allow_stack``) as float32 with its calibration.

    A file declaring more than ``max_pixels`` pixels (any format), a TIFF of too many pages, or a
    TIFF or HDF5 file (.emd, .hspy) whose compressed data inflates beyond its declared shape, is
    refused before it is decoded (:mod:`stemreg.acquisition.limits`).

    Raises
    ------
    ImageReadError
        Missing file, unknown suffix, truncated/corrupt file, not an image, a 3-D stack where one
        image is expected, a non-numeric dtype, NaN/Inf pixels; the message names the file.
    """
    path = Path(path)
    fmt = _format_of(path, READ_SUFFIXES, "read")
    if not path.is_file():
        raise ImageReadError(path, "no such file")
    if path.stat().st_size == 0:
        raise ImageReadError(path, "is empty (0 bytes)")
    return _read(path, path, fmt, allow_stack, max_pixels)


_READERS = {"npy": _read_npy, "tiff": _read_tiff, "png": _read_png}
#: Formats that travel as bytes in memory (:func:`read_image_bytes`, :func:`write_image_bytes`).
BYTES_FORMATS = tuple(_READERS)


def _read(source: Path | BinaryIO, name: Path, fmt: str, allow_stack: bool,
          max_pixels: int | None = None) -> ImageWithCalibration:
    try:
        if fmt in _READERS:
            data, calibration = _READERS[fmt](source, max_pixels)
        else:
            data, calibration = _read_rsciio(source, fmt, max_pixels)
    except ImageReadError:
        raise
    except Exception as exc:  # noqa: BLE001 - every reader fails its own way on a bad file
        reason = re.sub(r"<[^<>]* object at 0x[0-9a-fA-F]+>", "the data", str(exc).strip().splitlines()[0]
                        if str(exc).strip() else "unreadable")
        raise ImageReadError(name, f"is not a readable {fmt.upper()} image (truncated or corrupt?): "
                                   f"{reason}") from None
    return ImageWithCalibration(_validate(data, name, allow_stack), calibration, fmt)


def read_image_bytes(body: bytes, fmt: str, *, allow_stack: bool = False,
                     name: str = "image", max_pixels: int = READ_MAX_PIXELS) -> ImageWithCalibration:
    """Read an image held in memory (``fmt``: ``npy``, ``tiff`` or ``png``), validated as :func:`read_image` does,
    with the same bounds before decoding (``max_pixels``).

    Raises
    ------
    ImageReadError
        Unknown format, empty or corrupt bytes, or an image :func:`read_image` would refuse;
        ``name`` stands for the file in the message.
    """
    label = Path(f"{name}.{fmt}")
    if fmt not in _READERS:
        raise ImageReadError(label, f"cannot read {fmt!r} from memory; accepted: {', '.join(BYTES_FORMATS)}")
    if not body:
        raise ImageReadError(label, "is empty (0 bytes)")
    return _read(io.BytesIO(body), label, fmt, allow_stack, max_pixels)


# -- writers -----------------------------------------------------------------------------------
def _rsciio_signal(data: np.ndarray, calibration: Calibration) -> dict:
    names = ["y", "x"] if data.ndim == 2 else ["index", "y", "x"]
    axes = []
    for name, size in zip(names, data.shape):
        spatial = name != "index"
        axes.append({"name": name, "size": int(size), "offset": 0.0, "navigate": not spatial,
                     "scale": float(calibration.pixel_size) if spatial and calibration.pixel_size else 1.0,
                     "units": (calibration.unit or "") if spatial else ""})
    return {"data": data, "axes": axes, "metadata": {"General": {"title": "stemreg"}, "Signal": {"signal_type": ""}},
            "original_metadata": {}, "tmp_parameters": {}, "attributes": {"_lazy": False},
            "learning_results": {}, "models": {}, "package_info": {"name": "stemreg", "version": "0"}}


def write_image(path: str | Path, data: np.ndarray, calibration: Calibration | None = None, *,
                like: ImageWithCalibration | None = None) -> Path:
    """Write ``data`` in the format of ``path``'s suffix, keeping the calibration.

    ``calibration`` defaults to ``like.calibration`` (e.g. the image that was denoised).
    PNG is written as 16-bit with the value range in a text chunk, so reading it back
    restores the float values to 1/65535 of their range.
    """
    path = Path(path)
    fmt = _format_of(path, WRITE_SUFFIXES, "write")
    if calibration is None:
        calibration = like.calibration if like is not None else Calibration()
    data = np.asarray(data, dtype=np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Atomic: written under a temporary name beside the target (same suffix, so the same format),
    # then renamed over it; a reader never sees a half-written file, a failure leaves none.
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}-{threading.get_ident()}{path.suffix}")
    try:
        if fmt in _READERS:
            _encode(tmp, data, calibration, fmt)
        elif fmt == "emd":
            from rsciio.emd import file_writer

            file_writer(str(tmp), _rsciio_signal(data, calibration))
        else:
            from rsciio.hspy import file_writer

            file_writer(str(tmp), _rsciio_signal(data, calibration), show_progressbar=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if fmt == "npy":
        sidecar = path.with_name(path.name + ".json")
        if calibration.pixel_size is not None:
            side_tmp = sidecar.with_name(f".{sidecar.name}.tmp-{os.getpid()}-{threading.get_ident()}")
            side_tmp.write_text(json.dumps(calibration.to_dict()))
            os.replace(side_tmp, sidecar)
        elif sidecar.exists():
            sidecar.unlink()
    return path


def _encode(target: Path | BinaryIO, data: np.ndarray, calibration: Calibration, fmt: str) -> None:
    if fmt == "npy":
        np.save(target, data)
    elif fmt == "tiff":
        import tifffile

        kwargs: dict[str, Any] = {}
        if calibration.pixel_size:
            kwargs["resolution"] = (1.0 / calibration.pixel_size, 1.0 / calibration.pixel_size)
            kwargs["metadata"] = {"unit": calibration.unit or ""}
            if data.ndim == 3:
                kwargs["metadata"]["axes"] = "ZYX"
        tifffile.imwrite(target, data, imagej=bool(calibration.pixel_size), **kwargs)
    else:
        from PIL import Image, PngImagePlugin

        if data.ndim != 2:
            raise ValueError(f"PNG holds one 2-D image; got shape {data.shape} (write a stack as .tif or .npy)")
        low, high = float(data.min()), float(data.max())
        scaled = np.round((data - low) / (high - low if high > low else 1.0) * 65535).astype(np.uint16)
        info = PngImagePlugin.PngInfo()
        info.add_text(PNG_KEY, json.dumps({"data_min": low, "data_max": high, **calibration.to_dict()}))
        Image.fromarray(scaled).save(target, format="PNG", pnginfo=info)


def write_image_bytes(data: np.ndarray, fmt: str, calibration: Calibration | None = None, *,
                      like: ImageWithCalibration | None = None) -> bytes:
    """The bytes :func:`write_image` would write for ``fmt`` (``npy``, ``tiff`` or ``png``), in memory.

    ``calibration`` defaults to ``like.calibration``. An NPY's calibration, which a file keeps in a
    sidecar, has no place in the bytes.
    """
    if fmt not in _READERS:
        raise ValueError(f"cannot write {fmt!r} to memory; accepted: {', '.join(BYTES_FORMATS)}")
    if calibration is None:
        calibration = like.calibration if like is not None else Calibration()
    buffer = io.BytesIO()
    _encode(buffer, np.asarray(data, dtype=np.float32), calibration, fmt)
    return buffer.getvalue()
