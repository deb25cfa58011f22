"""The whole plan of a long job, shown before it starts: how many steps, and about how long here.

`stemreg tune` runs trials (each `epochs x steps_per_epoch` optimiser steps,
fewer when pruned) and then retrains the best architecture. Before the first
trial we time a few optimiser steps of the seed architecture at the search's
batch and patch size on this machine, and multiply. The tqdm bars below the
plan (trials, then the retrain's epochs) show where the job is in it.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

#: Steps timed (after one warm-up step) to estimate one optimiser step.
TIMED_STEPS = 3


@dataclass(frozen=True)
class TunePlan:
    """What one `stemreg tune` worker will do, and an estimate of how long."""

    trials: int | None                  # None: until the timeout
    timeout_s: float | None
    trial_epochs: int
    trial_steps_per_epoch: int
    retrain_epochs: int | None          # None: no retrain (--no-register)
    retrain_steps_per_epoch: int | None
    batch_size: int
    patch_px: int
    step_seconds: float                 # measured, seed architecture, this machine
    device: str

    @property
    def trial_steps(self) -> int:
        return self.trial_epochs * self.trial_steps_per_epoch

    @property
    def retrain_steps(self) -> int:
        return (self.retrain_epochs or 0) * (self.retrain_steps_per_epoch or 0)

    @property
    def search_seconds(self) -> float:
        """Upper bound of the search's training time (pruned trials stop early); capped by the timeout."""
        if self.trials is None:
            return float(self.timeout_s or 0.0)
        estimate = self.trials * self.trial_steps * self.step_seconds
        return min(estimate, self.timeout_s) if self.timeout_s else estimate

    @property
    def retrain_seconds(self) -> float:
        return self.retrain_steps * self.step_seconds

    @property
    def total_seconds(self) -> float:
        return self.search_seconds + self.retrain_seconds

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(trial_steps=self.trial_steps, retrain_steps=self.retrain_steps,
                   estimated_search_s=round(self.search_seconds, 1),
                   estimated_retrain_s=round(self.retrain_seconds, 1),
                   estimated_total_s=round(self.total_seconds, 1))
        return out

    def describe(self) -> str:
        """A few lines for the terminal."""
        trials = (f"{self.trials} trial(s)" if self.trials is not None else "trials")
        if self.timeout_s:
            trials += f", no new trial after {_duration(self.timeout_s)}"
        lines = [
            f"plan: {trials} x {self.trial_epochs} epoch(s) x {self.trial_steps_per_epoch} steps "
            f"= {self.trial_steps} steps per trial (a pruned trial stops early)",
        ]
        if self.retrain_epochs:
            lines.append(f"      then retrain the best: {self.retrain_epochs} epoch(s) x "
                         f"{self.retrain_steps_per_epoch} steps = {self.retrain_steps} steps, "
                         "register as challenger, score on the benchmark")
        lines.append(f"      one step ({self.batch_size} x {self.patch_px} px patches, seed architecture) "
                     f"takes {self.step_seconds * 1000:.0f} ms"
                     + ("" if self.device == "given" else f" on {self.device} here") + ": about "
                     f"{_duration(self.search_seconds)} of search"
                     + (f" + {_duration(self.retrain_seconds)} of retrain" if self.retrain_epochs else "")
                     + " (training steps only; larger nets are slower)")
        return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, math.ceil(seconds))} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def measure_step_seconds(arch: dict[str, Any], *, batch_size: int, patch_px: int, device: str = "auto",
                         steps: int = TIMED_STEPS) -> tuple[float, str]:
    """Median wall time of one Adam step of `arch` on random patches, after a warm-up step.

    Returns
    -------
    (float, str)
        Seconds per step and the device it ran on.
    """
    import torch

    from stemreg.models import build_model, pick_device

    dev = pick_device(device)
    generator = torch.Generator().manual_seed(0)
    model = build_model(arch).to(dev)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(batch_size, 1, patch_px, patch_px, generator=generator).to(dev)
    y = torch.randn(batch_size, 1, patch_px, patch_px, generator=generator).to(dev)
    times = []
    for i in range(steps + 1):
        start = time.perf_counter()
        optimiser.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimiser.step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        if i:  # the first step pays for allocation and kernel selection
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2], str(dev)


def plan_tune(budget, *, trials: int | None, timeout_s: float | None, retrain_epochs: int | None,
              retrain_steps_per_epoch: int | None, step_seconds: float | None = None) -> TunePlan:
    """The plan of a `stemreg tune` worker; measures the step time unless `step_seconds` is given.

    Parameters
    ----------
    budget : stemreg.tuning.SearchBudget
        The trials' budget.
    trials, timeout_s
        As passed to the search.
    retrain_epochs, retrain_steps_per_epoch
        The retrain of the best architecture; None when there is none.
    step_seconds
        Seconds per optimiser step (default: measured now, seed architecture).
    """
    from stemreg.tuning.space import SEED_DEFAULT_PARAMS

    device = "given"
    if step_seconds is None:
        params = {k: v for k, v in SEED_DEFAULT_PARAMS.items() if k != "lr"}
        step_seconds, device = measure_step_seconds({"kind": "reverse-hourglass", **params},
                                                    batch_size=budget.batch_size, patch_px=budget.patch_px)
    return TunePlan(trials=trials, timeout_s=timeout_s, trial_epochs=budget.epochs,
                    trial_steps_per_epoch=budget.steps_per_epoch, retrain_epochs=retrain_epochs,
                    retrain_steps_per_epoch=retrain_steps_per_epoch if retrain_epochs else None,
                    batch_size=budget.batch_size, patch_px=budget.patch_px, step_seconds=step_seconds,
                    device=device)


def describe_pipeline(conditions: list[str], *, arch: dict[str, Any], config: dict[str, Any], pretrained: bool,
                      trials: int, step_seconds: float | None = None, device: str = "auto") -> str:
    """The main job's whole plan, up front: conditions in order, steps each, a time estimate from a measured step."""
    steps = int(config["epochs"]) * int(config["steps_per_epoch"])
    if step_seconds is None:
        step_seconds, device = measure_step_seconds(arch, batch_size=int(config["batch_size"]),
                                                    patch_px=int(config["patch_px"]), device=device)
    start = ("register the shipped pretrained base (once), then fine-tune" if pretrained
             else "train (low-dose first; the others fine-tune from its champion)")
    search = f"; then {trials} distilled student(s) of each champion (Optuna, quality vs latency)" if trials else ""
    total = len(conditions) * steps * step_seconds
    return (f"plan: {len(conditions)} condition(s) ({', '.join(conditions)}): {start} each for "
            f"{config['epochs']} x {config['steps_per_epoch']} = {steps} steps of {config['batch_size']} x "
            f"{config['patch_px']} px{search}; register, score on the stratified benchmark, promote if better\n"
            f"      one step takes {step_seconds * 1000:.0f} ms on {device} here: about {_duration(total)} of "
            f"training, plus ~10-30 s per condition to register and score")
