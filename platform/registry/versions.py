"""Registered versions: register one, give it its first alias, resolve an alias, list them all.

- The first version of a condition becomes `champion`; later ones `challenger`.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import logging
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException

from stemreg.acquisition import list_conditions
from stemreg.platform.errors import BadInputError
from stemreg.platform.registry.card import refresh_cards, summary_tag
from stemreg.platform.registry.history import (ChampionChange, alias_version, registered_model,
                                               set_champion, champion_lock)
from stemreg.platform.registry.naming import (ALIAS_POLICIES, CHALLENGER, CHAMPION, MODEL_PREFIX,
                                              NotRegisteredError, as_condition, benchmark_of, condition_name,
                                              model_name)
from stemreg.platform.store import client as _client

log = logging.getLogger(__name__)


def _registered_conditions(client) -> list[str]:
    try:
        found = client.search_registered_models(filter_string=f"name LIKE '{MODEL_PREFIX}%'")
    except MlflowException:  # only used to word an error message
        return []
    return sorted(m.name[len(MODEL_PREFIX):] for m in found)


def resolve(condition: Any, alias: str = CHAMPION, *, client=None):
    """The model version that `alias` (or a version number) points at.

    Parameters
    ----------
    condition
        Condition name or `Condition`.
    alias
        An alias (`champion`, `challenger`, ...) or a version number as text.
    client
        The `MlflowClient` to ask; default one on :func:`stemreg.platform.store.tracking_uri`.

    Returns
    -------
    mlflow.entities.model_registry.ModelVersion

    Raises
    ------
    NotRegisteredError
        No model registered for the condition (the message says whether the
        condition is unknown, and which conditions have models), or nothing
        behind the alias.
    """
    client = client or _client()
    name, cond = model_name(condition), condition_name(condition)
    model = registered_model(client, name)
    if model is None:
        known = sorted(c.name for c in list_conditions())
        unknown = (f"unknown condition {cond!r}; known conditions: {', '.join(known)}; "
                   if cond not in known else "")
        raise NotRegisteredError(
            f"{unknown}no model registered for condition '{cond}' ({name} in {client.tracking_uri}); "
            f"registered models exist for: {', '.join(_registered_conditions(client)) or 'none yet'}; "
            f"train one first: stemreg train --condition {cond}")
    if str(alias).isdigit():
        try:
            return client.get_model_version(name, str(alias))
        except MlflowException:
            raise NotRegisteredError(f"{name} has no version {alias}") from None
    version = alias_version(client, name, alias)
    if version is None:
        held = ", ".join(f"{a} -> v{v}" for a, v in sorted(model.aliases.items())) or "none"
        raise NotRegisteredError(
            f"no {alias} registered yet for condition '{cond}': {name} has no version with alias {alias!r} "
            f"(aliases: {held}); promote one with `stemreg promote --condition {cond}`")
    return version


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
        raise BadInputError(f"alias policy {policy!r} is not one of {', '.join(ALIAS_POLICIES)}")
    if policy == "none":
        return None
    client = _client()
    name = model_name(condition)
    version = str(version)
    with champion_lock(condition):
        champion = alias_version(client, name, CHAMPION)
        if policy == "challenger" or (policy == "auto" and champion is not None):
            client.set_registered_model_alias(name, CHALLENGER, version)
            refresh_cards(client, as_condition(condition), version)
            return CHALLENGER
        new = client.get_model_version(name, version)
        set_champion(client, name, ChampionChange(
            kind="initial" if champion is None else "force-promote",
            to_version=version,
            from_version=str(champion.version) if champion is not None else None,
            to_psnr=benchmark_of(new).get("psnr"),
            from_psnr=benchmark_of(champion).get("psnr") if champion is not None else None,
            reason="first version of the condition" if champion is None else "registered as champion",
        ))
        refresh_cards(client, as_condition(condition), version)
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
        A one-line summary of how it was made (e.g. the training); the version's description is
        its model card (:mod:`~stemreg.platform.registry.card`), which quotes this line.
    tags
        Version tags (values turned to text).
    alias_policy
        See :func:`assign_initial_alias`.
    model_description
        Description of the registered model until its first card is written (right after).

    Returns
    -------
    (ModelVersion, str or None)
        The new version and the alias it got.
    """
    if alias_policy not in ALIAS_POLICIES:
        raise BadInputError(f"alias policy {alias_policy!r} is not one of {', '.join(ALIAS_POLICIES)}")
    client = _client()
    name = model_name(condition)
    if registered_model(client, name) is None:
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
        tags={**{k: str(v) for k, v in (tags or {}).items()}, **summary_tag(description)}, model_id=model_id)
    refresh_cards(client, as_condition(condition), version.version)
    alias = assign_initial_alias(condition, version.version, policy=alias_policy)
    return client.get_model_version(name, version.version), alias


def artifact_digests(weights_path: str | Path, architecture_path: str | Path) -> dict[str, str]:
    """`weights_sha256` and `architecture_sha256` version tags: the SHA-256 of the two local artifact files.

    Computed from the files as written, before they are logged, so a loader can check that
    what it fetched is what was registered.
    """
    def digest(path: str | Path) -> str:
        sha = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                sha.update(block)
        return sha.hexdigest()

    return {"weights_sha256": digest(weights_path), "architecture_sha256": digest(architecture_path)}


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
