"""Keep a long-running server's memory flat under load: few malloc heaps, free pages given back.

glibc's malloc gives each thread that allocates while the others hold their heaps a heap ("arena")
of its own, up to 8 per core, and keeps the freed memory of each for reuse. A forward call
allocates activations of one to a few tens of MB per layer, from whichever request thread runs the
batch; with 32 request threads the activations spread over up to 16 heaps, each keeping its
high-water mark. Measured with `benchmarks/bench_serving.py --temp-model --soak-seconds 60`
(8 clients, 256^2 and 1024^2, the shipped base; each variant its own server, one after another):

| glibc setting                          | RSS after warm-up -> after 60 s | /denoise 256^2, 1024^2 frames/s |
| ---                                    | ---                             | ---                             |
| its defaults                           | 1506 -> 2174 MB (peak 2404)     | 4.92, 2.40                      |
| mmap threshold fixed at 1 MiB          | 536 -> 560 MB (peak 764)        | 3.90, 1.97 (page faults)        |
| 2 arenas                               | 1125 -> 1224 MB                 | 5.15, 2.62                      |
| `malloc_trim` every 5 s                | 1690 -> 1731 MB                 | 5.30, 2.55                      |
| 2 arenas and `malloc_trim` every 5 s   | 648 -> 724 MB (peak 1231)       | 5.63, 2.82                      |

Between two trims, glibc's own heuristics still gave pages back after nearly every call: a 256^2
forward pass took ~2000 page faults (1-2 us each on this VM, ~20 % of its CPU time). A fixed mmap
threshold of 32 MiB (what glibc's dynamic one tops out at anyway) and a trim threshold of 128 MiB
keep a call's freed activations for the next one: 0-100 faults per 256^2 call and 17 instead of
21.5 ms CPU, 1024^2 230 instead of 300 ms (one process, one thread, alternating runs); the 5 s trim
still bounds what is kept.

So ``stemreg serve`` caps the arenas at its forward-call slots (at least 2), keeps a call's freed
memory for the next (the two thresholds above) and gives free heap pages back every 5 s (the pages of a heap's free chunks are released with ``madvise``, the memory
stays mapped and is faulted back in when used again). Process-wide, so only ``stemreg serve`` does
it. ``STEMREG_MALLOC=glibc`` leaves glibc's defaults (and any ``MALLOC_*`` environment) in force;
``MALLOC_MMAP_THRESHOLD_`` or ``MALLOC_TRIM_THRESHOLD_`` in the environment keeps the thresholds glibc's.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading

log = logging.getLogger(__name__)

#: glibc's mallopt parameter number for the most arenas (malloc.h).
_M_ARENA_MAX = -8
#: mallopt parameter numbers (malloc.h) and the values set: see the module docstring.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
TRIM_THRESHOLD_BYTES, MMAP_THRESHOLD_BYTES = 128 << 20, 32 << 20
#: Seconds between two ``malloc_trim`` calls.
TRIM_SECONDS = 5.0


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    # musl and the BSDs have no malloc_trim; macOS no mallopt either.
    return libc if libc is not None and hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


def bound_allocator(arenas: int, trim_seconds: float = TRIM_SECONDS,
                    stop: threading.Event | None = None) -> str:
    """Cap glibc's arenas at ``max(2, arenas)`` and start a daemon thread that calls ``malloc_trim(0)``
    every ``trim_seconds`` (until ``stop`` is set, if given).

    Call before the serving threads start. Returns a short description for the start-up log.
    """
    if os.environ.get("STEMREG_MALLOC", "").strip().lower() == "glibc":
        return "malloc: glibc's defaults (STEMREG_MALLOC=glibc)"
    libc = _glibc()
    if libc is None:
        return "malloc: not glibc, left alone"
    arenas = max(2, int(arenas))
    if not os.environ.get("MALLOC_ARENA_MAX") and libc.mallopt(_M_ARENA_MAX, arenas) != 1:
        log.warning("mallopt(M_ARENA_MAX, %d) refused; memory may grow under load", arenas)
    if not (os.environ.get("MALLOC_TRIM_THRESHOLD_") or os.environ.get("MALLOC_MMAP_THRESHOLD_")):
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    if trim_seconds > 0:
        stop = stop or threading.Event()

        def trim() -> None:
            while not stop.wait(trim_seconds):
                libc.malloc_trim(0)

        threading.Thread(target=trim, name="stemreg-malloc-trim", daemon=True).start()
    return f"malloc: {arenas} arenas, trimmed every {trim_seconds:g} s" if trim_seconds > 0 else f"malloc: {arenas} arenas"
