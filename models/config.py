"""Defaults written once: the canonical architectures, the training budgets and the seed rule.

Every caller (the CLI, the main job, the leaderboard, the search) takes its
defaults from here. Adding an architecture preset or a budget is one entry in
:data:`ARCHITECTURE_PRESETS` (and :class:`ArchitectureName`), :data:`TRAIN_BUDGETS`
or :data:`LEADERBOARD_BUDGETS`. Search budgets live beside the search, in
:mod:`stemreg.tuning.budget`.
"""
from __future__ import annotations

from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ArchitectureName(str, Enum):
    """The named architectures every layer can ask for."""

    DEFAULT = "default"          # the seed's 8-layer reverse hourglass, widths 8 -> 64 -> 8
    QUICK = "quick"              # the same shape, wider, the main job's CPU-quick choice
    AUTOENCODER = "autoencoder"  # STEM denoising autoencoder (Gambini et al. 2023)
    DNCNN = "dncnn"              # SDnDTI-style DnCNN (Tian et al. 2022)
    MULTISCALE = "multiscale"    # the family's multi-scale member: the shipped pretrained base's shape


#: Architecture dicts as :func:`stemreg.models.build_model` takes them.
ARCHITECTURE_PRESETS: dict[ArchitectureName, dict[str, Any]] = {
    ArchitectureName.DEFAULT: {"kind": "reverse-hourglass", "depth": 8, "kernel_size": 3},
    ArchitectureName.QUICK: {"kind": "reverse-hourglass", "depth": 8,
                             "widths": [16, 32, 48, 64, 48, 32, 16], "kernel_size": 3},
    ArchitectureName.AUTOENCODER: {"kind": "autoencoder", "base_width": 32, "levels": 2},
    ArchitectureName.DNCNN: {"kind": "dncnn", "depth": 10, "width": 48},
    # Pixel-unshuffle by 2, four levels whose widths grow as the resolution halves, additive skips:
    # ~37 kFLOP per pixel, a receptive radius of ~120 px (two SrTiO3 cells at 4 pm/px), 0.9 M parameters.
    ArchitectureName.MULTISCALE: {"kind": "reverse-hourglass", "levels": 4, "widths": [24, 48, 96, 128],
                                  "convs_per_level": 2, "unshuffle": 2, "dilation": 1, "kernel_size": 3,
                                  "residual": True},
}

#: The seed's default hourglass as a point of the search space (depth, base width, growth, kernel, lr).
DEFAULT_SEARCH_PARAMS: dict[str, Any] = {"levels": 1, "depth": 8, "base_width": 8, "growth": 2.0,
                                         "kernel_size": 3, "lr": 2e-3}


def architecture(name: str | ArchitectureName) -> dict[str, Any]:
    """A fresh copy of a named architecture (see :class:`ArchitectureName`).

    Raises
    ------
    ValueError
        Unknown name; the message lists the accepted ones.
    """
    try:
        key = ArchitectureName(name)
    except ValueError:
        accepted = ", ".join(n.value for n in ArchitectureName)
        raise ValueError(f"unknown architecture preset {name!r}; accepted: {accepted}") from None
    preset = ARCHITECTURE_PRESETS[key]
    return {k: list(v) if isinstance(v, list) else v for k, v in preset.items()}


class TrainBudget(BaseModel):
    """How much data and training one model gets (unknown keys refused).

    Attributes
    ----------
    name
        The preset's name.
    n_train, n_val
        Simulated training fields and validation images.
    train_size_px
        Edge of the training / validation images (None: the condition's).
    repeats
        Noisy acquisitions per training field for noise2noise.
    epochs, steps_per_epoch, batch_size, patch_px, lr
        Passed to :class:`stemreg.models.TrainConfig`.
    n_classical_val
        Validation images the classical filters are fitted on (leaderboard).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    n_train: int = Field(ge=1)
    n_val: int = Field(ge=1)
    train_size_px: int | None = None
    repeats: int = Field(2, ge=2)
    epochs: int = Field(ge=1)
    steps_per_epoch: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    patch_px: int = Field(ge=8)
    lr: float = Field(1e-3, gt=0)
    n_classical_val: int = Field(4, ge=1)

    def train_options(self) -> dict[str, Any]:
        """The :class:`stemreg.models.TrainConfig` fields this budget sets."""
        return {"epochs": self.epochs, "steps_per_epoch": self.steps_per_epoch, "batch_size": self.batch_size,
                "patch_px": self.patch_px, "lr": self.lr}

    def train_config(self, mode: str, *, seed: int, device: str = "auto") -> Any:
        """A :class:`stemreg.models.TrainConfig` for ``mode`` on this budget."""
        from stemreg.models.training import TrainConfig  # torch: only when a network is trained

        return TrainConfig(mode=mode, seed=seed, device=device, **self.train_options())

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


#: The training budget of `stemreg train` and the main job: the whole default job fits 10-15 min on
#: 2 CPU cores and the low-dose champion gains >= 6 dB PSNR over the noisy input.
QUICK_BUDGET = TrainBudget(name="quick", n_train=24, n_val=4, epochs=6, steps_per_epoch=40, batch_size=8,
                           patch_px=64, lr=2e-3)
TRAIN_BUDGETS: dict[str, TrainBudget] = {"quick": QUICK_BUDGET}

#: The leaderboard's budgets, the same for every learned method: ``tiny`` (smoke tests),
#: ``quick`` (CPU, minutes), ``full`` (GPU).
LEADERBOARD_BUDGETS: dict[str, TrainBudget] = {b.name: b for b in (
    TrainBudget(name="tiny", n_train=4, n_val=2, repeats=2, epochs=2, steps_per_epoch=15, batch_size=8,
                patch_px=32, lr=2e-3, n_classical_val=2),
    TrainBudget(name="quick", n_train=24, n_val=4, repeats=3, epochs=6, steps_per_epoch=60, batch_size=16,
                patch_px=64, lr=2e-3, n_classical_val=4),
    TrainBudget(name="full", n_train=256, n_val=16, repeats=4, epochs=40, steps_per_epoch=250, batch_size=32,
                patch_px=96, lr=1e-3, n_classical_val=8),
    # Until every validation curve is flat (stemreg.platform.evaluation.converged): rounds of 25 steps of
    # 8 fresh fields of 96 px each (n_train per round), at most 2000 rounds; resumable, hours on a CPU.
    TrainBudget(name="converged", n_train=200, n_val=8, repeats=2, epochs=2000, steps_per_epoch=25,
                batch_size=8, patch_px=96, lr=1e-3, n_classical_val=4),
)}


def leaderboard_budget(budget: str | TrainBudget) -> TrainBudget:
    """A leaderboard budget by name (or as given); unknown names raise ``ValueError`` listing the accepted ones."""
    if isinstance(budget, TrainBudget):
        return budget
    if budget not in LEADERBOARD_BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; accepted: {', '.join(LEADERBOARD_BUDGETS)}")
    return LEADERBOARD_BUDGETS[budget]


#: Fine-tuning a condition from the shipped pretrained base (the main job): fresh noise every step over
#: the condition's range, patches of 128 px, 10 % of the base's peak learning rate.
FINE_TUNE_BUDGET = TrainBudget(name="fine-tune", n_train=48, n_val=8, epochs=3, steps_per_epoch=50, batch_size=8,
                               patch_px=128, lr=2e-4)

#: A fine-tune from a parent gets this share of the epochs of a training from scratch, at this
#: share of its learning rate (measured: 3 epochs at 0.1x came within 0.1 dB of 6 from scratch).
FINE_TUNE_EPOCH_FRACTION = 0.5
FINE_TUNE_LR_FACTOR = 0.1

#: Offset between a training seed and its validation seed.
VAL_SEED_OFFSET = 100_003
#: How far all data seeds move together when one of them is the benchmark seed.
SEED_STEP = 7919


def off_benchmark(seeds: tuple[int, ...], benchmark_seed: int | None) -> tuple[int, ...]:
    """The one rule keeping training and validation data off the frozen benchmark set.

    Parameters
    ----------
    seeds
        The data seeds a caller would use (training, validation, ...).
    benchmark_seed
        The condition's benchmark seed (None: no benchmark, nothing to avoid).

    Returns
    -------
    tuple of int
        ``seeds`` unchanged when none is the benchmark seed, else all moved by
        :data:`SEED_STEP` until none is.
    """
    seeds = tuple(int(s) for s in seeds)
    while benchmark_seed is not None and int(benchmark_seed) in seeds:
        seeds = tuple(s + SEED_STEP for s in seeds)
    return seeds


def training_seeds(seed: int, benchmark_seed: int | None) -> tuple[int, int]:
    """Training and validation data seeds for a run seeded ``seed`` (never the benchmark's)."""
    train_seed, val_seed = off_benchmark((seed, seed + VAL_SEED_OFFSET), benchmark_seed)
    return train_seed, val_seed
