"""Measuring and guarding memory: peak resident memory of a code region, available memory.

``tracemalloc`` misses memory that numba's runtime and BLAS allocate, so the peak is taken
from the process's resident set size, sampled by a background thread.
"""

from __future__ import annotations

import os
import threading
import time

__all__ = ["PeakMemory", "available_memory", "format_bytes", "resident_memory"]

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_memory() -> int:
    """Current resident set size of this process, in bytes."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except OSError:  # pragma: no cover - not Linux
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def available_memory() -> int | None:
    """Memory the system can give without swapping (``MemAvailable``), or None if unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover - not Linux
        return None
    return None  # pragma: no cover


def format_bytes(n: float) -> str:
    """Human-readable size.

    Examples
    --------
    >>> format_bytes(1536)
    '1.5 KiB'
    >>> format_bytes(6.7 * 2**30)
    '6.7 GiB'
    """
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


class PeakMemory:
    """Context manager recording the peak resident memory reached inside a region.

    Attributes ``peak`` (bytes, absolute) and ``increase`` (peak minus the resident size on
    entry) are set on exit. Sampling every ``interval`` seconds can miss very short spikes.

    Examples
    --------
    >>> import numpy as np
    >>> with PeakMemory() as mem:
    ...     block = np.ones(50_000_000 // 8)
    >>> mem.peak >= mem.start
    True
    """

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.peak = 0
        self.start = 0
        self.increase = 0

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, resident_memory())
            time.sleep(self.interval)

    def __enter__(self) -> PeakMemory:
        self.start = resident_memory()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, resident_memory())
        self.increase = self.peak - self.start
