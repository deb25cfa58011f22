"""The ``converged`` budget: every CNN of the leaderboard trained on one stream until its curve is flat.

What is equal for every method:

- the data: rounds of the budget's ``steps_per_epoch`` steps; round r draws ``steps x batch`` fresh fields of
  ``patch_px`` from the condition's whole range (:meth:`Condition.sample_pairs`, a seed of its own
  per round, never the benchmark's) and every method sees the same patches in the same order:
  the supervised nets (degraded, clean), SDnDTI two noisy repeats of the same scan (noise2noise),
  the blind-spot net the degraded patch alone;
- the recipe (:mod:`stemreg.models.steps`): AdamW at the budget's learning rate, weight decay
  1e-4, :data:`WARMUP_STEPS` warm-up steps, gradients clipped at norm 1, constant learning rate
  divided by 4 at each plateau;
- the steps: methods advance round by round together, so at any time all have the same steps and
  patch pixels;
- the FLOPs: about the seed's 97 kFLOP per pixel where the architecture has a width to set
  (:data:`CONVERGED_ARCHITECTURES`; the figure is reported beside each).

Flatness (stated once, :func:`is_flat`): after each round every method is scored on
:data:`N_VAL` fixed validation images (128 px, another seed) by PSNR against the clean target
(the self-supervised nets are *judged* on clean images here, never trained on them). A curve is
flat when the best of its last :data:`FLAT_WINDOW` scores is less than :data:`FLAT_DB` dB above the
best before them; the learning rate then drops by 4, at most :data:`MAX_DROPS` times, and a curve
flat at the last rate has converged. Training stops when every curve has converged (or after the
budget's ``epochs`` rounds, or a time limit), and the leaderboard scores each method's last weights.

Resumable: after every round each method's whole state (weights, AdamW moments, steps, learning
rate, curve) is written to ``<checkpoint_dir>/<condition>/<method>.pt`` and logged to one MLflow
run (``checkpoints/<method>.pt``), and a small copy (weights in float16, the curve) to
``<method>.ckpt`` beside it, small enough to commit. A later run continues from the newest of: the
local full state, the MLflow run's artifact, the small copy (its AdamW moments then start afresh).
"""
from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from stemreg.models.architectures import architecture_for_mode, build_model
from stemreg.models.config import ArchitectureName, TrainBudget, architecture, off_benchmark
from stemreg.models.flops import flops_per_pixel
from stemreg.models.inference import denoise_array
from stemreg.models.metrics import psnr_batch, ssim_batch
from stemreg.models.steps import LR_DROP, ResumableTrainer, prepare_batch

log = logging.getLogger(__name__)

WARMUP_STEPS = 100
N_VAL, VAL_SIZE_PX = 8, 128
#: Flat: no gain of FLAT_DB over the last FLAT_WINDOW scores (rounds; 20 rounds of 25 steps = 500 steps).
FLAT_WINDOW, FLAT_DB, MAX_DROPS = 20, 0.05, 2
#: Bump when the recipe or the architectures change: a run resumes only its own version.
RECIPE_VERSION = "1"

#: (architecture, training mode) per method, at about the seed hourglass's 97 kFLOP/px.
CONVERGED_ARCHITECTURES: dict[str, tuple[dict[str, Any], str]] = {
    "hourglass": (architecture(ArchitectureName.DEFAULT), "supervised"),       # the seed's net: 97 kFLOP/px
    "hourglass-family": ({**architecture(ArchitectureName.MULTISCALE), "widths": [40, 80, 160, 200]},
                         "supervised"),                                          # widths x1.6: 102 kFLOP/px
    "autoencoder": (architecture(ArchitectureName.AUTOENCODER), "supervised"),  # base width 32: 102 kFLOP/px
    "sdndti": ({"kind": "dncnn", "depth": 10, "width": 26}, "noise2noise"),     # width 26: 98 kFLOP/px
    "n2v": (architecture_for_mode(architecture(ArchitectureName.DEFAULT), "blind-spot"), "blind-spot"),
}


def is_flat(scores: Sequence[float], *, window: int = FLAT_WINDOW, tolerance_db: float = FLAT_DB) -> bool:
    """Whether a validation curve (PSNR per round, since the last learning-rate drop) is flat:
    the best of the last ``window`` scores is less than ``tolerance_db`` above the best before them."""
    scores = [float(s) for s in scores]
    if len(scores) <= window:
        return False
    return max(scores[-window:]) - max(scores[:-window]) < tolerance_db


@dataclass
class MethodState:
    """One method's trainer and curve."""

    method: str
    arch: dict[str, Any]
    mode: str
    trainer: ResumableTrainer
    history: list[dict[str, float]] = field(default_factory=list)
    drops: list[int] = field(default_factory=list)  # steps at which the learning rate dropped
    converged: bool = False
    resumed_from: str = "fresh"

    @property
    def steps(self) -> int:
        return self.trainer.steps

    def since_drop(self) -> list[float]:
        last = self.drops[-1] if self.drops else 0
        return [h["val_psnr"] for h in self.history if h["step"] > last]

    def meta(self) -> dict[str, Any]:
        return {"method": self.method, "architecture": self.arch, "mode": self.mode, "history": self.history,
                "drops": self.drops, "converged": self.converged}

    def summary(self) -> dict[str, Any]:
        """What the leaderboard shows beside the method."""
        last = self.history[-1] if self.history else {}
        return {"architecture": self.arch, "mode": self.mode, "steps": self.steps, "converged": self.converged,
                "lr_drops_at_steps": self.drops, "last_val_psnr": last.get("val_psnr"),
                "best_val_psnr": max((h["val_psnr"] for h in self.history), default=None),
                "kflop_per_px": round(flops_per_pixel(self.trainer.model) / 1e3, 1),
                "parameters": int(sum(p.numel() for p in self.trainer.model.parameters())),
                "resumed_from": self.resumed_from}


def _round_seed(condition: Any, seed: int, round_index: int) -> int:
    (value,) = off_benchmark((9_000_011 * (seed + 1) + 104_729 * round_index + 17,), int(condition.benchmark_seed))
    return value


def round_data(condition: Any, budget: TrainBudget, seed: int, round_index: int) -> tuple[np.ndarray, ...]:
    """Round ``round_index``'s patches: (degraded, clean, repeats), ``steps_per_epoch x batch`` fresh fields."""
    n = budget.steps_per_epoch * budget.batch_size
    seed_r = _round_seed(condition, seed, round_index)
    batch = condition.sample_pairs(n, size_px=budget.patch_px, seed=seed_r)
    repeats = batch.repeats(2, seed=seed_r + 1)
    return (np.asarray(batch.degraded, np.float32), np.asarray(batch.clean, np.float32),
            np.asarray(repeats, np.float32))


class ConvergedTraining:
    """The round-robin training of :data:`CONVERGED_ARCHITECTURES` on one condition (see the module)."""

    def __init__(self, condition: Any, budget: TrainBudget, *, methods: Sequence[str], seed: int = 0,
                 checkpoint_dir: str | Path = "converged", device: str = "cpu", log_to_mlflow: bool = True) -> None:
        unknown = [m for m in methods if m not in CONVERGED_ARCHITECTURES]
        if unknown:
            raise ValueError(f"no converged recipe for {unknown}; accepted: {', '.join(CONVERGED_ARCHITECTURES)}")
        self.condition, self.budget, self.seed = condition, budget, seed
        self.folder = Path(checkpoint_dir) / condition.name
        self.device, self.log_to_mlflow = torch.device(device), log_to_mlflow
        self.run_id: str | None = None
        val = condition.sample_pairs(N_VAL, size_px=VAL_SIZE_PX, seed=_round_seed(condition, seed, -1))
        self.val_degraded, self.val_clean = (np.asarray(a, np.float32) for a in (val.degraded, val.clean))
        self.states: dict[str, MethodState] = {}
        torch.manual_seed(seed)
        for method in methods:
            arch, mode = CONVERGED_ARCHITECTURES[method]
            trainer = ResumableTrainer(build_model(dict(arch)), lr=budget.lr, warmup_steps=WARMUP_STEPS,
                                       device=self.device)
            self.states[method] = MethodState(method, dict(arch), mode, trainer)
        if log_to_mlflow:
            self.run_id = self._mlflow_run()
        for state in self.states.values():
            self._resume(state)

    # -- persistence -----------------------------------------------------------------------------
    def _tags(self) -> dict[str, str]:
        return {"stemreg.kind": "converged-training", "condition": self.condition.name,
                "benchmark.id": self.condition.benchmark_id(), "converged.recipe": self.recipe_id(),
                "converged.seed": str(self.seed)}

    def recipe_id(self) -> str:
        """The recipe version and a hash of the budget: checkpoints resume only into the same one."""
        budget = json.dumps(self.budget.to_dict(), sort_keys=True)
        return f"{RECIPE_VERSION}-{hashlib.sha1(budget.encode()).hexdigest()[:10]}"

    def _mlflow_run(self) -> str:
        import mlflow

        from stemreg.platform.store import configure

        configure()
        tags = self._tags()
        query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        found = mlflow.search_runs(filter_string=query, order_by=["attributes.start_time DESC"], max_results=1,
                                   output_format="list")
        if found:
            return found[0].info.run_id
        with mlflow.start_run(run_name=f"converged-{self.condition.name}", tags=tags) as run:
            mlflow.log_params({"methods": ",".join(self.states),
                               "warmup_steps": WARMUP_STEPS, "flat_window": FLAT_WINDOW, "flat_db": FLAT_DB,
                               "max_drops": MAX_DROPS, "n_val": N_VAL, "val_size_px": VAL_SIZE_PX,
                               **{f"budget.{k}": v for k, v in self.budget.to_dict().items()}})
            return run.info.run_id

    def _candidates(self, state: MethodState) -> list[tuple[str, dict[str, Any]]]:
        """Every saved state of ``state``'s method: (where it came from, the loaded checkpoint)."""
        found = []
        full = self.folder / f"{state.method}.pt"
        if full.exists():
            found.append(("local checkpoint", torch.load(full, map_location="cpu", weights_only=True)))
        if self.run_id is not None:
            import mlflow

            with tempfile.TemporaryDirectory(prefix="stemreg-converged-") as tmp:
                try:
                    path = mlflow.artifacts.download_artifacts(run_id=self.run_id,
                                                               artifact_path=f"checkpoints/{state.method}.pt",
                                                               dst_path=tmp)
                    found.append(("MLflow artifact", torch.load(path, map_location="cpu", weights_only=True)))
                except Exception:  # noqa: BLE001 - no artifact yet: nothing to resume from there
                    pass
        small = self.folder / f"{state.method}.ckpt"
        if small.exists():
            found.append(("committed weights (float16, fresh AdamW moments)",
                          torch.load(small, map_location="cpu", weights_only=True)))
        return found

    def _resume(self, state: MethodState) -> None:
        best: tuple[int, str, dict[str, Any]] | None = None
        for source, saved in self._candidates(state):
            meta = json.loads(saved["meta"])
            if meta.get("recipe_version") != self.recipe_id() or meta.get("architecture") != state.arch:
                log.warning("%s: the %s is of another recipe or architecture; not resumed", state.method, source)
                continue
            if best is None or int(saved["steps"]) > best[0]:
                best = (int(saved["steps"]), source, saved)
        if best is None:
            return
        steps, source, saved = best
        state.trainer.load_state_dict(saved)
        meta = json.loads(saved["meta"])
        state.history, state.drops, state.converged = meta["history"], meta["drops"], meta["converged"]
        state.resumed_from = f"{source} at step {steps}"
        log.info("%s: resumed from the %s", state.method, state.resumed_from)

    def save(self) -> None:
        """Write every method's full and small checkpoint, the curves and progress.json; log them."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for state in self.states.values():
            meta = json.dumps({**state.meta(), "recipe_version": self.recipe_id()})
            full = {**state.trainer.state_dict(), "meta": meta}
            torch.save(full, self.folder / f"{state.method}.pt")
            small = state.trainer.state_dict(with_optimiser=False)
            small["model"] = {k: v.half() if v.is_floating_point() else v for k, v in small["model"].items()}
            torch.save({**small, "meta": meta}, self.folder / f"{state.method}.ckpt")
        progress = self.progress()
        (self.folder / "progress.json").write_text(json.dumps(progress, indent=1) + "\n")
        from stemreg.platform.evaluation.curves import curves_figure

        curves = curves_figure(progress, self.folder / "curves.png")
        if self.run_id is not None:
            import mlflow

            client = mlflow.MlflowClient()
            for state in self.states.values():
                client.log_artifact(self.run_id, str(self.folder / f"{state.method}.pt"), "checkpoints")
            for path in (self.folder / "progress.json", curves):
                client.log_artifact(self.run_id, str(path))

    def progress(self) -> dict[str, Any]:
        """The curves and the state of every method (JSON-able)."""
        return {"condition": self.condition.name, "benchmark_id": self.condition.benchmark_id(),
                "recipe_version": self.recipe_id(), "budget": self.budget.to_dict(), "seed": self.seed,
                "round_steps": self.budget.steps_per_epoch, "flatness": (f"flat when the best validation PSNR of the last "
                                                         f"{FLAT_WINDOW} rounds is < {FLAT_DB} dB above the "
                                                         f"best before them; the learning rate then drops x"
                                                         f"{LR_DROP:g}, converged when flat after {MAX_DROPS} "
                                                         f"drops"),
                "all_converged": self.all_converged(),
                "methods": {m: {**s.summary(), "history": s.history} for m, s in self.states.items()}}

    # -- training --------------------------------------------------------------------------------
    def all_converged(self) -> bool:
        return all(s.converged for s in self.states.values())

    def _validate(self, state: MethodState) -> tuple[float, float]:
        pred = denoise_array(state.trainer.model, self.val_degraded, device=self.device)
        return (float(np.mean(psnr_batch(pred, self.val_clean))), float(np.mean(ssim_batch(pred, self.val_clean))))

    def train_round(self) -> None:
        """Bring every method to the next multiple of the round's steps, on the round's shared patches."""
        round_steps = self.budget.steps_per_epoch
        round_index = min(s.steps for s in self.states.values()) // round_steps
        target = (round_index + 1) * round_steps
        degraded, clean, repeats = round_data(self.condition, self.budget, self.seed, round_index)
        b = self.budget.batch_size
        metrics: dict[str, float] = {}
        for state in self.states.values():
            if state.steps >= target:
                continue
            started = time.perf_counter()
            rng = np.random.default_rng([self.seed, round_index, len(state.method)])
            losses = []
            for i in range(state.steps - round_index * round_steps, round_steps):
                window = slice(i * b, (i + 1) * b)
                data = {"supervised": (degraded[window], clean[window]), "noise2noise": repeats[window],
                        "blind-spot": degraded[window]}[state.mode]
                losses.append(state.trainer.step(*prepare_batch(state.mode, data, rng)))
            val_psnr, val_ssim = self._validate(state)
            lr = state.trainer.current_lr()
            state.history.append({"step": state.steps, "val_psnr": round(val_psnr, 4), "val_ssim": round(val_ssim, 4),
                                  "train_loss": round(float(np.mean(losses)), 6), "lr": lr,
                                  "seconds": round(time.perf_counter() - started, 1)})
            if not state.converged and is_flat(state.since_drop()):
                if len(state.drops) < MAX_DROPS:
                    state.drops.append(state.steps)
                    state.trainer.lr_scale /= LR_DROP
                else:
                    state.converged = True
            metrics.update({f"{state.method}.val_psnr": val_psnr, f"{state.method}.val_ssim": val_ssim,
                            f"{state.method}.train_loss": float(np.mean(losses)), f"{state.method}.lr": lr})
            log.info("%s: step %d, val PSNR %.2f dB, %s", state.method, state.steps, val_psnr,
                     "converged" if state.converged else f"lr {lr:.2g}")
        if self.run_id is not None and metrics:
            import mlflow

            client = mlflow.MlflowClient()
            now = int(time.time() * 1000)
            client.log_batch(self.run_id, metrics=[mlflow.entities.Metric(k, v, now, target)
                                                   for k, v in metrics.items()])
        self.save()

    def run(self, *, time_limit_s: float | None = None, progress: bool = False) -> dict[str, Any]:
        """Train round after round until every curve has converged, the budget's ``epochs`` rounds are
        done or ``time_limit_s`` has passed (checked after each round); returns :meth:`progress`."""
        from tqdm.auto import tqdm

        started = time.perf_counter()
        max_steps = self.budget.epochs * self.budget.steps_per_epoch
        bar = tqdm(total=max_steps, initial=min(s.steps for s in self.states.values()), disable=not progress,
                   desc=f"converged {self.condition.name}", unit="step")
        while not self.all_converged() and min(s.steps for s in self.states.values()) < max_steps:
            if time_limit_s is not None and time.perf_counter() - started > time_limit_s:
                break
            self.train_round()
            bar.n = min(s.steps for s in self.states.values())
            bar.refresh()
        bar.close()
        return self.progress()

    def models(self) -> dict[str, torch.nn.Module]:
        """Each method's current (last) weights, in eval mode."""
        return {m: s.trainer.model.eval() for m, s in self.states.items()}


def converged_method(training: ConvergedTraining, method: str) -> tuple[Any, str, dict[str, Any]]:
    """``(predict, source, details)`` of one method's last weights, as the leaderboard takes them."""
    state = training.states[method]
    model = state.trainer.model.eval()
    device = training.device
    summary = state.summary()
    status = "converged" if state.converged else "NOT converged yet"
    source = (f"converged budget: {state.steps} steps of {training.budget.batch_size} x "
              f"{training.budget.patch_px}^2 px, {status}, {summary['kflop_per_px']:g} kFLOP/px")
    details = {**summary, "training_run_id": training.run_id}
    return (lambda image: denoise_array(model, image, device=device)), source, details
