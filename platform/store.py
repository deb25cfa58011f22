"""Where runs and registered models live: one MLflow tracking + registry store.

The default is MLflow 3's own default, `sqlite:///mlflow.db` in the working
directory, so a plain `mlflow ui` there shows everything; the environment
variable `MLFLOW_TRACKING_URI` points at another store (a tracking server
backed by PostgreSQL, say).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
from pathlib import Path

from stemreg.platform.portable import adopt

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "stemreg"
#: Tags every run of this process carries (through MLflow's MLFLOW_RUN_CONTEXT), so a later process
#: can tell the runs of a dead one.
PID_TAG, HOST_TAG = "stemreg.pid", "stemreg.host"


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
    adopt(uri)  # a copied or moved project writes (and reads) its own mlruns/
    location = artifact_location(uri)
    existing = mlflow.get_experiment_by_name(name) if location is not None else None
    if existing is not None:
        check_own_artifacts(existing, uri)
    elif location is not None:
        try:
            mlflow.create_experiment(name, artifact_location=location)
        except Exception:  # noqa: BLE001 - another process created it first: fine
            pass
    mlflow.set_experiment(name)
    watch_runs()
    return uri


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _end_runs_on_signal(signum: int, _frame: object) -> None:
    """SIGTERM/SIGHUP: leave through SystemExit, so every `with mlflow.start_run()` ends its run
    FAILED instead of leaving it RUNNING (MLflow's exit hook would mark a bare active run FINISHED)."""
    import mlflow

    while mlflow.active_run() is not None:
        mlflow.end_run("FAILED")
    raise SystemExit(128 + signum)


def watch_runs() -> list[str]:
    """Tag this process's runs with pid + host, end them on SIGTERM/SIGHUP, and mark FAILED the
    RUNNING runs (of the active experiment) whose process on this host is gone.

    Returns
    -------
    list of str
        The run ids marked FAILED.
    """
    import mlflow
    from mlflow import MlflowClient

    host = socket.gethostname()
    context = json.loads(os.environ.get("MLFLOW_RUN_CONTEXT") or "{}")
    context.update({PID_TAG: str(os.getpid()), HOST_TAG: host})
    os.environ["MLFLOW_RUN_CONTEXT"] = json.dumps(context)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
            if sig is not None and signal.getsignal(sig) in (signal.SIG_DFL, None):
                signal.signal(sig, _end_runs_on_signal)
    experiment = mlflow.get_experiment_by_name(os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT)
    active = mlflow.tracking.fluent._get_experiment_id()  # noqa: SLF001 - the experiment set just before
    ids = {e for e in (active, experiment.experiment_id if experiment else None) if e}
    if not ids:
        return []
    client = MlflowClient(tracking_uri=mlflow.get_tracking_uri(), registry_uri=mlflow.get_registry_uri())
    reaped = []
    try:
        runs = client.search_runs(sorted(ids), filter_string=f"attributes.status = 'RUNNING' and "
                                                             f"tags.`{HOST_TAG}` = '{host}'", max_results=500)
    except Exception as exc:  # noqa: BLE001 - housekeeping must never stop a command
        print(f"stemreg: could not look for abandoned runs: {str(exc).splitlines()[0] if str(exc) else exc!r}",
              file=sys.stderr)
        return []
    for run in runs:
        pid = run.data.tags.get(PID_TAG, "")
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            client.set_tag(run.info.run_id, "stemreg.abandoned", f"process {pid} on {host} ended without "
                                                                  "finishing the run")
            client.set_terminated(run.info.run_id, "FAILED")
            reaped.append(run.info.run_id)
    return reaped


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


def _own_mlruns(uri: str) -> Path:
    return Path(uri[len("sqlite:///"):].split("?", 1)[0]).expanduser().resolve().parent / "mlruns"


def check_own_artifacts(experiment, uri: str) -> None:
    """Refuse to write runs of a copied or moved SQLite store into another folder's ``mlruns/``.

    MLflow records an experiment's artifact location as an absolute path. When a store's project
    folder was copied (its ``mlruns/`` came along) or moved (the old folder is gone), new runs would
    write into the old folder, or nowhere. :func:`stemreg.platform.portable.adopt` (run first by
    :func:`configure`) rewrites such paths to this folder; this check is what is left when it could
    not (a read-only store). A location deliberately elsewhere (it exists, and this folder holds no
    copy of it) is left alone.

    Raises
    ------
    StemregError
        One line naming both folders and what to do.
    """
    from stemreg.errors import StemregError

    raw = experiment.artifact_location or ""
    raw = raw[len("file://"):] if raw.startswith("file://") else raw
    if not uri.startswith("sqlite:///") or "://" in raw or not raw.startswith("/"):
        return
    own, recorded = _own_mlruns(uri), Path(raw)
    if recorded.is_relative_to(own) or "mlruns" not in recorded.parts:
        return  # its own, or a location someone chose (not another project's mlruns/)
    tail = recorded.parts[len(recorded.parts) - recorded.parts[::-1].index("mlruns"):]
    copied = own.joinpath(*tail).exists()
    if recorded.exists() and not copied:
        return
    raise StemregError(
        f"this MLflow store ({own.parent}) was {'copied' if recorded.exists() else 'moved'} from another folder: "
        f"its experiment {experiment.name!r} writes artifacts to {recorded}, "
        f"{'the old folder' if recorded.exists() else 'which no longer exists'}; to log here, name a new "
        f"experiment (MLFLOW_EXPERIMENT_NAME=NAME: its artifacts go to {own}), or work in the original folder")


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
    own = _own_mlruns(uri)
    path = Path(raw)
    if path.is_relative_to(own):
        return location
    parts = path.parts
    if "mlruns" not in parts:
        return location
    cut = len(parts) - 1 - parts[::-1].index("mlruns")
    candidate = own.joinpath(*parts[cut + 1:])
    return str(candidate) if candidate.exists() else location


#: Seconds a tracking server gets to answer before a read-only command says it cannot reach it.
REACH_TIMEOUT_S = 5.0


def explicit_tracking_uri(uri: str | None = None) -> bool:
    """True when the store was named (``uri`` given, or ``MLFLOW_TRACKING_URI`` set), not the default."""
    return bool(uri) or bool(os.environ.get("MLFLOW_TRACKING_URI"))


def store_exists(uri: str) -> bool:
    """Whether a local store (SQLite file, file store folder) is there; other stores: True."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):].split("?", 1)[0]).expanduser().is_file()
    scheme = uri.split("://", 1)[0] if "://" in uri else ""
    if scheme in ("", "file"):
        return Path(uri[len("file://"):] if scheme else uri).expanduser().exists()
    return True


def check_store(uri: str, *, must_exist: bool) -> None:
    """Refuse, in one line, a store that is not there, before MLflow is asked anything.

    A SQLite file or file-store folder that does not exist would otherwise be created, new and
    empty (a typo in a path reads as "nothing registered"); a tracking server that does not
    answer would otherwise be retried for minutes.

    Raises
    ------
    BadInputError
        ``must_exist`` and a local store that does not exist.
    StemregError
        An ``http(s)`` tracking server that does not answer within :data:`REACH_TIMEOUT_S`.
    """
    from stemreg.errors import BadInputError, StemregError

    scheme = uri.split("://", 1)[0] if "://" in uri else ""
    if scheme in ("http", "https"):
        import urllib.error
        import urllib.request

        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=REACH_TIMEOUT_S).close()
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                return  # it answered: a server (or its proxy) asking for credentials, which MLflow sends
            raise StemregError(f"the server at {uri} does not answer as an MLflow tracking server (GET /health: "
                               f"HTTP {exc.code}); check the address (MLFLOW_TRACKING_URI)") from None
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise StemregError(f"cannot reach the MLflow tracking server at {uri} ({reason}); check the address "
                               "(MLFLOW_TRACKING_URI) and that the server runs") from None
        return
    if store_exists(uri):
        adopt(uri)  # a copied or moved project reads its own mlruns/
    elif must_exist:
        raise BadInputError(f"no MLflow store at {uri}: nothing there to read (a typo in the path?); give the "
                            "tracking URI of an existing store, or unset it for sqlite:///mlflow.db here")


def client():
    """An `MlflowClient` on the configured tracking and registry store."""
    from mlflow import MlflowClient

    uri = tracking_uri()
    adopt(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)
