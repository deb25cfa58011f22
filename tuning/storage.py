"""Where Optuna studies live: an RDB storage (SQLite or PostgreSQL) through SQLAlchemy.

Studies keep their own database, never MLflow's: both tools own an
``alembic_version`` table and would fight over it. Every storage gets a
heartbeat, so a worker that is killed mid-trial leaves a RUNNING trial that a
later worker marks FAILED and re-enqueues (``RetryFailedTrialCallback``)
instead of losing it.
"""
from __future__ import annotations

import os
import time
import warnings
from typing import TYPE_CHECKING

from stemreg.errors import BadInputError

if TYPE_CHECKING:  # optuna is imported lazily: `stemreg --help` must stay fast
    import optuna
    from optuna.storages import RDBStorage

DEFAULT_STORAGE = "sqlite:///optuna.db"
#: Seconds between a running trial's heartbeats; a trial silent for twice this is stale.
DEFAULT_HEARTBEAT_S = 60
#: How often one trial may be retried after its worker died.
DEFAULT_MAX_RETRY = 3
ACCEPTED_SCHEMES = ("sqlite", "postgresql", "mysql")
#: Opening tries: workers started at once race to create the tables.
OPEN_ATTEMPTS = 3


class StorageError(BadInputError):
    """A study storage URL that cannot be used; the message says why and what is accepted."""


def default_storage() -> str:
    """The study storage URL in force: ``STEMREG_OPTUNA_STORAGE`` or ``sqlite:///optuna.db``."""
    return os.environ.get("STEMREG_OPTUNA_STORAGE") or DEFAULT_STORAGE


def masked_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, fit for tags and logs."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL has no password we could find
        return url


def check_storage_url(url: str) -> str:
    """Validate a storage URL's form (not yet its reachability).

    Parameters
    ----------
    url : str
        SQLAlchemy URL, e.g. ``sqlite:///optuna.db`` or
        ``postgresql+psycopg2://user@host:5432/db``.

    Returns
    -------
    str
        The URL, unchanged.

    Raises
    ------
    StorageError
        Not a SQLAlchemy URL, or a scheme other than sqlite/postgresql/mysql.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if not isinstance(url, str) or not url.strip():
        raise StorageError(f"storage URL must be a non-empty string such as {DEFAULT_STORAGE!r} (got {url!r})")
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StorageError(
            f"storage {url!r} is not a SQLAlchemy database URL; use e.g. {DEFAULT_STORAGE!r} or "
            "'postgresql+psycopg2://user@host:5432/dbname'") from exc
    backend = parsed.get_backend_name()
    if backend not in ACCEPTED_SCHEMES:
        raise StorageError(f"storage backend {backend!r} in {masked_url(url)!r} is not supported; "
                           f"accepted: {', '.join(ACCEPTED_SCHEMES)}")
    return url


def open_storage(url: str | None = None, *, heartbeat_interval_s: int | None = None,
                 max_retry: int = DEFAULT_MAX_RETRY) -> "RDBStorage":
    """Open (creating if needed) the RDB storage of studies, with heartbeat and retries.

    Parameters
    ----------
    url : str, optional
        SQLAlchemy URL; default :func:`default_storage`.
    heartbeat_interval_s : int, optional
        Seconds between heartbeats of a running trial (default
        ``STEMREG_OPTUNA_HEARTBEAT_S`` or 60). A trial whose heartbeat is
        older than twice this is failed and retried by the next worker.
    max_retry : int
        Retries of one trial whose worker died.

    Returns
    -------
    optuna.storages.RDBStorage

    Raises
    ------
    StorageError
        Bad URL or a database that cannot be reached; the message says which.
    """
    import optuna
    from optuna.storages import RDBStorage

    url = check_storage_url(url or default_storage())
    if heartbeat_interval_s is None:
        heartbeat_interval_s = int(os.environ.get("STEMREG_OPTUNA_HEARTBEAT_S") or DEFAULT_HEARTBEAT_S)
    if heartbeat_interval_s < 1:
        raise StorageError(f"heartbeat interval must be >= 1 s (got {heartbeat_interval_s})")
    engine_kwargs: dict = {}
    if url.startswith("sqlite"):
        # Two processes on one machine share SQLite only if a writer waits for the lock.
        engine_kwargs = {"connect_args": {"timeout": 30}}
    else:
        # Stale pooled connections (server restarts, idle timeouts) are re-opened, not fatal.
        engine_kwargs = {"pool_pre_ping": True}
    last_error: BaseException | None = None
    for attempt in range(OPEN_ATTEMPTS):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(
                    url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval_s,
                    heartbeat_stale_trial_callback=_retry_callback(max_retry))
        except (ImportError, ModuleNotFoundError) as exc:
            raise StorageError(f"no database driver for {masked_url(url)!r}: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - SQLAlchemy raises many kinds for a failing database
            last_error = exc
            if _is_unreachable(exc):
                break  # a wrong host or password will not heal by waiting
            # Workers started together race to create the schema; the loser retries.
            time.sleep(0.5 * (attempt + 1))
    assert last_error is not None
    raise StorageError(f"cannot open study storage {masked_url(url)!r}: {_root_message(last_error)}") \
        from last_error


def _retry_callback(max_retry: int):
    """Optuna's callback that re-enqueues a stale trial (renamed in Optuna 4.9)."""
    import optuna
    import optuna.storages as storages

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if hasattr(storages, "RetryHeartbeatStaleTrialCallback"):
            return storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
        return storages.RetryFailedTrialCallback(max_retry=max_retry)


def _is_unreachable(exc: BaseException) -> bool:
    from sqlalchemy.exc import OperationalError

    while exc is not None:
        if isinstance(exc, OperationalError) and "already exists" not in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _root_message(exc: BaseException) -> str:
    """The first line of the innermost cause: what the driver actually said."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
