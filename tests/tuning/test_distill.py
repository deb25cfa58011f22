"""Distillation's parts, each checked against what it must do (no store, no search): the blended
target, that the teacher's output reaches the student's loss, and the pruned warm start."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from stemreg.acquisition import load_condition
from stemreg.acquisition.stream import FieldPool
from stemreg.models import TrainConfig, build_model, train
from stemreg.models.inference import denoise_array
from stemreg.tuning.distill import (WARM_COPY, WARM_PRUNED, Teacher, TeacherStream, prunable, prune_into,
                                    warm_start)

SMALL = {"kind": "reverse-hourglass", "levels": 2, "widths": [8, 16], "convs_per_level": 1, "unshuffle": 2,
         "dilation": 1, "kernel_size": 3}


class Mirror(nn.Module):
    """A 'teacher' far from any denoiser: it mirrors the normalised image (-x), so a student that
    learns from it ends up far from one that learns the clean image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -x


def _pool() -> FieldPool:
    return FieldPool(load_condition("low-dose"), n_fields=2, size_px=64, seed=5, refresh_per_batch=0)


def _random_teacher(arch: dict) -> nn.Module:
    torch.manual_seed(3)
    model = build_model(arch)
    nn.init.normal_(model.tail.weight, std=0.1)  # a correction well away from zero: outputs differ
    return model.eval()


def test_teacher_stream_target_is_the_blend_of_clean_and_the_teachers_output(one_torch_thread):
    pool = _pool()
    teacher = Mirror()
    degraded, clean = pool.fork().batch(4, 32)
    taught = denoise_array(teacher, degraded)
    d2, target = TeacherStream(pool.fork(), teacher, 0.25).batch(4, 32)
    np.testing.assert_array_equal(d2, degraded)  # the same draws as the plain stream
    np.testing.assert_allclose(target, 0.75 * clean + 0.25 * taught, rtol=1e-5, atol=1e-5)
    assert np.abs(target - clean).max() > 0.1  # the teacher's share is there, not lost on the way
    assert np.array_equal(TeacherStream(pool.fork(), teacher, 0.0).batch(4, 32)[1], clean)
    with pytest.raises(ValueError, match="teacher weight must be within 0..1"):
        TeacherStream(pool, teacher, 1.5)


def test_the_teachers_output_reaches_the_students_loss(one_torch_thread):
    """The check the equal-PSNR benchmark lacked: two students from the same weights and draws, one
    taught by the clean image only and one by the teacher only, must end apart, each nearer its own
    target (a teacher target dropped on the way, or one model trained twice, fails here)."""
    config = TrainConfig(epochs=1, steps_per_epoch=30, batch_size=4, patch_px=32, lr=1e-2, seed=0)
    pool, teacher = _pool(), Mirror()
    students = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        stream = TeacherStream(pool.fork(), teacher, weight) if weight else pool.fork()
        students[weight] = train(build_model(SMALL), config, train_data=stream, val_data=None, progress=False).model
    degraded, clean = _pool().batch(4, 32)
    mirrored = denoise_array(teacher, degraded)

    def error(model, target):
        return float(np.mean((denoise_array(model, degraded) - target) ** 2))

    assert error(students[1.0], mirrored) < 0.5 * error(students[0.0], mirrored)
    assert error(students[0.0], clean) < 0.5 * error(students[1.0], clean)


def test_a_pruned_copy_keeps_the_teachers_live_channels_exactly(one_torch_thread):
    """Channels whose incoming filters are all zero carry nothing: pruning them away must leave the
    network's output unchanged, which checks every index mapping (head, levels, down, transposed up, tail)."""
    arch = {**SMALL, "widths": [8, 16], "convs_per_level": 2}
    teacher = _random_teacher(arch)
    dead = {0: [1, 4, 6, 7], 1: list(range(8, 16))}
    with torch.no_grad():
        for level, channels in dead.items():
            writers = [m for m in teacher.down_blocks[level] if isinstance(m, nn.Conv2d)]
            writers.append(teacher.head[0] if level == 0 else teacher.downs[level - 1][0])
            if level == 0:
                writers += [m for m in teacher.up_blocks[0] if isinstance(m, nn.Conv2d)]
                teacher.ups[0].weight[:, channels] = 0
                teacher.ups[0].bias[channels] = 0
            for conv in writers:
                conv.weight[channels] = 0
                conv.bias[channels] = 0
    student = build_model({**arch, "widths": [4, 8]})
    assert prunable(teacher, student)
    keep = prune_into(student, teacher)
    assert keep == [[0, 2, 3, 5], list(range(8))]
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(student(x), teacher(x), rtol=1e-5, atol=1e-6)


def test_warm_start_copies_prunes_or_leaves_the_student(one_torch_thread):
    teacher_model = _random_teacher(SMALL)
    teacher = Teacher(teacher_model, teacher_model.config(), "test:teacher")
    same = build_model(SMALL)
    assert warm_start(same, teacher) == WARM_COPY
    narrow = build_model({**SMALL, "widths": [4, 8]})
    assert warm_start(narrow, teacher) == WARM_PRUNED
    torch.testing.assert_close(narrow.tail.weight, teacher_model.tail.weight[:, [int(i) for i in
                                                                                 prune_into(narrow, teacher_model)[0]]])
    for other in ({**SMALL, "unshuffle": 4}, {**SMALL, "widths": [8, 32]}):
        student = build_model(other)
        before = {k: v.clone() for k, v in student.state_dict().items()}
        assert warm_start(student, teacher) == ""
        assert all(torch.equal(before[k], v) for k, v in student.state_dict().items())
    with pytest.raises(ValueError, match="not a channel-pruned member"):
        prune_into(build_model({**SMALL, "unshuffle": 4}), teacher_model)
