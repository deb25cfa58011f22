"""Where runs and registered models live: one MLflow tracking + registry store.

The default is MLflow 3's own default, `sqlite:///mlflow.db` in the working
directory, so a plain `mlflow ui` there shows everything; the environment
variable `MLFLOW_TRACKING_URI` points at another store (a tracking server
backed by PostgreSQL, say).
"""
from __future__ import annotations

import os
from pathlib import Path

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "stemreg"


def tracking_uri() -> str:
    """The tracking (and registry) URI in force.

    Returns
    -------
    str
        `MLFLOW_TRACKING_URI` when set and non-empty, else `sqlite:///mlflow.db`
        (relative to the current working directory).
    """
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def experiment_name() -> str:
    """The experiment that stemreg runs log to (`MLFLOW_EXPERIMENT_NAME` or `stemreg`)."""
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT


def configure(experiment: str | None = None) -> str:
    """Point MLflow's tracking and registry at :func:`tracking_uri` and pick the experiment.

    Under `mlflow run` the project's run already exists (`MLFLOW_RUN_ID` and
    `MLFLOW_EXPERIMENT_ID` set); we then keep its experiment so our runs
    nest under it. A SQLite store's new experiment keeps its artifacts in
    `mlruns/` beside the database (see :func:`artifact_location`).

    Parameters
    ----------
    experiment
        Experiment name; default :func:`experiment_name`.

    Returns
    -------
    str
        The tracking URI configured.
    """
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if os.environ.get("MLFLOW_RUN_ID") and os.environ.get("MLFLOW_EXPERIMENT_ID") and experiment is None:
        # Under `mlflow run` (which sets both): log beside the project's run. MLFLOW_EXPERIMENT_ID
        # alone proves nothing: mlflow.set_experiment() exports it for every later store too.
        mlflow.set_experiment(experiment_id=os.environ["MLFLOW_EXPERIMENT_ID"])
        return uri
    name = experiment or experiment_name()
    location = artifact_location(uri)
    if location is not None and mlflow.get_experiment_by_name(name) is None:
        try:
            mlflow.create_experiment(name, artifact_location=location)
        except Exception:  # noqa: BLE001 - another process created it first: fine
            pass
    mlflow.set_experiment(name)
    return uri


def artifact_location(uri: str) -> str | None:
    """Artifacts of a SQLite store go in `mlruns/` beside the database file.

    MLflow would put them in `./mlruns` of whatever directory the experiment
    happens to be created from; beside the database they travel with it
    (and equal MLflow's default when both sit in the working directory).
    Other stores: None (the server decides).
    """
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri[len("sqlite:///"):]).expanduser().resolve()
    return (db.parent / "mlruns").as_uri()


def local_artifacts(location: str, uri: str | None = None) -> str:
    """An artifact location as this store sees it, so a copied or moved project reads its own files.

    MLflow's SQLite store records absolute artifact paths. When ``location`` lies in some other
    folder's ``mlruns/`` and the same relative path exists in the ``mlruns/`` beside this store's
    database, that one is returned; otherwise ``location`` unchanged (other stores: unchanged).
    """
    uri = uri or tracking_uri()
    if not uri.startswith("sqlite:///"):
        return location
    raw = location[len("file://"):] if location.startswith("file://") else location
    if "://" in raw or not raw.startswith("/"):
        return location
    own = Path(uri[len("sqlite:///"):].split("?", 1)[0]).expanduser().resolve().parent / "mlruns"
    path = Path(raw)
    if path.is_relative_to(own):
        return location
    parts = path.parts
    if "mlruns" not in parts:
        return location
    cut = len(parts) - 1 - parts[::-1].index("mlruns")
    candidate = own.joinpath(*parts[cut + 1:])
    return str(candidate) if candidate.exists() else location


def client():
    """An `MlflowClient` on the configured tracking and registry store."""
    from mlflow import MlflowClient

    uri = tracking_uri()
    return MlflowClient(tracking_uri=uri, registry_uri=uri)
