"""Where a streamed job's chunks run: in this process, on a local Dask cluster, or on a lab's scheduler.

Every executor answers ``map(fn, job, indices)`` with ``(index, result)`` pairs as chunks finish.
:class:`DaskExecutor` keeps a few chunks per worker in flight (not the whole job: the scheduler's
memory and the results stay small whatever the series' length), sends the job's plain description
once (scattered to every worker) and never a model: each worker loads it itself through the
verified path (:mod:`stemreg.platform.lazy`). A worker that dies has its chunks rerun elsewhere by
dask.distributed; a chunk that raises stops the job (the finished chunks stay done).
"""
from __future__ import annotations

import contextlib
import logging
from itertools import islice
from typing import Any, Callable, Iterable, Iterator

from stemreg.platform.errors import BadInputError

#: Chunks in flight per worker: one computing, one queued so no worker waits for the client.
IN_FLIGHT_PER_WORKER = 2


class DaskExecutor:
    """Chunks as dask.distributed tasks on ``client``'s workers."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.workers = max(1, len(client.scheduler_info().get("workers", {})))

    def map(self, fn: Callable, job: Any, indices: Iterable[int]) -> Iterator[tuple[int, Any]]:
        from distributed import as_completed

        indices = iter(list(indices))
        job_future = self.client.scatter(job, broadcast=True)
        batch = as_completed()
        futures: dict[Any, int] = {}

        def submit(index: int) -> None:
            future = self.client.submit(fn, job_future, index, pure=False, key=f"{fn.__name__}-{index}-{id(job)}")
            futures[future] = index
            batch.add(future)

        for index in islice(indices, IN_FLIGHT_PER_WORKER * self.workers):
            submit(index)
        try:
            for future in batch:
                index = futures.pop(future)
                result = future.result()  # a chunk's error is raised here, as the worker raised it
                future.release()
                following = next(indices, None)
                if following is not None:
                    submit(following)
                yield index, result
        finally:
            self.client.cancel(list(futures))


@contextlib.contextmanager
def open_executor(*, scheduler: str | None = None, workers: int | None = None,
                  connect_timeout_s: float = 10.0, processes: bool = True) -> Iterator[Any]:
    """The executor for ``--scheduler`` / ``--workers``: in-process when neither is given.

    ``processes=False`` makes the local cluster's workers threads of this process (what a test
    can afford to start; `stemreg denoise --workers` always starts processes).

    Raises
    ------
    BadInputError
        Both given, or a scheduler that cannot be reached within ``connect_timeout_s``.
    """
    from stemreg.platform.stream_job import InProcess

    if scheduler and workers:
        raise BadInputError("give --scheduler ADDRESS (a running cluster) or --workers N (a local one), not both")
    if not scheduler and not workers:
        yield InProcess()
        return
    from distributed import Client, LocalCluster

    # dask.distributed logs its start-up and shutdown (a closed comm as a traceback) at INFO: not ours to show
    logging.getLogger("distributed").setLevel(max(logging.ERROR, logging.getLogger().level))
    if workers:
        # one thread per worker process: torch's own threads would fight over the same cores
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=processes, dashboard_address=None,
                          silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
            yield DaskExecutor(client)
        return
    try:
        client = Client(scheduler, timeout=connect_timeout_s)
    except (OSError, TimeoutError, ValueError) as exc:
        text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise BadInputError(f"cannot reach the Dask scheduler at {scheduler} within {connect_timeout_s:g} s ({text}); "
                            "start it (`dask scheduler`, then `dask worker ADDRESS` on each machine) or leave out "
                            "--scheduler to run in this process") from None
    with client:
        yield DaskExecutor(client)
