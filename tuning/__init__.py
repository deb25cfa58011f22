"""stemreg.tuning: Optuna search over the reverse-hourglass architecture for one condition.

Uses stemreg.models and stemreg.acquisition; never stemreg.platform. Trials are
logged to MLflow directly, as nested runs under one parent run per worker.

Names load lazily (PEP 562), as in stemreg.models: `stemreg.tuning.budget`
(the search budgets) is cheap to import for the CLI's defaults.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "SearchBudget": "stemreg.tuning.budget",
    "TINY_BUDGET": "stemreg.tuning.budget",
    "NoCompletedTrialError": "stemreg.tuning.search",
    "Objective": "stemreg.tuning.search",
    "StudyResult": "stemreg.tuning.search",
    "default_study_name": "stemreg.tuning.search",
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


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'stemreg.tuning' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
