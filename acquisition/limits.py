"""How much memory reading an image may take, checked before any pixel is decoded.

A file's header declares its shape; a compressed TIFF strip can still inflate far beyond it (a
"decompression bomb": 1 MB of deflate that declares 64 x 64 pixels and inflates to 1.2 GB). So
every reader (files for the CLI and the Python API, request bodies for `stemreg serve`)

- refuses a declared shape above a pixel cap (:data:`READ_MAX_PIXELS` unless the caller gives a
  smaller one, as the server does with its ``--max-pixels``), and
- for TIFF, inflates each compressed strip or tile at most to the size its declared shape allows
  before tifffile decodes it (tifffile without imagecodecs inflates a whole strip whatever it
  declares), and reads only compressions that can be bounded that way.
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

    Its first series' shape must be within the pixel cap, its compression one of
    :data:`TIFF_COMPRESSIONS`, and no compressed strip or tile may inflate beyond the bytes of one
    strip or tile of the declared shape.

    Raises
    ------
    ImageReadError
        Naming the file and what was refused.
    """
    series = tif.series[0]
    check_pixels(tuple(series.shape), name, max_pixels)
    for page in series.pages:
        if page is None:
            continue
        key = page.keyframe
        compression = int(key.compression)
        if compression not in TIFF_COMPRESSIONS:
            raise ImageReadError(name, f"uses TIFF compression {getattr(key.compression, 'name', compression)}, "
                                       "which is not read (accepted: none, deflate/zip, lzma)")
        if compression == 1:
            continue  # uncompressed: what is read is bounded by the file's own size
        bound = math.prod(key.chunks) * max(1, -(-int(key.bitspersample) // 8))
        handle = tif.filehandle
        for offset, count in zip(page.dataoffsets, page.databytecounts):
            if not count:
                continue
            handle.seek(offset)
            data = handle.read(count)
            try:
                inflated = _inflated_size(data, compression, bound + 1)
            except (zlib.error, lzma.LZMAError) as exc:
                raise ImageReadError(name, f"holds a damaged compressed strip: {exc}") from None
            if inflated > bound:
                raise ImageReadError(name, f"holds a compressed strip that inflates to more than the {bound} "
                                           f"bytes its declared shape {list(series.shape)} allows "
                                           "(a decompression bomb); refused")
