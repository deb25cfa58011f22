"""The hyper-parameters of one training run and what its data are (typed, unknown keys refused)."""
from __future__ import annotations

import enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class TrainingMode(str, enum.Enum):
    """What the training data are (see the module docstring)."""

    SUPERVISED = "supervised"
    NOISE2NOISE = "noise2noise"
    BLIND_SPOT = "blind-spot"


class TrainConfig(BaseModel):
    """Hyper-parameters of one training run (unknown keys refused)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: TrainingMode = TrainingMode.SUPERVISED
    # Defaults sized for 2 CPU cores: 320 steps of 8 patches of 48 px (~5 GFLOP each with the
    # default hourglass) train a condition in a few minutes; measured on low-dose (50 pA,
    # 1.4 us, bias 0.2), 6 such epochs took validation PSNR from 18.5 dB to 32.1 dB.
    epochs: int = Field(8, ge=1, description="passes of steps_per_epoch optimiser steps")
    steps_per_epoch: int = Field(40, ge=1)
    batch_size: int = Field(8, ge=1, description="patches per optimiser step")
    patch_px: int = Field(48, ge=8, description="edge of the square training patches, pixels")
    lr: float = Field(2e-3, gt=0, description="peak learning rate (after the warm-up)")
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    optimizer: Literal["adam", "adamw"] = Field("adamw", description="Adam, or AdamW with decoupled weight decay")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW's decoupled weight decay")
    warmup_fraction: float = Field(0.05, ge=0, lt=1, description="share of the steps the lr ramps up linearly")
    grad_clip: float = Field(1.0, ge=0, description="clip the gradients' global norm to this (0: no clipping)")
    loss: Literal["l2", "l1"] = "l2"
    augment: bool = Field(True, description="random flips and 90-degree rotations of each patch")
    seed: int = 0
    device: str = Field("auto", description="'auto' (CUDA when available), 'cpu', 'cuda', 'cuda:N'")
    blind_spot_fraction: float = Field(0.02, gt=0, le=0.25, description="share of pixels masked per patch")
    blind_spot_radius_px: int = Field(2, ge=1, le=8, description="neighbourhood a masked pixel borrows from")
    blind_spot_keep_residual: bool = Field(False, description="blind-spot: keep a residual net's skip (fine-tuning "
                                           "a residual base keeps its function; the net learns to discount the "
                                           "centre as N2V's does) instead of switching to direct output")
    blind_spot_struct_px: int = Field(0, ge=0, le=8, description="structN2V: also mask this many neighbours "
                                      "either side along x (the fast-scan axis, where a detector's bandwidth "
                                      "correlates the noise); 0: the plain Noise2Void blind spot")
    val_tile_px: int | None = Field(None, ge=48, description="tile edge of the validation inference "
                                    "(None: the inference default, whole images up to 1024 px)")
