"""Drift between repeated low-dose frames of one area is found and undone to the pixel."""
from __future__ import annotations

import numpy as np
import pytest

from stemreg.acquisition import get_condition
from stemreg.acquisition.frames import align_frames, estimate_drift, read_frames
from stemreg.acquisition.io import write_image

#: How far the specimen's image moves in each frame (rows, cols); the shift that undoes it is the negative.
DRIFT_PX = np.array([[0, 0], [3, -5], [-7, 2], [6, 9]])


def _drifting_frames(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Four noisy frames cut from one larger field at known offsets; also the field's clean crop of frame 0."""
    batch = get_condition("low-dose").sample_pairs(1, size_px=128, seed=seed)
    repeats = batch.repeats(len(DRIFT_PX), seed=seed)[0]          # (k, 128, 128), fresh noise each
    margin = 12
    frames = np.stack([rep[margin - dy:margin - dy + 96, margin - dx:margin - dx + 96]
                       for rep, (dy, dx) in zip(repeats, DRIFT_PX)])
    return frames, batch.clean[0, margin:margin + 96, margin:margin + 96]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_estimated_drift_is_the_applied_shift(seed):
    frames, _ = _drifting_frames(seed)
    np.testing.assert_array_equal(estimate_drift(frames), -DRIFT_PX)


def test_aligned_frames_line_up_and_average_towards_the_clean_field():
    frames, clean = _drifting_frames(0)
    aligned, (r0, r1, c0, c1) = align_frames(frames, estimate_drift(frames))
    assert aligned.shape == (4, r1 - r0, c1 - c0) and aligned.shape[1:] == (96 - 13, 96 - 14)
    target = clean[r0:r1, c0:c1]
    one = np.corrcoef(aligned[0].ravel(), target.ravel())[0, 1]
    mean = np.corrcoef(aligned.mean(0).ravel(), target.ravel())[0, 1]
    misaligned = np.corrcoef(frames[:, r0:r1, c0:c1].mean(0).ravel(), target.ravel())[0, 1]
    # the aligned average is closer to the clean field than one frame or the average of the drifted frames
    assert mean > max(one, misaligned)


def test_read_frames_from_a_folder_aligns_them(tmp_path):
    frames, _ = _drifting_frames(1)
    for i, frame in enumerate(frames):
        write_image(tmp_path / f"frame_{i:02d}.tif", frame)
    series = read_frames(tmp_path)
    np.testing.assert_array_equal(series.shifts_px, -DRIFT_PX)
    assert series.frames.shape[0] == len(DRIFT_PX) and len(series.sources) == len(DRIFT_PX)


def test_frames_that_do_not_overlap_are_refused():
    frames = np.random.default_rng(0).random((2, 32, 32)).astype(np.float32)
    with pytest.raises(ValueError, match="at least 16 x 16"):
        align_frames(frames, np.array([[0, 0], [20, 0]]))
