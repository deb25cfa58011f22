"""Promotion and rollback of a condition's champion, gated by the benchmark.

:func:`promote` moves `champion` to the challenger (or a given version) only
when its benchmark PSNR beats the champion's; `force=True` with a reason
overrides. :func:`rollback` replays the recorded history.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from stemreg.platform.errors import BadInputError
from stemreg.platform.registry.benchmark import score_version
from stemreg.platform.registry.history import (ChampionChange, alias_version, set_champion, champion_lock,
                                               current_user)
from stemreg.platform.registry.naming import (CHALLENGER, CHAMPION, HISTORY_TAG, PromotionRefused,
                                              RegistryError, benchmark_of, model_name)
from stemreg.platform.registry.versions import resolve
from stemreg.platform.store import client as _client

log = logging.getLogger(__name__)


@dataclass
class PromotionResult:
    """What :func:`promote` or :func:`rollback` did."""

    model: str
    kind: str
    to_version: str
    from_version: str | None
    to_psnr: float | None
    from_psnr: float | None
    reason: str | None
    user: str
    time: str


def _result(name: str, change: ChampionChange) -> PromotionResult:
    return PromotionResult(model=name, **{k: v for k, v in change.as_dict().items()})


def _psnr_or_none(version) -> float | None:
    return benchmark_of(version).get("psnr") if version is not None else None


def promote(condition: Any, version: str | int | None = None, *, force: bool = False,
            reason: str | None = None, user: str | None = None,
            score_missing: bool = True) -> PromotionResult:
    """Move `champion` to the challenger (or `version`) if its benchmark PSNR is higher.

    Parameters
    ----------
    condition
        Condition name or `Condition`.
    version
        The version to promote; default the current `challenger`.
    force
        Promote regardless of the figures; needs `reason`.
    reason
        Why (required with `force`; recorded).
    user
        Who (default :func:`current_user`).
    score_missing
        Score versions without `benchmark.*` tags before comparing them.

    Returns
    -------
    PromotionResult

    Raises
    ------
    NotRegisteredError
        No such model / version / challenger.
    PromotionRefused
        The candidate's benchmark PSNR does not beat the champion's (both figures in
        the message), or the candidate already is champion.
    """
    if force and not (reason and reason.strip()):
        raise BadInputError("--force needs --reason TEXT saying why the benchmark gate is overridden")
    client = _client()
    name = model_name(condition)
    target = resolve(condition, str(version) if version is not None else CHALLENGER)
    if score_missing:
        _ensure_scored(condition, target.version)
    with champion_lock(condition):
        target = client.get_model_version(name, target.version)
        champion = alias_version(client, name, CHAMPION)
        if champion is not None and str(champion.version) == str(target.version):
            raise PromotionRefused(f"{name} version {target.version} already is the champion")
        if champion is not None and score_missing and "psnr" not in benchmark_of(champion):
            # Scoring loads a model: release nothing, it is idempotent and rare.
            _ensure_scored(condition, champion.version)
            champion = client.get_model_version(name, champion.version)
        to_psnr, from_psnr = _psnr_or_none(target), _psnr_or_none(champion)
        if not force and champion is not None:
            if to_psnr is None:
                raise PromotionRefused(f"{name} version {target.version} has no benchmark score; "
                                       f"score it first (stemreg evaluate) or use --force --reason")
            same_bench = (benchmark_of(target).get("id", "").split(":")[-1]
                          == benchmark_of(champion).get("id", "").split(":")[-1])
            if from_psnr is not None and not same_bench:
                raise PromotionRefused(
                    f"{name} versions {target.version} and {champion.version} were scored on different "
                    f"benchmark sets ({benchmark_of(target).get('id')} vs {benchmark_of(champion).get('id')}); "
                    f"rescore both or use --force --reason")
            if from_psnr is not None and not to_psnr > from_psnr:
                raise PromotionRefused(
                    f"refused: {name} version {target.version} benchmark PSNR {to_psnr:.3f} dB does not beat "
                    f"champion version {champion.version} at {from_psnr:.3f} dB")
        change = ChampionChange(
            kind="force-promote" if force else "promote",
            to_version=str(target.version),
            from_version=str(champion.version) if champion is not None else None,
            to_psnr=to_psnr, from_psnr=from_psnr,
            reason=reason, user=user or current_user(),
        )
        set_champion(client, name, change)
    log.info("%s: champion %s -> %s", name, change.from_version, change.to_version)
    return _result(name, change)


def _champion_stack(entries: list[dict[str, Any]]) -> list[str]:
    """Replay the history: promotions push a champion, rollbacks pop one."""
    stack: list[str] = []
    for entry in entries:
        if entry["kind"] == "rollback":
            if stack:
                stack.pop()
            if not stack or stack[-1] != entry["to_version"]:
                stack.append(entry["to_version"])
        else:
            stack.append(entry["to_version"])
    return stack


def rollback(condition: Any, *, reason: str | None = None, user: str | None = None) -> PromotionResult:
    """Move `champion` back to the champion before it (per the recorded history).

    Repeated rollbacks walk further back. The rolled-back version keeps its
    tags and versions stay registered; only the alias moves.

    Raises
    ------
    NotRegisteredError
        No model or no champion for the condition.
    RegistryError
        No earlier champion recorded.
    """
    client = _client()
    name = model_name(condition)
    resolve(condition, CHAMPION)
    with champion_lock(condition):
        champion = alias_version(client, name, CHAMPION)
        entries = json.loads(client.get_registered_model(name).tags.get(HISTORY_TAG, "[]"))
        stack = _champion_stack(entries)
        if stack and stack[-1] != str(champion.version):
            # The alias was moved outside stemreg: treat the current champion as the top.
            stack.append(str(champion.version))
        if len(stack) < 2:
            raise RegistryError(f"{name}: no earlier champion recorded to roll back to "
                                f"(champion is version {champion.version})")
        previous = client.get_model_version(name, stack[-2])
        change = ChampionChange(
            kind="rollback", to_version=str(previous.version), from_version=str(champion.version),
            to_psnr=_psnr_or_none(previous), from_psnr=_psnr_or_none(champion),
            reason=reason, user=user or current_user(),
        )
        set_champion(client, name, change)
    log.info("%s: rolled champion back %s -> %s", name, change.from_version, change.to_version)
    return _result(name, change)


def _ensure_scored(condition: Any, version: str) -> None:
    client = _client()
    mv = client.get_model_version(model_name(condition), version)
    if "psnr" in benchmark_of(mv):
        return
    score_version(condition, version)
