"""How much memory reading an image may take, checked before any pixel is decoded.

A file's header declares its shape; a compressed TIFF strip can still inflate far beyond it (a
"decompression bomb": 1 MB of deflate that declares 64 x 64 pixels and inflates to 1.2 GB). So
every reader (files for the CLI and the Python API, request bodies for `stemreg serve`)

- refuses a declared shape above a pixel cap (:data:`READ_MAX_PIXELS` unless the caller gives a
  smaller one, as the server does with its ``--max-pixels``), and
- for TIFF, inflates each compressed strip or tile at most to the size its declared shape allows
  before tifffile decodes it (tifffile without imagecodecs inflates a whole strip whatever it
  declares), and reads only compressions that can be bounded that way;
- for PNG, refuses compressed pixel data larger than deflate could make the declared image (Pillow
  stops inflating at the declared size; the rest is damage or a bomb's payload);
- for TIFF, refuses a file of more than :data:`TIFF_MAX_PAGES` pages (IFDs) before tifffile parses
  them all (a few MB of tiny IFDs would take minutes and GBs to parse);
- for HDF5 files read through RosettaSciIO (.emd, .hspy), inflates each compressed chunk at most to
  its declared size before HDF5 decodes it (HDF5's deflate filter grows its buffer to whatever a chunk
  inflates to), reads only filters that can be bounded that way, and caps every compressed dataset's
  declared shape; the image read is then capped like any other (declared shape, read lazily first).
  DM3/DM4 hold no compression: their pixels are capped by their declared shape and bounded by the file.
"""
from __future__ import annotations

import lzma
import math
import zlib
from pathlib import Path
from typing import Any

from stemreg.acquisition.errors import ImageReadError

#: The most pixels a reader takes by default: 2^28 (16384 x 16384), 1 GiB as float32.
READ_MAX_PIXELS = 1 << 28

#: TIFF compressions read, with the names a user knows them by. Each can be inflated with a
#: bound on the output (others, e.g. PackBits, would be decoded whole by a pure-Python loop).
TIFF_COMPRESSIONS = {1: "none", 8: "deflate", 32946: "deflate", 34925: "lzma"}
#: The most pages (IFDs) a TIFF may hold: a stack of 10000 frames.
TIFF_MAX_PAGES = 10_000
#: HDF5 filters read (id -> name): deflate is inflated with a bound first; the others keep the size.
HDF5_FILTERS = {1: "gzip", 2: "shuffle", 3: "fletcher32"}


def check_pixels(shape: tuple[int, ...], name: str | Path, max_pixels: int | None) -> None:
    """Refuse a declared ``shape`` holding more than ``max_pixels`` (default :data:`READ_MAX_PIXELS`).

    Raises
    ------
    ImageReadError
        Negative dimensions, or more pixels than the cap.
    """
    cap = READ_MAX_PIXELS if max_pixels is None else int(max_pixels)
    if any(int(n) < 0 for n in shape):
        raise ImageReadError(name, f"declares a negative dimension in shape {list(shape)}: damaged header")
    pixels = math.prod(int(n) for n in shape)
    if pixels > cap:
        raise ImageReadError(name, f"declares shape {list(shape)}: {pixels} pixels, more than the cap of "
                                   f"{cap} pixels for one read")


def _inflated_size(data: bytes, compression: int, limit: int) -> int:
    """How many bytes ``data`` inflates to, counting no further than ``limit`` (memory: ``limit``)."""
    if compression in (8, 32946):
        return len(zlib.decompressobj().decompress(data, limit))
    return len(lzma.LZMADecompressor().decompress(data, max_length=limit))


def check_tiff(tif: Any, name: str | Path, max_pixels: int | None) -> None:
    """Refuse a TIFF (an open ``tifffile.TiffFile``) that would take more memory than it declares.

    It may hold at most :data:`TIFF_MAX_PAGES` pages; its first series' shape must be within the
    pixel cap, its compression one of
    :data:`TIFF_COMPRESSIONS`, and no compressed strip or tile may inflate beyond the bytes of one
    strip or tile of the declared shape.

    Raises
    ------
    ImageReadError
        Naming the file and what was refused.
    """
    check_tiff_pages(tif.filehandle, name)  # before tif.series parses every page
    series = tif.series[0]
    check_pixels(tuple(series.shape), name, max_pixels)
    for page in series.pages:
        if page is None:
            continue
        check_page(page, name, None, shape=tuple(series.shape))
        if int(page.keyframe.compression) == 1:
            continue  # uncompressed: what is read is bounded by the file's own size
        for index in range(len(page.dataoffsets)):
            check_segment(tif, page, index, name, shape=tuple(series.shape))


def check_page(page: Any, name: str | Path, max_pixels: int | None, *, shape: tuple[int, ...] | None = None) -> None:
    """Refuse one TIFF page (a frame read on its own, as a streamed series reads them) holding more
    than ``max_pixels`` (default :data:`READ_MAX_PIXELS`; None with ``shape``: no pixel check) or in a
    compression not read. The bound is per page: a series of many frames streams whatever its length.

    Raises
    ------
    ImageReadError
        Naming the file and what was refused.
    """
    if shape is None:
        check_pixels(tuple(page.shape), name, max_pixels)
    compression = int(page.keyframe.compression)
    if compression not in TIFF_COMPRESSIONS:
        raise ImageReadError(name, f"uses TIFF compression {getattr(page.keyframe.compression, 'name', compression)}, "
                                   "which is not read (accepted: none, deflate/zip, lzma)")


def check_segment(tif: Any, page: Any, index: int, name: str | Path, *, shape: tuple[int, ...] | None = None) -> bytes:
    """The compressed bytes of strip (or tile) ``index`` of ``page``, refused if they inflate beyond
    one strip or tile of the declared shape (a decompression bomb); read with memory bounded by that.

    Raises
    ------
    ImageReadError
        A damaged strip, or one that inflates too far.
    """
    offset, count = page.dataoffsets[index], page.databytecounts[index]
    if not count:
        return b""
    handle = tif.filehandle
    handle.seek(offset)
    data = handle.read(count)
    key = page.keyframe
    compression = int(key.compression)
    if compression == 1:
        return data  # uncompressed: what is read is bounded by the file's own size
    bound = math.prod(key.chunks) * max(1, -(-int(key.bitspersample) // 8))
    try:
        inflated = _inflated_size(data, compression, bound + 1)
    except (zlib.error, lzma.LZMAError) as exc:
        raise ImageReadError(name, f"holds a damaged compressed strip: {exc}") from None
    if inflated > bound:
        raise ImageReadError(name, f"holds a compressed strip that inflates to more than the {bound} "
                                   f"bytes its declared shape {list(shape or page.shape)} allows "
                                   "(a decompression bomb); refused")
    return data


def check_tiff_pages(handle: Any, name: str | Path, limit: int | None = None) -> None:
    """Walk a TIFF's chain of IFDs (reading 2 to 8 bytes per page) and refuse more than ``limit``
    (default :data:`TIFF_MAX_PAGES`) pages, or a chain that loops. The handle is left where it was."""
    limit = TIFF_MAX_PAGES if limit is None else int(limit)
    start = handle.tell()
    try:
        handle.seek(0)
        head = handle.read(16)
        order = {b"II": "<", b"MM": ">"}.get(head[:2])
        if order is None or len(head) < 8:
            return  # not a TIFF: tifffile says so
        big = int.from_bytes(head[2:4], "little" if order == "<" else "big") == 43
        endian = "little" if order == "<" else "big"
        offset = int.from_bytes(head[8:16] if big else head[4:8], endian)
        count_size, entry_size, offset_size = (8, 20, 8) if big else (2, 12, 4)
        seen: set[int] = set()
        while offset:
            if offset in seen:
                raise ImageReadError(name, "has a chain of TIFF pages that loops back on itself: damaged file")
            seen.add(offset)
            if len(seen) > limit:
                raise ImageReadError(name, f"holds more than {limit} TIFF pages; refused (at most {limit} "
                                           "frames are read from one file)")
            handle.seek(offset)
            raw = handle.read(count_size)
            if len(raw) < count_size:
                return  # truncated: tifffile reports it
            handle.seek(offset + count_size + int.from_bytes(raw, endian) * entry_size)
            raw = handle.read(offset_size)
            offset = int.from_bytes(raw, endian) if len(raw) == offset_size else 0
    finally:
        handle.seek(start)


def check_hdf5(path: Path, name: str | Path, max_pixels: int | None) -> None:
    """Refuse an HDF5 file (.emd, .hspy) whose compressed data would take more memory than declared.

    Every chunked dataset may use only :data:`HDF5_FILTERS`; a compressed one may declare at most
    the pixel cap, and each of its stored chunks is inflated (deflate, with a bound) to at most the
    bytes of one declared chunk before HDF5 decodes it.

    Raises
    ------
    ImageReadError
        Naming the file, the dataset and what was refused.
    """
    import h5py

    datasets: list[Any] = []
    with h5py.File(path, "r") as handle:
        handle.visititems(lambda _, item: datasets.append(item) if isinstance(item, h5py.Dataset) else None)
        for data in datasets:
            plist = data.id.get_create_plist()
            filters = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
            unknown = [f for f in filters if f not in HDF5_FILTERS]
            if unknown:
                raise ImageReadError(name, f"dataset {data.name} uses HDF5 filter {unknown[0]} "
                                           f"({_hdf5_filter_name(plist, unknown[0])}), which is not read "
                                           "(accepted: none, gzip, shuffle)")
            if 1 not in filters:
                continue  # uncompressed: what is read is bounded by the file's own size
            check_pixels(tuple(data.shape), f"{name} (dataset {data.name})", max_pixels)
            bound = math.prod(data.chunks) * data.dtype.itemsize
            for index in range(data.id.get_num_chunks()):
                info = data.id.get_chunk_info(index)
                mask, raw = data.id.read_direct_chunk(info.chunk_offset)
                if mask & 1:  # deflate skipped for this chunk: stored as it is
                    continue
                try:
                    inflated = _inflated_size(raw, 8, bound + 1)
                except zlib.error as exc:
                    raise ImageReadError(name, f"dataset {data.name} holds a damaged compressed chunk: {exc}") from None
                if inflated > bound:
                    raise ImageReadError(name, f"dataset {data.name} holds a compressed chunk that inflates to more "
                                               f"than the {bound} bytes its declared chunk {list(data.chunks)} "
                                               "allows (a decompression bomb); refused")


def _hdf5_filter_name(plist: Any, filter_id: int) -> str:
    for i in range(plist.get_nfilters()):
        info = plist.get_filter(i)
        if info[0] == filter_id:
            return info[3].decode(errors="replace") if isinstance(info[3], bytes) else str(info[3])
    return "unknown"


#: PNG colour type -> samples per pixel.
_PNG_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def check_png(source: Any, name: str | Path, max_pixels: int | None) -> None:
    """Refuse a PNG (a path or a seekable binary stream) whose declared size is above the pixel cap, or
    whose compressed pixel data (its IDAT chunks) is larger than deflate could ever make the declared
    image: the decoder would stop at the declared size, so the rest is damage or a decompression bomb.

    Reads the chunk headers only; the stream is left where it was.
    """
    handle = open(source, "rb") if isinstance(source, Path) else source
    start = handle.tell()
    try:
        if handle.read(8) != b"\x89PNG\r\n\x1a\n":
            return  # not a PNG: the reader says so
        idat, raw = 0, None
        while True:
            head = handle.read(8)
            if len(head) < 8:
                break
            length, kind = int.from_bytes(head[:4], "big"), head[4:]
            if kind == b"IHDR":
                ihdr = handle.read(13)
                if len(ihdr) < 13:
                    break
                width, height = int.from_bytes(ihdr[:4], "big"), int.from_bytes(ihdr[4:8], "big")
                check_pixels((height, width), name, max_pixels)
                bits = ihdr[8] * _PNG_SAMPLES.get(ihdr[9], 4)
                raw = height * (1 + -(-width * bits // 8)) + 7 * height  # filter bytes, Adam7 passes
                handle.seek(length - 13 + 4, 1)
                continue
            if kind == b"IDAT":
                idat += length
            elif kind == b"IEND":
                break
            handle.seek(length + 4, 1)
        # deflate stores incompressible data with 5 bytes per 64 KiB block; zlib adds 6
        if raw is not None and idat > raw + 5 * (raw // 65535 + 1) + 1024:
            raise ImageReadError(name, f"holds {idat} bytes of compressed pixel data, more than its declared "
                                       f"{width} x {height} image can need ({raw} bytes): damaged, or a "
                                       "decompression bomb; refused")
    finally:
        if handle is source:
            handle.seek(start)
        else:
            handle.close()
