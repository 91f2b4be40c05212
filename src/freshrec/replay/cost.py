"""What an update costs: CPU-seconds (every thread of this process, `time.process_time`),
wall-seconds and peak resident memory.

Peak memory is the process's peak RSS while the update ran: on Linux the high-water mark is
reset before the update (`/proc/self/clear_refs`) and read after it (`VmHWM`); elsewhere it
is the process's lifetime peak (`resource.getrusage`), an upper bound.
"""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


@dataclass
class Cost:
    """cpu_s: CPU-seconds; wall_s: seconds; peak_mb: peak RSS in MiB (0 = not measured)."""

    cpu_s: float = 0.0
    wall_s: float = 0.0
    peak_mb: float = 0.0

    def __add__(self, other: Cost) -> Cost:
        return Cost(
            self.cpu_s + other.cpu_s, self.wall_s + other.wall_s, max(self.peak_mb, other.peak_mb)
        )


def _reset_peak() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def _hwm_mb() -> float | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        return None
    return None


def _lifetime_peak_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0


class CostMeter:
    """Context manager measuring the enclosed code: `with CostMeter() as m: ...; m.cost`."""

    def __init__(self) -> None:
        self.cost = Cost()
        self._cpu = self._wall = 0.0
        self._reset = False

    def __enter__(self) -> CostMeter:
        self._reset = _reset_peak()
        self._cpu, self._wall = time.process_time(), time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        cpu, wall = time.process_time() - self._cpu, time.perf_counter() - self._wall
        hwm = _hwm_mb() if self._reset else None
        self.cost = Cost(cpu, wall, hwm if hwm is not None else _lifetime_peak_mb())
