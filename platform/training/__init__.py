"""Training runs: simulated data (:mod:`.runs`) or a lab's own noisy files (:mod:`.lab`), logged and registered."""
from __future__ import annotations

from stemreg.platform.training.lab import HELD_OUT_FRACTION, LabData, load_lab_data, train_from_lab_files
from stemreg.platform.training.runs import (DEFAULT_ARCHITECTURE, TrainingRunResult, canonical_architecture,
                                            git_commit, load_parent, log_and_register, train_and_register)

__all__ = ["DEFAULT_ARCHITECTURE", "HELD_OUT_FRACTION", "LabData", "TrainingRunResult", "canonical_architecture",
           "git_commit", "load_lab_data", "load_parent", "log_and_register", "train_and_register",
           "train_from_lab_files"]
