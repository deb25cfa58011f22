"""The served model: the version an alias points to, loaded behind a lock, swapped when the alias moves."""
from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from pathlib import Path
from typing import Any, Callable

import numpy as np
from mlflow import MlflowClient

from stemreg.models.mlflow_model import check_work
from stemreg.models.prediction import network_of, predict, request_options, takes_stacks_only
from stemreg.platform.config import SERVE
from stemreg.platform.errors import BadInputError
from stemreg.platform.portable import adopt
from stemreg.platform.prediction import load_version
from stemreg.platform.registry import CHAMPION, benchmark_of, model_name, resolve
from stemreg.platform.serving.http_io import RequestError, public_message
from stemreg.platform.store import tracking_uri as default_tracking_uri

log = logging.getLogger(__name__)

DEFAULT_ALIAS = CHAMPION


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _benchmark(tags: dict[str, str]) -> dict[str, Any]:
    """The version's benchmark figures as the registry reads them; raw text if a figure is malformed."""
    try:
        return benchmark_of(SimpleNamespace(tags=tags))
    except (TypeError, ValueError):  # a malformed figure must not break /model
        return {k[len("benchmark."):]: v for k, v in tags.items() if k.startswith("benchmark.")}


@dataclass
class ServedModel:
    """One loaded model version and what `/model` says about it."""

    name: str
    version: str
    alias: str
    condition: str
    pyfunc: Any = field(repr=False)
    tags: dict[str, str]
    run_id: str | None
    loaded_at: str
    load_seconds: float

    @property
    def model_uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    def metrics(self) -> dict[str, float]:
        """Figures from the version's tags (`benchmark.*`, `val_*`, ...), as numbers."""
        out: dict[str, float] = {}
        for key, value in self.tags.items():
            if key.startswith(("benchmark.", "val_", "validation.", "metric.")):
                try:
                    number = float(value)
                except (TypeError, ValueError):
                    continue  # benchmark.id and the like are not figures
                if math.isfinite(number):
                    out[key] = number
        return out

    def describe(self) -> dict[str, Any]:
        architecture: Any = self.tags.get("architecture")
        if architecture is not None:
            try:
                architecture = json.loads(architecture)
            except ValueError:
                pass
        return {
            "name": self.name, "version": self.version, "alias": self.alias,
            "condition": self.condition, "model_uri": self.model_uri, "run_id": self.run_id,
            "metrics": self.metrics(), "architecture": architecture,
            "benchmark": _benchmark(self.tags), "tags": dict(self.tags),
            "loaded_at": self.loaded_at, "load_seconds": round(self.load_seconds, 3),
        }


class _Job:
    """One request waiting for the dynamic batcher."""

    def __init__(self, data: np.ndarray, params: dict | None) -> None:
        self.data, self.params = data, params
        self.images = 1 if data.ndim == 2 else int(data.shape[0])
        self.key = (tuple(data.shape[-2:]), data.dtype.str, tuple(sorted((params or {}).items())))
        self.taken = False  # in a running batch (set under the queue lock)
        self.done = threading.Event()
        self.result: Any = None
        self.served: ServedModel | None = None
        self.error: BaseException | None = None

    def finish(self, result: Any, served: ServedModel) -> None:
        self.result, self.served = result, served
        self.done.set()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.done.set()


@dataclass
class RefreshResult:
    """What one look at the alias found and did."""

    changed: bool
    version: str | None
    previous_version: str | None
    error: str | None = None
    checked_at: str = field(default_factory=_utc_now)

    def as_dict(self) -> dict[str, Any]:
        return {"changed": self.changed, "version": self.version,
                "previous_version": self.previous_version, "error": self.error,
                "checked_at": self.checked_at}


class ModelHolder:
    """The model version an alias points to, loaded, behind a lock.

    Parameters
    ----------
    condition
        Condition name; the model is `stem-denoiser-<condition>`.
    alias
        The alias to follow (`champion`, `challenger`, ...).
    tracking_uri
        MLflow tracking + registry store; default :func:`stemreg.platform.store.tracking_uri`.
        MLflow's global URIs are left alone: this holder asks its own client.
    loader
        `model_uri -> pyfunc`; default: the version's artifacts loaded from their location.
    batch_images
        The most images one batched forward call takes (1 turns dynamic batching off).
    parallel
        Forward calls run at once (each on its own torch threads; see
        :func:`stemreg.platform.serving.server.configure_threads`).
    """

    def __init__(self, condition: str, alias: str = DEFAULT_ALIAS, *, tracking_uri: str | None = None,
                 loader: Callable[[str], Any] | None = None, batch_images: int = SERVE.batch_images,
                 parallel: int = 1) -> None:
        if not condition or not condition.strip():
            raise BadInputError("--condition is empty; give a condition name such as low-dose")
        if not alias or not alias.strip():
            raise BadInputError("--alias is empty; give an alias such as champion or challenger")
        self.condition = condition
        self.alias = alias
        self.name = model_name(condition)
        self.tracking_uri = tracking_uri or default_tracking_uri()
        if self.tracking_uri.startswith("sqlite:///"):
            db_path = Path(self.tracking_uri[len("sqlite:///"):].split("?", 1)[0])
            if not db_path.is_file():  # opening it would create an empty store as a side effect
                raise BadInputError(
                    f"no MLflow store at {db_path} (tracking URI {self.tracking_uri}); run "
                    f"`stemreg train --condition {condition}` here first, or set "
                    "MLFLOW_TRACKING_URI to the store that holds the models")
        adopt(self.tracking_uri)  # a copied or moved project serves from its own mlruns/
        self.client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        self._loader = loader
        self._current: ServedModel | None = None
        if int(parallel) < 1 or int(batch_images) < 1:
            raise BadInputError(f"parallel {parallel} / batch_images {batch_images}: each must be at least 1")
        self._swap_lock = threading.Lock()      # guards _current
        #: Forward calls at once: each takes a slot (the cores are shared out, see configure_threads).
        self.parallel = int(parallel)
        self._slots = threading.BoundedSemaphore(self.parallel)
        self._refresh_lock = threading.Lock()   # one load at a time (poller vs /reload)
        self._queue_lock = threading.Lock()     # guards _queue, the requests waiting to be batched
        self._queue: list[_Job] = []
        #: The most images one batched forward call takes (1 turns batching off).
        self.batch_images = int(batch_images)
        self.last_refresh: RefreshResult | None = None
        self.load_error: str | None = None

    def resolve(self) -> Any:
        """The `ModelVersion` the alias points to now (:func:`stemreg.platform.registry.resolve`).

        Raises
        ------
        NotRegisteredError
            Unknown condition, no model registered for it, or no version carrying the alias yet.
        """
        return resolve(self.condition, self.alias, client=self.client)

    # -- loading ---------------------------------------------------------------------------
    def _load_version(self, version: Any) -> ServedModel:
        started = time.perf_counter()
        loaded = load_version(self.client, version, alias=self.alias, loader=self._loader)
        return ServedModel(
            name=self.name, version=loaded.version, alias=self.alias, condition=self.condition,
            pyfunc=loaded.pyfunc, tags=loaded.tags or {}, run_id=loaded.run_id, loaded_at=_utc_now(),
            load_seconds=time.perf_counter() - started)

    def load(self) -> ServedModel:
        """Resolve the alias and load that version (the first load; errors propagate)."""
        with self._refresh_lock:
            try:
                served = self._load_version(self.resolve())
            except Exception as exc:
                self.load_error = public_message(exc)
                raise
            with self._swap_lock:
                self._current = served
            self.load_error = None
        log.info("serving %s v%s (%s) for condition %s", served.name, served.version, self.alias,
                 self.condition)
        return served

    def refresh(self) -> RefreshResult:
        """Look at the alias again; load and swap in the version it points to if it moved.

        Never raises: a store or load failure is logged and reported, and the
        model already loaded keeps serving.
        """
        with self._refresh_lock:
            before = self.current
            previous = before.version if before else None
            try:
                version = self.resolve()
                if before is not None and str(version.version) == before.version:
                    result = RefreshResult(False, previous, previous)
                else:
                    served = self._load_version(version)
                    # A batch reads `current` once and answers with that version (X-Model-Version
                    # names it); batches running on the old version finish on it.
                    with self._swap_lock:
                        self._current = served
                    self.load_error = None
                    log.info("alias %s of %s moved: now serving v%s (was v%s)", self.alias,
                             self.name, served.version, previous)
                    result = RefreshResult(True, served.version, previous)
            except Exception as exc:  # noqa: BLE001 - keep serving whatever goes wrong
                message = public_message(exc)
                log.error("could not refresh %s@%s, still serving v%s: %s", self.name, self.alias,
                          previous, message)
                result = RefreshResult(False, previous, previous, error=message)
            self.last_refresh = result
            return result

    @property
    def current(self) -> ServedModel | None:
        with self._swap_lock:
            return self._current

    @property
    def loaded(self) -> bool:
        return self.current is not None

    def input_schema(self) -> Any:
        served = self.current
        return served.pyfunc.metadata.get_input_schema() if served else None

    def takes_stacks_only(self) -> bool:
        """True when the model's signature declares a rank-3 tensor `(N, H, W)` input."""
        served = self.current
        return served is not None and takes_stacks_only(served.pyfunc)

    def check_work(self, shape: tuple[int, ...], params: dict | None, max_work: int) -> int:
        """The work a request on ``shape`` with ``params`` asks of the served model, from the tiling it
        will run (its signature's defaults, ``params``, its network's receptive radius).

        Raises
        ------
        OverflowError
            More than ``max_work`` (:func:`stemreg.models.mlflow_model.check_work`).
        ValueError
            A given tiling that this image's shape makes invalid.
        """
        served = self._served_or_503()
        return check_work(tuple(shape), request_options(served.pyfunc, params), max_work,
                          network_of(served.pyfunc))

    def denoise(self, data: Any, params: dict | None = None) -> tuple[Any, ServedModel]:
        """Predict on an image `(H, W)` or stack `(N, H, W)` (a lone image comes back `(H, W)`).

        Through :func:`stemreg.models.prediction.predict`, the one prediction path. Up to
        :attr:`parallel` forward calls run at once. Concurrent requests of one image size and the
        same params are batched (dynamic batching): a request thread that gets a slot runs the
        oldest queued request and the compatible ones behind it, its fair share of the queue across
        the slots. Images are normalised one by one, so batching does not change answers.
        """
        if not (isinstance(data, np.ndarray) and data.ndim in (2, 3) and self.batch_images > 1):
            with self._slots:
                served = self._served_or_503()
                return predict(served.pyfunc, data, params), served
        job = _Job(data, params)
        with self._queue_lock:
            self._queue.append(job)
        while not job.done.is_set():
            with self._queue_lock:
                taken = job.taken
            if taken:  # another thread runs it: wait for the answer, leave the slots to queued work
                job.done.wait()
                break
            with self._slots:
                if not job.taken:  # taken while this thread waited for the slot: nothing to lead
                    self._run_batch(self._take_batch())
        if job.error is not None:
            raise job.error
        return job.result, job.served

    def _served_or_503(self) -> ServedModel:
        served = self.current
        if served is None:
            raise RequestError(503, "the model is not loaded yet; retry when GET /health answers 200")
        return served

    def _take_batch(self) -> list["_Job"]:
        """The oldest queued request and the queued ones that can share its forward calls, at most
        its share of them across the slots (so every slot gets work) and at most ``batch_images``."""
        with self._queue_lock:
            if not self._queue:
                return []
            key = self._queue[0].key
            alike = sum(job.images for job in self._queue if job.key == key)
            limit = min(self.batch_images, max(1, -(-alike // self.parallel)))
            batch, rest, images = [], [], 0
            for job in self._queue:
                if job.key == key and images + job.images <= limit or not batch:
                    batch.append(job)
                    job.taken = True
                    images += job.images
                else:
                    rest.append(job)
            self._queue = rest
            return batch

    def _run_batch(self, batch: list["_Job"]) -> None:
        """Run a batch (holding a slot) and hand each request its own slice."""
        if not batch:
            return
        try:
            served = self._served_or_503()
            if len(batch) == 1:
                batch[0].finish(predict(served.pyfunc, batch[0].data, batch[0].params), served)
                return
            stack = np.concatenate([job.data if job.data.ndim == 3 else job.data[None] for job in batch])
            out = np.asarray(predict(served.pyfunc, stack, batch[0].params))
            start = 0
            for job in batch:
                part = out[start:start + job.images]
                start += job.images
                job.finish(part if job.data.ndim == 3 else part[0], served)
        except Exception as exc:  # noqa: BLE001 - every waiting request must learn of it
            if len(batch) > 1:  # one bad request must not fail the others: each on its own
                for job in batch:
                    self._run_batch([job])
                return
            batch[0].fail(exc)
