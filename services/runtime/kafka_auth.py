"""Who a Kafka client is: SASL settings from the environment, shared by every client.

Shared names configure every client of a process (``KAFKA_SECURITY_PROTOCOL``,
``KAFKA_SASL_MECHANISM``, ``KAFKA_SASL_USERNAME``, ``KAFKA_SASL_PASSWORD``); a service's own
prefix overrides them (``INTAKE_KAFKA_SASL_USERNAME``…), so each service connects as its own
principal. Nothing configured means PLAINTEXT, as before.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCRAM = "SCRAM-SHA-512"
FIELDS = ("SECURITY_PROTOCOL", "SASL_MECHANISM", "SASL_USERNAME", "SASL_PASSWORD")


@dataclass(frozen=True)
class KafkaSecurity:
    """One principal's connection settings for aiokafka, FastStream and Kafka's tools."""

    protocol: str = "PLAINTEXT"
    mechanism: str = SCRAM
    username: str | None = None
    password: str | None = None

    @classmethod
    def from_env(
        cls, service: str | None = None, env: Mapping[str, str] | None = None
    ) -> KafkaSecurity:
        """``{SERVICE}_KAFKA_…`` first, then ``KAFKA_…``; PLAINTEXT when nothing is set."""
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            if service and env.get(f"{service.upper()}_KAFKA_{name}"):
                return env[f"{service.upper()}_KAFKA_{name}"]
            return env.get(f"KAFKA_{name}") or None

        username = get("SASL_USERNAME")
        protocol = get("SECURITY_PROTOCOL") or ("SASL_PLAINTEXT" if username else "PLAINTEXT")
        return cls(
            protocol=protocol.upper(),
            mechanism=(get("SASL_MECHANISM") or SCRAM).upper(),
            username=username,
            password=get("SASL_PASSWORD"),
        )

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``AIOKafkaProducer``/``Consumer``/``AdminClient``."""
        if not self.sasl:
            if self.protocol == "SSL":
                return {"security_protocol": "SSL", "ssl_context": ssl.create_default_context()}
            return {}
        out: dict[str, Any] = {
            "security_protocol": self.protocol,
            "sasl_mechanism": self.mechanism,
            "sasl_plain_username": self.username,
            "sasl_plain_password": self.password,
        }
        if self.protocol == "SASL_SSL":
            out["ssl_context"] = ssl.create_default_context()
        return out

    def faststream(self) -> Any:
        """The same, as a FastStream ``security`` object (None for PLAINTEXT)."""
        from faststream.security import (
            BaseSecurity,
            SASLPlaintext,
            SASLScram256,
            SASLScram512,
        )

        use_ssl = self.protocol in ("SSL", "SASL_SSL")
        ctx = ssl.create_default_context() if use_ssl else None
        if not self.sasl:
            return BaseSecurity(ssl_context=ctx, use_ssl=True) if use_ssl else None
        kinds = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256, SCRAM: SASLScram512}
        if self.mechanism not in kinds:
            raise ValueError(f"unsupported SASL mechanism {self.mechanism!r}")
        return kinds[self.mechanism](
            self.username or "", self.password or "", ssl_context=ctx, use_ssl=use_ssl
        )

    def properties(self) -> str:
        """A Java client properties file (``--command-config`` of Kafka's tools)."""
        lines = [f"security.protocol={self.protocol}"]
        if self.sasl:
            module = (
                "org.apache.kafka.common.security.plain.PlainLoginModule"
                if self.mechanism == "PLAIN"
                else "org.apache.kafka.common.security.scram.ScramLoginModule"
            )
            user = _java_quote(self.username or "")
            pw = _java_quote(self.password or "")
            lines += [
                f"sasl.mechanism={self.mechanism}",
                f'sasl.jaas.config={module} required username="{user}" password="{pw}";',
            ]
        return "\n".join(lines) + "\n"


def _java_quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines (the launcher's ``credentials.env``); missing file: empty."""
    if not path.exists():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs if not k.lstrip().startswith("#")}


def security_configured(env: Mapping[str, str]) -> bool:
    """True when the environment says how to connect (then launcher files are not read)."""
    return any(env.get(f"KAFKA_{f}") for f in FIELDS)


def only_service(env: Mapping[str, str], service: str, services: tuple[str, ...]) -> dict[str, str]:
    """``env`` for one service's process: its own principal as the shared settings, and no
    other principal's credentials (the admin's included)."""
    own = KafkaSecurity.from_env(service, env)
    out = {
        k: v
        for k, v in env.items()
        if not any(k == f"{s.upper()}_KAFKA_{f}" for s in services for f in FIELDS)
        and k not in {f"KAFKA_{f}" for f in FIELDS}
    }
    if own.sasl or own.protocol != "PLAINTEXT":
        out["KAFKA_SECURITY_PROTOCOL"] = own.protocol
    if own.sasl:
        out["KAFKA_SASL_MECHANISM"] = own.mechanism
        out["KAFKA_SASL_USERNAME"] = own.username or ""
        out["KAFKA_SASL_PASSWORD"] = own.password or ""
    return out
