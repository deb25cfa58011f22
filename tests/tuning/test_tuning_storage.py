"""Study storage URLs: bad ones are refused with a reason; passwords never reach tags."""
from __future__ import annotations

import pytest

from stemreg.tuning import StorageError, open_storage
from stemreg.tuning.storage import masked_url


@pytest.mark.parametrize("url, reason", [
    ("not a url", "not a SQLAlchemy database URL"),
    ("redis://localhost/0", "accepted: sqlite, postgresql"),
    ("postgresql+psycopg2://nobody@127.0.0.1:1/optuna", "cannot open study storage"),
])
def test_bad_storage_is_refused_with_a_reason(url, reason):
    with pytest.raises(StorageError, match=reason):
        open_storage(url)


def test_sqlite_storage_opens_with_heartbeat(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'o.db'}", heartbeat_interval_s=5)
    assert storage.heartbeat_interval == 5
    assert storage.get_heartbeat_stale_trial_callback() is not None
    assert (tmp_path / "o.db").exists()


def test_masked_url_hides_the_password():
    assert "s3cret" not in masked_url("postgresql+psycopg2://user:s3cret@db:5432/optuna")
    assert masked_url("sqlite:///optuna.db") == "sqlite:///optuna.db"
