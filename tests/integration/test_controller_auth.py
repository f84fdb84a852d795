"""Neither listener serves a client without credentials (issue 22, finding 3).

The controller listener also takes ACL and SCRAM changes; open to anonymous clients, it
would let any local process around SCRAM and the ACLs. It is SASL/PLAIN now, with only the
brokers and the admin known to it; the client listener is SASL/SCRAM. A client with no (or
wrong) credentials gets nothing from either: aiokafka gets no metadata from the client
listener, Kafka's own ``kafka-acls --bootstrap-controller`` lists no ACL and adds none;
the admin, through the project's tool wrapper, lists and adds them on the controller
listener. (With the controller listener PLAINTEXT and ANONYMOUS a super user, as before,
the anonymous ``kafka-acls`` listed every ACL and added its own.)
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError

from deploy.kafka import ROOT, KafkaUnavailable, ensure_jars, run_tool, tool_command
from services.runtime.kafka_auth import FIELDS, KafkaSecurity

# Short client timeouts, so a refused tool fails in seconds rather than after a minute.
TIMEOUTS = "request.timeout.ms=3000\ndefault.api.timeout.ms=6000\n"


def _local_ports(infra_dir: Path) -> tuple[list[int], list[int]] | None:
    """(broker ports, controller ports) of the session's local Kafka, from the file the
    launcher keeps them in (``LocalKafka``: ``cluster.env``); None for another broker."""
    saved = infra_dir / "kafka" / "cluster.env"
    if not saved.exists():
        return None
    pairs = dict(line.split("=", 1) for line in saved.read_text().splitlines() if "=" in line)
    ports = [int(p) for p in pairs.get("ports", "").split(",") if p]
    half = len(ports) // 2
    return ports[:half], ports[half:]


@pytest.fixture(scope="module")
def listeners(kafka_bootstrap: str, kafka_env: dict[str, str], infra_dir: Path) -> dict[str, str]:
    """The session broker's two listeners: ``broker`` (clients) and ``controller``."""
    try:
        ensure_jars()
    except KafkaUnavailable as exc:
        pytest.skip(f"Kafka's tools cannot run here: {exc}")
    ports = _local_ports(infra_dir)
    if ports is None or not KafkaSecurity.from_env(None, kafka_env).sasl:
        pytest.skip("not the secured local Apache Kafka (deploy.kafka) of this session")
    brokers, controllers = ports
    assert kafka_bootstrap == ",".join(f"127.0.0.1:{p}" for p in brokers)
    return {
        "broker": kafka_bootstrap,
        "controller": ",".join(f"127.0.0.1:{p}" for p in controllers),
    }


@pytest.fixture(scope="module")
def principal(listeners: dict[str, str], kafka_env: dict[str, str]) -> str:
    """A principal with one ACL, added by the admin on the controller listener."""
    name = f"User:probe-{uuid.uuid4().hex[:8]}"
    result = run_tool(
        "acls",
        [
            "--bootstrap-controller",
            listeners["controller"],
            "--add",
            "--allow-principal",
            name,
            "--operation",
            "Read",
            "--topic",
            f"{name[5:]}.controller-auth",
        ],
        security=KafkaSecurity.from_env(None, kafka_env),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return name


def kafka_acls(controller: str, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Kafka's own AclCommand against the controller listener, with ``config`` as its only
    client settings (no wrapper, no credentials but those in ``config``)."""
    cmd = tool_command(
        "acls", ["--bootstrap-controller", controller, *args, "--command-config", str(config)]
    )
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def client_file(tmp_path: Path, security: KafkaSecurity) -> Path:
    path = tmp_path / "client.properties"
    path.write_text(security.properties() + TIMEOUTS)
    return path


def admin_lists(controller: str, env: dict[str, str]) -> str:
    """``python -m deploy.kafka tool acls --bootstrap-controller … --list``, as an operator
    runs it (the admin's settings in the environment, nothing on the command line)."""
    admin = {f"KAFKA_{f}": env[f"KAFKA_{f}"] for f in FIELDS if f"KAFKA_{f}" in env}
    cmd = [sys.executable, "-m", "deploy.kafka", "tool", "acls"]
    result = subprocess.run(
        [*cmd, "--bootstrap-controller", controller, "--list"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, **admin},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


async def test_a_plaintext_client_without_credentials_gets_no_metadata_from_the_broker(
    listeners: dict[str, str],
) -> None:
    address = listeners["broker"]
    admin = AIOKafkaAdminClient(bootstrap_servers=address, request_timeout_ms=3000)
    with pytest.raises(KafkaConnectionError):
        try:
            await asyncio.wait_for(admin.start(), 30)
            await asyncio.wait_for(admin.list_topics(), 30)
        finally:
            await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=address, request_timeout_ms=3000)
    with pytest.raises(KafkaConnectionError):
        try:
            await asyncio.wait_for(producer.start(), 30)
        finally:
            await producer.stop()


@pytest.mark.parametrize("credentials", ["none", "wrong password", "a service's principal"])
async def test_kafka_acls_on_the_controller_without_admin_credentials_lists_nothing(
    listeners: dict[str, str],
    kafka_env: dict[str, str],
    principal: str,
    tmp_path: Path,
    credentials: str,
) -> None:
    admin = KafkaSecurity.from_env(None, kafka_env)
    service = KafkaSecurity.from_env("notification", kafka_env)
    security = {
        "none": KafkaSecurity(),
        "wrong password": KafkaSecurity(admin.protocol, "PLAIN", admin.username, "guess"),
        # services are known to the client listener (SCRAM) only, never to the controller
        "a service's principal": KafkaSecurity(
            service.protocol, "PLAIN", service.username, service.password
        ),
    }[credentials]
    assert security.username != admin.username or security.password != admin.password
    result = await asyncio.to_thread(
        kafka_acls, listeners["controller"], client_file(tmp_path, security), "--list"
    )
    assert result.returncode != 0
    assert principal not in result.stdout + result.stderr
    assert "User:" not in result.stdout
    assert "Current ACLs" not in result.stdout


async def test_kafka_acls_on_the_controller_without_credentials_adds_nothing(
    listeners: dict[str, str], kafka_env: dict[str, str], tmp_path: Path
) -> None:
    intruder = f"User:intruder-{uuid.uuid4().hex[:8]}"
    add = ["--add", "--allow-principal", intruder, "--operation", "All", "--cluster"]
    result = await asyncio.to_thread(
        kafka_acls, listeners["controller"], client_file(tmp_path, KafkaSecurity()), *add
    )
    assert result.returncode != 0
    assert intruder not in await asyncio.to_thread(admin_lists, listeners["controller"], kafka_env)


async def test_the_admin_lists_acls_on_the_controller_through_the_tool(
    listeners: dict[str, str], kafka_env: dict[str, str], principal: str
) -> None:
    listed = await asyncio.to_thread(admin_lists, listeners["controller"], kafka_env)
    assert f"principal={principal}, host=*, operation=READ, permissionType=ALLOW" in listed
