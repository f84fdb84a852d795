"""Who may do what on the broker: per-service ACLs, created with the admin principal.

Each topic has one writer: a service may write only the topics it publishes and its own
dead-letter topic (the console only the replay topics, each read by the one consumer whose
dead letters it carries), read only the topics it consumes, and use only its own consumer
group. ``acl_table`` renders the README's table from the same rules. Names carry the
deployment's topic prefix, so ACLs are literal and made per prefix (``provision``), which
keeps test deployments apart as well.

aiokafka's admin client has no ``create_acls``; its protocol module has the CreateAcls
request (v1, the first version Kafka 4 still serves), so ``create_acls`` sends a batch of
them through the admin client's connection.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.admin import CreateAclsRequest_v1, DeleteAclsRequest_v1, DescribeAclsRequest
from aiokafka.protocol.api import Request

from contracts.topics import (
    CATALOGUE,
    CONSULTATION,
    DEAD_LETTERS,
    DOSSIER,
    NOTIFICATION,
    REPLAYS,
    ROUTING,
    Topic,
)
from services.runtime.kafka_auth import KafkaSecurity

SERVICES = ("intake", "routing", "consultation", "notification", "console")

# Who publishes which topic (the event families each service's outbox emits).
PRODUCES: dict[str, tuple[Topic, ...]] = {
    "intake": (CATALOGUE, DOSSIER),
    "routing": (ROUTING,),
    "consultation": (CONSULTATION,),
    "notification": (NOTIFICATION,),
    # no event family of its own: only the dead letters an operator replays, each to the
    # replay topic of the consumer that wrote it (``services/console``)
    "console": tuple(REPLAYS.values()),
}
# Who consumes which (each service's ``SPEC.topics``; a unit test keeps them equal). Each
# consumer but the console also reads its own replay topic.
CONSUMES: dict[str, tuple[Topic, ...]] = {
    "intake": (DOSSIER, ROUTING, CONSULTATION, NOTIFICATION, REPLAYS["intake"]),
    "routing": (CATALOGUE, DOSSIER, CONSULTATION, REPLAYS["routing"]),
    "consultation": (ROUTING, DOSSIER, REPLAYS["consultation"]),
    "notification": (DOSSIER, CONSULTATION, ROUTING, REPLAYS["notification"]),
    # every event topic and every consumer's dead letters (read raw, never dead-lettered
    # again); not the replay topics, which only carry what it wrote itself
    "console": (CATALOGUE, DOSSIER, ROUTING, CONSULTATION, NOTIFICATION, *DEAD_LETTERS.values()),
}
# Whose consumer groups a service may describe (committed offsets, for lag): the console
# watches every service's group, without the right to join any of them.
OBSERVES: dict[str, tuple[str, ...]] = {
    "console": ("intake", "routing", "consultation", "notification"),
}


def writes(service: str) -> tuple[Topic, ...]:
    """Every topic a service's principal may write: what it publishes and its own dead
    letters, nothing else."""
    return tuple(dict.fromkeys((*PRODUCES[service], DEAD_LETTERS[service])))


def origin_refusal(
    writer: str, consumer: str | None, origin_topic: str | None, prefix: str = ""
) -> str | None:
    """Why a dead letter on ``writer``'s dead-letter topic cannot be what its headers say
    (the consumer and topic it claims to come from), or None when ``writer`` could have
    written it: its own consumer group, reading a topic it consumes."""
    if consumer != group_id(writer, prefix):
        return (
            f"ghi bởi {writer} nhưng nhận là của nhóm {consumer!r}"
            f" (chỉ có thể là {group_id(writer, prefix)!r})"
        )
    consumed = {t.full_name(prefix) for t in CONSUMES[writer]}
    if origin_topic not in consumed:
        return f"ghi bởi {writer} nhưng nhận là từ chủ đề {origin_topic!r}, mà {writer} không đọc"
    return None


def acl_table(prefix: str = "") -> str:
    """The README's table of who may do what on the broker, made from the rules above."""

    def names(topics: Sequence[Topic]) -> str:
        return ", ".join(f"`{t.full_name(prefix)}`" for t in topics)

    lines = [
        "| principal | may write | may read | consumer group | may describe |",
        "|---|---|---|---|---|",
    ]
    for s in SERVICES:
        observed = ", ".join(f"`{group_id(o, prefix)}`" for o in OBSERVES.get(s, ()))
        lines.append(
            f"| `{s}` | {names(writes(s))} | {names(CONSUMES[s])} | `{group_id(s, prefix)}`"
            f" | {observed or '—'} |"
        )
    return "\n".join(lines)


# Kafka's protocol codes (org.apache.kafka.common.acl / resource).
ANY = 1
TOPIC, GROUP = 2, 3
LITERAL = 3
READ, WRITE = 3, 4
DESCRIBE = 8
ALLOW = 3
OPERATIONS = {READ: "Read", WRITE: "Write", DESCRIBE: "Describe"}


@dataclass(frozen=True)
class Acl:
    """``User:principal`` is allowed ``operation`` on the literal resource ``name``."""

    resource_type: int
    name: str
    principal: str
    operation: int

    def __str__(self) -> str:
        kind = {TOPIC: "topic", GROUP: "group"}[self.resource_type]
        return f"User:{self.principal} {OPERATIONS[self.operation]} {kind} {self.name}"


def service_topics(service: str) -> tuple[Topic, ...]:
    """Every topic a service touches: what it writes and what it consumes."""
    return tuple(dict.fromkeys((*writes(service), *CONSUMES[service])))


def group_id(service: str, prefix: str = "") -> str:
    """A service's consumer group, as ``ServiceSettings.group_id`` names it."""
    return f"{prefix}lienthong-{service}"


def acls_for(service: str, principal: str, prefix: str = "") -> list[Acl]:
    """The ACLs of one service's principal for one deployment prefix."""
    out = [Acl(TOPIC, t.full_name(prefix), principal, WRITE) for t in writes(service)]
    out += [Acl(TOPIC, t.full_name(prefix), principal, READ) for t in CONSUMES[service]]
    out.append(Acl(GROUP, group_id(service, prefix), principal, READ))
    out += [
        Acl(GROUP, group_id(other, prefix), principal, DESCRIBE)
        for other in OBSERVES.get(service, ())
    ]
    return out


def _entries(acls: Sequence[Acl]) -> list[tuple[Any, ...]]:
    """Literal ALLOW ACLs for ``User:principal`` from any host, as CreateAcls v1 entries
    and DeleteAcls v1 filters both list them (the same fields in the same order)."""
    return [
        (a.resource_type, a.name, LITERAL, f"User:{a.principal}", "*", a.operation, ALLOW)
        for a in acls
    ]


class _CreateAcls(Request[CreateAclsRequest_v1]):  # type: ignore[misc]
    """Many ACL creations in one CreateAcls v1 request."""

    API_KEY = 30

    def __init__(self, acls: Sequence[Acl]) -> None:
        self.acls = acls

    def build(self, request_struct_class: type[CreateAclsRequest_v1]) -> CreateAclsRequest_v1:
        return request_struct_class(_entries(self.acls))


class _DeleteAcls(Request[DeleteAclsRequest_v1]):  # type: ignore[misc]
    """Many exact ACL deletions in one DeleteAcls v1 request."""

    API_KEY = 31

    def __init__(self, acls: Sequence[Acl]) -> None:
        self.acls = acls

    def build(self, request_struct_class: type[DeleteAclsRequest_v1]) -> DeleteAclsRequest_v1:
        return request_struct_class(_entries(self.acls))


class AclError(RuntimeError):
    """The broker refused to create an ACL (usually: not asked by a super user)."""


async def create_acls(
    admin: AIOKafkaAdminClient, acls: Sequence[Acl], wait_s: float = 30.0
) -> None:
    """Create ``acls`` (creating an existing one is a no-op on Kafka), then wait until every
    broker enforces them: each applies the metadata log on its own, a moment later."""
    if not acls:
        return
    client: Any = admin._client  # aiokafka has the requests but no admin methods
    response = await client.send(client.get_random_node(), _CreateAcls(acls))
    errors = [
        f"{acl}: error {code} {message}"
        for acl, (code, message) in zip(acls, response.creation_responses, strict=True)
        if code
    ]
    if errors:
        raise AclError("; ".join(errors))
    wanted = set(acls)
    deadline = time.monotonic() + wait_s
    for node in sorted(b.nodeId for b in client.cluster.brokers()):
        while True:
            missing = wanted - await _described(client, node)
            if not missing:
                break
            if time.monotonic() > deadline:
                raise AclError(f"broker {node} does not enforce {len(missing)} ACLs yet")
            await asyncio.sleep(0.05)


def _of_deployment(name: str, prefix: str) -> bool:
    """A resource of the deployment ``prefix``: the prefix, then one of our names (so the
    deployment with no prefix does not own ``t1.lienthong…`` of a test's)."""
    return name.startswith(prefix) and name[len(prefix) :].startswith(("lienthong.", "lienthong-"))


async def revoke_stale(
    admin: AIOKafkaAdminClient,
    wanted: Sequence[Acl],
    principals: Iterable[str],
    prefixes: Iterable[str],
    wait_s: float = 30.0,
) -> list[Acl]:
    """Delete what ``principals`` are allowed on the deployments' resources beyond
    ``wanted``: rights an earlier version granted (the console's writes on event topics,
    every service's on one shared dead-letter topic) must not outlive it. Returns them."""
    client: Any = admin._client
    mine, keep = set(principals), set(wanted)
    prefixes = tuple(prefixes)
    stale = sorted(
        (
            a
            for a in await _described(client, client.get_random_node())
            if a.principal in mine
            and a.resource_type in (TOPIC, GROUP)
            and a.operation in OPERATIONS
            and any(_of_deployment(a.name, p) for p in prefixes)
            and a not in keep
        ),
        key=str,
    )
    if not stale:
        return []
    response = await client.send(client.get_random_node(), _DeleteAcls(stale))
    errors = [
        f"{acl}: error {code} {message}"
        for acl, (code, message, _matching) in zip(stale, response.filter_responses, strict=True)
        if code
    ]
    if errors:
        raise AclError("; ".join(errors))
    deadline = time.monotonic() + wait_s
    for node in sorted(b.nodeId for b in client.cluster.brokers()):
        while set(stale) & await _described(client, node):
            if time.monotonic() > deadline:
                raise AclError(f"broker {node} still enforces revoked ACLs")
            await asyncio.sleep(0.05)
    return stale


async def _described(client: Any, node: int) -> set[Acl]:
    """The literal ALLOW ACLs one broker's authorizer holds now."""
    request = DescribeAclsRequest(ANY, None, LITERAL, None, None, ANY, ALLOW)
    response = await client.send(node, request)
    if response.error_code:
        raise AclError(f"describing ACLs on broker {node}: error {response.error_code}")
    return {
        Acl(rtype, name, principal.removeprefix("User:"), op)
        for rtype, name, _pattern, entries in response.resources
        for principal, _host, op, _perm in entries
    }


def principals_from_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Service name to SASL username, for the services given one (``INTAKE_KAFKA_…``)."""
    out = {}
    for s in SERVICES:
        sec = KafkaSecurity.from_env(s, env)
        shared = KafkaSecurity.from_env(None, env)
        if sec.sasl and sec.username and sec.username != shared.username:
            out[s] = sec.username
    return out


async def grant(
    bootstrap: str,
    principals: Mapping[str, str],
    prefixes: Iterable[str] = ("",),
    security: KafkaSecurity | None = None,
) -> list[Acl]:
    """Create every service's ACLs for each prefix, as ``security`` (the admin), and revoke
    whatever else those principals were allowed there (``revoke_stale``)."""
    security = security or KafkaSecurity.from_env()
    prefixes = tuple(prefixes)
    acls = [
        acl
        for prefix in prefixes
        for service, principal in principals.items()
        for acl in acls_for(service, principal, prefix)
    ]
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="lienthong-admin", **security.kwargs()
    )
    await admin.start()
    try:
        await create_acls(admin, acls)
        await revoke_stale(admin, acls, principals.values(), prefixes)
    finally:
        await admin.close()
    return acls


async def grant_from_env(
    bootstrap: str, env: Mapping[str, str] | None = None, prefix: str = ""
) -> list[Acl]:
    """Every service's ACLs for ``prefix``, as the admin of ``env``, for the services
    ``env`` names a principal of (none without SASL)."""
    security = KafkaSecurity.from_env(None, env)
    principals = principals_from_env(env)
    if not security.sasl or not principals:
        return []
    return await grant(bootstrap, principals, [prefix], security)


async def provision(
    bootstrap: str,
    prefix: str = "",
    security: KafkaSecurity | None = None,
    env: Mapping[str, str] | None = None,
) -> list[Acl]:
    """Topics and ACLs of one deployment, with the admin principal: what a service needs
    before it starts under its own principal (which may create nothing)."""
    from services.runtime.broker import ensure_topics

    security = security or KafkaSecurity.from_env(None, env)
    await ensure_topics(bootstrap, prefix, security=security)
    principals = principals_from_env(env)
    if not security.sasl or not principals:
        return []
    return await grant(bootstrap, principals, [prefix], security)
