"""The `stemreg` command line: one group; the commands live in this package's modules.

Heavy imports (torch, mlflow) stay inside the command functions so that
`stemreg --help` answers at once.
"""
from __future__ import annotations

import logging
import os

import click

from stemreg.platform.cli import adapt, data, denoise, evaluate, models, pipeline, pretrain, serve, tune


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.version_option(package_name="stemreg")
def main(verbose: int) -> None:
    """stemreg: train, track, evaluate, promote and serve CNN denoisers for
    low-dose atomic-resolution STEM images, one model per acquisition
    condition.

    Models and runs live in MLflow (default sqlite:///mlflow.db in the current
    directory; set MLFLOW_TRACKING_URI to use a tracking server). Browse them
    with `mlflow ui`.
    """
    # MLflow prints "View run at http://..." to stdout for a tracking server, which breaks `--json`.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


for _module in (data, models, denoise, adapt, pipeline, pretrain, tune, evaluate, serve):
    for _command in _module.COMMANDS:
        main.add_command(_command)
