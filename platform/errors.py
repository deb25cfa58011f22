"""Errors the platform raises for bad input; the CLI maps them to exit code 2."""
from __future__ import annotations

import click


class BadInput(click.UsageError):
    """Bad input from a user: the message says what was wrong and what is accepted.

    Subclassing click.UsageError makes click print the one-line reason and
    exit with code 2.
    """

    exit_code = 2
