"""Serve a condition's registered denoiser over HTTP, and follow its alias.

One process serves one condition: the model version that an alias
(`champion` by default) of `stem-denoiser-<condition>` points to. The server
speaks MLflow's scoring protocol on `POST /invocations` (the same array as
`mlflow models serve` builds, through MLflow's own conversion, and an answer
that reads back as the same values; parsed and encoded in C, see
:mod:`stemreg.platform.serving.json_io`), and adds `POST /denoise` for raw image
files (.npy, .tif/.tiff, .png), `GET /model`, `POST /reload`, `GET /health`,
`GET /ping` and `GET /version`.

Only the standard library is used (``selectors`` for the front end that reads every request in
full under deadlines before a worker thread answers it, `http.server`'s parser): no extra
dependency, and the server binds 127.0.0.1 unless told otherwise (it has no authentication, like
MLflow's).
"""
from __future__ import annotations

import logging
import os
import resource
import socket
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from stemreg.platform.config import SERVE
from stemreg.platform.errors import BadInputError
from stemreg.platform.serving.frontend import FrontEnd
from stemreg.platform.serving.handler import (DEFAULT_HEADER_TIMEOUT_S, DEFAULT_HOST, DEFAULT_MAX_CONNECTIONS,
                                              DEFAULT_MAX_PIXELS, DEFAULT_POLL_SECONDS, DEFAULT_PORT,
                                              DEFAULT_QUEUED, DEFAULT_REQUEST_TIMEOUT_S, DEFAULT_SOCKET_TIMEOUT_S,
                                              DEFAULT_WORKERS, answer_request, default_max_work)
from stemreg.platform.serving.holder import DEFAULT_ALIAS, ModelHolder, ServedModel

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_HEADER_TIMEOUT_S", "DEFAULT_HOST", "DEFAULT_MAX_CONNECTIONS", "DEFAULT_MAX_PIXELS",
           "DEFAULT_POLL_SECONDS", "DEFAULT_PORT", "DEFAULT_QUEUED", "DEFAULT_REQUEST_TIMEOUT_S",
           "DEFAULT_SOCKET_TIMEOUT_S", "DEFAULT_WORKERS", "DenoiserHTTPServer",
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


def _descriptors_left() -> int:
    """File descriptors this process may still open for connections (its limit less a margin for
    the store, the model files and the logs)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(16, (soft if soft != resource.RLIM_INFINITY else 1 << 20) - 128)


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


class DenoiserHTTPServer:
    """An HTTP server: a front end that reads whole requests (:mod:`~stemreg.platform.serving.frontend`),
    a bounded pool of worker threads that answer them, the holder, the caps and the alias poller.

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
        Requests worked on at once, and complete requests waiting for a worker; more are answered 503.
    socket_timeout
        Seconds a connection may stay silent (idle, or a request or answer that stops moving).
    header_timeout, request_timeout
        Seconds from a request's first byte to the end of its headers, and to the end of its body
        (plus one per MB of body); past either, 408.
    max_connections
        Connections held at once (a new one pushes out the one idle, else reading headers, longest).
    max_buffered_bytes
        Request bodies held in memory at once, all connections together (503 beyond); default twice
        the body cap plus 64 MiB.
    """

    def __init__(self, holder: ModelHolder, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 max_pixels: int = DEFAULT_MAX_PIXELS, poll_seconds: float = DEFAULT_POLL_SECONDS,
                 max_work: int | None = None, workers: int = DEFAULT_WORKERS, queued: int = DEFAULT_QUEUED,
                 socket_timeout: float = DEFAULT_SOCKET_TIMEOUT_S,
                 header_timeout: float = DEFAULT_HEADER_TIMEOUT_S,
                 request_timeout: float = DEFAULT_REQUEST_TIMEOUT_S,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS, max_buffered_bytes: int | None = None) -> None:
        if max_pixels <= 0:
            raise BadInputError(f"--max-pixels {max_pixels} must be a positive number of pixels")
        if workers < 1 or queued < 0 or max_connections < 1:
            raise BadInputError(f"workers {workers} / queued {queued} / max_connections {max_connections}: need "
                                "at least 1 worker, 0 queued and 1 connection")
        self.holder = holder
        self.max_pixels = int(max_pixels)
        self.max_work = int(max_work) if max_work else default_max_work(self.max_pixels)
        self.workers, self.queued = int(workers), int(queued)
        self.socket_timeout = float(socket_timeout)
        self.header_timeout, self.request_timeout = float(header_timeout), float(request_timeout)
        # JSON spends up to ~25 characters per float; image files far fewer bytes per pixel.
        self.max_body_bytes = 65536 + 32 * self.max_pixels
        self.max_buffered_bytes = int(max_buffered_bytes or 2 * self.max_body_bytes + (64 << 20))
        self.max_connections = min(int(max_connections), _descriptors_left())
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="stemreg-http")
        self.poll_seconds = float(poll_seconds)
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self._loop_idle = threading.Event()
        self._loop_idle.set()
        self._loop_thread: threading.Thread | None = None
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self.socket = socket.create_server((host, port), family=family, backlog=512)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from exc
        self.server_address = self.socket.getsockname()[:2]
        self._front = FrontEnd(self, self.socket)

    @property
    def buffered_bytes(self) -> int:
        """Request body bytes held in memory now, all connections together (bodies grow as they arrive)."""
        return self._front.buffered

    @property
    def connections(self) -> int:
        """Client connections held now."""
        return len(self._front.conns)

    # -- what the front end calls ---------------------------------------------------------------
    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on a worker thread."""
        self._pool.submit(fn, *args)

    def run_request(self, head: bytes, body: bytearray, client_address: Any) -> tuple[list, bool]:
        """Answer one request read in full (:func:`~stemreg.platform.serving.handler.answer_request`)."""
        return answer_request(self, head, body, client_address)

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Serve in this thread until :meth:`shutdown` or :meth:`stop`."""
        self._loop_idle.clear()
        self._loop_thread = threading.current_thread()
        try:
            self._front.run(poll_interval)
        finally:
            self._loop_idle.set()

    def shutdown(self) -> None:
        """Stop :meth:`serve_forever` (and wait for it, unless called from its own thread)."""
        self._front.stop()
        if self._loop_thread is not threading.current_thread():
            self._loop_idle.wait(10)

    def server_close(self) -> None:
        """Close the listening socket."""
        try:
            self.socket.close()
        except OSError:
            pass

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
        try:
            self.serve_forever(poll_interval=0.2)
        finally:
            self._stop.set()

    def stop(self) -> None:
        """Stop serving and polling, close the socket, and wait for our threads."""
        self._stop.set()
        self.shutdown()
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
    (``max_work``, ``workers``, ``queued``, ``socket_timeout``, ``header_timeout``, ``request_timeout``,
    ``max_connections``, ``max_buffered_bytes``) go to the server;
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
