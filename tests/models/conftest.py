"""Fixtures of the models tests (the data they draw is built in model_test_data.py)."""
from __future__ import annotations

import numpy as np
import pytest

from model_test_data import make_pairs


@pytest.fixture(scope="session")
def val_pairs() -> tuple[np.ndarray, np.ndarray]:
    """Validation pairs, seed 1 (training uses other seeds)."""
    return make_pairs(2, 64, seed=1)


@pytest.fixture(scope="session")
def train_pairs() -> tuple[np.ndarray, np.ndarray]:
    return make_pairs(6, 64, seed=0)
