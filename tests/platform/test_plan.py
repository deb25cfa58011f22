"""`stemreg tune` shows its whole plan up front: trials, retrain steps, time estimated from a measured step."""
from __future__ import annotations

import json
import math

from click.testing import CliRunner

from stemreg.platform.cli import main
from stemreg.platform.plan import measure_step_seconds, plan_tune
from stemreg.tuning import SearchBudget

TINY_ARCH = {"kind": "reverse-hourglass", "depth": 4, "widths": [8, 16, 8], "kernel_size": 3}


def test_plan_counts_the_steps_and_multiplies_by_the_step_time():
    budget = SearchBudget(epochs=4, steps_per_epoch=40, batch_size=8, patch_px=64)
    plan = plan_tune(budget, trials=10, timeout_s=None, retrain_epochs=12, retrain_steps_per_epoch=80,
                     step_seconds=0.1)
    assert plan.trial_steps == 160 and plan.retrain_steps == 960
    assert math.isclose(plan.search_seconds, 160.0) and math.isclose(plan.retrain_seconds, 96.0)
    text = plan.describe()
    assert "10 trial(s) x 4 epoch(s) x 40 steps = 160 steps per trial" in text
    assert "12 epoch(s) x 80 steps = 960 steps" in text
    assert "takes 100 ms: about 3 min of search + 2 min of retrain" in text

    # A timeout caps the search; without a retrain none is announced.
    capped = plan_tune(budget, trials=None, timeout_s=60, retrain_epochs=None, retrain_steps_per_epoch=80,
                       step_seconds=0.1)
    assert capped.search_seconds == 60 and capped.retrain_steps == 0
    assert "no new trial after 60 s" in capped.describe() and "retrain" not in capped.describe().split("(")[0]


def test_step_time_is_measured_on_this_machine():
    seconds, device = measure_step_seconds(TINY_ARCH, batch_size=2, patch_px=16)
    assert 0 < seconds < 5 and device in ("cpu", "cuda", "cuda:0", "mps")


def test_tune_announces_the_plan_before_searching_and_reports_it(mlflow_store, tmp_path):
    args = ["tune", "--condition", "low-dose", "--trials", "2", "--epochs", "1", "--steps", "2", "--n-train", "2",
            "--n-val", "1", "--image-px", "32", "--patch-px", "16", "--batch-size", "2", "--no-register",
            "--no-progress", "--json", "--storage", f"sqlite:///{tmp_path / 'optuna.db'}",
            "--min-receptive-cells", "0"]  # 16-px patches: tiny nets, no unit cells to see
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "plan: 2 trial(s) x 1 epoch(s) x 2 steps = 2 steps per trial" in result.stderr
    report = json.loads(result.stdout)
    plan = report["plan"]
    assert plan["trials"] == 2 and plan["trial_steps"] == 2 and plan["retrain_steps"] == 0
    assert plan["step_seconds"] > 0 and plan["estimated_total_s"] >= 0
    assert report["study"]["n_trials_done"] == 2


def test_the_main_job_shows_its_whole_plan_up_front():
    from stemreg.models.config import FINE_TUNE_BUDGET, ArchitectureName, architecture
    from stemreg.platform.plan import describe_pipeline

    text = describe_pipeline(["low-dose", "blur"], arch=architecture(ArchitectureName.MULTISCALE),
                             config=FINE_TUNE_BUDGET.train_options(), pretrained=True, trials=0, step_seconds=0.2,
                             device="cpu")
    steps = FINE_TUNE_BUDGET.epochs * FINE_TUNE_BUDGET.steps_per_epoch
    assert "2 condition(s) (low-dose, blur)" in text and "pretrained base" in text
    assert f"= {steps} steps of {FINE_TUNE_BUDGET.batch_size} x {FINE_TUNE_BUDGET.patch_px} px" in text
    assert f"about {round(2 * steps * 0.2)} s of training" in text  # 2 conditions x 150 steps x 0.2 s
