"""`stemreg serve`'s allocator settings (platform/serving/memory.py).

Whether they keep memory flat is measured, not asserted here: `benchmarks/bench_serving.py
--soak-seconds 600` prints the server's RSS per minute (docs/RESULTS.md). These tests check that the
settings are applied, reported, and can be turned off.
"""
from __future__ import annotations

import sys
import threading
import time

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")


class _CountingLibc:
    """glibc itself, counting the calls."""

    def __init__(self, libc) -> None:
        self.libc, self.trims, self.mallopts = libc, 0, []

    def mallopt(self, param: int, value: int) -> int:
        self.mallopts.append((param, value))
        return self.libc.mallopt(param, value)

    def malloc_trim(self, pad: int) -> int:
        self.trims += 1
        return self.libc.malloc_trim(pad)


@pytest.fixture()
def libc(monkeypatch):
    from stemreg.platform.serving import memory

    real = memory._glibc()
    if real is None:
        pytest.skip("not glibc")
    counting = _CountingLibc(real)
    monkeypatch.setattr(memory, "_glibc", lambda: counting)
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    return counting


def _trimmer_alive() -> bool:
    return any(t.name == "stemreg-malloc-trim" for t in threading.enumerate())


def test_arenas_are_capped_and_free_pages_given_back_until_stopped(libc, monkeypatch):
    from stemreg.platform.serving.memory import bound_allocator

    monkeypatch.delenv("STEMREG_MALLOC", raising=False)
    stop = threading.Event()
    try:
        assert bound_allocator(3, trim_seconds=0.05, stop=stop) == "malloc: 3 arenas, trimmed every 0.05 s"
        time.sleep(0.5)
    finally:
        stop.set()
    time.sleep(0.2)
    trims = libc.trims
    # M_ARENA_MAX, then a call's freed memory kept for the next (M_MMAP_THRESHOLD, M_TRIM_THRESHOLD);
    # trimmed while running ...
    assert libc.mallopts == [(-8, 3), (-3, 32 << 20), (-1, 128 << 20)] and trims >= 3
    time.sleep(0.2)
    assert libc.trims == trims and not _trimmer_alive()  # ... and not after stop


def test_at_least_two_arenas_and_glibc_defaults_kept_when_asked(libc, monkeypatch):
    from stemreg.platform.serving.memory import bound_allocator

    monkeypatch.setenv("STEMREG_MALLOC", "glibc")
    assert bound_allocator(2, trim_seconds=0.05) == "malloc: glibc's defaults (STEMREG_MALLOC=glibc)"
    time.sleep(0.2)
    assert libc.mallopts == [] and libc.trims == 0 and not _trimmer_alive()
    monkeypatch.delenv("STEMREG_MALLOC")
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")  # a user's own glibc tuning is left in force
    bound_allocator(1, trim_seconds=0)  # one forward slot still gets two arenas; no trimming thread
    assert libc.mallopts == [(-8, 2)] and not _trimmer_alive()
