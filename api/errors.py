"""The errors every layer derives from: the bottom of the package, importing nothing of stemreg.

Each layer raises its own subclasses (an unknown condition, an unreadable image, a model that
will not load, a failed search); the CLI (:mod:`stemreg.platform.cli.common`) catches the base and
turns :class:`BadInputError` into exit code 2 and any other :class:`StemregError` into exit code 1;
the server turns them into 4xx answers. Library code never exits or speaks HTTP.
"""
from __future__ import annotations


class StemregError(Exception):
    """An operation that could not be done (the CLI exits 1)."""


class BadInputError(StemregError, ValueError):
    """Bad input from a user: the message says what was wrong and what is accepted (the CLI exits 2)."""
