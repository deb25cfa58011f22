"""Issue 19: what a file says about itself is checked before it is believed (items 5 and 6).

Palette and grey+alpha PNGs, multi-channel TIFFs, PNG `stemreg` chunks and .npy sidecars holding
nonsense, float64 values beyond float32, and condition YAMLs asking for impossible optics or
benchmark strata: each is read correctly or refused in one line naming the file.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from stemreg.acquisition import ConditionFileError, ImageReadError, load_condition, read_image

GREY = (np.arange(32 * 32).reshape(32, 32) % 256).astype(np.uint8)


def _png(path, image, meta=None):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    if meta is not None:
        info.add_text("stemreg", json.dumps(meta))
    image.save(path, pnginfo=info)
    return path


def test_a_palette_png_is_read_through_its_palette_not_as_indices(tmp_path):
    from PIL import Image

    image = Image.frombytes("P", (32, 32), (255 - GREY).tobytes())
    image.putpalette([v for level in range(256) for v in (255 - level,) * 3])  # index i shows grey 255 - i
    data = read_image(_png(tmp_path / "palette.png", image)).data
    np.testing.assert_allclose(data, GREY)  # the grey levels the file shows; was: the indices 255 - GREY


def test_a_grey_plus_alpha_png_is_read_as_its_grey_levels(tmp_path):
    from PIL import Image

    la = Image.merge("LA", (Image.fromarray(GREY), Image.fromarray(np.full_like(GREY, 200))))
    data = read_image(_png(tmp_path / "la.png", la)).data
    assert data.shape == (32, 32)  # was: (32, 32, 2), denoised as a stack, then the write failed
    np.testing.assert_allclose(data, GREY)


def test_a_two_channel_tiff_is_refused_not_read_as_a_stack(tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "two.tif", np.ones((2, 32, 32), np.float32), photometric="minisblack",
                     planarconfig="separate")
    with pytest.raises(ImageReadError, match="two.tif: holds 2 channels per pixel"):
        read_image(tmp_path / "two.tif", allow_stack=True)


@pytest.mark.parametrize("meta, expected", [
    ({"data_min": 0.0, "data_max": 1e300}, "data_max 1e\\+300"),
    ({"pixel_size": "abc", "unit": "pm"}, "pixel_size 'abc'"),
    ({"pixel_size": -2.0, "unit": "pm"}, "pixel_size -2.0"),
    ({"pixel_size": 1e300, "unit": "pm"}, "pixel_size 1e\\+300 pm"),  # was: believed, a 1e288 m field
])
def test_a_png_chunk_holding_nonsense_is_one_line(tmp_path, meta, expected):
    from PIL import Image

    path = _png(tmp_path / "meta.png", Image.fromarray(GREY), meta)
    with pytest.raises(ImageReadError, match=expected) as caught:  # was: a traceback or Inf pixels
        read_image(path)
    assert str(caught.value).startswith(str(path)) and len(str(caught.value).splitlines()) == 1


@pytest.mark.parametrize("sidecar, expected", [('{"pixel_size": "abc"}', "pixel_size 'abc'"),
                                               ('{"pixel_size": 1e300, "unit": "pm"}', "pixel_size 1e\\+300 pm"),
                                               ('{"pixel_size": 1e-9, "unit": "nm"}', "pixel_size 1e-09 nm"),
                                               ("{not json", "not readable JSON")])
def test_a_npy_sidecar_holding_nonsense_is_one_line(tmp_path, sidecar, expected):
    np.save(tmp_path / "scan.npy", GREY.astype(np.float32))
    (tmp_path / "scan.npy.json").write_text(sidecar)
    with pytest.raises(ImageReadError, match=expected):
        read_image(tmp_path / "scan.npy")


def test_float64_pixels_beyond_float32_are_refused(tmp_path):
    np.save(tmp_path / "huge.npy", np.full((8, 8), 1e298))
    with pytest.raises(ImageReadError, match="beyond float32's range"):  # was: Inf after the cast
        read_image(tmp_path / "huge.npy")


@pytest.mark.parametrize("line, expected", [
    ("convergence_mrad: 1.0e-300", "probe wider than"),
    ("energy_keV: 1.0e-300", "energy_keV"),
    ("benchmark_spacings_px: [0.0001]", "benchmark_spacings_px"),  # was: accepted, then 98 TiB asked for
])
def test_condition_yaml_asking_for_impossible_optics_or_strata_is_refused(tmp_path, line, expected):
    path = tmp_path / "mine.yaml"
    path.write_text(f"name: mine\n{line}\n")
    with pytest.raises(ConditionFileError, match=expected):
        load_condition(path)
