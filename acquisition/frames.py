"""A lab's own noisy frames: reading a series of one area, aligning its drift, reading single images.

For self-supervised training without any clean image (`stemreg train --mode
noise2noise --frames PATH`, `--mode blind-spot --images DIR`).

Drift between repeated scans of one area is estimated by masked normalised
cross-correlation (:func:`skimage.registration.phase_cross_correlation`) of
lightly smoothed frames against the first and undone by *whole-pixel* shifts, cropping every frame to the area
all frames share. Whole pixels on purpose: interpolating a sub-pixel shift
would mix neighbouring pixels' noise, so the network would train on smoother
noise than the raw frames it later denoises.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stemreg.acquisition.errors import ImageReadError
from stemreg.acquisition.io import READ_SUFFIXES, Calibration, read_image

__all__ = ["FrameSeries", "read_frames", "estimate_drift", "align_frames", "shared_area", "apply_shifts",
           "read_noisy_images"]


@dataclass
class FrameSeries:
    """Repeated noisy frames of one area, ``(N, H, W)`` float32, with what was done to them.

    Attributes
    ----------
    frames
        The (aligned, cropped) frames.
    calibration
        Pixel size of the first file read.
    sources
        The files read (one stack file, or one file per frame).
    shifts_px
        ``(N, 2)`` whole-pixel (row, col) shifts applied to align each frame to the first
        (zeros when not aligned).
    crop
        ``(row0, row1, col0, col1)`` of the shared area in the first frame's pixels.
    """

    frames: np.ndarray
    calibration: Calibration = field(default_factory=Calibration)
    sources: list[str] = field(default_factory=list)
    shifts_px: np.ndarray | None = None
    crop: tuple[int, int, int, int] | None = None


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in READ_SUFFIXES)


def _read_stack_or_folder(path: Path, what: str) -> tuple[np.ndarray | list[np.ndarray], Calibration, list[str]]:
    if path.is_dir():
        files = _image_files(path)
        if not files:
            raise ImageReadError(path, f"holds no image files; accepted suffixes: {', '.join(sorted(READ_SUFFIXES))}")
        images = [read_image(f) for f in files]
        return [im.data for im in images], images[0].calibration, [str(f) for f in files]
    image = read_image(path, allow_stack=True)
    if image.data.ndim != 3:
        raise ImageReadError(path, f"holds one 2-D image {image.data.shape}; {what} needs a stack (N, H, W) "
                                   "of frames or a folder of frames")
    return image.data, image.calibration, [str(path)]


def read_frames(path: str | Path, *, align: bool = True, min_frames: int = 2) -> FrameSeries:
    """Read repeated frames of one area (a stack file or a folder of frames) and align their drift.

    Parameters
    ----------
    path
        A stack file ``(N, H, W)`` (.tif, .npy, .emd, ...) or a folder of 2-D frames of the same
        size (read in name order).
    align
        Estimate and undo the drift (whole pixels), cropping to the shared area.
    min_frames
        Fewest frames accepted.

    Returns
    -------
    FrameSeries

    Raises
    ------
    ImageReadError
        Unreadable file, too few frames, frames of different sizes, or drift that leaves no
        shared area.
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(path, "no such file or folder")
    data, calibration, sources = _read_stack_or_folder(path, "noise2noise")
    shapes = sorted({tuple(a.shape) for a in data})
    if len(shapes) > 1:
        raise ImageReadError(path, f"frames differ in size {shapes}; repeated frames of one area share one size")
    frames = np.stack([np.asarray(a, np.float32) for a in data])
    if len(frames) < min_frames:
        raise ImageReadError(path, f"holds {len(frames)} frame(s); at least {min_frames} repeated frames "
                                   "of one area are needed")
    if not align:
        h, w = frames.shape[1:]
        return FrameSeries(frames, calibration, sources, np.zeros((len(frames), 2), int), (0, h, 0, w))
    shifts = estimate_drift(frames)
    try:
        aligned, crop = align_frames(frames, shifts)
    except ValueError as exc:
        raise ImageReadError(path, str(exc)) from None
    return FrameSeries(aligned, calibration, sources, shifts, crop)


def estimate_drift(frames: np.ndarray, *, smooth_px: float = 2.0, min_overlap: float = 0.5) -> np.ndarray:
    """Whole-pixel (row, col) shift that aligns each frame to the first.

    Masked normalised cross-correlation (Padfield 2012, through
    :func:`skimage.registration.phase_cross_correlation` with masks): the
    correlation is linear, normalised by the overlap of the two frames at each
    shift, so the frame edges that do not wrap around do not pull the peak as in
    a plain FFT correlation (which failed by several pixels on nanoparticle
    specimens in our tests).

    Parameters
    ----------
    frames
        ``(N, H, W)`` noisy frames of one area.
    smooth_px
        Gaussian smoothing before correlating (shot noise dominates single low-dose frames).
        2 px, near the width of an atomic column at the built-in pixel sizes, acts as a
        matched filter: on 96 px low-dose frames it found every shift of 8 test fields
        exactly, where 1 px was one pixel off on one field.
    min_overlap
        Shifts whose overlap is below this share of the frame are not considered.

    Returns
    -------
    numpy.ndarray
        ``(N, 2)`` int shifts; ``np.roll(frame_i, shift_i, axis=(0, 1))`` lines frame i up with
        frame 0; the first row is ``(0, 0)``.
    """
    from scipy.ndimage import gaussian_filter, median_filter
    from skimage.registration import phase_cross_correlation

    # The detector's line jumps (each line its own level) and defective pixels move with the scan,
    # not with the specimen, and pull the correlation towards zero shift: each line's median is
    # removed and a 3x3 median takes out single pixels (stemreg.acquisition.detector).
    steady = [median_filter(f - np.median(f, axis=1, keepdims=True), size=3) for f in np.asarray(frames, np.float64)]
    smooth = [gaussian_filter(f - f.mean(), smooth_px) if smooth_px > 0 else f - f.mean() for f in steady]
    everywhere = np.ones(smooth[0].shape, bool)
    shifts = [np.zeros(2)]
    for moving in smooth[1:]:
        shift = phase_cross_correlation(smooth[0], moving, reference_mask=everywhere, moving_mask=everywhere,
                                        overlap_ratio=min_overlap)[0]
        shifts.append(shift)
    return np.round(np.array(shifts)).astype(int)


def align_frames(frames: np.ndarray, shifts_px: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Apply whole-pixel shifts and crop every frame to the area all of them cover.

    Parameters
    ----------
    frames
        ``(N, H, W)``.
    shifts_px
        ``(N, 2)`` int (row, col) shifts from :func:`estimate_drift`.

    Returns
    -------
    aligned : numpy.ndarray
        ``(N, H', W')`` float32, no wrapped-around pixels.
    crop : tuple
        ``(row0, row1, col0, col1)`` of the shared area in the first frame's pixels.

    Raises
    ------
    ValueError
        The shifts leave less than 16 x 16 shared pixels.
    """
    crop = shared_area(frames.shape[1:], shifts_px)
    return apply_shifts(frames, shifts_px, crop), crop


def shared_area(frame_shape: tuple[int, ...], shifts_px: np.ndarray) -> tuple[int, int, int, int]:
    """``(row0, row1, col0, col1)``: the area of the first frame that every shifted frame covers.

    Raises
    ------
    ValueError
        The shifts leave less than 16 x 16 shared pixels.
    """
    h, w = int(frame_shape[-2]), int(frame_shape[-1])
    shifts = np.asarray(shifts_px, int)
    dy, dx = shifts[:, 0], shifts[:, 1]
    # frame i, shifted by (dy, dx), covers rows dy .. h + dy of the reference frame
    r0, r1 = max(0, int(dy.max())), min(h, h + int(dy.min()))
    c0, c1 = max(0, int(dx.max())), min(w, w + int(dx.min()))
    if r1 - r0 < 16 or c1 - c0 < 16:
        raise ValueError(f"the drift (up to {np.abs(shifts).max()} px) leaves {max(r1 - r0, 0)} x {max(c1 - c0, 0)} "
                         "px shared by all frames; at least 16 x 16 are needed (give frames that overlap)")
    return r0, r1, c0, c1


def apply_shifts(frames: np.ndarray, shifts_px: np.ndarray, crop: tuple[int, int, int, int]) -> np.ndarray:
    """Frames ``(k, H, W)`` shifted by their whole-pixel ``(k, 2)`` shifts and cut to ``crop``
    (:func:`shared_area` of the whole series), float32: any run of frames, aligned as in the whole."""
    r0, r1, c0, c1 = crop
    aligned = np.stack([f[r0 - sy:r1 - sy, c0 - sx:c1 - sx] for f, (sy, sx) in zip(frames, np.asarray(shifts_px, int))])
    return aligned.astype(np.float32)


def read_noisy_images(folder: str | Path) -> tuple[list[np.ndarray], Calibration, list[str]]:
    """Read single noisy images (one per file) from a folder, for blind-spot training.

    Returns
    -------
    images, calibration, sources
        float32 ``(H, W)`` arrays (sizes may differ), the first file's calibration, the files read.

    Raises
    ------
    ImageReadError
        Not a folder, no image files, or an unreadable or 3-D file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageReadError(folder, "is not a folder; give a folder of single noisy images "
                                     f"({', '.join(sorted(READ_SUFFIXES))})")
    files = _image_files(folder)
    if not files:
        raise ImageReadError(folder, f"holds no image files; accepted suffixes: {', '.join(sorted(READ_SUFFIXES))}")
    images = [read_image(f) for f in files]
    return [im.data for im in images], images[0].calibration, [str(f) for f in files]
