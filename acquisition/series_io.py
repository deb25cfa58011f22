"""Frame series and huge scans that do not fit in memory: opened lazily, written chunk by chunk.

:func:`open_series` opens a stack ``(N, H, W)`` or one large image ``(H, W)`` as a Dask array
without reading its pixels: ``.zarr`` and ``.zspy`` (chunked stores), ``.hspy``/``.emd`` (HDF5,
through RosettaSciIO's lazy reader), ``.tif`` stacks (one page read per frame, on demand) and
``.npy`` (read in blocks). A file that is shorter than its header declares (a truncated or
half-copied series) is refused here, in one line, before any work starts: a lazy reader would
otherwise return zeros or fail hours later.

:func:`create_series_store` makes an empty chunked output (``.zspy``, HyperSpy's zarr format, read
back by ``hs.load``; or a plain ``.zarr`` array) whose chunks :func:`open_series_array` fills one
at a time: zarr writes every chunk as its own file (under a temporary name, then renamed), so a
chunk is either whole or absent.
"""
from __future__ import annotations

import logging
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stemreg.acquisition.errors import ImageReadError
from stemreg.acquisition.io import Calibration, _pick_signal, _rsciio_signal, read_npy_header
from stemreg.acquisition.limits import check_page, check_tiff_pages
from stemreg.acquisition.tiff_meta import tiff_pixel_size

#: What streams, and how it is read.
STREAM_SUFFIXES = {".zarr": "zarr", ".zspy": "zspy", ".hspy": "hspy", ".hdf5": "hspy", ".emd": "emd",
                   ".tif": "tiff", ".tiff": "tiff", ".npy": "npy"}
#: The most pages a streamed TIFF series may hold (each is read on its own; a whole read takes at
#: most :data:`stemreg.acquisition.limits.TIFF_MAX_PAGES`).
STREAM_MAX_PAGES = 100_000
#: What a streamed result is written as.
STORE_SUFFIXES = {".zspy": "zspy", ".zarr": "zarr"}
#: The calibration's attributes on a plain .zarr array.
_CAL_ATTRS = ("pixel_size", "unit")


@dataclass
class LazySeries:
    """A stack ``(N, H, W)`` or an image ``(H, W)`` as a Dask array, with its calibration."""

    data: Any
    calibration: Calibration
    format: str
    path: Path

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(n) for n in self.data.shape)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _squeeze(data: Any, path: Path) -> Any:
    """Drop singleton axes of a lazy array; refuse what is not (H, W) or (N, H, W) of real numbers."""
    if np.dtype(data.dtype).kind not in "uif":
        raise ImageReadError(path, f"has dtype {data.dtype}, not a real-valued image (accepted: integer or "
                                   "floating point pixels)")
    keep = [n for n in data.shape if n != 1]
    if len(keep) < data.ndim and len(keep) >= 2:
        data = data.reshape(keep)
    if data.ndim not in (2, 3) or min(data.shape[-2:]) < 2:
        raise ImageReadError(path, f"has shape {tuple(data.shape)}; expected a series (N, H, W) or an image (H, W)")
    return data


def _stored_chunks(array: Any) -> int:
    """Chunks a zarr array holds. zarr 2 counts only the top level of a nested store ("0/1" keys, as
    HyperSpy's .zspy writes them), so a file system store's chunk files are counted here."""
    root = getattr(array.store, "path", None)
    if root is None or not os.path.isdir(os.path.join(root, array.path)):
        return int(array.nchunks_initialized)
    return sum(1 for _, _, files in os.walk(os.path.join(root, array.path)) for name in files
               if not name.startswith("."))


def _check_complete(array: Any, path: Path) -> None:
    """A zarr array with chunks missing reads them as zeros: refuse it instead."""
    stored, total = _stored_chunks(array), int(array.nchunks)
    if stored < total:
        raise ImageReadError(path, f"holds {stored} of its {total} chunks: truncated, or still being written "
                                   "(a stemreg output is complete when its run ends)")


def _zspy_data(group: Any) -> Any:
    experiments = group["Experiments"]
    for name in experiments.group_keys():
        if "data" in experiments[name]:
            return experiments[name]["data"]
    raise KeyError("no Experiments/<name>/data array")


def _calibration_of(axes: list[dict]) -> Calibration:
    spatial = [a for a in axes if not a.get("navigate", False)] or axes
    units, scale = spatial[-1].get("units"), spatial[-1].get("scale")
    if units and str(units) not in ("<undefined>", "px") and scale:
        return Calibration(float(scale), str(units))
    return Calibration()


def _open_zarr(path: Path) -> tuple[Any, Calibration]:
    import dask.array as da
    import zarr

    node = zarr.open(str(path), mode="r")
    if isinstance(node, zarr.Array):
        _check_complete(node, path)
        attrs = dict(node.attrs)
        cal = Calibration(attrs.get("pixel_size"), attrs.get("unit")) if attrs.get("pixel_size") else Calibration()
        return da.from_zarr(node), cal
    if "Experiments" in node:
        return _open_zspy(path)
    raise ImageReadError(path, "is a zarr group without an image array (accepted: a zarr array, or a .zspy store)")


def _open_zspy(path: Path) -> tuple[Any, Calibration]:
    import zarr
    from rsciio.zspy import file_reader

    _check_complete(_zspy_data(zarr.open(str(path), mode="r")), path)
    signal = _pick_signal(file_reader(str(path), lazy=True, mode="r"), path)
    return signal["data"], _calibration_of(signal["axes"])


def _open_hdf5(path: Path, fmt: str) -> tuple[Any, Calibration]:
    if fmt == "emd":
        from rsciio.emd import file_reader
    else:
        from rsciio.hspy import file_reader
    signal = _pick_signal(file_reader(str(path), lazy=True), path)
    return signal["data"], _calibration_of(signal["axes"])


def _page_rows(tif: Any, page: Any, lo: int, hi: int, name: Path) -> np.ndarray:
    """Rows ``[lo, hi)`` of one TIFF page, reading only the strips that hold them; every compressed
    strip is checked to inflate no further than its declared size first (a per-page bound, as
    :mod:`stemreg.acquisition.limits` sets for whole reads). A tiled page is read whole."""
    from stemreg.acquisition.limits import check_segment

    width = int(page.shape[-1])
    if page.is_tiled:
        for index in range(len(page.dataoffsets)):
            check_segment(tif, page, index, name)
        return np.asarray(page.asarray())[lo:hi]
    per = int(page.rowsperstrip or page.shape[0])
    if int(page.keyframe.compression) == 1 and len(page.dataoffsets) == 1 and not page.predictor > 1:
        per = 1  # one uncompressed strip: read just the rows asked for
        row_bytes = width * page.dtype.itemsize
        handle = tif.filehandle
        handle.seek(page.dataoffsets[0] + lo * row_bytes)
        raw = handle.read((hi - lo) * row_bytes)
        return np.frombuffer(raw, dtype=page.dtype.newbyteorder(tif.byteorder)).reshape(hi - lo, width)
    parts = []
    for index in range(lo // per, (hi - 1) // per + 1):
        data = check_segment(tif, page, index, name)
        segment, _, _ = page.decode(data, index)
        parts.append(np.asarray(segment).reshape(-1, width))
    first = lo // per * per
    return np.concatenate(parts)[lo - first:hi - first]


def _tiff_rows(path: str, page: int, lo: int, hi: int) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        return _page_rows(tif, tif.pages[page], lo, hi, Path(path))


def _tiff_pages(path: str, start: int, stop: int) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        pages = [tif.pages[i] for i in range(start, stop)]
        return np.stack([_page_rows(tif, page, 0, int(page.shape[0]), Path(path)) for page in pages])


def _open_tiff(path: Path) -> tuple[Any, Calibration]:
    size = path.stat().st_size
    quiet = logging.getLogger("tifffile")
    level, quiet.level = quiet.level, logging.CRITICAL  # a damaged file is reported below, in one line
    try:
        return _tiff_lazy(path, size)
    finally:
        quiet.setLevel(level)


def _tiff_lazy(path: Path, size: int) -> tuple[Any, Calibration]:
    import dask
    import dask.array as da
    import tifffile

    with open(path, "rb") as handle:  # before tifffile walks the pages: a loop, or a chain too long to list
        check_tiff_pages(handle, path, STREAM_MAX_PAGES)
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        shape, dtype = tuple(series.shape), np.dtype(series.dtype)
        declared = int((tif.imagej_metadata or {}).get("images", 0) or 0)
        if declared > int(np.prod(shape[:-2], dtype=np.int64)):
            raise ImageReadError(path, f"declares {declared} frames but holds {int(np.prod(shape[:-2]))} readable: "
                                       "truncated or damaged")
        if series.dataoffset is not None and series.dataoffset + series.nbytes > size:
            raise ImageReadError(path, f"declares {series.nbytes} bytes of pixels but the file ends first: truncated")
        for page in tif.pages:
            if any(o + c > size for o, c in zip(page.dataoffsets, page.databytecounts)):
                raise ImageReadError(path, "has a frame whose pixels lie past the end of the file: truncated")
            check_page(page, path, None)  # each page read on its own: a per-page bound, not a per-series one
        if series.axes.endswith("S"):
            raise ImageReadError(path, "is an RGB TIFF; a series of grey frames is expected")
        calibration = Calibration(*tiff_pixel_size(tif))
    if len(shape) == 2:  # one scan: blocks of ~1 MB of rows, each read from the strips that hold it
        rows = max(1, int(1e6 // max(1, shape[1] * dtype.itemsize)))
        parts = [da.from_delayed(dask.delayed(_tiff_rows)(str(path), 0, a, min(a + rows, shape[0])),
                                 (min(a + rows, shape[0]) - a, shape[1]), dtype) for a in range(0, shape[0], rows)]
        return da.concatenate(parts, axis=0), calibration
    n, frame = int(np.prod(shape[:-2])), shape[-2:]
    step = max(1, int(64e6 // max(1, int(np.prod(frame)) * dtype.itemsize)))  # ~64 MB per read
    parts = [da.from_delayed(dask.delayed(_tiff_pages)(str(path), a, min(a + step, n)),
                             (min(a + step, n) - a, *frame), dtype) for a in range(0, n, step)]
    return da.concatenate(parts, axis=0), calibration


def _npy_rows(path: str, start: int, dtype: str, shape: tuple[int, ...], lo: int, hi: int) -> np.ndarray:
    """Items ``[lo, hi)`` along the first axis of a C-ordered .npy, read from the file (not mapped:
    mapped pages would stay in the process's resident memory)."""
    item = int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize
    with open(path, "rb") as stream:
        stream.seek(start + lo * item)
        raw = stream.read((hi - lo) * item)
    return np.frombuffer(raw, dtype=dtype).reshape(hi - lo, *shape[1:])


def _open_npy(path: Path) -> tuple[Any, Calibration]:
    import dask
    import dask.array as da

    with open(path, "rb") as stream:
        shape, fortran, dtype = read_npy_header(stream)
        start = stream.tell()
    needed = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if needed > path.stat().st_size - start:
        raise ImageReadError(path, f"declares shape {list(shape)} ({needed} bytes of pixels) but holds "
                                   f"{path.stat().st_size - start}: truncated or damaged")
    sidecar = path.with_name(path.name + ".json")
    calibration = Calibration()
    if sidecar.is_file():
        import json

        meta = json.loads(sidecar.read_text())
        calibration = Calibration(meta.get("pixel_size"), meta.get("unit"))
    if fortran or len(shape) not in (2, 3):
        data = np.load(path, mmap_mode="r", allow_pickle=False)
        return da.from_array(data, chunks=data.shape), calibration
    # blocks of whole frames (~64 MB) or, for one scan, of rows (~1 MB: a band reads little more than its rows)
    item = int(np.prod(shape[1:])) * dtype.itemsize
    step = max(1, int((64e6 if len(shape) == 3 else 1e6) // max(1, item)))
    parts = [da.from_delayed(dask.delayed(_npy_rows)(str(path), start, dtype.str, shape, a, min(a + step, shape[0])),
                             (min(a + step, shape[0]) - a, *shape[1:]), dtype) for a in range(0, shape[0], step)]
    return da.concatenate(parts, axis=0), calibration


def open_series(path: str | Path) -> LazySeries:
    """Open a series ``(N, H, W)`` or a large image ``(H, W)`` lazily (no pixel is read).

    Raises
    ------
    ImageReadError
        Missing file, a suffix that does not stream, a truncated file (fewer bytes, pages or chunks
        than it declares), not an image; one line naming the file.
    """
    path = Path(path)
    fmt = STREAM_SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise ImageReadError(path, f"cannot stream {path.suffix or 'files without a suffix'!r}; accepted: "
                                   f"{', '.join(sorted(STREAM_SUFFIXES))}")
    if not path.exists():
        raise ImageReadError(path, "no such file")
    try:
        if fmt == "zarr":
            data, calibration = _open_zarr(path)
        elif fmt == "zspy":
            data, calibration = _open_zspy(path)
        elif fmt in ("hspy", "emd"):
            data, calibration = _open_hdf5(path, fmt)
        elif fmt == "tiff":
            data, calibration = _open_tiff(path)
        else:
            data, calibration = _open_npy(path)
    except ImageReadError:
        raise
    except Exception as exc:  # noqa: BLE001 - every reader fails its own way on a bad file
        raise ImageReadError(path, f"is not a readable {fmt.upper()} series (truncated or corrupt?): "
                                   f"{_first_line(exc)}") from None
    return LazySeries(_squeeze(data, path), calibration, fmt, path)


_OPENED: dict[tuple, LazySeries] = {}


def open_series_once(path: str | Path) -> LazySeries:
    """:func:`open_series`, once per process and file (a worker runs many chunks of one input)."""
    stat = os.stat(path)
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key not in _OPENED:
        _OPENED[key] = open_series(path)
    return _OPENED[key]


# -- output stores --------------------------------------------------------------------------------
def create_series_store(path: str | Path, shape: tuple[int, ...], chunks: tuple[int, ...],
                        calibration: Calibration) -> Path:
    """Create an empty float32 chunked store at ``path`` (.zspy or .zarr), atomically.

    Built under a temporary name beside ``path`` and renamed: a store either exists whole (with no
    chunk written yet) or not at all. The calibration is kept (the .zspy's axes; a .zarr array's
    ``pixel_size`` and ``unit`` attributes).
    """
    import dask.array as da
    import zarr

    path = Path(path)
    fmt = STORE_SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: a streamed result is written as {' or '.join(STORE_SUFFIXES)}")
    tmp = path.with_name(f".{path.name}.creating-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if fmt == "zarr":
            array = zarr.open_array(str(tmp), mode="w", shape=shape, chunks=chunks, dtype="float32",
                                    fill_value=0.0)
            array.attrs.update({k: v for k, v in calibration.to_dict().items() if v is not None})
        else:
            from rsciio.zspy import file_writer

            # zeros that are never stored (write_empty_chunks=False): the layout without the pixels
            empty = da.zeros(shape, chunks=chunks, dtype=np.float32)
            with warnings.catch_warnings():  # rsciio's zarr-2 store names are deprecated; they work
                warnings.simplefilter("ignore")
                file_writer(str(tmp), _rsciio_signal(empty, calibration), chunks=chunks, write_empty_chunks=False,
                            show_progressbar=False)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def open_series_array(path: str | Path) -> Any:
    """The zarr array of a store made by :func:`create_series_store`, open for writing chunks."""
    import zarr

    node = zarr.open(str(path), mode="r+")
    array = node if isinstance(node, zarr.Array) else _zspy_data(node)
    return zarr.open_array(array.store, path=array.path, mode="r+", write_empty_chunks=True)
