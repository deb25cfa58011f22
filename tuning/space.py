"""The architecture search space: what one Optuna trial may choose.

Depth (number of conv layers), the width of the outer hidden layers, the
growth of the widths towards the middle (the "reverse hourglass"), the kernel
size and the learning rate. Widths are capped so that no trial can ask for a
network this CPU-only machine cannot train within a trial's budget.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stemreg.models.config import DEFAULT_SEARCH_PARAMS

if TYPE_CHECKING:
    import optuna
    from torch import nn

DEPTH_RANGE = (4, 10)
BASE_WIDTHS = (4, 8, 12, 16, 24)
GROWTH_RANGE = (1.0, 2.0)
GROWTH_STEP = 0.25
KERNEL_SIZES = (3, 5)
LR_RANGE = (1e-4, 3e-3)
#: No hidden layer wider than this: a 10-layer net of 128s is already ~1 MFLOP/px.
MAX_SEARCH_WIDTH = 96
#: The seed's 8-layer reverse hourglass (widths 8 -> 64 -> 8, 3x3) as a point of this space:
#: enqueued as a search's first trial, so a few-trial search always weighs the known default.
SEED_DEFAULT_PARAMS: dict[str, Any] = DEFAULT_SEARCH_PARAMS


def suggest_architecture(trial: "optuna.Trial") -> dict[str, Any]:
    """Draw a reverse-hourglass architecture dict (see docs/CONTRACTS.md) from the trial.

    Parameters
    ----------
    trial : optuna.Trial

    Returns
    -------
    dict
        ``{"kind": "reverse-hourglass", "depth", "widths", "kernel_size"}``,
        accepted by :func:`stemreg.models.build_model`.
    """
    from stemreg.models.hourglass import hourglass_widths

    depth = trial.suggest_int("depth", *DEPTH_RANGE)
    base_width = trial.suggest_categorical("base_width", list(BASE_WIDTHS))
    growth = trial.suggest_float("growth", *GROWTH_RANGE, step=GROWTH_STEP)
    kernel_size = trial.suggest_categorical("kernel_size", list(KERNEL_SIZES))
    widths = [min(MAX_SEARCH_WIDTH, w) for w in hourglass_widths(depth, base_width=base_width, growth=growth)]
    return {"kind": "reverse-hourglass", "depth": depth, "widths": widths, "kernel_size": kernel_size}


def suggest_lr(trial: "optuna.Trial") -> float:
    """Draw the learning rate (log-uniform)."""
    return trial.suggest_float("lr", *LR_RANGE, log=True)


def define_model(trial: "optuna.Trial") -> "nn.Module":
    """Build the untrained ReverseHourglass that the trial's parameters describe."""
    from stemreg.models import build_model

    return build_model(suggest_architecture(trial))


def flops_per_pixel(model: "nn.Module") -> float:
    """Forward floating-point operations per output pixel (see :func:`stemreg.models.flops_per_pixel`)."""
    from stemreg.models.flops import flops_per_pixel as models_flops  # torch: only when a trial builds a net

    return float(models_flops(model))
