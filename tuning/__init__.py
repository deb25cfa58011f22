"""stemreg.tuning: Optuna search over the reverse-hourglass architecture for one condition.

Uses stemreg.models and stemreg.acquisition; never stemreg.platform. Trials are
logged to MLflow directly, as nested runs under one parent run per worker.
"""
from stemreg.tuning.budget import TINY_BUDGET, SearchBudget
from stemreg.tuning.search import (
    NoCompletedTrialError,
    Objective,
    StudyResult,
    default_study_name,
    make_study,
    run_study,
)
from stemreg.tuning.space import define_model, suggest_architecture
from stemreg.tuning.storage import StorageError, check_storage_url, default_storage, open_storage

__all__ = [
    "NoCompletedTrialError", "Objective", "SearchBudget", "StorageError", "StudyResult", "TINY_BUDGET",
    "check_storage_url", "default_storage", "default_study_name", "define_model", "make_study",
    "open_storage", "run_study", "suggest_architecture",
]
