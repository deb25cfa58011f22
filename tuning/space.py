"""The architecture search space: what one Optuna trial may choose.

One reverse-hourglass family, filters growing towards the middle. ``levels``
picks the member: 1 is the seed's plain full-resolution net (depth, width of
the outer hidden layers, growth of the widths towards the middle); 2 to 4 the
multi-scale net (space-to-depth input by ``unshuffle``, ``levels`` resolution
levels whose widths grow by ``growth`` as the resolution halves, additive
skips, ``convs_per_level``, a dilated deepest level). Kernel size and learning
rate for both. Widths are capped so that no trial can ask for a network this
CPU-only machine cannot train within a trial's budget.
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
LEVELS = (1, 2, 3, 4)
UNSHUFFLES = (1, 2, 4)
CONVS_PER_LEVEL = (1, 2, 3)
DILATIONS = (1, 2)
#: The multi-scale member's deepest (widest) level at most; 128 makes the shipped base's shape
#: (widths 24-48-96-128) a point of the space (:data:`BASE_SHAPE_PARAMS`).
MAX_LEVEL_WIDTH = 128
#: The seed's 8-layer reverse hourglass (widths 8 -> 64 -> 8, 3x3) as a point of this space:
#: enqueued as a search's first trial, so a few-trial search always weighs the known default.
SEED_DEFAULT_PARAMS: dict[str, Any] = DEFAULT_SEARCH_PARAMS
#: The shipped pretrained base's shape (``ArchitectureName.MULTISCALE``) as a point of this space: its
#: receptive field spans two unit cells at the finest sampling of every built-in condition, so a search
#: under the receptive-field rule enqueues it first (the seed's 17-px net is pruned by that rule).
BASE_SHAPE_PARAMS: dict[str, Any] = {"levels": 4, "base_width": 12, "growth": 2.0, "kernel_size": 3,
                                     "unshuffle": 2, "convs_per_level": 2, "dilation": 1, "lr": 1e-3}
#: A student ~3x faster than the base (3 levels after an unshuffle by 4, widths 32-64-128, ~14 kFLOP/px)
#: whose receptive field still spans two unit cells at the finest sampling: a distillation search tries
#: it first, so even a one-trial search weighs a fast student that the receptive-field rule admits.
FAST_STUDENT_PARAMS: dict[str, Any] = {"levels": 3, "base_width": 8, "growth": 2.0, "kernel_size": 3,
                                       "unshuffle": 4, "convs_per_level": 2, "dilation": 1, "lr": 2e-3}
#: The parameters of each member: the plain net (levels 1) and the multi-scale one.
PLAIN_KEYS = ("levels", "depth", "base_width", "growth", "kernel_size", "lr")
SCALED_KEYS = ("levels", "base_width", "growth", "kernel_size", "unshuffle", "convs_per_level", "dilation", "lr")


def suggest_architecture(trial: "optuna.Trial") -> dict[str, Any]:
    """Draw a reverse-hourglass architecture dict (see docs/CONTRACTS.md) from the trial.

    Parameters
    ----------
    trial : optuna.Trial

    Returns
    -------
    dict
        ``{"kind": "reverse-hourglass", "depth", "widths", "kernel_size"}`` (plain) or
        ``{"kind": "reverse-hourglass", "levels", "widths", "convs_per_level", "unshuffle",
        "dilation", "kernel_size"}`` (multi-scale), accepted by :func:`stemreg.models.build_model`.
    """
    from stemreg.models.hourglass import hourglass_widths

    levels = trial.suggest_categorical("levels", list(LEVELS))
    base_width = trial.suggest_categorical("base_width", list(BASE_WIDTHS))
    growth = trial.suggest_float("growth", *GROWTH_RANGE, step=GROWTH_STEP)
    kernel_size = trial.suggest_categorical("kernel_size", list(KERNEL_SIZES))
    if levels == 1:
        depth = trial.suggest_int("depth", *DEPTH_RANGE)
        widths = [min(MAX_SEARCH_WIDTH, w) for w in hourglass_widths(depth, base_width=base_width, growth=growth)]
        return {"kind": "reverse-hourglass", "depth": depth, "widths": widths, "kernel_size": kernel_size}
    unshuffle = trial.suggest_categorical("unshuffle", list(UNSHUFFLES))
    convs = trial.suggest_categorical("convs_per_level", list(CONVS_PER_LEVEL))
    dilation = trial.suggest_categorical("dilation", list(DILATIONS))
    widths = [min(MAX_LEVEL_WIDTH, int(round(base_width * unshuffle * growth ** i))) for i in range(levels)]
    return {"kind": "reverse-hourglass", "levels": levels, "widths": widths, "convs_per_level": convs,
            "unshuffle": unshuffle, "dilation": dilation, "kernel_size": kernel_size}


def cell_spacing_px(condition: Any) -> float:
    """The widest unit cell of the condition's specimens at the finest sampling of its range, in px."""
    from stemreg.acquisition.specimens import family_spacing_pm

    finest = condition.pixel_size_range_pm()[0]
    return max(family_spacing_pm(f) for f in condition.specimens) / finest


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


def space_params(params: dict[str, Any]) -> dict[str, Any]:
    """Parameters to enqueue, typed as the search space suggests them (else Optuna re-queues duplicates).

    A plain point (``levels`` 1 or absent) holds exactly :data:`PLAIN_KEYS`, a multi-scale one
    (``levels`` > 1) exactly :data:`SCALED_KEYS`.
    """
    params = {"levels": 1, **params}  # a point without `levels` is the plain net (as before the family grew)
    keys = PLAIN_KEYS if int(params["levels"]) == 1 else SCALED_KEYS
    missing, extra = set(keys) - set(params), set(params) - set(keys)
    if missing or extra:
        raise ValueError(f"enqueued parameters must be exactly {sorted(keys)} for levels={params['levels']} "
                         f"(missing {sorted(missing)}, unknown {sorted(extra)})")
    floats = {"growth", "lr"}
    return {k: (float(params[k]) if k in floats else int(params[k])) for k in keys}


def architecture_of_params(params: dict[str, Any]) -> dict[str, Any]:
    """The architecture dict a point of the space builds (``lr`` ignored)."""
    import optuna

    return suggest_architecture(optuna.trial.FixedTrial({k: v for k, v in space_params(params).items()}))


def receptive_field_px(arch: dict[str, Any]) -> int:
    """Edge of the square of input pixels that can influence one output pixel."""
    from stemreg.models import build_model

    return 2 * int(build_model(arch).receptive_radius_px) + 1


def rule_admits(arch: dict[str, Any], condition: Any, min_receptive_cells: float | None) -> bool:
    """Whether the receptive-field rule of a budget lets ``arch`` train for ``condition``."""
    return not min_receptive_cells or receptive_field_px(arch) >= min_receptive_cells * cell_spacing_px(condition)


def first_point(condition: Any, min_receptive_cells: float | None) -> dict[str, Any]:
    """The point a search tries first: the seed's default when the rule admits it, else the base's shape.

    The two agree with the rule by construction: a search always holds at least one trial that
    trains, however few trials it is given.
    """
    if rule_admits(architecture_of_params(SEED_DEFAULT_PARAMS), condition, min_receptive_cells):
        return dict(SEED_DEFAULT_PARAMS)
    return dict(BASE_SHAPE_PARAMS)


def params_of_architecture(arch: dict[str, Any], lr: float) -> dict[str, Any] | None:
    """The point of the space that builds ``arch`` (with learning rate ``lr``), or None when it is none."""
    widths = list(arch.get("widths") or [])
    if len(widths) < 2 or arch.get("kind", "reverse-hourglass") != "reverse-hourglass":
        return None
    growth = widths[1] / widths[0]
    if arch.get("levels", 1) == 1 and arch.get("unshuffle", 1) == 1:
        params = {"levels": 1, "depth": arch.get("depth", len(widths) + 1), "base_width": widths[0],
                  "growth": growth, "kernel_size": arch.get("kernel_size", 3), "lr": lr}
    else:
        unshuffle = arch.get("unshuffle", 1)
        params = {"levels": len(widths), "base_width": widths[0] // unshuffle, "growth": growth,
                  "kernel_size": arch.get("kernel_size", 3), "unshuffle": unshuffle,
                  "convs_per_level": arch.get("convs_per_level", 2), "dilation": arch.get("dilation", 1), "lr": lr}
    on_grid = (params["base_width"] in BASE_WIDTHS and params["kernel_size"] in KERNEL_SIZES
               and GROWTH_RANGE[0] <= growth <= GROWTH_RANGE[1] and (growth / GROWTH_STEP).is_integer()
               and (params["levels"] in LEVELS) and DEPTH_RANGE[0] <= params.get("depth", DEPTH_RANGE[0]) <= DEPTH_RANGE[1]
               and params.get("unshuffle", 1) in UNSHUFFLES and params.get("convs_per_level", 1) in CONVS_PER_LEVEL
               and params.get("dilation", 1) in DILATIONS)
    if not on_grid:
        return None
    try:
        built = architecture_of_params(params)
    except (ValueError, KeyError):
        return None
    same = {k: v for k, v in arch.items() if k != "residual"} == built
    return space_params(params) if same else None


def pruned_point(teacher_architecture: dict[str, Any] | None) -> dict[str, Any] | None:
    """The narrowest point of the space in the teacher's own topology (its widths cut to the smallest
    base width), which starts from a pruned copy of the teacher (``tuning.distill.prune_into``);
    None when the teacher's shape is no multi-scale point of the space or is that narrow already."""
    params = params_of_architecture(teacher_architecture, lr=2e-3) if teacher_architecture else None
    if params is None or params["levels"] == 1 or params["base_width"] <= BASE_WIDTHS[0]:
        return None
    narrow = {**params, "base_width": BASE_WIDTHS[0]}
    widths = architecture_of_params(narrow)["widths"]
    return narrow if all(s <= t for s, t in zip(widths, teacher_architecture["widths"])) else None


def distill_points(condition: Any, min_receptive_cells: float | None,
                   teacher_architecture: dict[str, Any] | None, *, copy: bool = True) -> list[dict[str, Any]]:
    """What a distillation search tries first: the fast student the rule admits, then (``copy``) the
    teacher's own shape when it is a point of the space (a warm start from the teacher's weights),
    then the teacher's topology at the narrowest widths (a warm start from a pruned copy of them)."""
    points = [dict(FAST_STUDENT_PARAMS)] if rule_admits(architecture_of_params(FAST_STUDENT_PARAMS), condition,
                                                         min_receptive_cells) else [first_point(condition,
                                                                                                min_receptive_cells)]
    admitted = bool(teacher_architecture) and rule_admits(teacher_architecture, condition, min_receptive_cells)
    teacher = params_of_architecture(teacher_architecture, lr=2e-4) if admitted else None
    if teacher is not None and copy:
        points.append(teacher)
    pruned = pruned_point(teacher_architecture) if admitted else None
    if pruned is not None and pruned not in points:
        points.append(pruned)
    return points


def describe_architecture(arch: dict[str, Any]) -> str:
    """One line for any member of the family (plain or multi-scale), e.g. for a summary."""
    widths = "-".join(str(w) for w in arch.get("widths", []))
    kernel = arch.get("kernel_size", 3)
    if arch.get("levels", 1) == 1 and arch.get("unshuffle", 1) == 1 and "depth" in arch:
        return f"plain depth {arch['depth']}, widths {widths}, kernel {kernel}"
    return (f"{arch.get('levels', len(arch.get('widths', [])))} levels, widths {widths}, "
            f"{arch.get('convs_per_level', 2)} conv/level, unshuffle {arch.get('unshuffle', 1)}, "
            f"dilation {arch.get('dilation', 1)}, kernel {kernel}")
