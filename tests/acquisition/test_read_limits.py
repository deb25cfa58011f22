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


def _hdf5_bomb(path, inflated_bytes: int) -> None:
    """Turn the .hspy at ``path`` (one 64 x 64 float32 image, gzip) into a bomb: its one 16 KiB chunk
    replaced by deflate data that inflates to ``inflated_bytes``."""
    import zlib

    import h5py

    comp = zlib.compressobj(9)
    chunk = b"".join(comp.compress(b"\0" * (1 << 20)) for _ in range(inflated_bytes >> 20)) + comp.flush()
    with h5py.File(path, "r+") as handle:
        images = []
        handle.visititems(lambda _, item: images.append(item) if isinstance(item, h5py.Dataset) and item.ndim == 2 else None)
        images[0].id.write_direct_chunk((0, 0), chunk, 0)


def test_an_hdf5_chunk_inflating_beyond_its_declared_chunk_is_refused_before_decoding(tmp_path):
    from stemreg.acquisition import ImageReadError
    from stemreg.acquisition.io import read_image, write_image

    path = write_image(tmp_path / "bomb.hspy", np.ones((64, 64), np.float32))
    _hdf5_bomb(path, 64 << 20)  # 16 KiB declared, 64 MiB inflated; ~70 KB on disk
    before = _peak_mb()
    with pytest.raises(ImageReadError, match="decompression bomb"):  # was: HDF5 inflated it all, answered 64 x 64
        read_image(path)
    assert _peak_mb() - before < 48


def test_rosettasciio_formats_are_under_the_same_pixel_cap(tmp_path):
    from dm_writer import write_dm
    from velox_writer import write_velox

    from stemreg.acquisition import ImageReadError
    from stemreg.acquisition.io import read_image, write_image

    image = np.random.default_rng(0).random((40, 48)).astype(np.float32)
    paths = [write_dm(tmp_path / "a.dm3", image, pixel_size=1.0, unit="nm"),
             write_dm(tmp_path / "a.dm4", image, pixel_size=1.0, unit="nm", version=4),
             write_image(tmp_path / "a.emd", image), write_image(tmp_path / "a.hspy", image)]
    for path in paths:
        np.testing.assert_allclose(read_image(path, max_pixels=40 * 48).data, image)
    paths.append(write_velox(tmp_path / "velox.emd", {"HAADF": (image * 1000).astype(np.uint16)}, pixel_size_m=1e-10))
    for path in paths:
        with pytest.raises(ImageReadError, match="1920 pixels, more than the cap of 1919"):  # was: read whatever
            read_image(path, max_pixels=40 * 48 - 1)


def _tiff_chain(pages: int, loop: bool = False) -> bytes:
    """A little-endian TIFF header followed by ``pages`` empty IFDs, chained (the last back to the
    first when ``loop``): 6 bytes per page."""
    import struct

    body = b"".join(struct.pack("<HI", 0, 8 + 6 * (i + 1) if i + 1 < pages else (8 if loop else 0))
                    for i in range(pages))
    return b"II*\x00" + struct.pack("<I", 8) + body


def test_a_tiff_of_too_many_pages_is_refused_before_they_are_parsed(tmp_path, monkeypatch):
    import tifffile

    from stemreg.acquisition import ImageReadError, limits
    from stemreg.acquisition.io import read_image, read_image_bytes

    with pytest.raises(ImageReadError, match=f"more than {limits.TIFF_MAX_PAGES} TIFF pages"):
        read_image_bytes(_tiff_chain(limits.TIFF_MAX_PAGES + 1), "tiff")  # was: tifffile parsed every page
    with pytest.raises(ImageReadError, match="loops back on itself"):
        read_image_bytes(_tiff_chain(3, loop=True), "tiff")
    stack = np.random.default_rng(0).random((6, 8, 8)).astype(np.float32)
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")
    monkeypatch.setattr(limits, "TIFF_MAX_PAGES", 6)
    assert read_image(tmp_path / "stack.tif", allow_stack=True).data.shape == (6, 8, 8)
    monkeypatch.setattr(limits, "TIFF_MAX_PAGES", 5)
    with pytest.raises(ImageReadError, match="more than 5 TIFF pages"):
        read_image(tmp_path / "stack.tif", allow_stack=True)
