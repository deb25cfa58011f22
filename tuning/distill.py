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


def warm_start(student: "nn.Module", teacher: Teacher) -> bool:
    """Load the teacher's weights into a student of the same shape; returns whether it did."""
    from stemreg.models import architecture_of

    if architecture_of(student) != teacher.architecture:
        return False
    student.load_state_dict(teacher.model.state_dict())
    return True
