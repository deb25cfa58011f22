"""What every `stemreg` command shares: the error mapping, condition loading, output helpers, options.

The one place where library errors become exit codes: bad input (a
:class:`~stemreg.errors.BadInputError`: an unknown condition, an unreadable
image, a bad option) exits 2 with click's usage line and the reason; any other
:class:`~stemreg.errors.StemregError` (a refused promotion, a failed search, a
model that will not load) exits 1 with the reason. Every layer's errors derive
from these two, so the CLI lists none of them.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import click

from stemreg.errors import BadInputError, StemregError


def is_bad_input(exc: BaseException) -> bool:
    """A user's mistake (exit 2): any layer's :class:`~stemreg.errors.BadInputError`."""
    return isinstance(exc, BadInputError)


class StemregCommand(click.Command):
    """A click command that maps library errors to exit codes 2 and 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except StemregError as exc:
            if is_bad_input(exc):
                raise click.UsageError(str(exc), ctx) from None
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(1)


#: `@command("name")`: a click command with the error mapping.
command = functools.partial(click.command, cls=StemregCommand)


def load_condition(value: str):
    """The condition a `--condition` names: :func:`stemreg.acquisition.load_condition` (the one
    converter; its errors are bad input, so an unknown name or a bad YAML exits 2)."""
    from stemreg.acquisition import load_condition as _load  # numpy, pydantic: not for --help

    return _load(value)


def emit(data: Any, as_json: bool, text: str) -> None:
    """Print `data` as JSON (for scripts) or `text` (for people)."""
    click.echo(json.dumps(data, indent=2, default=str) if as_json else text)


def fmt(value: Any, spec: str = ".2f") -> str:
    """A figure for people: `-` when missing."""
    return "-" if value is None else format(value, spec)


condition_option = click.option("--condition", "-c", "condition_name", required=True, metavar="NAME",
                                help="Acquisition condition name (see `stemreg conditions`) or a YAML file.")
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")

#: `--targets DIR` and `--target-fraction F`: a lab's high-dose images as clean training targets (train, tune).
targets_option = click.option(
    "--targets", "targets_dir", type=click.Path(path_type=Path), default=None, metavar="DIR",
    help="Your own high-dose images (any format stemreg reads; pixel size from the file) as clean targets, "
         "degraded on the fly like the simulated fields and mixed with them.")
target_fraction_option = click.option(
    "--target-fraction", type=click.FloatRange(0, 1), default=0.5, show_default=True,
    help="With --targets: the share of training patches cut from your images.")


def load_targets_option(targets_dir: Path | None, *, patch_px: int) -> list | None:
    """The images of `--targets DIR` (None without it), each at least `patch_px` on a side.

    Raises
    ------
    BadInputError
        Not a folder, no image in it, an unreadable or too small image: one line naming it.
    """
    if targets_dir is None:
        return None
    from stemreg.acquisition.stream import load_targets

    try:
        return load_targets(targets_dir, min_px=patch_px)
    except (ValueError, OSError) as exc:  # ImageReadError is a ValueError
        text = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInputError(text if text.startswith("--targets") else f"--targets: {text}") from None
