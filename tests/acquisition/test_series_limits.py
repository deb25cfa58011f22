"""Streamed series and scans are under the readers' memory bounds too (acquisition/limits.py), per page:
a page over the pixel cap or a strip that inflates beyond its declared size is refused; a series of
many pages, each within the cap, streams whatever its total."""
from __future__ import annotations

import resource

import numpy as np
import pytest
import tifffile

from stemreg.acquisition import ImageReadError, limits, series_io
from stemreg.acquisition.series_io import open_series


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_a_streamed_tiff_strip_inflating_beyond_its_page_is_refused_when_read(tmp_path, tiff_bomb):
    path = tmp_path / "bomb.tif"
    path.write_bytes(tiff_bomb(64 << 20))  # 64 x 64 declared (4 KiB), 64 MiB inflated; 65 KB on disk
    lazy = open_series(path)  # headers only: nothing inflated yet
    before = _peak_mb()
    with pytest.raises(ImageReadError, match="decompression bomb"):
        lazy.data[10:20].compute(scheduler="synchronous")
    assert _peak_mb() - before < 48  # at most one strip's declared size inflated


def test_the_pixel_cap_is_per_page_for_a_streamed_series(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "READ_MAX_PIXELS", 5000)
    frames = np.random.default_rng(0).random((24, 64, 48)).astype(np.float32)  # 3072 px a page, 73728 in all
    tifffile.imwrite(tmp_path / "series.tif", frames, compression="zlib")
    assert np.array_equal(open_series(tmp_path / "series.tif").data.compute(), frames)
    tifffile.imwrite(tmp_path / "page.tif", np.zeros((100, 100), np.float32), compression="zlib")
    with pytest.raises(ImageReadError, match="more than the cap of 5000 pixels"):
        open_series(tmp_path / "page.tif")
    monkeypatch.setattr(series_io, "STREAM_MAX_PAGES", 10)  # a chain of pages is walked before it is parsed
    with pytest.raises(ImageReadError, match="more than 10 TIFF pages"):
        open_series(tmp_path / "series.tif")
