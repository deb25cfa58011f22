"""The registry lifecycle: one registered model per condition, champion and challenger.

- The first version of a condition becomes `champion`; later ones `challenger`.
- :func:`promote` moves `champion` to the challenger (or a given version) only
  when its benchmark PSNR beats the champion's; `force=True` with a reason
  overrides.
- MLflow keeps no history of aliases, so each champion change (initial,
  promotion, forced promotion, rollback) is appended to a JSON list, the tag
  `promotion.history`, on the registered model; the versions involved carry
  their own entries too. :func:`rollback` replays that history.
- Champion changes of one model are serialised by a lock (a thread lock plus
  an OS file lock beside the SQLite store, or in the temp dir for other
  stores), so concurrent promotes leave one champion and a consistent history.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import getpass
import hashlib
import json
import logging
import os
import tempfile
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from stemreg.platform.errors import BadInput
from stemreg.platform.store import client as _client
from stemreg.platform.store import tracking_uri

log = logging.getLogger(__name__)

MODEL_PREFIX = "stem-denoiser-"
CHAMPION = "champion"
CHALLENGER = "challenger"
HISTORY_TAG = "promotion.history"
# Tag values in the registry may hold 100 000 characters; keep well under it.
MAX_HISTORY_ENTRIES = 200
ALIAS_POLICIES = ("auto", "champion", "challenger", "none")
BENCHMARK_KEYS = ("psnr", "psnr_std", "ssim", "ssim_std", "noisy_psnr", "noisy_ssim", "ms_per_mpx", "id")


class RegistryError(Exception):
    """A registry operation that could not be done (the CLI exits 1)."""

    exit_code = 1


class NotRegisteredError(BadInput):
    """No such registered model, version or alias (the CLI exits 2)."""


class PromotionRefused(RegistryError):
    """Promotion refused: the candidate does not beat the champion."""


def condition_name(condition: Any) -> str:
    """The condition's name, from a `Condition` or a plain string."""
    return condition if isinstance(condition, str) else str(condition.name)


def model_name(condition: Any) -> str:
    """`stem-denoiser-<condition>` for a condition name or `Condition`."""
    return MODEL_PREFIX + condition_name(condition)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def current_user() -> str:
    """Who is acting: `STEMREG_USER`, else the login name."""
    user = os.environ.get("STEMREG_USER")
    if user:
        return user
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        return "unknown"


# --------------------------------------------------------------------------- locking

_thread_locks: dict[str, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


def _lock_path(name: str) -> Path:
    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        return db.with_name(f"{db.name}.{name}.lock")
    digest = hashlib.sha1(uri.encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"stemreg-{digest}-{name}.lock"


@contextlib.contextmanager
def champion_lock(condition: Any) -> Iterator[None]:
    """Serialise champion changes of one condition's model (threads and processes on one host)."""
    name = model_name(condition)
    key = f"{tracking_uri()}::{name}"
    with _thread_locks_guard:
        tlock = _thread_locks.setdefault(key, threading.Lock())
    with tlock:
        path = _lock_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+") as handle:
            try:
                import fcntl
            except ImportError:  # Windows: the thread lock is all we have
                yield
                return
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


# --------------------------------------------------------------------------- reading

def _alias_version(client, name: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _registered_model(client, name: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException:
        return None


def resolve(condition: Any, alias: str = CHAMPION):
    """The model version that `alias` (or a version number) points at.

    Parameters
    ----------
    condition
        Condition name or `Condition`.
    alias
        An alias (`champion`, `challenger`, ...) or a version number as text.

    Returns
    -------
    mlflow.entities.model_registry.ModelVersion

    Raises
    ------
    NotRegisteredError
        No model registered for the condition, or nothing behind the alias.
    """
    from mlflow.exceptions import MlflowException

    client = _client()
    name = model_name(condition)
    if _registered_model(client, name) is None:
        raise NotRegisteredError(
            f"no model registered for condition '{condition_name(condition)}' ({name}); "
            f"train one first: stemreg train --condition {condition_name(condition)}")
    if str(alias).isdigit():
        try:
            return client.get_model_version(name, str(alias))
        except MlflowException:
            raise NotRegisteredError(f"{name} has no version {alias}") from None
    version = _alias_version(client, name, alias)
    if version is None:
        raise NotRegisteredError(
            f"no {alias} registered yet for condition '{condition_name(condition)}' ({name}); "
            f"aliases present: {sorted(_registered_model(client, name).aliases) or 'none'}")
    return version


def model_uri(condition: Any, alias: str = CHAMPION) -> str:
    """`models:/stem-denoiser-<condition>@alias` (or `/<version>` for a number)."""
    sep = "/" if str(alias).isdigit() else "@"
    return f"models:/{model_name(condition)}{sep}{alias}"


def benchmark_of(version) -> dict[str, Any]:
    """The `benchmark.*` tags of a model version as numbers (text for `id`); {} when unscored."""
    out: dict[str, Any] = {}
    for key in BENCHMARK_KEYS:
        value = version.tags.get(f"benchmark.{key}")
        if value is None:
            continue
        out[key] = value if key == "id" else float(value)
    return out


def history(condition: Any) -> list[dict[str, Any]]:
    """The recorded champion changes of a condition's model, oldest first."""
    client = _client()
    model = _registered_model(client, model_name(condition))
    if model is None:
        return []
    return json.loads(model.tags.get(HISTORY_TAG, "[]"))


# --------------------------------------------------------------------------- writing

@dataclass
class ChampionChange:
    """One change of the `champion` alias, as recorded in `promotion.history`."""

    kind: str                   # initial | promote | force-promote | rollback
    to_version: str
    from_version: str | None = None
    to_psnr: float | None = None
    from_psnr: float | None = None
    reason: str | None = None
    user: str = field(default_factory=current_user)
    time: str = field(default_factory=_now)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _record(client, name: str, change: ChampionChange) -> None:
    model = client.get_registered_model(name)
    entries = json.loads(model.tags.get(HISTORY_TAG, "[]"))
    entries.append(change.as_dict())
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(entries[-MAX_HISTORY_ENTRIES:]))
    for version in {change.to_version, change.from_version} - {None}:
        mv = client.get_model_version(name, str(version))
        own = json.loads(mv.tags.get(HISTORY_TAG, "[]"))
        own.append(change.as_dict())
        client.set_model_version_tag(name, version, HISTORY_TAG, json.dumps(own[-MAX_HISTORY_ENTRIES:]))
    client.set_model_version_tag(name, change.to_version, "promotion.last", json.dumps(change.as_dict()))


def _set_champion(client, name: str, change: ChampionChange) -> None:
    client.set_registered_model_alias(name, CHAMPION, change.to_version)
    challenger = _alias_version(client, name, CHALLENGER)
    if challenger is not None and str(challenger.version) == change.to_version:
        client.delete_registered_model_alias(name, CHALLENGER)
    _record(client, name, change)


def assign_initial_alias(condition: Any, version: str, *, policy: str = "auto") -> str | None:
    """Give a freshly registered version its alias.

    Parameters
    ----------
    condition
        Condition name or `Condition`.
    version
        The new version number.
    policy
        `auto` (champion when the model has none yet, else challenger),
        `champion`, `challenger` or `none`. `champion` here sets it without the
        benchmark gate (recorded as a forced promotion); use :func:`promote` for
        the gated move.

    Returns
    -------
    str or None
        The alias given.
    """
    if policy not in ALIAS_POLICIES:
        raise BadInput(f"alias policy {policy!r} is not one of {', '.join(ALIAS_POLICIES)}")
    if policy == "none":
        return None
    client = _client()
    name = model_name(condition)
    version = str(version)
    with champion_lock(condition):
        champion = _alias_version(client, name, CHAMPION)
        if policy == "challenger" or (policy == "auto" and champion is not None):
            client.set_registered_model_alias(name, CHALLENGER, version)
            return CHALLENGER
        new = client.get_model_version(name, version)
        _set_champion(client, name, ChampionChange(
            kind="initial" if champion is None else "force-promote",
            to_version=version,
            from_version=str(champion.version) if champion is not None else None,
            to_psnr=benchmark_of(new).get("psnr"),
            from_psnr=benchmark_of(champion).get("psnr") if champion is not None else None,
            reason="first version of the condition" if champion is None else "registered as champion",
        ))
        return CHAMPION


def register_version(source_uri: str, condition: Any, *, run_id: str | None = None,
                     description: str | None = None, tags: dict[str, str] | None = None,
                     alias_policy: str = "auto", model_description: str | None = None):
    """Register a logged model as a new version of `stem-denoiser-<condition>` and alias it.

    Parameters
    ----------
    source_uri
        The logged model's URI (`models:/<model_id>` from `log_model`, or `runs:/...`).
    condition
        Condition name or `Condition`.
    run_id
        The run that produced it (recorded on the version).
    description
        The version's description.
    tags
        Version tags (values turned to text).
    alias_policy
        See :func:`assign_initial_alias`.
    model_description
        Description of the registered model, set when it is created.

    Returns
    -------
    (ModelVersion, str or None)
        The new version and the alias it got.
    """
    from mlflow.exceptions import MlflowException

    if alias_policy not in ALIAS_POLICIES:
        raise BadInput(f"alias policy {alias_policy!r} is not one of {', '.join(ALIAS_POLICIES)}")
    client = _client()
    name = model_name(condition)
    if _registered_model(client, name) is None:
        try:
            client.create_registered_model(
                name, description=model_description
                or f"CNN denoiser for STEM images under the '{condition_name(condition)}' acquisition condition.")
        except MlflowException:
            pass  # another process created it meanwhile
    # A tracking server accepts a logged model's `models:/<model_id>` source only with its model_id.
    model_id = source_uri[len("models:/"):] if source_uri.startswith("models:/m-") else None
    version = client.create_model_version(
        name, source_uri, run_id=run_id, description=description,
        tags={k: str(v) for k, v in (tags or {}).items()}, model_id=model_id)
    alias = assign_initial_alias(condition, version.version, policy=alias_policy)
    return client.get_model_version(name, version.version), alias


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
        raise BadInput("--force needs --reason TEXT saying why the benchmark gate is overridden")
    client = _client()
    name = model_name(condition)
    target = resolve(condition, str(version) if version is not None else CHALLENGER)
    if score_missing:
        _ensure_scored(condition, target.version)
    with champion_lock(condition):
        target = client.get_model_version(name, target.version)
        champion = _alias_version(client, name, CHAMPION)
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
        _set_champion(client, name, change)
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
        champion = _alias_version(client, name, CHAMPION)
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
        _set_champion(client, name, change)
    log.info("%s: rolled champion back %s -> %s", name, change.from_version, change.to_version)
    return _result(name, change)


def _ensure_scored(condition: Any, version: str) -> None:
    client = _client()
    mv = client.get_model_version(model_name(condition), version)
    if "psnr" in benchmark_of(mv):
        return
    from stemreg.platform.benchmark import score_version

    score_version(condition, version)


# --------------------------------------------------------------------------- listing

def _summary(version) -> dict[str, Any] | None:
    if version is None:
        return None
    return {"version": str(version.version), "run_id": version.run_id,
            "created": _dt.datetime.fromtimestamp(version.creation_timestamp / 1000,
                                                  _dt.timezone.utc).isoformat(timespec="seconds"),
            "architecture": version.tags.get("architecture"),
            "parent": version.tags.get("parent"),
            "val_psnr": float(version.tags["val_psnr"]) if "val_psnr" in version.tags else None,
            "benchmark": benchmark_of(version)}


def list_condition_models() -> list[dict[str, Any]]:
    """Every `stem-denoiser-*` registered model with its versions, aliases, champion and challenger.

    Returns
    -------
    list of dict
        One per model, sorted by name: `name`, `condition`, `versions` (numbers),
        `aliases` ({alias: version}), `champion` and `challenger` (each `None` or
        a dict with `version`, `benchmark` figures, `val_psnr`, ...), `description`.
    """
    client = _client()
    out = []
    for model in client.search_registered_models(filter_string=f"name LIKE '{MODEL_PREFIX}%'"):
        versions = client.search_model_versions(f"name='{model.name}'")
        by_number = {str(v.version): v for v in versions}
        aliases = {alias: str(number) for alias, number in sorted(model.aliases.items())}
        out.append({
            "name": model.name,
            "condition": model.name[len(MODEL_PREFIX):],
            "description": model.description,
            "versions": sorted((str(v.version) for v in versions), key=int),
            "aliases": aliases,
            "champion": _summary(by_number.get(aliases.get(CHAMPION))),
            "challenger": _summary(by_number.get(aliases.get(CHALLENGER))),
        })
    return sorted(out, key=lambda m: m["name"])
