"""Errors the acquisition layer raises; each message says what was wrong and what is accepted."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from stemreg.errors import BadInputError


class UnknownConditionError(BadInputError):
    """No built-in condition has this name (and it is not a readable YAML file)."""

    def __init__(self, name: str, known: Iterable[str]):
        self.name = name
        self.known = sorted(known)
        super().__init__(
            f"unknown condition {name!r}; known conditions: {', '.join(self.known)} "
            "(or give the path of a condition YAML file)")


class ImageReadError(BadInputError):
    """An image file could not be read as a (stack of) 2-D image(s)."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ConditionFileError(BadInputError):
    """A condition YAML file that is missing, unreadable or invalid; the message names the file and the rule."""
