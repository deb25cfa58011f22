"""Atom-column metrics: what a microscopist reads off a denoised image.

Find the intensity peaks of an image (the atomic columns), refine them to
sub-pixel positions, match them one-to-one to the simulated column positions
within a distance tolerance, and report precision, recall, F1 and the mean
position error of the matched columns in picometres.

Columns closer to the image edge than ``margin_px`` are left out on both
sides (detected and true), since a peak cut by the border cannot be located.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["ColumnScore", "detect_columns", "match_columns", "score_detections", "score_columns",
           "visible_columns",
           "column_spacing_px"]


@dataclass(frozen=True)
class ColumnScore:
    """Column detection figures for one image.

    Attributes
    ----------
    precision, recall, f1
        Matched / detected, matched / true, and their harmonic mean (1.0 when
        both sets are empty).
    position_error_pm
        Mean distance of matched pairs in pm (NaN when nothing matched).
    n_true, n_detected, n_matched
        Counts after the edge margin.
    """

    precision: float
    recall: float
    f1: float
    position_error_pm: float
    n_true: int
    n_detected: int
    n_matched: int

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def column_spacing_px(columns: np.ndarray) -> float:
    """Median nearest-neighbour distance between columns, in pixels (inf for < 2 columns)."""
    from scipy.spatial import cKDTree

    columns = np.asarray(columns, float).reshape(-1, 2)
    if len(columns) < 2:
        return float("inf")
    dist, _ = cKDTree(columns).query(columns, k=2)
    return float(np.median(dist[:, 1]))


def _refine(response: np.ndarray, peaks: np.ndarray) -> np.ndarray:
    """Sub-pixel peak positions from the 3 x 3 neighbourhood of each peak.

    Along each axis a Gaussian through the three values (a parabola through
    their logarithms) gives the offset; it is exact for Gaussian columns and
    local, so neither neighbours nor a background slope pull it. Where a value
    is not positive, a parabola through the values themselves is used.
    """
    h, w = response.shape
    refined = peaks.astype(float)
    for i, (r, c) in enumerate(peaks):
        for axis, (pos, size) in enumerate(((r, h), (c, w))):
            if pos <= 0 or pos >= size - 1:
                continue
            if axis == 0:
                left, mid, right = response[r - 1, c], response[r, c], response[r + 1, c]
            else:
                left, mid, right = response[r, c - 1], response[r, c], response[r, c + 1]
            if min(left, mid, right) > 0:
                left, mid, right = np.log(left), np.log(mid), np.log(right)
            curvature = left - 2 * mid + right
            if curvature < 0:
                refined[i, axis] += float(np.clip(0.5 * (left - right) / curvature, -0.5, 0.5))
    return refined


def detect_columns(image: np.ndarray, *, spacing_px: float, threshold_rel: float = 0.2,
                   smooth_px: float | None = None) -> np.ndarray:
    """Find atomic columns as local intensity maxima.

    Parameters
    ----------
    image
        ``(H, W)`` image (any units).
    spacing_px
        Expected distance between neighbouring columns; sets the minimum peak
        distance (0.5 x) and the centroid window.
    threshold_rel
        Peaks of the band-passed image (see :func:`column_response`) must
        reach this fraction of its 99.5th percentile.
    smooth_px
        Gaussian pre-smoothing sigma; default ``spacing_px / 10`` (suppresses
        single-pixel noise peaks, much narrower than a column).

    Returns
    -------
    numpy.ndarray
        ``(K, 2)`` sub-pixel positions ``(row, col)``.
    """
    from skimage.feature import peak_local_max

    image = np.asarray(image, float)
    if image.ndim != 2:
        raise ValueError(f"detect_columns expects one (H, W) image, got shape {image.shape}")
    if not np.isfinite(spacing_px) or spacing_px <= 0:
        spacing_px = min(image.shape) / 4
    response = column_response(image, spacing_px=spacing_px, smooth_px=smooth_px)
    min_distance = max(1, int(round(0.5 * spacing_px)))
    peaks = peak_local_max(response, min_distance=min_distance, threshold_abs=_threshold(response, threshold_rel),
                           exclude_border=False)
    if len(peaks) == 0:
        return np.zeros((0, 2))
    return _refine(response, peaks)


def column_response(image: np.ndarray, *, spacing_px: float, smooth_px: float | None = None) -> np.ndarray:
    """Band-pass (difference of Gaussians) at the column scale.

    Columns are sharp peaks about a spacing apart; an amorphous support or a
    thickness gradient varies more slowly. Subtracting a Gaussian of a third
    of the spacing removes the slow part, so a bright support between
    particles does not pass for a column.
    """
    from scipy.ndimage import gaussian_filter

    image = np.asarray(image, float)
    fine = spacing_px / 10 if smooth_px is None else smooth_px
    fine_img = gaussian_filter(image, fine) if fine > 0 else image
    return fine_img - gaussian_filter(image, max(spacing_px / 3, 1.0))


def _threshold(response: np.ndarray, threshold_rel: float) -> float:
    # relative to the strongest columns (99.5th percentile: robust to a few hot pixels)
    return threshold_rel * float(np.percentile(response, 99.5))


def match_columns(detected: np.ndarray, true: np.ndarray, *, tolerance_px: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching (Hungarian, minimum total distance) within ``tolerance_px``.

    Returns
    -------
    (detected_index, true_index)
        Index arrays of the matched pairs.
    """
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    detected = np.asarray(detected, float).reshape(-1, 2)
    true = np.asarray(true, float).reshape(-1, 2)
    if len(detected) == 0 or len(true) == 0:
        return np.zeros(0, int), np.zeros(0, int)
    dist = cdist(detected, true)
    # pairs beyond the tolerance get a cost no real match can reach, then are dropped
    cost = np.where(dist <= tolerance_px, dist, 1e6)
    rows, cols = linear_sum_assignment(cost)
    keep = dist[rows, cols] <= tolerance_px
    return rows[keep], cols[keep]


def _inside(points: np.ndarray, shape: tuple[int, int], margin_px: float) -> np.ndarray:
    points = np.asarray(points, float).reshape(-1, 2)
    return ((points[:, 0] >= margin_px) & (points[:, 0] <= shape[0] - 1 - margin_px)
            & (points[:, 1] >= margin_px) & (points[:, 1] <= shape[1] - 1 - margin_px))


def score_detections(detected: np.ndarray, true_columns: np.ndarray, *, image_shape: tuple[int, int],
                     pixel_size_pm: float, tolerance_px: float | None = None,
                     margin_px: float | None = None) -> ColumnScore:
    """Score detected column positions against the true (simulated) ones.

    Parameters
    ----------
    detected
        ``(K, 2)`` detected positions ``(row, col)`` in pixels.
    true_columns
        ``(M, 2)`` true positions ``(row, col)`` in pixels.
    image_shape
        ``(H, W)`` of the image, for the edge margin.
    pixel_size_pm
        Pixel size, to express the position error in pm.
    tolerance_px
        Matching distance; default a third of the column spacing.
    margin_px
        Edge margin; default a quarter of the column spacing (at least 2 px).

    Returns
    -------
    ColumnScore
    """
    true_columns = np.asarray(true_columns, float).reshape(-1, 2)
    detected = np.asarray(detected, float).reshape(-1, 2)
    shape = tuple(image_shape)
    spacing = column_spacing_px(true_columns)
    finite_spacing = spacing if np.isfinite(spacing) else min(shape) / 4
    tolerance_px = finite_spacing / 3 if tolerance_px is None else tolerance_px
    margin_px = max(2.0, finite_spacing / 4) if margin_px is None else margin_px
    true_in = true_columns[_inside(true_columns, shape, margin_px)]
    det_in = detected[_inside(detected, shape, margin_px)]
    d_idx, t_idx = match_columns(det_in, true_in, tolerance_px=tolerance_px)
    n_matched, n_true, n_det = len(d_idx), len(true_in), len(det_in)
    precision = n_matched / n_det if n_det else (1.0 if n_true == 0 else 0.0)
    recall = n_matched / n_true if n_true else (1.0 if n_det == 0 else 0.0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    if n_matched:
        error_px = np.linalg.norm(det_in[d_idx] - true_in[t_idx], axis=1).mean()
        error_pm = float(error_px * pixel_size_pm)
    else:
        error_pm = float("nan")
    return ColumnScore(precision=float(precision), recall=float(recall), f1=float(f1),
                       position_error_pm=error_pm, n_true=n_true, n_detected=n_det, n_matched=n_matched)


def visible_columns(true_columns: np.ndarray, clean: np.ndarray, *, threshold_rel: float = 0.2) -> np.ndarray:
    """The true columns bright enough to be detected in the clean target.

    Light columns (oxygen next to strontium, say: Z^1.7 contrast makes them a
    few percent of the brightest) are invisible to HAADF at any dose; scoring
    against them would penalise every method alike. A column counts as
    visible when the smoothed clean image at its position clears the same
    threshold :func:`detect_columns` uses.
    """
    from scipy.ndimage import map_coordinates

    true_columns = np.asarray(true_columns, float).reshape(-1, 2)
    if len(true_columns) == 0:
        return true_columns
    spacing = column_spacing_px(true_columns)
    if not np.isfinite(spacing):
        spacing = min(np.shape(clean)) / 4
    response = column_response(clean, spacing_px=spacing)
    values = map_coordinates(response, true_columns.T, order=1, mode="nearest")
    return true_columns[values >= _threshold(response, threshold_rel)]


def _dark_columns(clean: np.ndarray, true_columns: np.ndarray) -> bool:
    """Whether the columns are darker than the image's median (bright-field contrast)."""
    from scipy.ndimage import map_coordinates

    if len(true_columns) == 0:
        return False
    values = map_coordinates(np.asarray(clean, float), true_columns.T, order=1, mode="nearest")
    return bool(np.median(values) < np.median(clean))


def score_columns(image: np.ndarray, true_columns: np.ndarray, *, pixel_size_pm: float,
                  clean: np.ndarray | None = None, tolerance_px: float | None = None,
                  margin_px: float | None = None, threshold_rel: float = 0.2) -> ColumnScore:
    """Detect the columns of an ``(H, W)`` image and score them against the true positions.

    Parameters
    ----------
    image
        The (denoised) image.
    true_columns
        ``(M, 2)`` simulated column positions ``(row, col)`` in pixels.
    pixel_size_pm
        Pixel size, for the position error in pm.
    clean
        The clean target; when given, only the columns visible in it count
        (see :func:`visible_columns`).
    tolerance_px, margin_px
        See :func:`score_detections`.
    threshold_rel
        See :func:`detect_columns`.

    Returns
    -------
    ColumnScore
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"score_columns expects one (H, W) image, got shape {image.shape}")
    true_columns = np.asarray(true_columns, float).reshape(-1, 2)
    spacing = column_spacing_px(true_columns)
    if clean is not None and _dark_columns(clean, true_columns):
        # bright field: columns are minima; find them as the maxima of the negative
        image, clean = -image, -np.asarray(clean)
    if clean is not None:
        true_columns = visible_columns(true_columns, clean, threshold_rel=threshold_rel)
    detected = detect_columns(image, spacing_px=spacing, threshold_rel=threshold_rel)
    if tolerance_px is None and np.isfinite(spacing):
        tolerance_px = spacing / 3  # from all columns: the visible subset may be sparser
    if margin_px is None and np.isfinite(spacing):
        margin_px = max(2.0, spacing / 4)
    return score_detections(detected, true_columns, image_shape=image.shape, pixel_size_pm=pixel_size_pm,
                            tolerance_px=tolerance_px, margin_px=margin_px)
