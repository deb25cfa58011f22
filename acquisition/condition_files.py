"""Reading conditions: the one converter from "a name, a YAML file or a Condition" to a `Condition`.

Every surface (the API, the CLI, the server, tuning, napari) turns what a user gives as a condition
into a :class:`~stemreg.acquisition.conditions.Condition` through :func:`load_condition`; the type
of what it accepts is :data:`ConditionLike`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import yaml
from pydantic import ValidationError

from stemreg.acquisition.conditions import CONDITIONS_DIR, Condition
from stemreg.acquisition.errors import ConditionFileError, UnknownConditionError

#: What every function that takes a condition accepts: a built-in name, a YAML file, or a `Condition`.
ConditionLike = Union[str, os.PathLike, Condition]

#: The most images per benchmark bin of every condition read (its YAML's ``benchmark_per_bin`` when
#: lower): fewer for smoke runs (the test suite uses 2). The count is part of the condition's hash,
#: so the benchmark id changes with it and scores on sets of different sizes are never compared.
BENCHMARK_PER_BIN_ENV = "STEMREG_BENCHMARK_MAX_PER_BIN"


def _benchmark_per_bin_cap() -> int | None:
    raw = os.environ.get(BENCHMARK_PER_BIN_ENV, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= 1000:
        raise ConditionFileError(f"{BENCHMARK_PER_BIN_ENV}={raw!r}: give a whole number of images per benchmark bin, "
                         "1 to 1000 (or unset it for each condition's own count)")
    return value


def _read_yaml(path: Path) -> Condition:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        # YAML's messages span lines (a problem mark with the offending line): one line here.
        raise ConditionFileError(f"{path}: cannot read the condition YAML: {' '.join(str(exc).split())}") from exc
    if not isinstance(data, dict):
        raise ConditionFileError(f"{path}: a condition YAML must be a mapping of keys to values, got {type(data).__name__}")
    cap = _benchmark_per_bin_cap()
    own = data.get("benchmark_per_bin", Condition.model_fields["benchmark_per_bin"].default)
    if cap is not None and isinstance(own, int) and own > cap:  # anything else: the validation says what
        data = {**data, "benchmark_per_bin": cap}
    if not all(isinstance(key, str) for key in data):
        raise ConditionFileError(f"{path}: a condition YAML's keys are names; got {sorted(map(repr, data))}")
    try:
        return Condition(**data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'condition'}: {e['msg']}" for e in exc.errors())
        raise ConditionFileError(f"{path}: invalid condition: {problems}") from exc


def list_conditions() -> list[Condition]:
    """The built-in conditions, sorted by name."""
    return sorted((_read_yaml(p) for p in CONDITIONS_DIR.glob("*.yaml")), key=lambda c: c.name)


def get_condition(name: str) -> Condition:
    """A built-in condition by name; :class:`UnknownConditionError` lists the known names."""
    conditions = {c.name: c for c in list_conditions()}
    if name not in conditions:
        raise UnknownConditionError(name, conditions)
    return conditions[name]


def load_condition(condition: ConditionLike) -> Condition:
    """The `Condition` a user means: a built-in name, the path of a condition YAML file, or a `Condition`.

    Raises
    ------
    UnknownConditionError
        Not a built-in name (the message lists them) nor a file; an empty name too.
    ConditionFileError
        A YAML file that is missing, unreadable or invalid (the message names the key and the rule).
    """
    if isinstance(condition, Condition):
        return condition
    if not isinstance(condition, (str, os.PathLike)):
        raise ConditionFileError(f"a condition is a name, a YAML path or a Condition; got {type(condition).__name__}")
    text = os.fspath(condition)
    path = Path(text)
    if text.endswith((".yaml", ".yml")) or (text.strip() and path.is_file()):
        if not path.is_file():
            raise ConditionFileError(f"{path}: no such condition file")
        return _read_yaml(path)
    return get_condition(text)
