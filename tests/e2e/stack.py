"""The four services as real processes, for end-to-end tests."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from deploy.local import SERVICES, free_port, service_env, wait_ready

ROOT = Path(__file__).resolve().parents[2]


class Stack:
    def __init__(
        self,
        *,
        bootstrap: str,
        database_url: str,
        topic_prefix: str,
        logs: Path,
        smtp_port: int,
        extra: dict[str, str] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.database_url = database_url
        self.logs = logs
        self.ports = {s: free_port() for s in SERVICES}
        self.env_extra = {
            "LIENTHONG_TOPIC_PREFIX": topic_prefix,
            "NOTIFICATION_SMTP_PORT": str(smtp_port),
            "LIENTHONG_LOG_LEVEL": "INFO",
            **(extra or {}),
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def start(self, *names: str) -> None:
        for name in names or SERVICES:
            env = service_env(
                name,
                port=self.ports[name],
                bootstrap=self.bootstrap,
                database_url=self.database_url,
                extra=self.env_extra,
            )
            log = open(self.logs / f"{name}.log", "ab")
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", f"services.{name}"],
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, *names: str, timeout: float = 90) -> dict[str, float]:
        return wait_ready([self.url(n) for n in names or SERVICES], timeout=timeout)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(sig)
        proc.wait(10)

    def stop(self) -> None:
        for name in list(self.procs):
            proc = self.procs.pop(name)
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
