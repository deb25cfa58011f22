"""Readers bound their memory before decoding (acquisition/limits.py): declared shapes above a pixel
cap, and TIFF strips that inflate beyond their declared shape, are refused; honest files still read."""
from __future__ import annotations

import io
import resource

import numpy as np
import pytest


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_a_tiff_strip_inflating_beyond_its_declared_shape_is_refused_before_decoding(tmp_path, tiff_bomb):
    from stemreg.acquisition import ImageReadError
    from stemreg.acquisition.io import read_image, read_image_bytes

    bomb = tiff_bomb(64 << 20)  # 64 x 64 declared (4 KiB), 64 MiB inflated; 65 KB on disk
    path = tmp_path / "bomb.tif"
    path.write_bytes(bomb)
    before = _peak_mb()
    for read in (lambda: read_image(path), lambda: read_image_bytes(bomb, "tiff")):
        with pytest.raises(ImageReadError, match="decompression bomb"):  # was read: 64 MiB inflated
            read()
    # the check inflates at most one strip's declared size; tifffile alone inflated the whole strip
    assert _peak_mb() - before < 48


def test_declared_shapes_above_the_cap_are_refused_for_every_format(tmp_path):
    from PIL import Image

    from stemreg.acquisition import ImageReadError
    from stemreg.acquisition.io import read_image, read_image_bytes

    image = np.arange(64 * 64, dtype=np.float32).reshape(64, 64)
    png = io.BytesIO()
    Image.fromarray(image.astype(np.uint16)).save(png, format="PNG")
    npy = io.BytesIO()
    np.save(npy, image)
    tif = tmp_path / "a.tif"
    import tifffile
    tifffile.imwrite(tif, image)
    for body, fmt in ((png.getvalue(), "png"), (npy.getvalue(), "npy"), (tif.read_bytes(), "tiff")):
        assert read_image_bytes(body, fmt, max_pixels=64 * 64).data.shape == (64, 64)
        with pytest.raises(ImageReadError, match="4096 pixels, more than the cap of 4095"):
            read_image_bytes(body, fmt, max_pixels=64 * 64 - 1)
    with pytest.raises(ImageReadError, match="more than the cap"):
        read_image(tif, max_pixels=100)


@pytest.mark.parametrize("options", [{"compression": "zlib"}, {"compression": "lzma"},
                                     {"compression": "zlib", "tile": (16, 16)}])
def test_honest_compressed_tiffs_still_read(tmp_path, options):
    import tifffile

    from stemreg.acquisition.io import read_image

    image = np.random.default_rng(0).random((3, 40, 48)).astype(np.float32)
    path = tmp_path / "ok.tif"
    tifffile.imwrite(path, image, photometric="minisblack", **options)
    np.testing.assert_array_equal(read_image(path, allow_stack=True).data, image)


def test_an_unboundable_tiff_compression_is_refused_by_name(tmp_path, tiff_bomb):
    from stemreg.acquisition import ImageReadError
    from stemreg.acquisition.io import read_image

    path = tmp_path / "packbits.tif"
    path.write_bytes(tiff_bomb.with_strip(b"\x81\x00" * 2, 32773, 16))  # 2 runs of 128 zeros
    with pytest.raises(ImageReadError, match="PACKBITS, which is not read .accepted: none, deflate/zip, lzma"):
        read_image(path)


def test_a_png_with_more_compressed_data_than_its_declared_size_can_need_is_refused():
    import struct
    import zlib

    from stemreg.acquisition import ImageReadError
    from stemreg.acquisition.io import read_image_bytes

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    idat = zlib.compress(b"\0" * (8 << 20), 9)  # 8 MiB inflated, ~8 KB compressed; 32 x 32 declared
    bomb = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 32, 32, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    with pytest.raises(ImageReadError, match="decompression bomb"):  # was read: Pillow ignored the rest
        read_image_bytes(bomb, "png")
