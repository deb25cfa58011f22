"""stemreg.tuning: Optuna search over the reverse-hourglass architecture for one condition.

Uses stemreg.models and stemreg.acquisition; never stemreg.platform. Trials are
logged to MLflow directly, as nested runs under one parent run per worker.

Names load lazily (PEP 562), as in stemreg.models: `stemreg.tuning.budget`
(the search budgets) is cheap to import for the CLI's defaults.
"""
from __future__ import annotations

from stemreg.models.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "SearchBudget": "stemreg.tuning.budget",
    "TINY_BUDGET": "stemreg.tuning.budget",
    "NoCompletedTrialError": "stemreg.tuning.result",
    "Objective": "stemreg.tuning.result",
    "StudyResult": "stemreg.tuning.result",
    "default_study_name": "stemreg.tuning.search",
    "finished_trials": "stemreg.tuning.search",
    "make_study": "stemreg.tuning.search",
    "run_study": "stemreg.tuning.search",
    "define_model": "stemreg.tuning.space",
    "suggest_architecture": "stemreg.tuning.space",
    "StorageError": "stemreg.tuning.storage",
    "check_storage_url": "stemreg.tuning.storage",
    "default_storage": "stemreg.tuning.storage",
    "open_storage": "stemreg.tuning.storage",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
