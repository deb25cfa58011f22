"""Serve a condition's registered denoiser over HTTP, and follow its alias.

One process serves one condition: the model version that an alias
(`champion` by default) of `stem-denoiser-<condition>` points to. The server
speaks MLflow's scoring protocol on `POST /invocations` (the same array as
`mlflow models serve` builds, through MLflow's own conversion, and an answer
that reads back as the same values; parsed and encoded in C, see
:mod:`stemreg.platform.serving.json_io`), and adds `POST /denoise` for raw image
files (.npy, .tif/.tiff, .png), `GET /model`, `POST /reload`, `GET /health`,
`GET /ping` and `GET /version`.

Only the standard library's `http.server` is used: no extra dependency, and
the server binds 127.0.0.1 unless told otherwise (it has no authentication,
like MLflow's).
"""
from __future__ import annotations

import json
import logging
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import HTTPServer
from typing import Any, Callable

from stemreg.platform.config import SERVE
from stemreg.platform.errors import BadInputError
from stemreg.platform.serving.handler import (DEFAULT_BODY_TIMEOUT_S, DEFAULT_HOST, DEFAULT_MAX_PIXELS,
                                              DEFAULT_POLL_SECONDS, DEFAULT_PORT, DEFAULT_QUEUED,
                                              DEFAULT_SOCKET_TIMEOUT_S, DEFAULT_WORKERS, _Handler,
                                              default_max_work)
from stemreg.platform.serving.holder import DEFAULT_ALIAS, ModelHolder, ServedModel

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_BODY_TIMEOUT_S", "DEFAULT_HOST", "DEFAULT_MAX_PIXELS", "DEFAULT_POLL_SECONDS", "DEFAULT_PORT",
           "DEFAULT_QUEUED", "DEFAULT_SOCKET_TIMEOUT_S", "DEFAULT_WORKERS", "DenoiserHTTPServer",
           "configure_threads", "default_max_work", "make_server", "usable_cores"]


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


#: How long a thread may keep the GIL while another waits for it (Python's default: 5 ms). A forward
#: call takes the GIL back after every layer; behind a request thread parsing JSON it would wait up to
#: this long each time.
SWITCH_INTERVAL_S = 0.0005


def configure_threads(threads: int | None = None, parallel: int | None = None) -> tuple[int, int]:
    """Share ``threads`` CPU threads (default: :func:`usable_cores`) among ``parallel`` forward calls
    run at once (default: one per thread); sets torch's intra-op threads to the share of each, and
    Python's switch interval to :data:`SWITCH_INTERVAL_S`.

    Many small forward calls side by side, one thread each, keep every core busy with no
    intra-op synchronisation; one call on all threads answers a lone request sooner
    (`benchmarks/bench_serving.py --compare-mlflow` measures both). Process-wide: for the
    process that serves (``stemreg serve``), not for a library caller's.

    Returns
    -------
    (parallel, torch threads per forward call)
    """
    import torch

    threads = int(threads or usable_cores())
    parallel = int(parallel or threads)
    if threads < 1 or parallel < 1:
        raise BadInputError(f"--threads {threads} / --parallel {parallel}: each must be at least 1")
    per_call = max(1, threads // parallel)
    torch.set_num_threads(per_call)
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    return parallel, per_call


class DenoiserHTTPServer(HTTPServer):
    """`HTTPServer` with a bounded pool of worker threads, carrying the holder, the caps and the alias poller.

    Parameters
    ----------
    holder
        The model holder (loaded or not yet).
    host, port
        Where to listen; port 0 picks a free one (see :attr:`port`).
    max_pixels
        The most pixels one request may carry (413 above it).
    poll_seconds
        How often the alias is re-read; 0 or less turns polling off
        (`POST /reload` still works).
    max_work
        The most work one request may ask for (:func:`stemreg.models.mlflow_model.work_of`);
        default :func:`default_max_work`.
    workers, queued
        Connections served at once, and connections waiting for a worker; more are answered 503.
    socket_timeout, body_timeout
        Seconds a connection may stay silent; seconds (plus one per MB) a body may take.
    """

    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, holder: ModelHolder, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 max_pixels: int = DEFAULT_MAX_PIXELS, poll_seconds: float = DEFAULT_POLL_SECONDS,
                 max_work: int | None = None, workers: int = DEFAULT_WORKERS, queued: int = DEFAULT_QUEUED,
                 socket_timeout: float = DEFAULT_SOCKET_TIMEOUT_S,
                 body_timeout: float = DEFAULT_BODY_TIMEOUT_S) -> None:
        if max_pixels <= 0:
            raise BadInputError(f"--max-pixels {max_pixels} must be a positive number of pixels")
        if workers < 1 or queued < 0:
            raise BadInputError(f"workers {workers} / queued {queued}: need at least 1 worker and 0 queued")
        self.holder = holder
        self.max_pixels = int(max_pixels)
        self.max_work = int(max_work) if max_work else default_max_work(self.max_pixels)
        self.workers, self.queued = int(workers), int(queued)
        self.socket_timeout, self.body_timeout = float(socket_timeout), float(body_timeout)
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="stemreg-http")
        self._pending = 0
        self._pending_lock = threading.Lock()
        # JSON spends up to ~25 characters per float; image files far fewer bytes per pixel.
        self.max_body_bytes = 65536 + 32 * self.max_pixels
        self.poll_seconds = float(poll_seconds)
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self._serving = False
        try:
            super().__init__((host, port), _Handler)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from exc

    # -- bounded concurrency: at most `workers` threads, `queued` waiting, the rest refused ----------
    def process_request(self, request: Any, client_address: Any) -> None:
        with self._pending_lock:
            busy = self._pending >= self.workers + self.queued
            if not busy:
                self._pending += 1
        if busy:
            self._refuse_busy(request)
            return
        self._pool.submit(self._work, request, client_address)

    def _work(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:  # noqa: BLE001 - socketserver's own policy: log and go on
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            with self._pending_lock:
                self._pending -= 1

    def _refuse_busy(self, request: Any) -> None:
        body = json.dumps({"error": f"the server is busy ({self.workers} connections served, "
                                    f"{self.queued} waiting); retry shortly",
                           "error_code": "TEMPORARILY_UNAVAILABLE"}).encode()
        head = (f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n").encode()
        try:
            request.settimeout(1.0)
            request.sendall(head + body)
        except OSError:
            pass
        self.shutdown_request(request)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        host = self.server_address[0]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            self.holder.refresh()  # also retries a first load that failed

    def _load_then(self, on_failure: Callable[[Exception], None] | None,
                   on_loaded: Callable[[ServedModel], None] | None = None) -> None:
        try:
            served = self.holder.load()
        except Exception as exc:  # noqa: BLE001 - reported through /health and on_failure
            log.error("could not load %s@%s: %s", self.holder.name, self.holder.alias, exc)
            if on_failure:
                on_failure(exc)
            return
        if on_loaded:
            on_loaded(served)

    def start_background(self, *, load: bool = True,
                         on_load_failure: Callable[[Exception], None] | None = None) -> "DenoiserHTTPServer":
        """Serve from daemon threads (and load the model in one, unless already loaded).

        Returns `self`; `/health` answers 503 until the model is in.
        """
        self._start_threads(load=load, on_load_failure=on_load_failure)
        self._serving = True
        thread = threading.Thread(target=self.serve_forever, name="stemreg-serve", daemon=True)
        thread.start()
        self._workers.append(thread)
        return self

    def _start_threads(self, *, load: bool, on_load_failure: Callable[[Exception], None] | None,
                       on_loaded: Callable[[ServedModel], None] | None = None) -> None:
        if load and not self.holder.loaded:
            loader = threading.Thread(target=self._load_then, args=(on_load_failure, on_loaded),
                                      name="stemreg-load", daemon=True)
            loader.start()
            self._workers.append(loader)
        if self.poll_seconds > 0:
            poller = threading.Thread(target=self._poll, name="stemreg-poll", daemon=True)
            poller.start()
            self._workers.append(poller)

    def run(self, *, on_load_failure: Callable[[Exception], None] | None = None,
            on_loaded: Callable[[ServedModel], None] | None = None) -> None:
        """Serve in this thread until :meth:`stop` (or Ctrl-C); loading and polling run beside it."""
        self._start_threads(load=True, on_load_failure=on_load_failure, on_loaded=on_loaded)
        self._serving = True
        try:
            self.serve_forever(poll_interval=0.2)
        finally:
            self._stop.set()

    def stop(self) -> None:
        """Stop serving and polling, close the socket, and wait for our threads."""
        self._stop.set()
        if self._serving:  # shutdown() waits for serve_forever, which must have started
            self.shutdown()
            self._serving = False
        self.server_close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        for thread in self._workers:
            if thread is not threading.current_thread():
                thread.join(timeout=10)

    def __enter__(self) -> "DenoiserHTTPServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def make_server(condition: str, *, alias: str = DEFAULT_ALIAS, host: str = DEFAULT_HOST,
                port: int = DEFAULT_PORT, max_pixels: int = DEFAULT_MAX_PIXELS,
                poll_seconds: float = DEFAULT_POLL_SECONDS, tracking_uri: str | None = None,
                loader: Callable[[str], Any] | None = None, batch_images: int = SERVE.batch_images, parallel: int = 1,
                **options: Any) -> DenoiserHTTPServer:
    """Check that `condition@alias` exists, then bind a server for it (model not loaded yet).

    Call :meth:`DenoiserHTTPServer.start_background` or :meth:`DenoiserHTTPServer.run`. ``options``
    (``max_work``, ``workers``, ``queued``, ``socket_timeout``, ``body_timeout``) go to the server;
    ``batch_images`` and ``parallel`` (forward calls at once, see :func:`configure_threads`) to the
    :class:`ModelHolder`.

    Raises
    ------
    BadInputError
        Unknown condition, nothing registered, no version with the alias, bad
        size cap.
    """
    holder = ModelHolder(condition, alias, tracking_uri=tracking_uri, loader=loader, batch_images=batch_images,
                         parallel=parallel)
    holder.resolve()  # start-up errors before we take a port
    return DenoiserHTTPServer(holder, host=host, port=port, max_pixels=max_pixels,
                              poll_seconds=poll_seconds, **options)
