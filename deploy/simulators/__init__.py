"""Simulators of the systems our services call, as real HTTP services: the national portal
(``deploy.simulators.portal``) and an SMS gateway (``deploy.simulators.sms``).

Each serves a service port (what our services call) and an admin port (faults and what
arrived), reads the shared clock (``LIENTHONG_CLOCK_FILE``) and, with ``--data FILE``, keeps
what it accepted across restarts. ``Simulator`` starts one as a process for the tests,
``deploy.local.ServiceStack`` and ``make run``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from deploy.ports import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
KINDS = ("portal", "sms")
PORTAL_UNIT = "000.00.00.H29"
"""``madonvi`` of the local system: the receiving province's unit (Hồ Chí Minh City)."""
PURPOSE = {
    "portal": "national portal (DVCQG): dossier sync, progress, messages to applicants",
    "sms": "SMS gateway: messages to applicants' phones, signed delivery receipts",
}


class Simulator:
    """One simulator process on loopback ports of its own (free ones unless given).

    ``env`` adds to this process's environment (credentials go there, not on the command
    line); ``clock_file`` is the shared clock; ``data`` the journal of accepted calls;
    ``log`` where its output goes.
    """

    def __init__(
        self,
        kind: str,
        *,
        port: int | None = None,
        admin_port: int | None = None,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        clock_file: str | Path | None = None,
        data: str | Path | None = None,
        log: str | Path | None = None,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"no simulator {kind!r}; there are {KINDS}")
        self.kind = kind
        self.port = port or free_port()
        self.admin_port = admin_port or free_port()
        self.args = list(args)
        self.env = dict(env or {})
        self.clock_file = str(clock_file) if clock_file else None
        self.data = str(data) if data else None
        self.log = Path(log) if log else None
        self.proc: subprocess.Popen[bytes] | None = None
        self._admin_http: httpx.Client | None = None

    @property
    def service_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def purpose(self) -> str:
        return PURPOSE[self.kind]

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", f"deploy.simulators.{self.kind}"]
        cmd += ["--port", str(self.port), "--admin-port", str(self.admin_port)]
        if self.data:
            cmd += ["--data", self.data]
        if self.clock_file:
            cmd += ["--clock-file", self.clock_file]
        return cmd + self.args

    def launch(self) -> Simulator:
        """Start the process without waiting for it (``wait_ready`` waits)."""
        if self.running:
            return self
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        if self.clock_file:
            env["LIENTHONG_CLOCK_FILE"] = self.clock_file
        out: Any = subprocess.DEVNULL
        if self.log is not None:
            self.log.parent.mkdir(parents=True, exist_ok=True)
            out = self.log.open("ab")
        try:
            self.proc = subprocess.Popen(
                self.command(), env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
            )
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        return self

    def wait_ready(self, timeout: float = 20.0) -> Simulator:
        """Until the admin port answers ``/health`` and the service port accepts."""
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=1.0) as client:
            while True:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(
                        f"the {self.kind} simulator exited with {self.proc.returncode}"
                        + (f"; see {self.log}" if self.log else "")
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.admin_url}/health").status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the {self.kind} simulator is not up after {timeout}s")
                time.sleep(0.05)
        wait_for_port(self.port, max(1.0, deadline - time.monotonic()))
        return self

    def start(self, timeout: float = 20.0) -> Simulator:
        return self.launch().wait_ready(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        if self._admin_http is not None:
            self._admin_http.close()
            self._admin_http = None
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)

    # -- the admin API, for tests and scripts --------------------------------------------

    def admin(self, method: str, path: str, json: Any = None) -> Any:
        """One admin call's JSON answer (``httpx.HTTPStatusError`` unless 2xx)."""
        if self._admin_http is None:
            self._admin_http = httpx.Client(base_url=self.admin_url, timeout=10.0)
        r = self._admin_http.request(method, path, json=json)
        r.raise_for_status()
        return r.json()

    def fault(self, mode: str = "ok", **spec: Any) -> dict[str, Any]:
        """Set the fault in force (``mode="ok"`` clears it); see each simulator's modes."""
        answer: dict[str, Any] = self.admin("POST", "/faults", {"mode": mode, **spec})
        return answer

    def reset(self) -> None:
        self.admin("POST", "/reset")

    def stats(self) -> dict[str, Any]:
        answer: dict[str, Any] = self.admin("GET", "/stats")
        return answer


def start_all(simulators: Iterable[Simulator], timeout: float = 20.0) -> None:
    """Launch every simulator, then wait for each (they start side by side); on failure
    stop them all."""
    sims = list(simulators)
    try:
        for sim in sims:
            sim.launch()
        for sim in sims:
            sim.wait_ready(timeout)
    except BaseException:
        for sim in sims:  # none left behind when one cannot start
            sim.stop()
        raise


@dataclass(frozen=True)
class Accounts:
    """What the simulators accept and our services present: fresh secrets per stack
    (``Accounts.dev()``: the fixed ones of ``make run``, the simulators' defaults)."""

    portal_username: str = field(default_factory=lambda: "lienthong-" + secrets.token_hex(4))
    portal_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    portal_unit: str = PORTAL_UNIT
    sms_api_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    sms_webhook_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    @classmethod
    def dev(cls) -> Accounts:
        return cls(
            "lienthong", "lienthong-dev", PORTAL_UNIT, "dev-sms-key", "dev-sms-webhook-secret"
        )

    def simulator_env(self, kind: str) -> dict[str, str]:
        if kind == "portal":
            return {"PORTAL_SIM_USERS": f"{self.portal_username}:{self.portal_password}"}
        return {
            "SMS_SIM_API_KEY": self.sms_api_key,
            "SMS_SIM_WEBHOOK_SECRET": self.sms_webhook_secret,
        }

    def simulators(
        self,
        *,
        clock_file: str | Path | None,
        folder: Path | None,
        ports: Mapping[str, tuple[int, int]] | None = None,
    ) -> dict[str, Simulator]:
        """Both simulators, journals and logs in ``folder`` (``portal-sim.jsonl``...)."""
        return {
            kind: Simulator(
                kind,
                port=(ports or {}).get(kind, (0, 0))[0] or None,
                admin_port=(ports or {}).get(kind, (0, 0))[1] or None,
                env=self.simulator_env(kind),
                clock_file=clock_file,
                data=folder / f"{kind}-sim.jsonl" if folder else None,
                log=folder / f"{kind}-sim.log" if folder else None,
            )
            for kind in KINDS
        }

    def service_env(
        self, simulators: Mapping[str, Simulator], notification_url: str
    ) -> dict[str, dict[str, str]]:
        """Per service, the settings that point it at the simulators (each service gets
        only its own; the settings read empty defaults when they are absent)."""
        env: dict[str, dict[str, str]] = {
            "intake": {},
            "notification": {"NOTIFICATION_PUBLIC_URL": notification_url},  # receipts' way in
        }
        portal = simulators.get("portal")
        if portal is not None:
            for service in ("intake", "notification"):
                prefix = service.upper()
                env[service].update(
                    {
                        f"{prefix}_PORTAL_URL": portal.service_url,
                        f"{prefix}_PORTAL_USERNAME": self.portal_username,
                        f"{prefix}_PORTAL_PASSWORD": self.portal_password,
                        f"{prefix}_PORTAL_UNIT": self.portal_unit,
                    }
                )
        sms = simulators.get("sms")
        if sms is not None:
            env["notification"].update(
                {
                    "NOTIFICATION_SMS_URL": sms.service_url,
                    "NOTIFICATION_SMS_API_KEY": self.sms_api_key,
                    "NOTIFICATION_SMS_WEBHOOK_SECRET": self.sms_webhook_secret,
                }
            )
        return env
