"""The data of a search: every trial and every worker trains and validates on the same images.

Without lab targets the trials train on fixed simulated pairs of the condition. With a lab's
high-dose images as clean targets they train, as ``stemreg train --targets`` does, on a
:class:`~stemreg.acquisition.stream.FieldPool`: synthetic fields mixed with the lab's images at
``target_fraction`` of the patches, every patch degraded afresh under the condition. The pool is
built once per search and every trial trains on a fork of it, so all trials draw the same patches.
Validation is always on simulated pairs of the condition (the lab's images have no low-dose twin).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stemreg.models.config import off_benchmark
from stemreg.tuning.budget import SearchBudget

if TYPE_CHECKING:
    import numpy as np

    from stemreg.acquisition import Condition

#: Data seeds of a search: fixed, so every trial and every worker sees the same images.
TRAIN_SEED = 7_001
VAL_SEED = 7_002


def data_seeds(condition: "Condition") -> tuple[int, int]:
    """The search's training and validation seeds, never the condition's benchmark seed."""
    train_seed, val_seed = off_benchmark((TRAIN_SEED, VAL_SEED), getattr(condition, "benchmark_seed", None))
    return train_seed, val_seed


def search_data(condition: "Condition", budget: SearchBudget, *,
                targets: "list[tuple[np.ndarray, float | None, str]] | None" = None,
                target_fraction: float = 0.0, teacher: Any = None) -> tuple[Any, tuple["np.ndarray", "np.ndarray"]]:
    """The training data and the ``(degraded, clean)`` validation pairs of a search.

    Parameters
    ----------
    condition : Condition
    budget : SearchBudget
        ``n_train`` simulated images (or pool fields), ``n_val`` validation images of ``image_px``.
    targets : list of (image, pixel_size_pm or None, name), optional
        A lab's clean high-dose images (:func:`stemreg.acquisition.stream.load_targets`).
    target_fraction : float
        Share of training patches cut from ``targets``.
    teacher : stemreg.tuning.distill.Teacher, optional
        Students' data: a :class:`~stemreg.tuning.distill.TeacherStream` of fresh draws over the
        condition's range (``n_train`` fields of ``image_px``), the targets blended with the teacher's
        output (lab targets mixed in as without a teacher).

    Returns
    -------
    (train_data, (degraded, clean))
        ``train_data`` is ``(degraded, clean)`` arrays without targets, else a ``FieldPool``
        (hand each trial :func:`trial_data` of it).
    """
    train_seed, val_seed = data_seeds(condition)
    size_px = budget.image_px
    val = condition.sample_pairs(budget.n_val, size_px=size_px, seed=val_seed)
    if teacher is not None:
        from stemreg.acquisition.stream import FieldPool
        from stemreg.tuning.distill import TeacherStream

        pool = FieldPool(condition, n_fields=budget.n_train, size_px=size_px or condition.image_size_px,
                         seed=train_seed, targets=targets, target_fraction=target_fraction if targets else 0.0)
        return TeacherStream(pool, teacher.model), (val.degraded, val.clean)
    if targets:
        from stemreg.acquisition.stream import FieldPool

        pool = FieldPool(condition, n_fields=budget.n_train, size_px=size_px or condition.image_size_px,
                         seed=train_seed, targets=targets, target_fraction=target_fraction)
        return pool, (val.degraded, val.clean)
    train = condition.sample_pairs(budget.n_train, size_px=size_px, seed=train_seed)
    return (train.degraded, train.clean), (val.degraded, val.clean)


def trial_data(train_data: Any) -> Any:
    """What one trial trains on: a fork of a stream (every trial draws the same patches), arrays as given."""
    fork = getattr(train_data, "fork", None)
    return fork() if callable(fork) else train_data
