"""Training patches: from fixed arrays (every mode) or a stream of fresh pairs (supervised), augmented,
normalised as whole images are at inference; and the blind-spot masking of Noise2Void."""
from __future__ import annotations

from typing import Any

import numpy as np

from stemreg.models.inference import apply_stats, normalise
from stemreg.models.train_config import TrainConfig, TrainingMode


def as_stack(a: Any, what: str) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float32)
    if arr.ndim != 3 or arr.size == 0:
        raise ValueError(f"{what} must be a non-empty (N, H, W) stack; got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} holds NaN or Inf values")
    return arr


def prepare_training_arrays(mode: TrainingMode, train_data: Any) -> tuple[np.ndarray, np.ndarray]:
    """Normalised (inputs, targets), both ``(M, H, W)`` float32, for a training mode.

    Inputs are normalised per image; each target uses its input's stats.
    For blind-spot the targets are the inputs themselves (masking happens per batch).
    """
    mode = TrainingMode(mode)
    if mode is TrainingMode.SUPERVISED:
        if not (isinstance(train_data, (tuple, list)) and len(train_data) == 2):
            raise ValueError("supervised training takes train_data = (degraded (N,H,W), clean (N,H,W))")
        degraded = as_stack(train_data[0], "degraded training images")
        clean = as_stack(train_data[1], "clean training images")
        if degraded.shape != clean.shape:
            raise ValueError(f"degraded {degraded.shape} and clean {clean.shape} training stacks differ in shape")
        inputs, stats = normalise(degraded)
        return inputs, apply_stats(clean, stats)
    if isinstance(train_data, (tuple, list)):
        raise ValueError(
            f"{mode.value} training takes one array "
            f"({'repeats (N, k, H, W)' if mode is TrainingMode.NOISE2NOISE else 'noisy images (N, H, W)'}), "
            "not a tuple: it never uses a clean image")
    if mode is TrainingMode.NOISE2NOISE:
        repeats = np.asarray(train_data, dtype=np.float32)
        if repeats.ndim != 4 or repeats.shape[1] < 2 or repeats.size == 0:
            raise ValueError("noise2noise training takes repeats (N, k, H, W) with k >= 2 noisy frames "
                             f"of each field; got shape {repeats.shape}")
        if not np.all(np.isfinite(repeats)):
            raise ValueError("noise2noise repeats hold NaN or Inf values")
        n, k, h, w = repeats.shape
        total = repeats.sum(axis=1, keepdims=True, dtype=np.float64)
        # Each repeat's target: the mean of the other k-1 repeats (independent noise, same field).
        others = ((total - repeats) / (k - 1)).astype(np.float32)
        inputs, stats = normalise(repeats.reshape(n * k, h, w))
        return inputs, apply_stats(others.reshape(n * k, h, w), stats)
    noisy = as_stack(train_data, "blind-spot training images")
    inputs, _ = normalise(noisy)
    return inputs, inputs


class PatchSampler:
    """Draws random (augmented) patch batches from normalised arrays, reproducibly."""

    def __init__(self, inputs: np.ndarray, targets: np.ndarray, config: TrainConfig,
                 rng: np.random.Generator) -> None:
        _, h, w = inputs.shape
        if config.patch_px > min(h, w):
            raise ValueError(f"patch_px {config.patch_px} exceeds the training images ({h}x{w} px); "
                             f"use patch_px <= {min(h, w)}")
        self.inputs, self.targets, self.config, self.rng = inputs, targets, config, rng

    def batch(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """One batch: (inputs, targets, loss mask or None), each ``(B, P, P)``."""
        cfg, rng = self.config, self.rng
        m, h, w = self.inputs.shape
        p, b = cfg.patch_px, cfg.batch_size
        idx = rng.integers(0, m, b)
        ys = rng.integers(0, h - p + 1, b)
        xs = rng.integers(0, w - p + 1, b)
        ar = np.arange(p)
        rows = (ys[:, None] + ar)[:, :, None]
        cols = (xs[:, None] + ar)[:, None, :]
        x = self.inputs[idx[:, None, None], rows, cols]
        y = self.targets[idx[:, None, None], rows, cols]
        if cfg.mode is TrainingMode.BLIND_SPOT and cfg.blind_spot_struct_px > 0:
            # The structured mask follows the scan's x axis: masked before the patch is turned
            x, mask = blind_spot_mask(x, fraction=cfg.blind_spot_fraction, radius_px=cfg.blind_spot_radius_px,
                                      rng=rng, struct_px=cfg.blind_spot_struct_px)
            if cfg.augment:
                rot, flip = rng.integers(0, 4, b), rng.integers(0, 2, b).astype(bool)
                x, y, mask = (np.stack([_dihedral(a, r, f) for a, r, f in zip(arr, rot, flip)])
                              for arr in (x, y, mask))
            return np.ascontiguousarray(x), np.ascontiguousarray(y), np.ascontiguousarray(mask)
        if cfg.augment:
            rot = rng.integers(0, 4, b)
            flip = rng.integers(0, 2, b).astype(bool)
            x = np.stack([_dihedral(a, r, f) for a, r, f in zip(x, rot, flip)])
            y = np.stack([_dihedral(a, r, f) for a, r, f in zip(y, rot, flip)])
        if cfg.mode is TrainingMode.BLIND_SPOT:
            x, mask = blind_spot_mask(x, fraction=cfg.blind_spot_fraction,
                                      radius_px=cfg.blind_spot_radius_px, rng=rng)
            return x, y, mask
        return np.ascontiguousarray(x), np.ascontiguousarray(y), None


class StreamSampler:
    """Fresh supervised patches from a stream (e.g. ``stemreg.acquisition.stream.FieldPool``).

    The stream's ``batch(batch_size, patch_px)`` returns ``(degraded, clean)`` stacks in the
    images' own units; every patch is normalised by its own input's stats, as whole images are at
    inference, and augmented like :class:`PatchSampler`'s.
    """

    def __init__(self, stream: Any, config: TrainConfig, rng: np.random.Generator) -> None:
        if config.mode is not TrainingMode.SUPERVISED:
            raise ValueError(f"a data stream trains supervised; {config.mode.value} training takes arrays")
        self.stream, self.config, self.rng = stream, config, rng

    def batch(self) -> tuple[np.ndarray, np.ndarray, None]:
        cfg, rng = self.config, self.rng
        degraded, clean = self.stream.batch(cfg.batch_size, cfg.patch_px)
        x, stats = normalise(degraded)
        y = apply_stats(clean, stats)
        if cfg.augment:
            rot, flip = rng.integers(0, 4, len(x)), rng.integers(0, 2, len(x)).astype(bool)
            x = np.stack([_dihedral(a, r, f) for a, r, f in zip(x, rot, flip)])
            y = np.stack([_dihedral(a, r, f) for a, r, f in zip(y, rot, flip)])
        return np.ascontiguousarray(x), np.ascontiguousarray(y), None


def is_stream(train_data: Any) -> bool:
    """Whether ``train_data`` is a patch stream (has ``batch(batch_size, patch_px)``) rather than arrays."""
    return callable(getattr(train_data, "batch", None))


def _dihedral(a: np.ndarray, rot: int, flip: bool) -> np.ndarray:
    a = np.rot90(a, int(rot))
    return a[:, ::-1] if flip else a


def blind_spot_mask(patches: np.ndarray, *, fraction: float, radius_px: int,
                    rng: np.random.Generator, struct_px: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Noise2Void masking: replace a random share of pixels by a random neighbour.

    With ``struct_px`` > 0 (structN2V, Broaddus et al. 2020), the ``struct_px`` pixels either side
    of each masked pixel along x are replaced too, all from one other row (the same random offset):
    noise correlated along the fast-scan axis then cannot tell the network the masked pixel's noise.

    Parameters
    ----------
    patches : ndarray
        ``(B, P, P)`` noisy patches.
    fraction : float
        Share of pixels masked per patch (at least one).
    radius_px : int
        Neighbours are drawn from the ``(2r+1)^2`` window, the centre excluded.
    rng : numpy.random.Generator

    Returns
    -------
    masked : ndarray
        Patches with the masked pixels replaced.
    mask : ndarray, float32
        1 where the loss is taken (the masked pixels), else 0.
    """
    b, p, q = patches.shape
    n_mask = max(1, int(round(fraction * p * q)))
    flat = np.stack([rng.choice(p * q, n_mask, replace=False) for _ in range(b)])
    ys, xs = np.divmod(flat, q)
    offsets = np.array([(dy, dx) for dy in range(-radius_px, radius_px + 1)
                        for dx in range(-radius_px, radius_px + 1) if (dy, dx) != (0, 0)])
    pick = offsets[rng.integers(0, len(offsets), (b, n_mask))]
    ny, nx = ys + pick[..., 0], xs + pick[..., 1]
    # Out of the patch: mirror the offset, which stays inside and never lands on the centre.
    ny = np.where((ny < 0) | (ny >= p), ys - pick[..., 0], ny)
    nx = np.where((nx < 0) | (nx >= q), xs - pick[..., 1], nx)
    bi = np.arange(b)[:, None]
    masked = np.array(patches, dtype=np.float32, copy=True)
    if struct_px > 0:
        # another row for the whole span: rows are scanned apart, so their noise is independent
        dy = np.where(pick[..., 0] == 0, 1, pick[..., 0])
        ny = np.where((ys + dy < 0) | (ys + dy >= p), ys - dy, ys + dy)
        for d in range(-struct_px, struct_px + 1):
            cx = np.clip(xs + d, 0, q - 1)
            masked[bi, ys, cx] = patches[bi, ny, np.clip(nx + d, 0, q - 1)]
    else:
        masked[bi, ys, xs] = patches[bi, ny, nx]
    mask = np.zeros((b, p, q), dtype=np.float32)
    mask[bi, ys, xs] = 1.0
    return masked, mask


class MixedSampler:
    """Batches that mix a lab's self-supervised patches with a condition's synthetic (supervised) ones.

    Fine-tuning on a lab's own data alone would forget the condition's range; each batch therefore
    takes ``round(fraction * batch_size)`` fresh synthetic pairs. The loss weights make every patch
    count alike: a synthetic patch's pixels weigh ``masked pixels / patch pixels`` each, so it carries
    the weight of one blind-spot patch's masked pixels.
    """

    def __init__(self, lab: "PatchSampler", synthetic: "StreamSampler", fraction: float) -> None:
        self.lab, self.synthetic, self.fraction = lab, synthetic, fraction

    def batch(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x_lab, y_lab, m_lab = self.lab.batch()
        x_syn, y_syn, _ = self.synthetic.batch()
        b, p, q = x_lab.shape
        weight = float(m_lab.sum() / m_lab.size) if m_lab is not None else 1.0
        m_lab = m_lab if m_lab is not None else np.ones_like(x_lab)
        m_syn = np.full(x_syn.shape, weight, dtype=np.float32)
        return (np.concatenate([x_lab, x_syn]), np.concatenate([y_lab, y_syn]), np.concatenate([m_lab, m_syn]))
