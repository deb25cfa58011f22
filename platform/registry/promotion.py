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

from stemreg.models.prediction import predict_fn
from stemreg.platform.errors import BadInputError
from stemreg.platform.registry.benchmark import score_version
from stemreg.platform.registry.card import refresh_cards
from stemreg.platform.registry.history import (ChampionChange, alias_version, set_champion, champion_lock,
                                               current_user)
from stemreg.platform.registry.loading import ModelLoadError, check_runs
from stemreg.platform.registry.naming import (CHALLENGER, CHAMPION, HISTORY_TAG, PromotionRefused, is_restoration,
                                              RegistryError, as_condition, benchmark_of, model_name)
from stemreg.platform.registry.versions import resolve
from stemreg.platform.store import client as _client

log = logging.getLogger(__name__)

#: A candidate that loses more than this to the champion in any one benchmark bin is refused.
MAX_BIN_LOSS_DB = 1.0
#: Restoration conditions are promoted on the atom columns too: the candidate's column F1 (mean over
#: bins) may fall at most this far below the champion's, and in no bin by more than MAX_BIN_F1_LOSS;
#: its column position error (mean over bins) may grow at most MAX_COLUMN_ERROR_GAIN_PM.
MAX_F1_LOSS, MAX_BIN_F1_LOSS, MAX_COLUMN_ERROR_GAIN_PM = 0.01, 0.05, 1.0


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
            score_missing: bool = True, rescore: bool = False) -> PromotionResult:
    """Move `champion` to the challenger (or `version`) if it beats the champion over the whole range.

    The gate (:func:`gate`): the candidate's benchmark PSNR, the unweighted mean over the
    benchmark's sampling x dose bins, must beat the champion's, and it must not lose more than
    1 dB to the champion in any one bin. Versions scored on different benchmarks are not compared.

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
    rescore
        Re-score the candidate and the champion on the condition's current benchmark where they
        were scored on another one (or without per-bin figures), so they can be compared.

    Returns
    -------
    PromotionResult

    Raises
    ------
    NotRegisteredError
        No such model / version / challenger.
    PromotionRefused
        The candidate cannot be loaded (truncated or replaced weights: the sha256 recorded at
        registration is checked) or answers non-finite pixels on a benchmark image, checked first,
        with or without `force`, before anything is scored or moved; or its mean over bins does not
        beat the champion's, or it loses more than 1 dB in a bin (the bins and both figures in the
        message), or the two were scored on different benchmarks, or it already is champion.
    """
    if force and not (reason and reason.strip()):
        raise BadInputError("--force needs --reason TEXT saying why the benchmark gate is overridden")
    client = _client()
    name = model_name(condition)
    cond = as_condition(condition)
    target = resolve(condition, str(version) if version is not None else CHALLENGER)
    champion = alias_version(client, name, CHAMPION)
    # Before anything is scored (which writes tags) or moved: the candidate must load the way it
    # will be served and answer finite pixels, with --force too.
    candidate = _check_candidate(client, name, cond, target, champion)
    # Scoring loads a model and takes seconds: done before the lock (it is idempotent).
    for mv in (target, champion):
        if mv is not None and not (mv is champion and str(mv.version) == str(target.version)):
            try:
                _score_if_needed(cond, mv, rescore=rescore, missing=score_missing,
                                 predict=predict_fn(candidate) if mv is target else None)
            except ModelLoadError as exc:  # only the champion is loaded here: the candidate already ran
                if not force:
                    raise PromotionRefused(
                        f"refused: {name} champion version {mv.version} cannot be loaded to score it on the "
                        f"current benchmark: {exc}; nothing was changed; to replace it: `stemreg promote "
                        f"--condition {cond.name} --version {target.version} --force --reason TEXT`") from None
                log.warning("%s: champion v%s cannot be loaded (%s); force-promoting v%s without its score",
                            name, mv.version, exc, target.version)
    with champion_lock(condition):
        target = client.get_model_version(name, target.version)
        champion = alias_version(client, name, CHAMPION)
        if champion is not None and str(champion.version) == str(target.version):
            raise PromotionRefused(f"{name} version {target.version} already is the champion")
        to_psnr, from_psnr = _psnr_or_none(target), _psnr_or_none(champion)
        if not force and champion is not None:
            gate(name, target, champion, current_id=cond.benchmark_id(), columns=is_restoration(cond))
        change = ChampionChange(
            kind="force-promote" if force else "promote",
            to_version=str(target.version),
            from_version=str(champion.version) if champion is not None else None,
            to_psnr=to_psnr, from_psnr=from_psnr,
            reason=reason, user=user or current_user(),
        )
        set_champion(client, name, change)
        _refresh(client, cond, change)
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
    PromotionRefused
        The earlier champion cannot be loaded now (damaged or replaced weights) or answers
        non-finite pixels on a benchmark image; nothing is moved.
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
        # A version whose weights were damaged since it was champion must not be served again.
        _check_candidate(client, name, as_condition(condition), previous, champion, action="rolled back to")
        change = ChampionChange(
            kind="rollback", to_version=str(previous.version), from_version=str(champion.version),
            to_psnr=_psnr_or_none(previous), from_psnr=_psnr_or_none(champion),
            reason=reason, user=user or current_user(),
        )
        set_champion(client, name, change)
        _refresh(client, as_condition(condition), change)
    log.info("%s: rolled champion back %s -> %s", name, change.from_version, change.to_version)
    return _result(name, change)


def _check_candidate(client, name: str, cond: Any, target, champion, *, action: str = "promoted") -> Any:
    """The candidate's pyfunc, loaded as serving loads it (sha256 verified) and run on the condition's
    first benchmark image; :class:`PromotionRefused` (one line: the version, why, what to do) if not."""
    try:
        return check_runs(client, target, cond.benchmark_head(1).degraded[0])
    except ModelLoadError as exc:
        stays = (f"the champion stays version {champion.version}" if champion is not None
                 else "no champion was set")
        raise PromotionRefused(
            f"refused: {name} version {target.version} cannot be {action}: {exc}; nothing was changed "
            f"({stays}); register a good copy of the model again (e.g. `stemreg train --condition {cond.name}`) "
            f"or promote another version with `stemreg promote --condition {cond.name} --version N "
            "--force --reason TEXT`") from None


def _score_if_needed(cond: Any, mv, *, rescore: bool, missing: bool, predict: Any = None) -> None:
    """Score `mv` if it has no score (with `missing`), or (with `rescore`) if it was scored on
    another benchmark than the condition's current one or without per-bin figures. `predict`: its
    already loaded predict function (else it is loaded)."""
    bench = benchmark_of(mv)
    if missing and "psnr" not in bench:
        score_version(cond, mv.version, predict_fn=predict)
    elif rescore and (bench.get("id") != cond.benchmark_id() or "psnr" not in bench.get("by_bin", {})):
        log.info("%s v%s: re-scoring on the current benchmark %s", model_name(cond), mv.version,
                 cond.benchmark_id())
        score_version(cond, mv.version, predict_fn=predict)


def _refresh(client, cond: Any, change: ChampionChange) -> None:
    """Rewrite the cards of the versions whose alias moved and of the model."""
    for number in (change.from_version, change.to_version):
        if number is not None:
            refresh_cards(client, cond, number)


def gate(name: str, target, champion, *, current_id: str | None = None,
         max_bin_loss_db: float = MAX_BIN_LOSS_DB, columns: bool = False) -> None:
    """Refuse (raise :class:`PromotionRefused`) unless `target` may replace `champion`.

    The target must be scored; both on the same benchmark, with per-bin figures; its PSNR mean
    over bins must beat the champion's; and it may lose at most `max_bin_loss_db` dB to the
    champion in any one bin. With ``columns`` (restoration conditions, where PSNR can be won by
    smoothing the atom columns away) it must also keep the columns: see :func:`_column_reasons`.
    Every refusal names both versions and both figures.
    """
    tb, cb = benchmark_of(target), benchmark_of(champion)
    t, c = target.version, champion.version
    if "psnr" not in tb:
        raise PromotionRefused(f"{name} version {t} has no benchmark score; score it first "
                               f"(stemreg promote scores it unless told not to) or use --force --reason")
    if "psnr" not in cb:
        return  # an unscored champion (scoring it failed or was declined): nothing to compare against
    if tb.get("id") != cb.get("id"):
        current = f"; the current benchmark is {current_id}" if current_id else ""
        raise PromotionRefused(
            f"refused: champion version {c} of {name} was scored on another benchmark ({cb.get('id')}) than "
            f"version {t} ({tb.get('id')}){current}; figures from different benchmarks are not compared: "
            f"re-score both with `stemreg promote --rescore`, or use --force --reason")
    t_bins, c_bins = tb.get("by_bin", {}).get("psnr"), cb.get("by_bin", {}).get("psnr")
    if not t_bins or not c_bins:
        which = " and ".join(f"version {v}" for v, b in ((t, t_bins), (c, c_bins)) if not b)
        raise PromotionRefused(
            f"refused: {name} {which} has no per-bin benchmark figures (scored before the stratified "
            f"benchmark); re-score with `stemreg promote --rescore`, or use --force --reason")
    losses = [f"{b} {_fmt(t_bins.get(b))} vs {_fmt(v)} dB" for b, v in c_bins.items()
              if v is not None and (t_bins.get(b) is None or t_bins[b] < v - max_bin_loss_db)]
    reasons = []
    if not tb["psnr"] > cb["psnr"]:
        reasons.append(f"its benchmark PSNR (mean over bins) {tb['psnr']:.3f} dB does not beat champion version "
                       f"{c} at {cb['psnr']:.3f} dB")
    if losses:
        reasons.append(f"it loses more than {max_bin_loss_db:g} dB to champion version {c} in "
                       f"{len(losses)} bin{'s' if len(losses) > 1 else ''} ({'; '.join(losses)}; mean over bins "
                       f"{tb['psnr']:.3f} vs {cb['psnr']:.3f} dB)")
    if columns:
        reasons += _column_reasons(tb, cb, c)
    if reasons:
        raise PromotionRefused(f"refused: {name} version {t}: " + ", and ".join(reasons))


def _column_reasons(tb: dict[str, Any], cb: dict[str, Any], champion_version: Any) -> list[str]:
    """Why a restoration candidate loses the atom columns against the champion (empty: it does not).

    Column F1 (mean over bins) may fall at most :data:`MAX_F1_LOSS` below the champion's, and in no
    bin by more than :data:`MAX_BIN_F1_LOSS`; the column position error (mean over bins) may grow
    at most :data:`MAX_COLUMN_ERROR_GAIN_PM`. A candidate scored without columns is refused.
    """
    c = champion_version
    if "column_f1" not in cb:
        return []  # the champion has no column figures: nothing to hold the candidate to
    if "column_f1" not in tb:
        return [f"it has no atom-column figures (restoration is promoted on columns too); re-score it "
                f"with `stemreg promote --rescore`"]
    reasons = []
    if tb["column_f1"] < cb["column_f1"] - MAX_F1_LOSS:
        reasons.append(f"its column F1 (mean over bins) {tb['column_f1']:.3f} is below champion version {c}'s "
                       f"{cb['column_f1']:.3f} (restoration must keep the atom columns, not only PSNR)")
    t_f1, c_f1 = tb.get("by_bin", {}).get("column_f1", {}), cb.get("by_bin", {}).get("column_f1", {})
    lost = [f"{b} {_fmt(t_f1.get(b), 3)} vs {_fmt(v, 3)}" for b, v in c_f1.items()
            if v is not None and t_f1.get(b) is not None and t_f1[b] < v - MAX_BIN_F1_LOSS]
    if lost:
        reasons.append(f"its column F1 falls more than {MAX_BIN_F1_LOSS:g} below champion version {c}'s in "
                       f"{len(lost)} bin{'s' if len(lost) > 1 else ''} ({'; '.join(lost)})")
    t_err, c_err = tb.get("column_error_pm"), cb.get("column_error_pm")
    if t_err is not None and c_err is not None and t_err > c_err + MAX_COLUMN_ERROR_GAIN_PM:
        reasons.append(f"its column position error (mean over bins) {t_err:.1f} pm exceeds champion version "
                       f"{c}'s {c_err:.1f} pm by more than {MAX_COLUMN_ERROR_GAIN_PM:g} pm")
    return reasons


def _fmt(value: Any, digits: int = 2) -> str:
    return "none" if value is None else f"{value:.{digits}f}"
