"""Helpers shared by the benchmark scripts: machine description, CPU-time accounting, timing.

Why a CPU accounting line: the benchmark machines are small shared VMs. When another job
runs, wall times of the same work can differ several-fold between rounds; printing how busy
the machine was outside this process (and the hypervisor's steal time) lets a reader tell a
noisy table from a real difference.
"""

from __future__ import annotations

import os
import platform
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (Linux), else what ``platform`` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def memory_gib() -> float:
    """Total RAM in GiB (Linux), 0 when unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return 0.0


def machine_line() -> str:
    """One line naming the machine, for the header of every table."""
    return f"{cpu_model()}, {os.cpu_count()} cores, {memory_gib():.1f} GiB RAM, Python {platform.python_version()}"


@dataclass
class CpuSnapshot:
    """System-wide jiffies from /proc/stat plus this process's CPU seconds."""

    busy: int
    total: int
    steal: int
    own_s: float
    wall: float


def cpu_snapshot() -> CpuSnapshot | None:
    """Take a snapshot now; None where /proc/stat does not exist."""
    try:
        fields = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    steal = fields[7] if len(fields) > 7 else 0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    total = sum(fields[:8])
    return CpuSnapshot(total - idle, total, steal, usage.ru_utime + usage.ru_stime, time.perf_counter())


def cpu_report(start: CpuSnapshot | None) -> str:
    """How busy the machine was since ``start`` apart from this process: the noise indicator."""
    end = cpu_snapshot()
    if start is None or end is None or end.total == start.total:
        return "CPU accounting unavailable"
    ticks = os.sysconf("SC_CLK_TCK")
    cores = os.cpu_count() or 1
    wall = end.wall - start.wall
    busy_s = (end.busy - start.busy) / ticks
    own_s = end.own_s - start.own_s
    other = max(0.0, busy_s - own_s) / (wall * cores)
    steal = (end.steal - start.steal) / (end.total - start.total)
    return (f"during the run: this process used {own_s / wall:.2f} of {cores} cores; other processes "
            f"{other:.0%} of the machine; hypervisor steal {steal:.0%}")


def timed(action: Callable[[], object]) -> float:
    """Seconds one call of ``action`` takes."""
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def latencies_ms(action: Callable[[int], object], repeats: int, budget_s: float | None = None) -> np.ndarray:
    """Wall time in ms of ``action(i)`` for i = 0.. up to ``repeats`` calls, stopping early past ``budget_s``."""
    out = []
    deadline = time.perf_counter() + budget_s if budget_s else None
    for position in range(repeats):
        start = time.perf_counter_ns()
        action(position)
        out.append((time.perf_counter_ns() - start) / 1e6)
        if deadline is not None and time.perf_counter() > deadline:
            break
    return np.asarray(out, dtype=np.float64)


CHROMIUM = "/usr/bin/chromium"


def free_port() -> int:
    """A free loopback port for a server a benchmark starts (and stops)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def open_browser(playwright: object) -> object:
    """Debian's chromium, headless, kept off the network (playwright's own browser download is not used)."""
    import sys

    if not Path(CHROMIUM).is_file():
        sys.exit(f"{CHROMIUM} is missing: `apt-get install -y chromium` (or `make screenshots`)")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=[
        "--no-sandbox", "--disable-background-networking", "--disable-component-update"])
