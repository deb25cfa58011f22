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
    pairs = list(zip(batch.degraded, batch.clean))
    psnr = [peak_signal_noise_ratio(c, d, data_range=float(c.max() - c.min())) for d, c in pairs]
    ssim = [structural_similarity(c, d, data_range=float(c.max() - c.min())) for d, c in pairs]
    print(f"low-dose benchmark (n={len(psnr)}): noisy PSNR {np.mean(psnr):.2f} +- {np.std(psnr, ddof=1):.2f} dB, "
          f"SSIM {np.mean(ssim):.3f} +- {np.std(ssim, ddof=1):.3f} (mean +- std over images)")
    assert len(psnr) == 32
    assert abs(np.mean(psnr) - 18.2) <= 0.5
    assert abs(np.mean(ssim) - 0.16) <= 0.03
