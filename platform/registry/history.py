"""The champion's history and the lock that serialises its changes.

MLflow keeps no history of aliases, so each champion change (initial,
promotion, forced promotion, rollback) is appended to a JSON list, the tag
`promotion.history`, on the registered model; the versions involved carry
their own entries too. Champion changes of one model are serialised by a lock
(a thread lock plus an OS file lock beside the SQLite store, or in the temp
dir for other stores), so concurrent promotes leave one champion and a
consistent history.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import getpass
import hashlib
import json
import os
import tempfile
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from mlflow.exceptions import MlflowException

from stemreg.platform.registry.naming import CHALLENGER, CHAMPION, HISTORY_TAG, MAX_HISTORY_ENTRIES, model_name
from stemreg.platform.store import client as _client
from stemreg.platform.store import tracking_uri


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



def alias_version(client, name: str, alias: str):
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def registered_model(client, name: str):
    try:
        return client.get_registered_model(name)
    except MlflowException:
        return None


def history(condition: Any) -> list[dict[str, Any]]:
    """The recorded champion changes of a condition's model, oldest first."""
    client = _client()
    model = registered_model(client, model_name(condition))
    if model is None:
        return []
    return json.loads(model.tags.get(HISTORY_TAG, "[]"))



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


def set_champion(client, name: str, change: ChampionChange) -> None:
    client.set_registered_model_alias(name, CHAMPION, change.to_version)
    challenger = alias_version(client, name, CHALLENGER)
    if challenger is not None and str(challenger.version) == change.to_version:
        client.delete_registered_model_alias(name, CHALLENGER)
    _record(client, name, change)
