"""What the two simulators share: the shared clock, injected faults, the journal file, and a
runner that serves a service port and an admin port from one asyncio loop.

The service port is what our services call; it can really go down (its uvicorn server is
stopped, so connections are refused) while the admin port, where tests set faults and
inspect what arrived, stays up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import socket
import sys
from collections.abc import Callable, Generator, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Generic, TypeVar

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from services.runtime.clock import Clock, make_clock

CLOCK_ENV = "LIENTHONG_CLOCK_FILE"
log = logging.getLogger("simulator")


def iso(when: datetime | None) -> str | None:
    return None if when is None else when.isoformat()


def shared_clock(clock_file: str | None = None) -> Clock:
    """The clock every process of a stack reads (``LIENTHONG_CLOCK_FILE``), else the wall."""
    return make_clock(clock_file or os.environ.get(CLOCK_ENV) or None)


class FaultSpec(BaseModel):
    """A fault for the service port, set with ``POST /faults`` on the admin port. Each
    simulator narrows ``mode`` to the faults it knows; ``ok`` is no fault."""

    model_config = ConfigDict(extra="forbid")

    mode: str = "ok"
    minutes: float | None = Field(
        None, gt=0, le=1_000_000, description="Of the shared clock; absent: until changed"
    )
    status: int = Field(503, ge=400, le=599, description="The HTTP status of `error`")
    delay_s: float = Field(15.0, ge=0, le=600, description="How late `timeout` answers")
    rate: float = Field(1.0, ge=0, le=1, description="The share of calls the fault applies to")


F = TypeVar("F", bound=FaultSpec)


class Faults(Generic[F]):
    """The fault in force: one at a time, replaced by each ``POST /faults``, over once the
    shared clock passes its end (``minutes``)."""

    def __init__(self, clock: Clock, ok: F, seed: int | None = None) -> None:
        self.clock = clock
        self._ok = ok
        self.spec: F = ok
        self.until: datetime | None = None
        self.rng = random.Random(seed)
        self.injected: dict[str, int] = {}

    def set(self, spec: F) -> None:
        self.spec = spec
        self.until = self.clock.now() + timedelta(minutes=spec.minutes) if spec.minutes else None

    def reset(self) -> None:
        self.spec, self.until = self._ok, None
        self.injected.clear()

    def active(self) -> F:
        if self.until is not None and self.clock.now() >= self.until:
            self.spec, self.until = self._ok, None
        return self.spec

    def hit(self, *modes: str, count: bool = True) -> F | None:
        """The fault in force if its mode is one of ``modes`` and this call falls within its
        ``rate``; counted as injected unless ``count`` is false (see ``counted``)."""
        spec = self.active()
        if spec.mode not in modes:
            return None
        if spec.rate < 1 and self.rng.random() >= spec.rate:
            return None
        if count:
            self.counted(spec.mode)
        return spec

    def counted(self, mode: str) -> None:
        self.injected[mode] = self.injected.get(mode, 0) + 1

    @property
    def down(self) -> bool:
        return self.active().mode == "down"

    def describe(self) -> dict[str, Any]:
        spec = self.active()
        return {**spec.model_dump(), "until": iso(self.until), "injected": dict(self.injected)}


class Journal:
    """Every accepted call, one JSON object a line, so a restarted simulator still knows what
    it holds (``--data FILE``). Without a path it keeps nothing."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path else None
        self.skipped = 0

    def entries(self) -> Iterator[dict[str, Any]]:
        if self.path is None or not self.path.exists():
            return
        with self.path.open(encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                except ValueError:  # a line cut short by a crash
                    self.skipped += 1
                    continue
                if isinstance(entry, dict):
                    yield entry

    def append(self, entry: dict[str, Any]) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # what applicants were sent, phone numbers included: readable by this user only
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.fchmod(fd, 0o600)
        with open(fd, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n")

    def clear(self) -> None:
        if self.path is not None and self.path.exists():
            self.path.write_text("")


def loads_strict(raw: bytes) -> Any:
    """JSON as a strict peer reads it: no NaN or Infinity; ValueError otherwise."""

    def constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(raw.decode("utf-8"), parse_constant=constant)


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals to the runner: two servers share the process,
    and the service port's server stops and starts again while the process lives."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class Runner:
    """Serves ``service`` on ``port`` while ``want_up()`` is true and ``admin`` on
    ``admin_port`` always, in this one asyncio loop, until SIGTERM or SIGINT."""

    def __init__(
        self,
        service: FastAPI,
        admin: FastAPI,
        *,
        host: str,
        port: int,
        admin_port: int,
        want_up: Callable[[], bool],
    ) -> None:
        self.service_app, self.admin_app = service, admin
        self.host, self.port, self.admin_port = host, port, admin_port
        self.want_up = want_up
        self._service: tuple[_Server, asyncio.Task[None]] | None = None
        self._admin: tuple[_Server, asyncio.Task[None]] | None = None
        self._lock = asyncio.Lock()
        self.restarts = 0

    @property
    def service_up(self) -> bool:
        return self._service is not None

    def _config(self, app: FastAPI, port: int) -> uvicorn.Config:
        return uvicorn.Config(
            app,
            host=self.host,
            port=port,
            lifespan="off",
            log_config=None,  # `serve` sets logging up once, for both servers
            log_level="warning",
            access_log=False,
            timeout_keep_alive=5,
            # a call held by a `timeout` fault must not keep a `down` port listening
            timeout_graceful_shutdown=1,
        )

    async def _start(self, app: FastAPI, port: int) -> tuple[_Server, asyncio.Task[None]]:
        # Bound here, not by uvicorn: it calls sys.exit() when it cannot bind, and a
        # SystemExit inside a task ends the whole loop (the admin port with it).
        # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets that say so
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        server = _Server(self._config(app, port))
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if task.done():
                sock.close()
                task.result()
                raise OSError(f"port {port}: the server stopped while starting")
            await asyncio.sleep(0.01)
        return server, task

    @staticmethod
    async def _stop(running: tuple[_Server, asyncio.Task[None]]) -> None:
        server, task = running
        server.should_exit = True
        with contextlib.suppress(Exception, SystemExit):
            await task

    async def reconcile(self) -> None:
        """Start or stop the service port to match ``want_up()``."""
        async with self._lock:
            up = self.want_up()
            if up and self._service is None:
                try:
                    self._service = await self._start(self.service_app, self.port)
                except OSError as exc:  # taken meanwhile: try again next tick
                    log.warning("service port %s cannot listen yet: %s", self.port, exc)
                    return
                self.restarts += 1
            elif not up and self._service is not None:
                running, self._service = self._service, None
                await self._stop(running)

    async def run(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        self._admin = await self._start(self.admin_app, self.admin_port)
        await self.reconcile()
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.1)
                if not stop.is_set():
                    await self.reconcile()  # a `down` fault whose end the clock passed
        finally:
            if self._service is not None:
                await self._stop(self._service)
                self._service = None
            await self._stop(self._admin)


def base_arguments(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="the service port")
    parser.add_argument("--admin-port", type=int, required=True, help="test control and inspection")
    parser.add_argument("--data", help="a JSON-lines file of accepted calls, reloaded on start")
    parser.add_argument(
        "--clock-file",
        default=os.environ.get(CLOCK_ENV),
        help=f"the shared clock's offset file (default: ${CLOCK_ENV})",
    )
    parser.add_argument("--seed", type=int, help="seed of the fault `rate` draws")
    return parser


class _NotCancelled(logging.Filter):
    """A call held by a `timeout` fault is cancelled when the port goes down: that is the
    fault doing its work, not an error worth a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, asyncio.CancelledError)


def serve(runner: Runner, banner: str) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("uvicorn.error").addFilter(_NotCancelled())
    print(banner, file=sys.stderr, flush=True)
    try:
        asyncio.run(runner.run())
    except OSError as exc:
        print(f"cannot serve: {exc}", file=sys.stderr)
        return 1
    return 0
