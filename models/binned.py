"""Figures per benchmark bin: the mean over each stratum and the mean over strata.

A benchmark stratified by sampling x dose reports each bin and the unweighted mean of the bin
means, so that a bin with more images does not outweigh the others.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def per_bin(values: Sequence[float], bins: Sequence[str]) -> dict[str, float]:
    """Mean of ``values`` per bin name, in the order bins first appear."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) != len(bins):
        raise ValueError(f"{len(values)} values for {len(bins)} bin labels")
    order = list(dict.fromkeys(bins))
    labels = np.asarray(bins, dtype=object)
    return {name: float(values[labels == name].mean()) for name in order}


def mean_over_bins(by_bin: dict[str, float]) -> float:
    """The unweighted mean of the bin means (NaN for no bins)."""
    return float(np.mean(list(by_bin.values()))) if by_bin else float("nan")
