"""`stemreg serve`'s allocator settings (platform/serving/memory.py).

Whether they keep memory flat is measured, not asserted here: `benchmarks/bench_serving.py
--soak-seconds 600` prints the server's RSS per minute (docs/RESULTS.md). These tests check that the
settings are applied, reported, and can be turned off.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")


def _run(code: str, **env: str) -> str:
    import os

    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         timeout=60, env={**os.environ, **env})
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


_TRIMS = """
    import ctypes, threading, time
    from stemreg.platform.serving import memory
    calls = []
    class Libc:  # glibc itself, counting the trims
        def __init__(self, libc): self.libc = libc
        def mallopt(self, *a): return self.libc.mallopt(*a)
        def malloc_trim(self, pad): calls.append(pad); return self.libc.malloc_trim(pad)
    real = memory._glibc()
    memory._glibc = lambda: Libc(real) if real is not None else None
    stop = threading.Event()
    print(memory.bound_allocator(3, trim_seconds=0.05, stop=stop))
    time.sleep(0.5)
    stop.set()
    time.sleep(0.2)
    n = len(calls)
    time.sleep(0.3)
    print(n, len(calls), any(t.name == "stemreg-malloc-trim" for t in threading.enumerate()))
"""


def test_arenas_are_capped_and_free_pages_given_back_until_stopped():
    first, counts = _run(_TRIMS).splitlines()
    assert first == "malloc: 3 arenas, trimmed every 0.05 s"
    before, after, alive = counts.split()
    assert int(before) >= 3 and before == after and alive == "False"  # trimmed while running, not after stop


def test_glibc_defaults_are_kept_when_asked():
    first, counts = _run(_TRIMS, STEMREG_MALLOC="glibc").splitlines()
    assert first == "malloc: glibc's defaults (STEMREG_MALLOC=glibc)"
    assert counts.split() == ["0", "0", "False"]
