"""Shared fixtures: real stores in temporary directories."""
from __future__ import annotations

import os
import struct
import zlib

import pytest

# Every condition's benchmark at 1 image per bin (13 images, not the YAMLs' 8 per bin, 104): scoring
# a registered version, what most registry, pipeline and tuning tests do, is its largest cost. The
# same code runs; the benchmark id differs from the full set's. Subprocesses (`mlflow run`, a second
# `stemreg tune`, the tracking server's clients) inherit it. tests/acquisition/test_conditions.py
# checks the YAMLs' own count with it unset.
os.environ["STEMREG_BENCHMARK_MAX_PER_BIN"] = "1"

_MLFLOW_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID")


@pytest.fixture(autouse=True)
def _mlflow_env_restored():
    """Each test leaves MLflow's environment variables as it found them.

    mlflow.set_tracking_uri / set_registry_uri / set_experiment export their
    values to os.environ (for subprocesses) and set_*_uri(None) does not undo
    it, so a store of one test would otherwise leak into the next test's
    subprocesses (`mlflow models serve`, a second `stemreg tune`).
    """
    saved = {key: os.environ.get(key) for key in _MLFLOW_ENV}
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def _empty_store_template(tmp_path_factory):
    """An empty MLflow SQLite store, created by MLflow once per session. A new database runs all of
    MLflow's schema migrations (about 1.2 s); a copy of this one is a new store in 0.05 s."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("store-template")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.search_experiments()
    client.search_registered_models()
    return root / "mlflow.db"


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch, _empty_store_template):
    """A fresh, real MLflow tracking + registry store (SQLite) in a temp dir.

    The working directory moves there too, so the default artifact location
    and any `mlflow.db` default land inside tmp_path. The database is a copy of a new, empty one
    (:func:`_empty_store_template`) whose Default experiment is pointed where MLflow would have put
    it here, ``mlruns/0`` in tmp_path.
    """
    import shutil
    import sqlite3

    import mlflow
    import mlflow.tracking.fluent as fluent

    shutil.copyfile(_empty_store_template, tmp_path / "mlflow.db")
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        db.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                   (str(tmp_path / "mlruns" / "0"),))
    db.close()
    monkeypatch.chdir(tmp_path)
    # mlflow.set_experiment() remembers the experiment id in a module global and
    # in MLFLOW_EXPERIMENT_ID; an id from an earlier test's store means nothing here.
    monkeypatch.setattr(fluent, "_active_experiment_id", None)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
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


@pytest.fixture
def one_torch_thread():
    """Train with one torch thread for the test (test modules that train opt in with `pytestmark`)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _tiff_bomb(inflated_bytes: int, side_px: int = 64) -> bytes:
    """A TIFF declaring ``side_px`` x ``side_px`` uint8 pixels in one deflate strip that inflates to
    ``inflated_bytes`` (zeros compress about 1000:1)."""
    comp = zlib.compressobj(9)
    strip = b"".join(comp.compress(b"\0" * (1 << 20)) for _ in range(inflated_bytes >> 20)) + comp.flush()
    return _tiff_with_strip(strip, 8, side_px)


def _tiff_with_strip(strip: bytes, compression: int, side_px: int) -> bytes:
    """A little-endian TIFF of ``side_px`` x ``side_px`` uint8 pixels held in one ``strip`` as given."""
    entries = [(256, side_px), (257, side_px), (258, 8), (259, compression), (262, 1), (273, None), (277, 1),
               (278, side_px), (279, len(strip))]
    data_offset = 8 + 2 + 12 * len(entries) + 4
    ifd = struct.pack("<H", len(entries))
    for tag, value in entries:
        if tag in (273, 279):  # LONG: strip offset and byte count
            ifd += struct.pack("<HHII", tag, 4, 1, data_offset if value is None else value)
        else:
            ifd += struct.pack("<HHIHH", tag, 3, 1, value, 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\0\0\0\0" + strip


@pytest.fixture(scope="session")
def tiff_bomb():
    """``tiff_bomb(inflated_bytes, side_px=64)``: a TIFF declaring ``side_px``^2 uint8 pixels whose one
    deflate strip inflates to ``inflated_bytes``; ``tiff_bomb.with_strip(strip, compression, side_px)``
    builds one around any strip."""
    _tiff_bomb.with_strip = _tiff_with_strip
    return _tiff_bomb
