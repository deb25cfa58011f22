"""stemreg CLI commands (serve)."""
from __future__ import annotations

import sys

import click

from stemreg.platform.cli.common import command
from stemreg.platform.config import SERVE  # the defaults' one home; light, so --help needs no numpy


@command("serve")
@click.option("--condition", required=True, metavar="NAME",
              help="Acquisition condition whose model to serve (model stem-denoiser-NAME).")
@click.option("--alias", default=SERVE.alias, show_default=True,
              help="Registry alias to serve and follow (champion, challenger, ...).")
@click.option("--host", default=SERVE.host, show_default=True,
              help="Address to bind. The server has no authentication: widen with care.")
@click.option("--port", default=SERVE.port, show_default=True, type=click.IntRange(0, 65535),
              help="TCP port (0 picks a free one).")
@click.option("--max-pixels", default=SERVE.max_pixels, show_default=True,
              type=click.IntRange(min=1), metavar="N",
              help="Largest request, in pixels (N x H x W); larger ones get 413.")
@click.option("--poll-seconds", default=SERVE.poll_seconds, show_default=True,
              type=click.FloatRange(min=0), metavar="S",
              help="How often to re-read the alias and load a moved version (0: only on POST /reload).")
@click.option("--max-work", default=None, type=click.IntRange(min=1), metavar="N",
              help="Most work one request may ask for, in pixel-steps (tiles x padded tile area x "
                   "stack count, plus 65536 per forward pass); larger ones get 413. "
                   "Default: 2 x --max-pixels + 64 passes.")
@click.option("--workers", default=SERVE.workers, show_default=True, type=click.IntRange(1, 1024), metavar="N",
              help=f"Requests worked on at once (one thread each, once read in full); {SERVE.queued} more "
                   "may wait, the rest get 503.")
@click.option("--batch-images", default=SERVE.batch_images, show_default=True, type=click.IntRange(1, 256), metavar="N",
              help="Most images of concurrent same-size requests run in one forward call (1: no batching).")
@click.option("--threads", default=None, type=click.IntRange(1, 1024), metavar="N",
              help="CPU threads for inference.  [default: the cores this process may use]")
@click.option("--parallel", default=None, type=click.IntRange(1, 1024), metavar="K",
              help="Forward calls run at once, sharing --threads (N // K torch threads each). "
                   "[default: N, one thread each: the most frames/s; 1 answers a lone request soonest]")
def serve_command(condition: str, alias: str, host: str, port: int, max_pixels: int,
                  poll_seconds: float, max_work: int | None, workers: int, batch_images: int,
                  threads: int | None, parallel: int | None) -> None:
    """Serve a condition's registered denoiser over HTTP.

    \b
    Endpoints:
      POST /invocations  MLflow scoring JSON ("inputs", "instances",
                         "dataframe_split"); same answer as `mlflow models serve`
      POST /denoise      raw .npy, .tif/.tiff or .png bytes -> denoised image,
                         same format (TIFF calibration kept)
      GET  /model        name, version, alias, condition, benchmark metrics
      POST /reload       re-read the alias now; load the version it points to
      GET  /health, /ping, /version

    The alias is re-read every --poll-seconds, so a promoted or rolled-back
    champion is served without a restart.
    """
    from stemreg.platform import serving
    from stemreg.platform.serving.memory import bound_allocator

    parallel, per_call = serving.configure_threads(threads, parallel)
    allocator = bound_allocator(parallel)  # flat memory under load (platform/serving/memory.py)
    try:
        server = serving.make_server(condition, alias=alias, host=host, port=port,
                                     max_pixels=max_pixels, poll_seconds=poll_seconds, max_work=max_work,
                                     workers=workers, batch_images=batch_images, parallel=parallel)
    except OSError as exc:  # port taken, address not ours: a failure, not bad input
        raise click.ClickException(str(exc)) from exc

    failures: list[Exception] = []

    def stop_on_load_failure(exc: Exception) -> None:
        failures.append(exc)
        server.shutdown()

    def announce_ready(served) -> None:
        click.echo(f"stemreg serve: ready, serving {served.name} v{served.version} ({alias})", err=True)

    holder = server.holder
    click.echo(f"stemreg serve: {holder.name}@{alias} on {server.url}, {parallel} forward call(s) at once "
               f"x {per_call} torch thread(s), {allocator} (loading; GET /health answers 200 once ready; Ctrl-C stops)",
               err=True)
    sys.stderr.flush()
    try:
        server.run(on_load_failure=stop_on_load_failure, on_loaded=announce_ready)
    except KeyboardInterrupt:
        click.echo("stemreg serve: stopped", err=True)
    finally:
        server.server_close()
    if failures:
        raise click.ClickException(f"could not load {holder.name}@{alias}: "
                                   f"{str(failures[0]).splitlines()[0] if str(failures[0]) else failures[0]!r}")


COMMANDS: list[click.Command] = [serve_command]
