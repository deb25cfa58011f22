"""Classical restoration: deconvolution with the known PSF, scan-line alignment, resumable training steps."""
from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from stemreg.models.hourglass import ReverseHourglass
from stemreg.models.metrics import psnr
from stemreg.models.restoration import align_scan_lines, richardson_lucy, wiener_deconvolve
from stemreg.models.steps import ResumableTrainer, prepare_batch


def _lattice(size: int = 64, spacing: float = 8.0) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size].astype(float)
    image = np.zeros((size, size))
    for cy in np.arange(spacing / 2, size, spacing):
        for cx in np.arange(spacing / 2, size, spacing * 1.3):
            image += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 1.2**2))
    return image.astype(np.float32)


def _gaussian_psf(sigma: float) -> np.ndarray:
    half = int(np.ceil(4 * sigma))
    r2 = np.add.outer(np.arange(-half, half + 1) ** 2, np.arange(-half, half + 1) ** 2)
    kernel = np.exp(-0.5 * r2 / sigma**2)
    return kernel / kernel.sum()


def test_deconvolution_with_the_exact_psf_restores_a_blurred_lattice():
    clean = _lattice()
    blurred = gaussian_filter(clean, 2.0, mode="reflect")
    psf = _gaussian_psf(2.0)
    wiener = wiener_deconvolve(blurred, psf, balance=1e-3)
    rl = richardson_lucy(blurred, psf, iterations=30)
    assert psnr(wiener, clean) > psnr(blurred, clean) + 5
    assert psnr(rl, clean) > psnr(blurred, clean) + 3
    assert wiener.dtype == np.float32 and wiener.shape == clean.shape


def test_scan_line_alignment_undoes_line_shifts_and_hysteresis():
    clean = _lattice(64)
    rng = np.random.default_rng(0)
    shifts = rng.normal(0, 0.6, 64)
    x = np.arange(64, dtype=float)
    hysteresis = 3.0 * np.exp(-x / 6.0)
    # each line sampled where the beam really was: x + hysteresis + its own shift
    distorted = np.stack([np.interp(x + hysteresis + s, x, row) for row, s in zip(clean, shifts)])
    aligned = align_scan_lines(distorted, hysteresis_amplitude_px=3.0, hysteresis_decay_px=6.0, max_shift_px=2.0,
                               jitter_px=0.6)
    inner = (slice(2, -2), slice(8, -4))
    assert psnr(aligned[inner], clean[inner]) > psnr(distorted[inner], clean[inner]) + 4


def test_a_resumed_trainer_continues_exactly_where_it_stopped():
    rng = np.random.default_rng(1)
    batches = [(rng.random((2, 16, 16), dtype=np.float32), rng.random((2, 16, 16), dtype=np.float32))
               for _ in range(3)]

    def trainer() -> ResumableTrainer:
        torch.manual_seed(0)
        return ResumableTrainer(ReverseHourglass(depth=2, widths=[4]), lr=1e-2, warmup_steps=2)

    straight = trainer()
    for x, y in batches:
        straight.step(x, y)
    first = trainer()
    for x, y in batches[:2]:
        first.step(x, y)
    resumed = trainer()
    resumed.load_state_dict(first.state_dict())
    resumed.step(*batches[2])
    assert resumed.steps == 3
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_noise2noise_batches_pair_two_repeats_and_blind_spot_batches_carry_a_mask():
    rng = np.random.default_rng(2)
    repeats = rng.random((3, 2, 8, 8), dtype=np.float32)
    x, y, mask = prepare_batch("noise2noise", repeats, rng, augment=False)
    assert mask is None and x.shape == y.shape == (3, 8, 8)
    assert not np.allclose(x, y)  # input and target are different noisy frames
    x, y, mask = prepare_batch("blind-spot", repeats[:, 0], rng, augment=False)
    assert mask is not None and mask.sum() >= 3 and np.allclose(y, prepare_batch(
        "blind-spot", repeats[:, 0], np.random.default_rng(0), augment=False)[1])
