"""The leaderboard: every denoiser scored on a condition's benchmark (or a user's images).

- :mod:`~stemreg.platform.evaluation.data`: the test set and the training/validation draws (never the benchmark);
- :mod:`~stemreg.platform.evaluation.methods`: the methods (CNNs trained here or registered, classical filters);
- :mod:`~stemreg.platform.evaluation.leaderboard`: per-method results and the table;
- :mod:`~stemreg.platform.evaluation.figures`: panels, bar chart, gallery;
- :mod:`~stemreg.platform.evaluation.run`: :func:`evaluate`, its artifacts and MLflow run.
"""
from __future__ import annotations

from stemreg.models.config import LEADERBOARD_BUDGETS as BUDGETS
from stemreg.models.config import TrainBudget as Budget
from stemreg.platform.evaluation.data import IMAGE_SUFFIXES, TestSet, benchmark_test_set, derived_seed, user_test_set
from stemreg.platform.evaluation.figures import bar_chart, comparison_panel, gallery
from stemreg.platform.evaluation.leaderboard import METRICS, Leaderboard, MethodResult, score_method
from stemreg.platform.evaluation.methods import (CLASSICAL, LEARNED_METHODS, METHOD_DESCRIPTIONS, METHODS, NOISY,
                                                 default_methods, parse_methods)
from stemreg.platform.evaluation.restoration import RESTORATION
from stemreg.platform.evaluation.run import evaluate, log_leaderboard, write_artifacts

__all__ = ["BUDGETS", "Budget", "CLASSICAL", "IMAGE_SUFFIXES", "LEARNED_METHODS", "METHODS", "METHOD_DESCRIPTIONS",
           "METRICS", "NOISY", "Leaderboard", "MethodResult", "TestSet", "bar_chart", "benchmark_test_set",
           "comparison_panel", "default_methods", "derived_seed", "RESTORATION", "evaluate", "gallery", "log_leaderboard", "parse_methods",
           "score_method", "user_test_set", "write_artifacts"]
