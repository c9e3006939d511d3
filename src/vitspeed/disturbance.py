"""How disturbed the machine was while something was measured (Linux; elsewhere nothing is recorded).

Two system-wide counters, read before and after:

- *steal*: CPU time the hypervisor gave to other guests while this virtual machine wanted it
  (``/proc/stat``, field 8), as a percentage of all CPUs' time over the interval;
- *CPU pressure*: the share of the interval in which at least one runnable task of this machine
  waited for a CPU (``/proc/pressure/cpu``, "some" total), in percent. Our own measurement uses as
  many threads as it is given cores, so a high value means other processes competed with it.

Neither sees what a shared host does to memory: a neighbour that leaves our CPUs alone but
saturates the memory bus slows memory-bound operators (a Jaccard core at N = 3136 ran 3.6 times
slower for minutes while DeiT-S kept its time), and on the machine of the published CPU runs there
are spells in which the copy bandwidth is far higher and DeiT-S slower (``vitspeed monitor``; the
hypervisor placing the virtual CPUs elsewhere, we read). So a third reading:

- *copy bandwidth*: :class:`CopyProbe` copies a buffer twice the size of a typical last-level cache
  and reports GB/s (bytes read plus bytes written, per second, 1e9 bytes); a sweep records the lower of
  the readings taken before and after each measured group (``copy_gbps``) and compares it with the
  median reading of its run so far.

Steal and pressure matter while something is timed, not while a model is built or its FLOPs are
counted: :func:`vitspeed.timing.measure` records the counters around its timed rounds
(:func:`timed_window`), and a sweep computes a group's steal and pressure over those windows only
(:func:`take_timed_windows`, :func:`disturbance_over`).

None of them says a timing is wrong; they say when a result deserves a second run. Units: percent
(steal, pressure), GB/s (copy bandwidth).
"""
from __future__ import annotations

import collections
import contextlib
import os
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Counters", "read_counters", "disturbance_between", "disturbance_over", "timed_window",
           "take_timed_windows", "CopyProbe", "COPY_PROBE_BYTES"]

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
    return disturbance_over([(before, after)], cpus)


def disturbance_over(windows: Sequence[tuple[Counters, Counters]], cpus: int | None = None) -> dict[str, Any]:
    """:func:`disturbance_between` over several intervals (before, after) taken together: the steal
    and pressure seconds of all of them over their summed wall time, in percent, rounded to 0.1. A
    counter missing in any reading, or no time at all, gives None."""
    wall = sum(after.wall_s - before.wall_s for before, after in windows)
    cpus = cpus or os.cpu_count() or 1
    out: dict[str, Any] = {"steal_pct": None, "cpu_pressure_pct": None}
    if not windows or wall <= 0:
        return out
    if all(b.steal_s is not None and a.steal_s is not None for b, a in windows):
        steal = sum(a.steal_s - b.steal_s for b, a in windows)  # type: ignore[operator]
        out["steal_pct"] = round(100.0 * steal / (wall * cpus), 1)
    if all(b.pressure_s is not None and a.pressure_s is not None for b, a in windows):
        waited = sum(a.pressure_s - b.pressure_s for b, a in windows)  # type: ignore[operator]
        out["cpu_pressure_pct"] = round(100.0 * waited / wall, 1)
    return out


#: windows recorded since the last take; bounded so that timing outside any sweep (a notebook calling
#: measure for hours) cannot grow it without end, far above what one sweep group records
_TIMED: collections.deque[tuple[Counters, Counters]] = collections.deque(maxlen=10_000)


@contextlib.contextmanager
def timed_window() -> Iterator[None]:
    """Record the counters before and after the block as one timed window (for
    :func:`take_timed_windows`); :func:`vitspeed.timing.measure` wraps its timed rounds in it."""
    before = read_counters()
    try:
        yield
    finally:
        _TIMED.append((before, read_counters()))


def take_timed_windows() -> list[tuple[Counters, Counters]]:
    """The windows recorded by :func:`timed_window` since the last call, oldest first; clears them."""
    taken = list(_TIMED)
    _TIMED.clear()
    return taken


#: bytes copied by one :class:`CopyProbe` reading: twice a 32 MiB last-level cache, so that the copy
#: streams from and to memory, yet short (a few ms at tens of GB/s)
COPY_PROBE_BYTES = 64 * 2**20


class CopyProbe:
    """Host memory bandwidth available now, in GB/s (bytes read + bytes written per second, 1e9 bytes).

    Each call times ``repeats`` copies of ``nbytes`` between two float32 CPU tensors with torch's
    copy (on as many threads as torch uses, like the measurement) and returns the median. The buffers
    are allocated and touched once, on the first call, and kept, so a reading takes no page faults.
    A reading far from the others of the same run means the host's memory system ran differently:
    below, something else was using the memory bus; above, the machine was placed differently.
    """

    def __init__(self, nbytes: int = COPY_PROBE_BYTES, repeats: int = 5) -> None:
        if nbytes < 4 or repeats < 1:
            raise ValueError(f"CopyProbe needs nbytes >= 4 and repeats >= 1; got nbytes={nbytes}, repeats={repeats}")
        self.nbytes = nbytes - nbytes % 4
        self.repeats = repeats
        self._src = self._dst = None

    def __call__(self) -> float:
        import torch  # the counters above need no torch; only the probe does

        if self._src is None:
            self._src = torch.ones(self.nbytes // 4, dtype=torch.float32)
            self._dst = torch.empty_like(self._src)
            self._dst.copy_(self._src)  # first touch: page faults belong to no reading
        rates = []
        for _ in range(self.repeats):
            start = time.perf_counter_ns()
            self._dst.copy_(self._src)
            rates.append(2 * self.nbytes / max(time.perf_counter_ns() - start, 1))  # bytes per ns = GB/s
        return statistics.median(rates)

    def close(self) -> None:
        """Free the buffers (a later call allocates them again)."""
        self._src = self._dst = None
