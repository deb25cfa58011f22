"""Calibration to the seed (Fig. 1): at 50 pA, 1.4 us, bias 0.2 the noisy low-dose benchmark images
score PSNR 18.244 dB and SSIM 0.157 against their clean targets; we hold 18.2 +- 0.5 dB and 0.16 +- 0.03.

The metric is written here with scikit-image directly (acquisition must not import models), with the
project's data range: the clean target's max minus min, per image, averaged over the set.
"""
from __future__ import annotations

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from stemreg.acquisition import get_condition


def test_low_dose_benchmark_matches_the_seed_figure():
    batch = get_condition("low-dose").benchmark_set()
    psnr = [peak_signal_noise_ratio(c, d, data_range=float(c.max() - c.min())) for d, c in zip(batch.degraded, batch.clean)]
    ssim = [structural_similarity(c, d, data_range=float(c.max() - c.min())) for d, c in zip(batch.degraded, batch.clean)]
    print(f"low-dose benchmark: noisy PSNR {np.mean(psnr):.2f} dB, SSIM {np.mean(ssim):.3f}")
    assert abs(np.mean(psnr) - 18.2) <= 0.5
    assert abs(np.mean(ssim) - 0.16) <= 0.03
