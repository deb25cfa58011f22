"""The converged budget (resumable round-robin training of every CNN) and the cached classical rows."""
from __future__ import annotations

import pytest

from stemreg.acquisition import load_condition
from stemreg.models.config import TrainBudget
from stemreg.platform.evaluation import evaluate
from stemreg.platform.evaluation.converged import ConvergedTraining, is_flat
from tests.platform.conftest import TINY_CONDITION

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BUDGET = TrainBudget(name="converged", n_train=4, n_val=2, repeats=2, epochs=2, steps_per_epoch=2, batch_size=2,
                     patch_px=32, lr=1e-3, n_classical_val=2)


def _tiny(tmp_path, current: float = 50.0) -> str:
    path = tmp_path / f"tiny-{current:g}.yaml"
    path.write_text(TINY_CONDITION.format(name="tiny-converged", current=current))
    return str(path)


def test_a_curve_is_flat_when_its_last_window_gains_less_than_the_tolerance():
    assert not is_flat([20.0, 21.0, 22.0], window=2)
    assert is_flat([20.0, 22.0, 22.03, 21.9], window=2, tolerance_db=0.05)
    assert not is_flat([20.0, 22.0, 22.1, 21.9], window=2, tolerance_db=0.05)
    assert not is_flat([20.0, 22.0], window=2)  # too short to judge


def test_converged_training_resumes_from_its_checkpoint_the_mlflow_artifact_or_the_small_weights(
        mlflow_store, tmp_path):
    condition = load_condition(_tiny(tmp_path))
    methods = ["hourglass", "sdndti", "n2v"]  # supervised, noise2noise, blind-spot
    first = ConvergedTraining(condition, BUDGET, methods=methods, checkpoint_dir=tmp_path / "ck")
    progress = first.run()
    assert {m: info["steps"] for m, info in progress["methods"].items()} == {m: 4 for m in methods}
    assert all(len(info["history"]) == 2 for info in progress["methods"].values())  # one score per round
    assert progress["methods"]["hourglass"]["kflop_per_px"] == pytest.approx(97.1, abs=0.1)
    folder = tmp_path / "ck" / condition.name
    assert (folder / "curves.png").exists() and (folder / "hourglass.ckpt").stat().st_size < 200_000

    again = ConvergedTraining(condition, BUDGET, methods=methods, checkpoint_dir=tmp_path / "ck")
    assert again.states["hourglass"].resumed_from == "local checkpoint at step 4"
    assert again.run()["methods"]["n2v"]["steps"] == 4  # the budget's two rounds are done: nothing to add

    for path in folder.glob("*.pt"):
        path.unlink()
    from_store = ConvergedTraining(condition, BUDGET, methods=methods, checkpoint_dir=tmp_path / "ck")
    assert from_store.states["sdndti"].resumed_from == "MLflow artifact at step 4"

    small_only = ConvergedTraining(condition, BUDGET, methods=methods, checkpoint_dir=tmp_path / "ck",
                                   log_to_mlflow=False)
    assert small_only.states["hourglass"].resumed_from.startswith("committed weights")
    assert small_only.states["hourglass"].steps == 4


def test_evaluate_at_the_converged_budget_says_how_far_training_got(mlflow_store, tmp_path):
    board = evaluate(_tiny(tmp_path), methods="hourglass,autoencoder", budget=BUDGET, progress=False,
                     checkpoint_dir=tmp_path / "ck", log_to_mlflow=False)
    sources = {r["method"]: r["source"] for r in board.rows()}
    assert "converged budget: 4 steps" in sources["hourglass"] and "NOT converged yet" in sources["hourglass"]
    assert "kFLOP/px" in sources["autoencoder"]


def test_classical_rows_are_computed_once_per_benchmark_id(mlflow_store, tmp_path):
    first = evaluate(_tiny(tmp_path), methods="gaussian", budget="tiny", progress=False)
    second = evaluate(_tiny(tmp_path), methods="gaussian", budget="tiny", progress=False)
    row1, row2 = (next(r for r in b.rows() if r["method"] == "gaussian") for b in (first, second))
    assert not row1["source"].endswith("(cached)") and row2["source"].endswith("(cached)")
    assert row2["psnr"] == row1["psnr"]
    other = evaluate(_tiny(tmp_path, current=200.0), methods="gaussian", budget="tiny", progress=False)
    assert not next(r for r in other.rows() if r["method"] == "gaussian")["source"].endswith("(cached)")
