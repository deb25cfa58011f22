"""Students of a teacher: what a distillation search trains on and how its trials are scored.

A trial of a distillation search is a student of the condition's champion (the teacher). It trains
on the condition's stream (fresh fields, scans, doses and noise over its whole range, see
:class:`~stemreg.acquisition.stream.FieldPool`) against the teacher's output and the clean target
together: with an L2 loss, ``|s - clean|^2 + |s - teacher|^2`` equals, up to a constant,
``2 |s - (clean + teacher) / 2|^2``, so the stream hands the sampler the blended target and the
ordinary training loop does the rest. The teacher's output carries what it learnt over an hour of
training; the student converges on it in a few hundred steps.

Trials are scored on a stratified slice of the condition's frozen benchmark (the first
``bench_per_bin`` images of every bin, mean over bins, as the registry scores a version on all of
them), so the front compares like with like: the teacher is scored on the same slice.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from torch import nn

    from stemreg.acquisition import Condition

#: Weight of the teacher's output in the blended target (the rest: the clean image).
TEACHER_WEIGHT = 0.5


@dataclass
class Teacher:
    """The model every student learns from.

    Attributes
    ----------
    model : torch.nn.Module
        The trained network (eval mode).
    architecture : dict
        Its canonical architecture (a student of the same shape starts from its weights).
    uri : str
        Where it came from (``models:/...`` or ``pretrained:low-dose-base``), tagged on the study.
    """

    model: "nn.Module"
    architecture: dict[str, Any]
    uri: str


class TeacherStream:
    """A condition's patch stream whose targets blend the clean image with the teacher's output.

    ``batch(batch_size, patch_px)`` returns ``(degraded, target)`` in the images' own units, as
    :class:`~stemreg.acquisition.stream.FieldPool` does, so :func:`stemreg.models.train` takes it
    as any stream. ``fork()`` gives every trial the same draws.
    """

    def __init__(self, pool: Any, teacher: "nn.Module", weight: float = TEACHER_WEIGHT) -> None:
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"teacher weight must be within 0..1 (got {weight})")
        self.pool, self.teacher, self.weight = pool, teacher, weight

    def fork(self) -> "TeacherStream":
        return TeacherStream(self.pool.fork(), self.teacher, self.weight)

    def batch(self, batch_size: int, patch_px: int) -> tuple[np.ndarray, np.ndarray]:
        from stemreg.models.inference import denoise_array

        degraded, clean = self.pool.batch(batch_size, patch_px)
        taught = denoise_array(self.teacher, degraded, batch_size=batch_size)
        target = (1.0 - self.weight) * clean + self.weight * taught
        return degraded, target.astype(np.float32)


@dataclass
class BenchSlice:
    """The first ``per_bin`` images of every bin of a condition's frozen benchmark."""

    degraded: np.ndarray
    clean: np.ndarray
    bins: list[str]

    @classmethod
    def of(cls, condition: "Condition", per_bin: int) -> "BenchSlice":
        bench = condition.benchmark_set()
        seen: dict[str, int] = {}
        keep = []
        for i, name in enumerate(bench.bins):
            if seen.get(name, 0) < per_bin:
                seen[name] = seen.get(name, 0) + 1
                keep.append(i)
        return cls(np.asarray(bench.degraded, dtype=np.float32)[keep],
                   np.asarray(bench.clean, dtype=np.float32)[keep], [bench.bins[i] for i in keep])

    def psnr(self, model: "nn.Module") -> float:
        """PSNR of ``model`` on the slice: the mean over bins of the bin means (dB)."""
        from stemreg.models.binned import mean_over_bins, per_bin
        from stemreg.models.inference import denoise_array
        from stemreg.models.metrics import psnr_batch

        denoised = np.stack([denoise_array(model, image) for image in self.degraded])
        return mean_over_bins(per_bin(psnr_batch(denoised, self.clean), self.bins))

    def noisy_psnr(self) -> float:
        """PSNR of the degraded images themselves (mean over bins, dB)."""
        from stemreg.models.binned import mean_over_bins, per_bin
        from stemreg.models.metrics import psnr_batch

        return mean_over_bins(per_bin(psnr_batch(self.degraded, self.clean), self.bins))


#: How a student's weights started from its teacher's (:func:`warm_start`).
WARM_COPY, WARM_PRUNED = "copy", "pruned"


def warm_start(student: "nn.Module", teacher: Teacher) -> str:
    """Start a student from its teacher's weights where its shape allows; returns how.

    ``"copy"``: the student has the teacher's shape and loads its weights (a copy of the champion,
    no faster). ``"pruned"``: the student is a narrower member of the teacher's topology (same
    levels, unshuffle, convolutions per level, dilation, kernel; every level's width at most the
    teacher's) and starts from a pruned copy (:func:`prune_into`). ``""``: neither, random init.
    """
    from stemreg.models import architecture_of

    if architecture_of(student) == teacher.architecture:
        student.load_state_dict(teacher.model.state_dict())
        return WARM_COPY
    if prunable(teacher.model, student):
        prune_into(student, teacher.model)
        return WARM_PRUNED
    return ""


def prunable(teacher: "nn.Module", student: "nn.Module") -> bool:
    """Whether ``student`` is a channel-pruned member of ``teacher``'s multi-scale topology."""
    from stemreg.models.hourglass import ScaledReverseHourglass

    if not (isinstance(teacher, ScaledReverseHourglass) and isinstance(student, ScaledReverseHourglass)):
        return False
    same = all(getattr(teacher, k) == getattr(student, k)
               for k in ("levels", "convs_per_level", "unshuffle", "dilation", "kernel_size", "residual"))
    return same and all(s <= t for s, t in zip(student.widths, teacher.widths))


def prune_into(student: "nn.Module", teacher: "nn.Module") -> list[list[int]]:
    """Copy into ``student`` the teacher's most important channels of every level (structured pruning).

    Level ``i`` keeps the ``student.widths[i]`` channels whose incoming filters have the largest
    summed L1 norm over every convolution that writes that level (head or down-sampling conv,
    the level's own convolutions, the transposed up-conv into it). One channel set per level
    keeps the additive skips consistent. Returns the kept channel indices per level.

    Raises
    ------
    ValueError
        If the student is not a pruned member of the teacher's topology (:func:`prunable`).
    """
    import torch

    if not prunable(teacher, student):
        raise ValueError("the student is not a channel-pruned member of the teacher's multi-scale topology")

    def convs(block):
        return [m for m in block if isinstance(m, torch.nn.Conv2d)]

    with torch.no_grad():
        keep = []
        for i, width in enumerate(student.widths):
            writers = [(c.weight, 0) for c in convs(teacher.down_blocks[i])]
            writers.append((teacher.head[0].weight, 0) if i == 0 else (teacher.downs[i - 1][0].weight, 0))
            if i < teacher.levels - 1:
                writers += [(c.weight, 0) for c in convs(teacher.up_blocks[i])]
                writers.append((teacher.ups[i].weight, 1))  # ConvTranspose2d: (in, out, k, k)
            score = sum(w.abs().transpose(0, axis).flatten(1).sum(1) for w, axis in writers)
            keep.append(sorted(torch.argsort(score, descending=True)[:width].tolist()))
        every = list(range(student.unshuffle ** 2))

        def copy(dst, src, rows, cols, transposed=False):
            weight = src.weight[cols][:, rows] if transposed else src.weight[rows][:, cols]
            dst.weight.copy_(weight)
            dst.bias.copy_(src.bias[rows])

        copy(student.head[0], teacher.head[0], keep[0], every)
        copy(student.tail, teacher.tail, every, keep[0])
        for i in range(student.levels):
            for dst, src in zip(convs(student.down_blocks[i]), convs(teacher.down_blocks[i])):
                copy(dst, src, keep[i], keep[i])
            if i < student.levels - 1:
                for dst, src in zip(convs(student.up_blocks[i]), convs(teacher.up_blocks[i])):
                    copy(dst, src, keep[i], keep[i])
                copy(student.downs[i][0], teacher.downs[i][0], keep[i + 1], keep[i])
                copy(student.ups[i], teacher.ups[i], keep[i], keep[i + 1], transposed=True)
    return keep
