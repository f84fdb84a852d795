"""Where every service takes the time from, so tests and demos can move it."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    """The wall clock, in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class FileOffsetClock:
    """The wall clock plus an offset in seconds read from a file.

    Every process of the dev stack or an end-to-end test points at the same file, so
    moving time there moves it for all services at once. The file is re-read when its
    modification time changes.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._mtime: float | None = None
        self._offset = timedelta()

    def offset(self) -> timedelta:
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except FileNotFoundError:
            return timedelta()
        if mtime != self._mtime:
            text = self.path.read_text().strip() or "0"
            self._offset = timedelta(seconds=float(text))
            self._mtime = mtime
        return self._offset

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset()

    def advance(self, delta: timedelta) -> None:
        """Move time forward for every process reading this file."""
        total = self.offset() + delta
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(str(total.total_seconds()))
        tmp.replace(self.path)


class ManualClock:
    """A clock that only moves when told: for unit and integration tests."""

    def __init__(self, start: datetime) -> None:
        self._now = start.astimezone(UTC)

    def now(self) -> datetime:
        return self._now

    def set(self, when: datetime) -> None:
        self._now = when.astimezone(UTC)

    def advance(self, delta: timedelta) -> None:
        self._now += delta


def make_clock(clock_file: str | None) -> Clock:
    return FileOffsetClock(clock_file) if clock_file else SystemClock()
