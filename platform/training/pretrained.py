"""The shipped pretrained base in the registry: registered once, then the parent every condition fine-tunes from."""
from __future__ import annotations

import json
import logging
from typing import Any

from mlflow import MlflowClient

from stemreg.models.pretrained import BASE_NAME, available, load_pretrained
from stemreg.platform.registry import as_condition, model_name
from stemreg.platform.store import configure
from stemreg.platform.training.runs import log_and_register

log = logging.getLogger(__name__)

#: Version tag holding the shipped weights' sha256: the same file is registered once per store.
PRETRAINED_TAG = "pretrained.weights_sha256"


def registered_pretrained(condition: Any = "low-dose", name: str = BASE_NAME) -> str | None:
    """The version of ``stem-denoiser-<condition>`` that holds the shipped base, if registered."""
    if not available(name):
        return None
    from stemreg.models.pretrained import load_card

    digest = load_card(name)["weights_sha256"]
    client = MlflowClient(configure())
    for version in client.search_model_versions(f"name='{model_name(as_condition(condition))}'"):
        if (version.tags or {}).get(PRETRAINED_TAG) == digest:
            return str(version.version)
    return None


def register_pretrained(condition: Any = "low-dose", *, name: str = BASE_NAME, alias_policy: str = "auto",
                        progress: bool = False) -> tuple[str, dict[str, Any], bool]:
    """Register the shipped base as a version of ``stem-denoiser-<condition>`` (once per store).

    Returns
    -------
    (version, architecture, newly_registered)

    Raises
    ------
    stemreg.models.pretrained.PretrainedMissingError
        The package holds no pretrained base.
    """
    cond = as_condition(condition)
    network, card = load_pretrained(name)
    existing = registered_pretrained(cond, name)
    if existing is not None:
        return existing, card["architecture"], False
    training = card.get("training", {})
    bench = card.get("benchmark", {})
    description = (f"Pretrained base shipped with stemreg ({card['name']}): {card.get('purpose', '')}. "
                   f"Trained {training.get('steps')} steps on condition {card['condition']['name']} "
                   f"(hash {card['condition']['hash']}) by `{card.get('command')}` at commit "
                   f"{card.get('commit', 'unknown')[:12]}; its card's benchmark mean over bins "
                   f"{bench.get('model_psnr_mean')} dB PSNR against {bench.get('noisy_psnr_mean')} dB noisy.")
    tags = {PRETRAINED_TAG: card["weights_sha256"], "pretrained": "true", "pretrained.name": card["name"],
            "pretrained.commit": str(card.get("commit")), "pretrained.steps": str(training.get("steps")),
            "pretrained.card": json.dumps({k: card[k] for k in ("name", "architecture", "condition", "commit",
                                                                 "command") if k in card})[:4000],
            "training_data": "simulated (pretrained base)"}
    import mlflow

    with mlflow.start_run(run_name=f"pretrained-{cond.name}", nested=mlflow.active_run() is not None,
                          tags={"stemreg.kind": "pretrained", "condition": cond.name}):
        mlflow.log_dict(card, "pretrained_card.json")
        result = log_and_register(network, cond, register=True, alias_policy=alias_policy, score=True,
                                  description=description, tags=tags, progress=progress)
    log.info("registered the pretrained base as %s v%s (%s)", result.name, result.version, result.alias)
    return str(result.version), card["architecture"], True
