"""How disturbed the machine was while something was measured (Linux; elsewhere nothing is recorded).

Two system-wide counters, read before and after:

- *steal*: CPU time the hypervisor gave to other guests while this virtual machine wanted it
  (``/proc/stat``, field 8), as a percentage of all CPUs' time over the interval;
- *CPU pressure*: the share of the interval in which at least one runnable task of this machine
  waited for a CPU (``/proc/pressure/cpu``, "some" total), in percent. Our own measurement uses as
  many threads as it is given cores, so a high value means other processes competed with it.

Neither says a timing is wrong; they say when a result deserves a second run. Units: percent.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Counters", "read_counters", "disturbance_between"]

_STAT = Path("/proc/stat")
_PRESSURE = Path("/proc/pressure/cpu")


@dataclass(frozen=True)
class Counters:
    """One reading: wall clock (s), cumulative steal (s, all CPUs) and CPU pressure (s); None when
    the system does not expose the counter."""

    wall_s: float
    steal_s: float | None
    pressure_s: float | None


def _steal_seconds(stat: Path) -> float | None:
    try:
        with stat.open(encoding="ascii") as fh:
            fields = fh.readline().split()
    except OSError:
        return None
    if len(fields) < 9 or fields[0] != "cpu":
        return None
    return int(fields[8]) / os.sysconf("SC_CLK_TCK")


def _pressure_seconds(pressure: Path) -> float | None:
    try:
        text = pressure.read_text(encoding="ascii")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("some "):
            for item in line.split()[1:]:
                key, _, value = item.partition("=")
                if key == "total":
                    return int(value) / 1e6
    return None


def read_counters(stat: Path = _STAT, pressure: Path = _PRESSURE) -> Counters:
    """The machine's steal and CPU-pressure counters now (see the module docstring)."""
    return Counters(time.monotonic(), _steal_seconds(stat), _pressure_seconds(pressure))


def disturbance_between(before: Counters, after: Counters, cpus: int | None = None) -> dict[str, Any]:
    """``steal_pct`` (of all ``cpus``' time, default os.cpu_count()) and ``cpu_pressure_pct`` (of the
    wall time) between two readings, rounded to 0.1; a counter missing in either reading, or an
    empty interval, gives None."""
    wall = after.wall_s - before.wall_s
    cpus = cpus or os.cpu_count() or 1
    out: dict[str, Any] = {"steal_pct": None, "cpu_pressure_pct": None}
    if wall <= 0:
        return out
    if before.steal_s is not None and after.steal_s is not None:
        out["steal_pct"] = round(100.0 * (after.steal_s - before.steal_s) / (wall * cpus), 1)
    if before.pressure_s is not None and after.pressure_s is not None:
        out["cpu_pressure_pct"] = round(100.0 * (after.pressure_s - before.pressure_s) / wall, 1)
    return out
