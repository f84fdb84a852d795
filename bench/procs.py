"""CPU time and memory of the processes a benchmark runs: services, broker, database, sink.

CPU is read from the kernel (``psutil``), so a figure is the process's own work, not wall
time: the share of two cores each part of the pipeline takes per dossier shows what
bounds the throughput on this machine.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field

import psutil


def _cpu(p: psutil.Process, reaped: bool = False) -> float:
    t = p.cpu_times()
    total = float(t.user + t.system)
    if reaped:  # children that exited (PostgreSQL backends that came and went)
        total += t.children_user + t.children_system
    return total


@dataclass
class Group:
    """One part of the system: a process and, for PostgreSQL, every backend under it."""

    name: str
    pid: int
    with_children: bool = False

    def cpu_seconds(self) -> float:
        try:
            root = psutil.Process(self.pid)
            total = _cpu(root, reaped=self.with_children)
            if self.with_children:
                for child in root.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        total += _cpu(child)
            return total
        except psutil.Error:
            return float("nan")

    def rss_mb(self) -> tuple[float, float]:
        """(current RSS, peak RSS) in MiB of the root process."""
        try:
            p = psutil.Process(self.pid)
            rss = p.memory_info().rss / 2**20
            peak = rss
            with contextlib.suppress(OSError, ValueError):
                for line in open(f"/proc/{self.pid}/status"):
                    if line.startswith("VmHWM:"):
                        peak = int(line.split()[1]) / 1024
            return rss, peak
        except psutil.Error:
            return float("nan"), float("nan")


def listener_pid(port: int) -> int | None:
    """The local process listening on ``port`` (the broker), if it runs on this host."""
    with contextlib.suppress(psutil.Error):
        for c in psutil.net_connections("tcp"):
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
                return int(c.pid)
    return None


def postmaster_of(backend_pid: int) -> int | None:
    """The PostgreSQL server a backend belongs to, if it runs on this host."""
    with contextlib.suppress(psutil.Error):
        parent = psutil.Process(backend_pid).parent()
        if parent is not None:
            return int(parent.pid)
    return None


@dataclass
class Meter:
    """CPU seconds per group between ``start()`` and ``stop()``."""

    groups: list[Group] = field(default_factory=list)
    _start: dict[str, float] = field(default_factory=dict)
    used: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, pid: int | None, with_children: bool = False) -> None:
        if pid is not None:
            self.groups.append(Group(name, pid, with_children))

    def start(self) -> None:
        self._start = {g.name: g.cpu_seconds() for g in self.groups}

    def stop(self) -> dict[str, float]:
        self.used = {g.name: g.cpu_seconds() - self._start[g.name] for g in self.groups}
        return self.used


def self_pid() -> int:
    return os.getpid()
