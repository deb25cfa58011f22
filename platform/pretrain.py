"""Train the pretrained base that ships with the package (``stemreg pretrain``).

Low-dose, over the condition's whole range (samplings, doses, probes, specimens), fresh noise and
scans every step from a :class:`~stemreg.acquisition.stream.FieldPool`, seeded: the same command
and seed give the same weights on the same machine and library versions. It writes the weights
and a card (architecture, condition hash, steps, recipe, data, commit, benchmark per bin) into
``models/pretrained/`` (:mod:`stemreg.models.pretrained`).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable

import torch

from stemreg.acquisition import Condition, ConditionLike, load_condition
from stemreg.acquisition.conditions import SIMULATOR_REVISION
from stemreg.acquisition.stream import FieldPool
from stemreg.models.architectures import build_model
from stemreg.models.config import ArchitectureName, architecture
from stemreg.models.binned import mean_over_bins, per_bin
from stemreg.models.flops import flops_per_pixel
from stemreg.models.inference import denoise_array
from stemreg.models.metrics import psnr_batch, ssim_batch
from stemreg.models.pretrained import BASE_NAME, load_card, load_pretrained, save_pretrained
from stemreg.models.training import TrainConfig, train
from stemreg.platform.config import PRETRAIN
from stemreg.platform.training.runs import git_commit

log = logging.getLogger(__name__)

#: The base's architecture (3.5 MB of float32 weights).
BASE_ARCHITECTURE: dict[str, Any] = architecture(ArchitectureName.MULTISCALE)
#: Seeds of the base's training stream and validation set (never the benchmark seed): platform/config.py.
PRETRAIN_SEED, PRETRAIN_VAL_SEED = PRETRAIN.seed, PRETRAIN.val_seed


def benchmark_by_bin(model: torch.nn.Module, condition: Condition) -> dict[str, Any]:
    """PSNR and SSIM of ``model`` and of the noisy input on the condition's stratified benchmark,
    per bin and as the mean over bins."""
    bench = condition.benchmark_set()
    pred = denoise_array(model, bench.degraded)
    figures: dict[str, Any] = {"benchmark_id": condition.benchmark_id(), "n_images": len(bench)}
    for who, images in (("model", pred), ("noisy", bench.degraded)):
        for metric, fn in (("psnr", psnr_batch), ("ssim", ssim_batch)):
            by_bin = per_bin(fn(images, bench.clean), bench.bins)
            figures[f"{who}_{metric}_by_bin"] = {k: round(v, 4) for k, v in by_bin.items()}
            figures[f"{who}_{metric}_mean"] = round(mean_over_bins(by_bin), 4)
    return figures


def pretrain_base(condition: ConditionLike = PRETRAIN.condition, *, steps: int = PRETRAIN.steps,
                  steps_per_epoch: int = PRETRAIN.steps_per_epoch, batch_size: int = PRETRAIN.batch_size,
                  patch_px: int = PRETRAIN.patch_px, lr: float = PRETRAIN.lr, seed: int = PRETRAIN.seed,
                  n_fields: int = PRETRAIN.n_fields, n_val: int = PRETRAIN.n_val, architecture: dict[str, Any] | None = None,
                  name: str = BASE_NAME, directory: Path | None = None, threads: int | None = None,
                  from_base: str | None = None, from_directory: Path | None = None,
                  library: Path | None = None, library_fraction: float = 0.25, library_fields: int = 64,
                  perfect_fraction: float = 0.0, low_dose_fraction: float = 0.0,
                  on_epoch: Callable[[int, dict[str, float]], None] | None = None,
                  progress: bool = True) -> dict[str, Any]:
    """Train the base and write it with its card; returns the card.

    Parameters
    ----------
    condition
        The condition (name or YAML path) whose range the base covers.
    steps, steps_per_epoch, batch_size, patch_px, lr
        The budget and recipe (AdamW, 5 % warm-up, cosine decay, gradient clipping at 1).
    seed
        Seeds the stream, the initial weights and the patch order.
    n_fields
        Rendered fields in the pool (one re-rendered per step).
    n_val
        Validation images (256 px, from the range, another seed) scored each epoch.
    from_base, from_directory
        Continue from a pretrained model's weights (its name, and the folder holding it; default
        the package's): its architecture is kept and its card is recorded as the parent.
    library, library_fraction, library_fields
        A multislice library (``stemreg multislice``): ``library_fields`` clean fields tiled from it
        over the condition's samplings, mixed in at ``library_fraction`` of the patches.
    perfect_fraction
        Share of the pool's synthetic fields drawn as perfect crystals (FieldPool's ``perfect_fraction``).
    low_dose_fraction
        Share of the patches dosed from the bottom quarter of the dose range (FieldPool's).
    """
    cond = load_condition(condition)
    commit = git_commit() or "unknown"  # the code that trains, before anything can move HEAD
    if threads:
        torch.set_num_threads(threads)
    arch = dict(architecture or BASE_ARCHITECTURE)
    epochs = max(1, -(-steps // steps_per_epoch))
    config = TrainConfig(epochs=epochs, steps_per_epoch=steps_per_epoch, batch_size=batch_size, patch_px=patch_px,
                         lr=lr, seed=seed, device="auto")
    torch.manual_seed(seed)
    parent = None
    if from_base:
        model, parent_card = load_pretrained(from_base, from_directory)
        model.train()
        arch = model.config()
        parent = {"name": parent_card["name"], "weights_sha256": parent_card["weights_sha256"],
                  "command": parent_card.get("command"), "steps": parent_card["training"]["steps"],
                  "commit": parent_card.get("commit")}
    else:
        model = build_model(arch)
    started = time.perf_counter()
    targets, library_note = None, "none"
    if library is not None:
        from stemreg.acquisition.multislice import library_targets, load_library

        cells = load_library(library)
        targets = library_targets(cells, library_fields, size_px=256, pixel_size_range_pm=cond.pixel_size_range_pm(),
                                  seed=seed, bright_field_fraction=cond.bright_field_fraction)
        library_note = (f"{library_fields} fields tiled from the multislice library {Path(library).name} "
                        f"({', '.join(c.name for c in cells)}; abTEM, frozen phonons, HAADF and ABF) at "
                        f"{library_fraction:g} of the patches")
    stream = FieldPool(cond, n_fields=n_fields, size_px=256, seed=seed, targets=targets,
                       target_fraction=library_fraction if targets else 0.0, perfect_fraction=perfect_fraction,
                       low_dose_fraction=low_dose_fraction)
    val = cond.sample_pairs(n_val, size_px=256, seed=PRETRAIN_VAL_SEED)
    result = train(model, config, train_data=stream, val_data=(val.degraded, val.clean), on_epoch=on_epoch,
                   progress=progress)
    seconds = time.perf_counter() - started
    figures = benchmark_by_bin(result.model.cpu(), cond)
    card = {
        "name": name,
        "purpose": "pretrained base: restores low-dose HAADF and ABF STEM images (raw detector frames included) "
                   "over the range of samplings, doses and "
                   "probes below; every condition is fine-tuned from it",
        "architecture": result.model.config(),
        "kflop_per_pixel": round(flops_per_pixel(result.model) / 1e3, 1),
        "receptive_radius_px": int(getattr(result.model, "receptive_radius_px", 0)),
        "parameters": int(sum(p.numel() for p in result.model.parameters())),
        "condition": {"name": cond.name, "version": cond.version, "hash": cond.hash(),
                      "benchmark_id": cond.benchmark_id(),
                      "pixel_size_pm": list(cond.pixel_size_range_pm()),
                      "dose_scale": list(cond.dose_scale) if isinstance(cond.dose_scale, tuple) else cond.dose_scale,
                      "source_size_pm": (list(cond.source_size_pm) if isinstance(cond.source_size_pm, tuple)
                                         else cond.source_size_pm),
                      "specimens": [s.value for s in cond.specimens],
                      # what the trust report's range needs: the detector bandwidth (noise correlation
                      # along the scan) and the share of bright-field images seen in training
                      "bandwidth_px": (list(cond.bandwidth_px) if isinstance(cond.bandwidth_px, tuple)
                                       else cond.bandwidth_px),
                      "bright_field_fraction": cond.bright_field_fraction},
        "training": {"steps": epochs * steps_per_epoch, "batch_size": batch_size, "patch_px": patch_px,
                     "recipe": config.model_dump(mode="json"), "seed": seed, "pool_fields": n_fields,
                     "data": "synthetic fields from the condition's ranges (simulator revision "
                             f"{SIMULATOR_REVISION}: detector read-out, HAADF and ABF), fresh scan, dose, detector and "
                             "noise every patch (FieldPool); validation: "
                             f"{n_val} images of 256 px, seed {PRETRAIN_VAL_SEED}",
                     "multislice_library": library_note,
                     "perfect_fraction": perfect_fraction, "low_dose_fraction": low_dose_fraction,
                     "best_epoch": result.best_epoch, "best_val_psnr": round(result.best_val_psnr, 4),
                     "noisy_val_psnr": round(result.noisy_val_psnr, 4),
                     "history": [{k: (round(v, 5) if isinstance(v, float) else v) for k, v in h.items()}
                                 for h in result.history],
                     "seconds": round(seconds, 1), "threads": torch.get_num_threads(),
                     "device": str(next(result.model.parameters()).device)},
        "benchmark": figures,
        "parent": parent,
        "commit": commit,
        "command": f"stemreg pretrain --condition {cond.name} --steps {steps} --seed {seed} --lr {lr:g}"
                   + (f" --threads {threads}" if threads else "") + (f" --from-base {from_base}" if from_base else "")
                   + (f" --library {library} --library-fraction {library_fraction:g}" if library else "")
                   + (f" --fields {n_fields}" if n_fields != PRETRAIN.n_fields else "")
                   + (f" --perfect-fraction {perfect_fraction:g}" if perfect_fraction else "")
                   + (f" --low-dose-fraction {low_dose_fraction:g}" if low_dose_fraction else ""),
        "torch": torch.__version__,
    }
    save_pretrained(result.model, card, name, directory)
    return load_card(name, directory)  # as written, with the weights' sha256


if __name__ == "__main__":  # python -m stemreg.platform.pretrain STEPS [THREADS]
    import json
    import sys

    logging.basicConfig(level=logging.INFO)

    def show(epoch: int, metrics: dict[str, float]) -> None:
        print(f"epoch {epoch}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()), flush=True)

    card = pretrain_base(steps=int(sys.argv[1]), threads=int(sys.argv[2]) if len(sys.argv) > 2 else None,
                         on_epoch=show, progress=False)
    print(json.dumps(card["benchmark"], indent=1))
