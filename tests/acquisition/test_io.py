"""Real microscope files in and out, calibration kept; bad files get a clear error naming them."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile

from stemreg.acquisition import Calibration, ImageReadError, read_image, write_image


@pytest.fixture
def image():
    yy, xx = np.mgrid[:24, :40]
    return (np.sin(xx / 3.0) * np.cos(yy / 5.0) * 100 + 300).astype(np.float32)


@pytest.mark.parametrize("suffix", [".npy", ".tif", ".tiff", ".png", ".emd", ".hspy"])
def test_round_trip_keeps_data_and_calibration(tmp_path, image, suffix):
    path = write_image(tmp_path / f"img{suffix}", image, Calibration(12.5, "pm"))
    back = read_image(path)
    assert back.data.dtype == np.float32 and back.data.shape == image.shape
    tolerance = np.ptp(image) / 65535 if suffix == ".png" else 0.0  # PNG stores 16 bits over the value range
    np.testing.assert_allclose(back.data, image, atol=tolerance * 1.01, rtol=1e-6)
    assert back.calibration.pixel_size == pytest.approx(12.5)
    assert back.calibration.unit == "pm"
    assert back.calibration.pixel_size_pm() == pytest.approx(12.5)


def test_write_like_keeps_the_input_calibration(tmp_path, image):
    source = read_image(write_image(tmp_path / "in.tif", image, Calibration(0.02, "nm")))
    out = read_image(write_image(tmp_path / "out.npy", image * 2, like=source))
    assert out.calibration.pixel_size_pm() == pytest.approx(20.0)


def test_imagej_tiff_written_by_another_program(tmp_path, image):
    path = tmp_path / "imagej.tif"
    tifffile.imwrite(path, image.astype(np.uint16), imagej=True, resolution=(1 / 0.015, 1 / 0.015),
                     metadata={"unit": "nm"})
    back = read_image(path)
    assert back.format == "tiff" and back.data.dtype == np.float32
    assert back.calibration.pixel_size_pm() == pytest.approx(15.0, rel=1e-4)


def test_colour_tiff_is_read_as_grey(tmp_path, image):
    grey = np.round((image - image.min()) / np.ptp(image) * 255).astype(np.uint8)
    rgb = np.stack([grey, grey, grey], axis=-1)
    rgb[..., 0] = 0  # a tinted export: the grey value is the mean of the channels
    tifffile.imwrite(tmp_path / "screenshot.tif", rgb, photometric="rgb")
    back = read_image(tmp_path / "screenshot.tif")
    assert back.data.shape == image.shape
    np.testing.assert_allclose(back.data, grey.astype(np.float64) * 2 / 3, rtol=1e-6)


def test_stacks_only_where_allowed(tmp_path, image):
    stack = np.stack([image, image + 1, image + 2])
    for suffix in (".npy", ".tif", ".hspy"):
        path = write_image(tmp_path / f"stack{suffix}", stack, Calibration(10.0, "pm"))
        with pytest.raises(ImageReadError, match="3-D stack") as info:
            read_image(path)
        assert str(path) in str(info.value)
        back = read_image(path, allow_stack=True)
        assert back.data.shape == (3, 24, 40)
    # a singleton leading axis is one image
    np.save(tmp_path / "one.npy", image[None])
    assert read_image(tmp_path / "one.npy").data.shape == (24, 40)


def test_truncated_files(tmp_path, image):
    for suffix in (".npy", ".tif", ".emd", ".png"):
        good = write_image(tmp_path / f"good{suffix}", image, Calibration(1.0, "nm"))
        bad = tmp_path / f"truncated{suffix}"
        bad.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
        with pytest.raises(ImageReadError) as info:
            read_image(bad)
        assert str(bad) in str(info.value)


def test_not_an_image(tmp_path):
    text = tmp_path / "notes.tif"
    text.write_text("this is not a TIFF file\n" * 10)
    with pytest.raises(ImageReadError, match="notes.tif.*not a readable TIFF"):
        read_image(text)
    empty = tmp_path / "empty.npy"
    empty.write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty"):
        read_image(empty)


def test_bad_values_and_types(tmp_path, image):
    nan = image.copy()
    nan[3, 4] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    with pytest.raises(ImageReadError, match="nan.npy.*1 NaN or Inf"):
        read_image(tmp_path / "nan.npy")
    np.save(tmp_path / "complex.npy", image.astype(np.complex64))
    with pytest.raises(ImageReadError, match="dtype complex64"):
        read_image(tmp_path / "complex.npy")
    np.save(tmp_path / "line.npy", image[0])
    with pytest.raises(ImageReadError, match="1 dimension"):
        read_image(tmp_path / "line.npy")
    np.save(tmp_path / "four.npy", np.zeros((2, 2, 8, 8)))
    with pytest.raises(ImageReadError, match="4 dimension"):
        read_image(tmp_path / "four.npy")


def test_unknown_suffix_and_missing_file(tmp_path):
    with pytest.raises(ImageReadError, match="accepted: .*dm3"):
        read_image(tmp_path / "image.jpg2")
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "absent.tif")
    with pytest.raises(ImageReadError, match="cannot write '.dm4'"):
        write_image(tmp_path / "out.dm4", np.zeros((4, 4)))


# -- files written by microscope software: DM3/DM4 (Gatan) and Velox EMD (Thermo Fisher) ------------------
# RosettaSciIO reads these but cannot write them; dm_writer.py and velox_writer.py build real files per the
# formats' layouts (see their docstrings), so the reader is exercised on the bytes a microscope writes.
from dm_writer import write_dm  # noqa: E402
from velox_writer import write_velox  # noqa: E402


@pytest.mark.parametrize("version, dtype", [(3, np.float32), (3, np.uint16), (4, np.float32), (4, np.int16)])
def test_digital_micrograph_files(tmp_path, image, version, dtype):
    data = image.astype(dtype)
    path = write_dm(tmp_path / f"haadf.dm{version}", data, pixel_size=0.0125, unit="nm", version=version)
    back = read_image(path)
    assert back.format == f"dm{version}"
    assert back.data.dtype == np.float32 and back.data.shape == image.shape  # the thumbnail is not the image
    np.testing.assert_array_equal(back.data, data.astype(np.float32))
    assert back.calibration.unit == "nm"
    assert back.calibration.pixel_size_pm() == pytest.approx(12.5, rel=1e-6)  # DM stores float32 scales


def test_digital_micrograph_stack_and_truncated_file(tmp_path, image):
    stack = np.stack([image, image + 1, image + 2])
    path = write_dm(tmp_path / "series.dm4", stack, pixel_size=1.5, unit="Å", version=4)
    with pytest.raises(ImageReadError, match="series.dm4: is a 3-D stack"):
        read_image(path)
    back = read_image(path, allow_stack=True)
    np.testing.assert_array_equal(back.data, stack)
    assert back.calibration.pixel_size_pm() == pytest.approx(150.0)
    truncated = tmp_path / "cut.dm3"
    truncated.write_bytes(write_dm(tmp_path / "whole.dm3", image, pixel_size=1.0, unit="nm").read_bytes()[:300])
    with pytest.raises(ImageReadError, match="cut.dm3: is not a readable DM3 image"):
        read_image(truncated)


def test_velox_emd_picks_the_haadf_image_and_keeps_its_calibration(tmp_path, image):
    other = np.full_like(image, 7.0)
    path = write_velox(tmp_path / "velox.emd", {"DF4": other.astype(np.uint16), "HAADF": image.astype(np.uint16)},
                       pixel_size_m=12.5e-12)
    back = read_image(path)
    assert back.format == "emd"
    np.testing.assert_array_equal(back.data, image.astype(np.uint16).astype(np.float32))
    assert back.calibration.pixel_size_pm() == pytest.approx(12.5, rel=1e-6)
    frames = write_velox(tmp_path / "frames.emd", {"HAADF": np.stack([image, image])}, pixel_size_m=2e-10)
    with pytest.raises(ImageReadError, match="frames.emd: is a 3-D stack"):
        read_image(frames)
    assert read_image(frames, allow_stack=True).data.shape == (2,) + image.shape


@pytest.mark.parametrize("fmt", ["npy", "tiff", "png"])
def test_images_travel_as_bytes_in_memory_like_files(fmt, tmp_path):
    from stemreg.acquisition.io import read_image_bytes, write_image_bytes

    data = np.random.default_rng(0).random((12, 10)).astype(np.float32)
    calibration = Calibration(0.5, "nm")
    body = write_image_bytes(data, fmt, calibration)
    suffix = {"tiff": "tif"}.get(fmt, fmt)
    assert body == write_image(tmp_path / f"x.{suffix}", data, calibration).read_bytes()
    back = read_image_bytes(body, fmt)
    from_file = read_image(tmp_path / f"x.{suffix}")
    np.testing.assert_array_equal(back.data, from_file.data if fmt != "npy" else data)
    assert back.calibration == (Calibration() if fmt == "npy" else calibration)  # NPY keeps it in a sidecar


def test_bad_bytes_are_an_image_read_error():
    from stemreg.acquisition.io import read_image_bytes

    with pytest.raises(ImageReadError, match="not a readable NPY"):
        read_image_bytes(b"\x93NUMPY garbage", "npy")
    with pytest.raises(ImageReadError, match="NaN or Inf"):
        buffer = __import__("io").BytesIO()
        np.save(buffer, np.array([[1.0, np.nan], [0.0, 1.0]], np.float32))
        read_image_bytes(buffer.getvalue(), "npy")
