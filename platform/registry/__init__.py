"""The model registry: one registered model per condition, its champion and challenger.

- :mod:`~stemreg.platform.registry.naming`: names, aliases, benchmark tags, the registry's errors;
- :mod:`~stemreg.platform.registry.history`: the champion lock and the recorded history;
- :mod:`~stemreg.platform.registry.versions`: register, first alias, resolve, list;
- :mod:`~stemreg.platform.registry.benchmark`: score a version on the frozen benchmark set;
- :mod:`~stemreg.platform.registry.promotion`: the benchmark-gated promotion and rollback;
- :mod:`~stemreg.platform.registry.card`: the model cards (Markdown descriptions) of models and versions.
"""
from __future__ import annotations

from stemreg.platform.registry.benchmark import record_scores, run_metrics, score_model, score_version, version_tags
from stemreg.platform.registry.history import ChampionChange, champion_lock, current_user, history
from stemreg.platform.registry.naming import (ALIAS_POLICIES, BENCHMARK_KEYS, CHALLENGER, CHAMPION, HISTORY_TAG,
                                              MODEL_PREFIX, NotRegisteredError, PromotionRefused, RegistryError,
                                              as_condition, benchmark_id, benchmark_of, condition_name, model_name,
                                              model_uri)
from stemreg.platform.registry.promotion import PromotionResult, promote, rollback
from stemreg.platform.registry.card import model_card, refresh_cards, version_card
from stemreg.platform.registry.versions import (artifact_digests, assign_initial_alias, list_condition_models,
                                                register_version, resolve)

__all__ = [
    "artifact_digests", "model_card", "refresh_cards", "version_card",
    "ALIAS_POLICIES", "BENCHMARK_KEYS", "CHALLENGER", "CHAMPION", "HISTORY_TAG", "MODEL_PREFIX",
    "ChampionChange", "NotRegisteredError", "PromotionRefused", "PromotionResult", "RegistryError",
    "as_condition", "assign_initial_alias", "benchmark_id", "benchmark_of", "champion_lock", "condition_name",
    "current_user", "history", "list_condition_models", "model_name", "model_uri", "promote", "record_scores",
    "register_version", "resolve", "rollback", "run_metrics", "score_model", "score_version", "version_tags",
]
