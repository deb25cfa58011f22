"""The platform's errors: :mod:`stemreg.errors` (the package's bottom layer), re-exported here.

Kept so that ``from stemreg.platform.errors import BadInputError`` goes on working.
"""
from __future__ import annotations

from stemreg.errors import BadInputError, StemregError

__all__ = ["BadInputError", "StemregError"]
