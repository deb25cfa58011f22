"""`stemreg conditions` and `stemreg simulate`: real files, same seed same bytes, exit 2 on bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from stemreg.acquisition import Calibration, get_condition, read_image, write_image
from stemreg.platform.cli import main


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_conditions_lists_the_built_ins_with_parameters():
    result = run("conditions")
    assert result.exit_code == 0
    for name in ("low-dose", "defocus", "blur", "hysteresis"):
        assert name in result.stdout
    low, high = get_condition("defocus").defocus_nm
    assert f"defocus_nm={low:g}..{high:g}" in result.stdout
    listed = json.loads(run("conditions", "--json").stdout)
    by_name = {c["name"]: c for c in listed}
    assert by_name["defocus"]["params"]["defocus_nm"] == [low, high]
    assert by_name["low-dose"]["hash"] == get_condition("low-dose").hash()


def test_simulate_writes_pairs_and_sidecar_and_is_reproducible(tmp_path):
    args = ["simulate", "--condition", "hysteresis", "--n", "3", "--size", "48", "--seed", "4"]
    first = run(*args, "--out", str(tmp_path / "a"), "--json")
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout)
    assert summary["n"] == 3 and summary["condition"] == "hysteresis"
    run(*args, "--out", str(tmp_path / "b"))
    other = run(*args[:-1], "5", "--out", str(tmp_path / "c"))
    assert other.exit_code == 0
    for name in ("degraded.npy", "clean.npy", "simulation.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "degraded.npy").read_bytes() != (tmp_path / "c" / "degraded.npy").read_bytes()

    degraded = read_image(tmp_path / "a" / "degraded.npy", allow_stack=True)
    clean = read_image(tmp_path / "a" / "clean.npy", allow_stack=True)
    assert degraded.data.shape == clean.data.shape == (3, 48, 48)
    sidecar = json.loads((tmp_path / "a" / "simulation.json").read_text())
    # each image at its own sampling from the condition's range, listed in the sidecar
    low, high = get_condition("hysteresis").pixel_size_range_pm()
    assert len(sidecar["pixel_size_pm"]) == 3 and all(low <= v <= high for v in sidecar["pixel_size_pm"])
    assert [im["params"]["pixel_size_pm"] for im in sidecar["images"]] == sidecar["pixel_size_pm"]
    assert sidecar["condition_hash"] == get_condition("hysteresis").hash() and sidecar["seed"] == 4
    assert len(sidecar["images"]) == 3
    amplitude = sidecar["images"][0]["params"]["hysteresis_amplitude_px"]
    low, high = get_condition("hysteresis").hysteresis_amplitude_px
    assert low <= amplitude <= high
    columns = np.array(sidecar["images"][0]["columns_rc_px"])
    assert columns.ndim == 2 and columns.shape[1] == 2


def test_simulate_as_tiff_keeps_calibration(tmp_path):
    result = run("simulate", "--condition", "low-dose", "--n", "2", "--size", "32", "--out", str(tmp_path),
                 "--format", "tif", "--pixel-size-pm", "12.5")
    assert result.exit_code == 0, result.output
    back = read_image(tmp_path / "degraded.tif", allow_stack=True)
    assert back.data.shape == (2, 32, 32)
    assert back.calibration.pixel_size_pm() == pytest.approx(12.5)
    bad = run("simulate", "--condition", "low-dose", "--n", "2", "--out", str(tmp_path / "x"), "--pixel-size-pm", "0")
    assert bad.exit_code == 2 and "--pixel-size-pm" in bad.output


def test_simulate_from_a_condition_file(tmp_path):
    path = tmp_path / "scope.yaml"
    path.write_text("name: scope\nbeam_current_pA: [20, 40]\ndose_scale: 1.0\nspecimens: [dichalcogenide]\n")
    result = run("simulate", "--condition", str(path), "--n", "2", "--size", "32", "--out", str(tmp_path / "o"))
    assert result.exit_code == 0, result.output
    sidecar = json.loads((tmp_path / "o" / "simulation.json").read_text())
    assert all(20 <= im["params"]["beam_current_pA"] <= 40 for im in sidecar["images"])
    assert {im["params"]["specimen"] for im in sidecar["images"]} == {"dichalcogenide"}


def test_simulate_from_images_tiles_and_degrades_them(tmp_path):
    images = tmp_path / "highdose"
    yy, xx = np.mgrid[:100, :70]
    lattice = 1000 + 800 * (np.cos(xx / 2.5) * np.cos(yy / 2.5)) ** 8
    pixel_pm = 20.0  # inside the condition's samplings: used as it is
    write_image(images / "a.tif", lattice, Calibration(pixel_pm / 1000, "nm"))
    write_image(images / "b.npy", lattice.T)
    result = run("simulate", "--condition", "blur", "--from-images", str(images), "--n", "4", "--size", "32",
                 "--out", str(tmp_path / "o"), "--seed", "1")
    assert result.exit_code == 0, result.output
    degraded = np.load(tmp_path / "o" / "degraded.npy")
    clean = np.load(tmp_path / "o" / "clean.npy")
    assert degraded.shape == clean.shape == (4, 32, 32)
    sidecar = json.loads((tmp_path / "o" / "simulation.json").read_text())
    assert all(im["source"].split("[")[0] in {"a.tif", "b.npy"} for im in sidecar["images"])
    assert all(im["columns_rc_px"] == [] for im in sidecar["images"])
    sources = {"a.tif": lattice, "b.npy": lattice.T}
    for i, im in enumerate(sidecar["images"]):
        # each clean image is its source tile, scaled to the clean units (0.5th percentile 0, 99.5th 1)
        name, corner = im["source"].split("[0]:")
        r, c = map(int, corner.split(","))
        tile = sources[name][r:r + 32, c:c + 32]
        low, high = np.percentile(tile, [0.5, 99.5])
        np.testing.assert_allclose(clean[i], (tile - low) / (high - low), atol=1e-5)
        # the degraded image is the blurred tile plus dose noise: unbiased, noisy, and less detailed
        assert abs(degraded[i].mean() - clean[i].mean()) < 0.05
        assert 0.005 < np.var(degraded[i] - clean[i]) < 0.2
    # an image coarser than the condition's samplings is resampled to the coarsest first:
    # 100 x 70 px of 128 pm become 200 x 140 px of 64 pm, 6 x 4 tiles
    coarse = tmp_path / "coarse"
    write_image(coarse / "c.tif", lattice, Calibration(2 * get_condition("blur").pixel_size_range_pm()[1], "pm"))
    resampled = run("simulate", "--condition", "blur", "--from-images", str(coarse), "--n", "25", "--size", "32",
                    "--out", str(tmp_path / "q"))
    assert resampled.exit_code == 2 and "only 24 tile(s)" in resampled.output
    # 100 x 70 and 70 x 100 images hold 3 x 2 tiles of 32 px each: asking for more is bad input
    too_many = run("simulate", "--condition", "blur", "--from-images", str(images), "--n", "13", "--size", "32",
                   "--out", str(tmp_path / "p"))
    assert too_many.exit_code == 2 and "only 12 tile(s)" in too_many.output


@pytest.mark.parametrize("args, message", [
    (["--condition", "nope", "--n", "2"], "known conditions: blur, defocus, hysteresis, low-dose"),
    (["--condition", "low-dose", "--n", "0"], "--n must be at least 1"),
    (["--condition", "low-dose", "--n", "2", "--size", "8"], "--size must be between"),
    (["--condition", "low-dose", "--n", "2", "--seed", str(get_condition("low-dose").benchmark_seed)],
     "benchmark seed"),
])
def test_bad_input_exits_2_with_a_reason(tmp_path, args, message):
    result = run("simulate", *args, "--out", str(tmp_path / "o"))
    assert result.exit_code == 2
    assert message in result.output


def test_bad_condition_file_and_bad_image_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nbeam_curent_pA: 5\n")
    result = run("simulate", "--condition", str(bad), "--n", "1", "--out", str(tmp_path / "o"))
    assert result.exit_code == 2 and "beam_curent_pA" in result.output
    images = tmp_path / "imgs"
    images.mkdir()
    (images / "broken.tif").write_text("not a tiff")
    result = run("simulate", "--condition", "low-dose", "--from-images", str(images), "--n", "1",
                 "--out", str(tmp_path / "o"))
    assert result.exit_code == 2 and "broken.tif" in result.output
