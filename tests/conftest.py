"""Shared fixtures: real stores in temporary directories."""
from __future__ import annotations

import os

import pytest


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    """A fresh, real MLflow tracking + registry store (SQLite) in a temp dir.

    The working directory moves there too, so the default artifact location
    and any `mlflow.db` default land inside tmp_path.
    """
    import mlflow

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    yield uri
    if mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


@pytest.fixture
def postgres_url():
    """A fresh database on the PostgreSQL at 127.0.0.1:5432; skipped when absent."""
    import uuid

    sqlalchemy = pytest.importorskip("sqlalchemy")
    admin = os.environ.get("STEMREG_TEST_POSTGRES", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
    try:
        engine = sqlalchemy.create_engine(admin, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            name = f"stemreg_test_{uuid.uuid4().hex[:10]}"
            conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - any connection failure means "no server here"
        pytest.skip(f"PostgreSQL not reachable at {admin}: {exc}")
    url = admin.rsplit("/", 1)[0] + f"/{name}"
    yield url
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name})
        conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}"'))
    engine.dispose()
