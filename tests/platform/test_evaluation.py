"""`stemreg evaluate`: the leaderboard of every requested method, logged as one MLflow run."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from stemreg.platform.cli import main
from tests.platform.conftest import TINY_CONDITION

# Two cores shared by many processes: more torch threads only spin (6-15x slower training).
pytestmark = pytest.mark.usefixtures("one_torch_thread")



def _condition_file(tmp_path, name="tiny-low-dose", current=50.0):
    path = tmp_path / f"{name}.yaml"
    path.write_text(TINY_CONDITION.format(name=name, current=current))
    return str(path)


def _invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_evaluate_tiny_budget_gives_every_requested_method_and_an_mlflow_run(tmp_path, mlflow_store):
    import matplotlib.image
    import mlflow

    methods = ["hourglass", "hourglass-family", "sdndti", "gaussian", "bm3d"]
    result = _invoke("evaluate", "--condition", _condition_file(tmp_path), "--methods", ",".join(methods),
                     "--budget", "tiny", "--json")
    assert result.exit_code == 0, result.output
    board = json.loads(result.stdout)
    rows = board["rows"]
    assert [r["method"] for r in rows] == ["noisy", *methods]  # the noisy input first
    assert board["n_images"] == 3
    for row in rows:
        assert math.isfinite(row["psnr"]) and 0 < row["ssim"] <= 1 and row["psnr_std"] >= 0
    by_method = {r["method"]: r for r in rows}
    assert by_method["hourglass"]["source"].startswith("trained here")  # no champion in a fresh store
    assert by_method["gaussian"]["psnr"] > by_method["noisy"]["psnr"]
    assert board["details"]["sdndti"]["clean_images_seen"] is False
    family, seed_net = board["details"]["hourglass-family"], board["details"]["hourglass"]
    assert family["architecture"]["levels"] == 4  # the family's multi-scale member ...
    budget_keys = ("epochs", "steps_per_epoch", "batch_size", "patch_px")
    assert [family[k] for k in budget_keys] == [seed_net[k] for k in budget_keys]  # ... at the same budget
    overlaps = board["provenance"]["test_images_in_fitting_data"]
    assert set(overlaps) == {"train", "val", "repeats"} and not any(overlaps.values())

    client = mlflow.MlflowClient()
    run = client.get_run(board["run_id"])
    assert run.data.tags["stemreg.kind"] == "evaluation"
    assert run.data.params["evaluate.methods"] == ",".join(methods)
    assert f"Leaderboard of {len(methods)} method(s)" in run.data.tags["mlflow.note.content"]
    assert run.data.metrics["gaussian.psnr"] == pytest.approx(by_method["gaussian"]["psnr"])
    artifacts = {a.path for a in client.list_artifacts(board["run_id"])}
    assert {"leaderboard.csv", "leaderboard.json", "leaderboard_bars.png", "gallery.png", "leaderboard_by_bin.csv",
            "leaderboard_by_bin.json", "hourglass_vs_bm3d.png"} <= artifacts
    assert {f"heatmap_{m}.png" for m in methods} <= artifacts  # one sampling x dose heat map per method
    assert run.data.metrics["bm3d.psnr.16px_4x"] == pytest.approx(board["per_bin"]["bm3d"]["16px@4x"]["psnr"])
    local = client.download_artifacts(board["run_id"], "", str(tmp_path / "artifacts"))
    csv_lines = (tmp_path / "artifacts" / "leaderboard.csv").read_text().splitlines()
    assert csv_lines[0].startswith("method,") and len(csv_lines) == 1 + len(rows)
    by_bin_lines = (tmp_path / "artifacts" / "leaderboard_by_bin.csv").read_text().splitlines()
    assert by_bin_lines[0].startswith("method,bin,n_images,psnr,")
    assert len(by_bin_lines) == 1 + len(rows) * len(board["bins"])
    heat = matplotlib.image.imread(f"{local}/heatmap_bm3d.png")
    assert heat.ndim == 3 and min(heat.shape[:2]) > 200  # a readable picture, not an empty file
    assert "oracle noise model per image" in board["details"]["bm3d"]["noise"]
    gallery = matplotlib.image.imread(f"{local}/gallery.png")
    bars = matplotlib.image.imread(f"{local}/leaderboard_bars.png")
    assert gallery.shape[0] > gallery.shape[1]  # one row per method
    assert bars.shape[1] > bars.shape[0]


def test_text_output_is_a_markdown_leaderboard(tmp_path, mlflow_store):
    result = _invoke("evaluate", "--condition", _condition_file(tmp_path), "--methods", "gaussian,tv",
                     "--budget", "tiny", "--no-log")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| method |"))
    assert "PSNR (dB)" in lines[header] and "column F1" in lines[header] and "ms / Mpx" in lines[header]
    # the key bins: the seed's point, the hardest (coarsest, lowest dose) and the easiest
    assert "PSNR / SSIM @ seed:8pm@1x" in lines[header] and "@ 16px@1x" in lines[header]
    assert "@ 16px@4x" in lines[header]
    assert lines[header + 2].startswith("| noisy |")
    assert any(line.startswith("| tv |") and line.count("/") >= 3 for line in lines)
    assert "unweighted mean over bins" in result.output
    assert "GAT filters (nlm, tv, wavelet, bm3d): oracle noise model per image" in result.output


def test_every_figure_is_reported_per_bin_and_as_the_mean_over_bins(tmp_path, mlflow_store):
    from stemreg.models.binned import mean_over_bins, per_bin

    result = _invoke("evaluate", "--condition", _condition_file(tmp_path), "--methods", "gaussian,wavelet",
                     "--budget", "tiny", "--no-log", "--json")
    assert result.exit_code == 0, result.output
    board = json.loads(result.stdout)
    assert board["bins"] == ["16px@1x", "16px@4x", "seed:8pm@1x"]  # every bin of the benchmark, in order
    assert board["key_bins"] == ["seed:8pm@1x", "16px@1x", "16px@4x"]
    assert board["aggregate"].startswith("unweighted mean over bins")
    for row in board["rows"]:
        by_bin = board["per_bin"][row["method"]]
        assert list(by_bin) == board["bins"] and all(b["n_images"] == 1 for b in by_bin.values())
        for key in ("psnr", "ssim", "column_f1"):
            assert row[key] == pytest.approx(mean_over_bins({b: v[key] for b, v in by_bin.items()}))
        assert row["psnr@seed:8pm@1x"] == by_bin["seed:8pm@1x"]["psnr"]
        noisy = board["per_bin"]["noisy"]
        for name, figures in by_bin.items():
            assert figures["psnr_gain_db"] == pytest.approx(figures["psnr"] - noisy[name]["psnr"])
    # the helpers the lead's code uses agree with the report
    from stemreg.acquisition import load_condition
    from stemreg.platform.evaluation import benchmark_test_set

    test = benchmark_test_set(load_condition(_condition_file(tmp_path)))
    assert len(test.pixel_sizes_pm) == 3 and len(set(test.pixel_sizes_pm)) > 1  # each image its own sampling
    assert per_bin([1.0, 2.0, 4.0], test.bins) == {"16px@1x": 1.0, "16px@4x": 2.0, "seed:8pm@1x": 4.0}


@pytest.mark.parametrize("args, message", [
    (["--methods", "hourglass,median"], "unknown method(s) median"),
    (["--budget", "huge"], "'huge' is not one of"),
    (["--images", "does-not-exist"], "not a folder"),
])
def test_bad_input_exits_2_and_says_what_is_accepted(tmp_path, mlflow_store, args, message):
    result = _invoke("evaluate", "--condition", _condition_file(tmp_path), *args)
    assert result.exit_code == 2
    assert message in result.output


def test_unknown_condition_exits_2():
    result = _invoke("evaluate", "--condition", "no-such-condition")
    assert result.exit_code == 2 and "low-dose" in result.output  # the known names are listed


def test_user_images_are_degraded_by_the_condition_and_scored(tmp_path, mlflow_store):
    from stemreg.acquisition import load_condition

    condition_path = _condition_file(tmp_path)
    high_dose = load_condition(condition_path).sample_pairs(2, size_px=40, seed=5).clean * 1000.0
    folder = tmp_path / "mine"
    folder.mkdir()
    for i, image in enumerate(high_dose):
        np.save(folder / f"frame{i}.npy", image)
    result = _invoke("evaluate", "--condition", condition_path, "--methods", "gaussian", "--budget", "tiny",
                     "--images", str(folder), "--no-log", "--json")
    assert result.exit_code == 0, result.output
    board = json.loads(result.stdout)
    assert board["n_images"] == 2 and board["image_shape"] == [40, 40] and "mine" in board["test_set"]
    noisy, gaussian = board["rows"]
    assert gaussian["psnr"] > noisy["psnr"]
    assert noisy["column_f1"] is None  # user images carry no simulated column positions


def test_classical_strength_is_refitted_per_condition_on_validation_data(tmp_path, mlflow_store):
    from stemreg.acquisition import load_condition
    from stemreg.platform.evaluation import derived_seed, evaluate

    low = evaluate(_condition_file(tmp_path, "tiny-very-low", current=5.0), methods="gaussian", budget="tiny",
                   log_to_mlflow=False, progress=False)
    high = evaluate(_condition_file(tmp_path, "tiny-high", current=2000.0), methods="gaussian", budget="tiny",
                    log_to_mlflow=False, progress=False)
    sigma_low = low.results[1].details["params"]["sigma_px"]
    sigma_high = high.results[1].details["params"]["sigma_px"]
    assert sigma_low > sigma_high  # more noise, stronger smoothing: nothing carried over
    condition = load_condition(_condition_file(tmp_path))
    seeds = {derived_seed(condition, s, p) for s in range(3) for p in ("train", "val", "repeats", "classical")}
    assert condition.benchmark_seed not in seeds and len(seeds) == 12


def test_the_registered_champion_is_scored_as_the_registry_scored_it(registered_low_dose, monkeypatch):
    from stemreg.platform import registry
    from stemreg.platform.evaluation import evaluate

    monkeypatch.setenv("MLFLOW_TRACKING_URI", registered_low_dose.tracking_uri)
    board = evaluate("low-dose", methods="hourglass", log_to_mlflow=False, progress=False)
    noisy, hourglass = board.results
    assert hourglass.source == f"registered champion v{registered_low_dose.version}"
    assert np.mean(hourglass.psnr) > np.mean(noisy.psnr)
    scored = registry.benchmark_of(registry.resolve("low-dose", "champion"))
    # the same benchmark set, the same metric, the same model: the same figure as the registry's tag
    assert np.mean(hourglass.psnr) == pytest.approx(scored["psnr"], abs=0.01)


def test_an_evaluation_whose_fitting_data_hold_a_test_image_refuses_to_score(tmp_path):
    from stemreg.acquisition import load_condition
    from stemreg.platform.evaluation import BUDGETS, TestSet
    from stemreg.platform.evaluation.data import _Data

    condition = load_condition(_condition_file(tmp_path))
    data = _Data(condition, BUDGETS["tiny"], seed=0)
    honest = TestSet(degraded=list(condition.benchmark_set().degraded), clean=list(condition.benchmark_set().clean),
                     columns=[], pixel_sizes_pm=[1.0] * 3, description="benchmark")
    data.train_degraded  # draw the training set
    assert data.provenance(honest)["test_images_in_fitting_data"] == {"train": 0}
    leaked = TestSet(degraded=[data.train_degraded[1]], clean=[data.train_clean[1]], columns=[],
                     pixel_sizes_pm=[1.0], description="a training image")
    with pytest.raises(RuntimeError, match="share images with the test set"):
        data.provenance(leaked)
