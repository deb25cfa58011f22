"""A project folder that was copied or moved reads and writes its own artifacts.

MLflow's SQLite store records every artifact location as an absolute path: experiments, runs,
logged models and model versions all name ``/old/folder/mlruns/...``. When the folder holding
``mlflow.db`` and ``mlruns/`` is copied or moved, those paths still name the old folder: new runs
would write there, and every read (a run's artifacts, ``mlflow ui``, a ``runs:/`` URI) would read
there, or fail once it is gone.

:func:`adopt` repairs that when a store is opened: a location that lies in some *other* folder's
``mlruns/``, whose same relative path exists in the ``mlruns/`` beside this database (so the files
came along with the copy or move), is rewritten to this folder's ``mlruns/`` (the prefix only; the
rest of each path is kept). Locations someone chose elsewhere (nothing of them here) are left alone.
Nothing is deleted and no artifact file is touched; the original folder, if it still exists, is not
read or written. A store that cannot be written (read-only file, locked) is left as it is: reads of
registered versions are still mapped (:func:`stemreg.platform.store.local_artifacts`) and
:func:`stemreg.platform.store.check_own_artifacts` refuses writes into the old folder in one line.
"""
from __future__ import annotations

import sqlite3
import sys
from pathlib import Path
from urllib.parse import unquote

#: Every column of MLflow's SQLite schema that holds an artifact location (absent ones are skipped).
PATH_COLUMNS = (("experiments", "artifact_location"), ("runs", "artifact_uri"),
                ("logged_models", "artifact_location"), ("model_versions", "storage_location"),
                ("model_versions", "source"))


def database_of(uri: str) -> Path | None:
    """The SQLite file of a ``sqlite:///`` URI (None for any other store)."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):].split("?", 1)[0]).expanduser().resolve()


def split_mlruns(location: str) -> tuple[str, Path, tuple[str, ...]] | None:
    """``location`` as (its text up to and including the last ``/mlruns`` folder, that folder's path,
    the parts below it); None for a location with no ``mlruns`` folder or not on the local disk."""
    text = location[len("file://"):] if location.startswith("file://") else location
    if "://" in text or not text.startswith("/"):
        return None
    start = len(location) - len(text)
    at = len(text)
    while True:
        at = text.rfind("/mlruns", 0, at)
        if at < 0:
            return None
        end = at + len("/mlruns")
        if end == len(text) or text[end] == "/":
            break
    tail = tuple(part for part in unquote(text[end:]).split("/") if part)
    return location[:start + end], Path(unquote(text[:end])), tail


def foreign_prefixes(locations: list[str], own: Path) -> dict[str, str]:
    """Stored prefixes naming another folder's ``mlruns/`` whose contents came along into ``own``,
    each mapped to ``own`` written the same way (a ``file://`` URI or a plain path)."""
    moved: dict[str, str] = {}
    for location in locations:
        split = split_mlruns(location or "")
        if split is None:
            continue
        prefix, folder, tail = split
        if folder == own or prefix in moved or not own.joinpath(*tail).exists():
            continue
        moved[prefix] = own.as_uri() if prefix.startswith("file://") else str(own)
    return moved


def adopt(uri: str) -> dict[str, str]:
    """Point a copied or moved SQLite store's artifact locations at its own ``mlruns/``.

    Returns
    -------
    dict
        The prefixes rewritten (old -> new); empty when there was nothing to do, the store is not
        a SQLite file, or it could not be written (then one line on stderr says so).
    """
    db = database_of(uri)
    if db is None or not db.is_file():
        return {}
    own = db.parent / "mlruns"
    try:
        with sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=30) as con:
            if not con.execute("SELECT 1 FROM sqlite_master WHERE name = 'experiments'").fetchone():
                return {}
            locations = [row[0] for row in con.execute("SELECT artifact_location FROM experiments")]
        moved = foreign_prefixes(locations, own)
        if not moved:
            return {}
        con = sqlite3.connect(db, timeout=30, isolation_level=None)
        try:
            con.execute("BEGIN IMMEDIATE")
            for table, column in PATH_COLUMNS:
                columns = {row[1] for row in con.execute(f"PRAGMA table_info({table})")}
                if column not in columns:
                    continue
                for old, new in moved.items():
                    con.execute(f"UPDATE {table} SET {column} = ? || substr({column}, ?) "  # noqa: S608 - fixed names
                                f"WHERE {column} = ? OR substr({column}, 1, ?) = ?",
                                (new, len(old) + 1, old, len(old) + 1, old + "/"))
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK") if con.in_transaction else None
            raise
        finally:
            con.close()
    except sqlite3.Error as exc:
        print(f"stemreg: this store ({db}) was copied or moved, and its artifact paths could not be pointed at "
              f"its own mlruns/ ({exc}); it still reads its registered models, but logs nothing new",
              file=sys.stderr)
        return {}
    return moved
