"""How much work one trial of a search may spend: a small, validated config."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class SearchBudget(BaseModel):
    """Training budget of every trial in a search (the retrain of the winner gets more).

    Unknown keys are refused, so a typo never silently falls back to a default.

    Attributes
    ----------
    epochs : int
        Epochs per trial; validation PSNR is reported (and pruning decided) after each.
    steps_per_epoch : int
        Optimiser steps per epoch.
    n_train, n_val : int
        Simulated training and validation images (drawn once per search, shared
        by all trials so they compete on the same data).
    image_px : int or None
        Edge of the simulated images; None takes the condition's ``image_size_px``.
    patch_px : int
        Edge of the random training patches.
    batch_size : int
        Patches per step.
    latency_image_px : int
        Edge of the image timed for the quality-latency objective.
    max_flops_per_px : float or None
        Largest network a trial may train (forward FLOP per pixel, see
        :func:`stemreg.models.flops_per_pixel`); a larger draw is pruned before
        training. Bounds the time of a trial and of the winner's retrain, and
        the served model's latency. None: no cap.
    min_receptive_cells : float or None
        A trial whose receptive field spans fewer unit cells than this at the finest sampling of
        the condition's range (the widest cell of its specimens) is pruned before training: it
        cannot use the lattice's periodicity there. None: no rule.
    bench_per_bin : int
        A distillation search scores every student on the first this-many images of every bin of the
        condition's frozen benchmark (mean over bins), the teacher on the same slice.
    seed : int
        Seeds the trials' training (data seeds are fixed per search).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(4, ge=1, le=1000)
    steps_per_epoch: int = Field(40, ge=1)
    n_train: int = Field(32, ge=1)
    n_val: int = Field(8, ge=1)
    image_px: int | None = Field(128, ge=8)
    patch_px: int = Field(64, ge=8)
    batch_size: int = Field(8, ge=1)
    latency_image_px: int = Field(512, ge=16)
    max_flops_per_px: float | None = Field(None, gt=0)
    min_receptive_cells: float | None = Field(None, gt=0)
    bench_per_bin: int = Field(1, ge=1)
    seed: int = 0


#: A budget small enough for tests and smoke runs: seconds per trial on one CPU core.
TINY_BUDGET = SearchBudget(epochs=2, steps_per_epoch=3, n_train=4, n_val=2, image_px=48,
                           patch_px=32, batch_size=4, latency_image_px=64)

#: The main job's per-student budget: ~10 s per distilled student on 2 CPU cores (80 steps of 8 x 64 px
#: patches against the champion's output, scored on one benchmark image per bin and timed on 256 px).
#: A student is never bigger than the shipped base (the FLOP cap) and sees at least one unit cell at
#: the finest sampling (the rule admits the fast student tried first).
PIPELINE_BUDGET_FIELDS: dict = {"epochs": 2, "steps_per_epoch": 40, "n_train": 16, "n_val": 2, "image_px": 128,
                                "patch_px": 64, "batch_size": 8, "max_flops_per_px": 40_000,
                                "min_receptive_cells": 1.0, "bench_per_bin": 1, "latency_image_px": 256}
PIPELINE_BUDGET = SearchBudget(**PIPELINE_BUDGET_FIELDS)

#: Named search budgets (`stemreg tune` defaults to SearchBudget's own field defaults).
SEARCH_BUDGETS: dict[str, SearchBudget] = {"tiny": TINY_BUDGET, "pipeline": PIPELINE_BUDGET,
                                           "tune": SearchBudget(min_receptive_cells=2.0)}
