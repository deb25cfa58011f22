"""The platform's own errors: plain exceptions, free of the CLI and of HTTP.

The CLI (:mod:`stemreg.platform.cli.common`) turns :class:`BadInputError` into
exit code 2 and any other :class:`StemregError` into exit code 1; the server
(:mod:`stemreg.platform.serving.holder`) turns them into 4xx answers.
"""
from __future__ import annotations


class StemregError(Exception):
    """An operation that could not be done (the CLI exits 1)."""


class BadInputError(StemregError, ValueError):
    """Bad input from a user: the message says what was wrong and what is accepted (the CLI exits 2)."""
