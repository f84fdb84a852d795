"""Kafka client security from the environment, and the ACL table against the services."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from contracts.events import EVENT_TYPES
from contracts.topics import DEAD_LETTERS, REPLAYS, TOPICS, topic_for
from services.runtime import acl
from services.runtime.kafka_auth import KafkaSecurity, only_service

ENV = {
    "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "KAFKA_SASL_USERNAME": "admin",
    "KAFKA_SASL_PASSWORD": "admin-pw",
    "INTAKE_KAFKA_SASL_USERNAME": "intake",
    "INTAKE_KAFKA_SASL_PASSWORD": "intake-pw",
    "ROUTING_KAFKA_SASL_USERNAME": "routing",
    "ROUTING_KAFKA_SASL_PASSWORD": "routing-pw",
}


def test_nothing_configured_is_plaintext() -> None:
    sec = KafkaSecurity.from_env("intake", {})
    assert sec.protocol == "PLAINTEXT" and sec.kwargs() == {}
    assert sec.faststream() is None
    assert sec.properties() == "security.protocol=PLAINTEXT\n"


def test_a_service_prefers_its_own_principal() -> None:
    own = KafkaSecurity.from_env("intake", ENV)
    assert (own.username, own.password) == ("intake", "intake-pw")
    assert own.kwargs()["sasl_mechanism"] == "SCRAM-SHA-512"
    assert own.kwargs()["security_protocol"] == "SASL_PLAINTEXT"
    shared = KafkaSecurity.from_env("consultation", ENV)  # no override: the shared one
    assert shared.username == "admin"
    assert type(own.faststream()).__name__ == "SASLScram512"
    assert 'username="intake" password="intake-pw";' in own.properties()


def test_a_username_alone_implies_sasl_plaintext() -> None:
    sec = KafkaSecurity.from_env(None, {"KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p"})
    assert sec.protocol == "SASL_PLAINTEXT" and sec.mechanism == "SCRAM-SHA-512"


def test_a_service_process_gets_its_own_credentials_and_nobody_elses() -> None:
    env = only_service({**ENV, "OTHER": "x"}, "routing", acl.SERVICES)
    assert env["KAFKA_SASL_USERNAME"] == "routing"
    assert env["KAFKA_SASL_PASSWORD"] == "routing-pw"
    assert "admin-pw" not in env.values() and "intake-pw" not in env.values()
    assert env["OTHER"] == "x"
    assert only_service({"OTHER": "x"}, "routing", acl.SERVICES) == {"OTHER": "x"}


@pytest.mark.parametrize("service", acl.SERVICES)
def test_acl_table_matches_what_each_service_consumes(service: str) -> None:
    spec = importlib.import_module(f"services.{service}.app").SPEC
    assert set(acl.CONSUMES[service]) == set(spec.topics)


def test_each_event_family_has_exactly_one_publisher() -> None:
    published = {topic_for(t) for t in EVENT_TYPES}
    owners = [t for s, topics in acl.PRODUCES.items() if s != "console" for t in topics]
    assert sorted(o.name for o in owners) == sorted(t.name for t in published)
    assert set(acl.PRODUCES["console"]) == set(REPLAYS.values())


def test_every_topic_has_one_writer_and_no_principal_writes_what_it_does_not_own() -> None:
    """The one exception the issue allowed (every service writing the dead-letter topic)
    is gone too: each consumer has its own dead-letter topic."""
    for topic in TOPICS:
        writers = [s for s in acl.SERVICES if topic in acl.writes(s)]
        assert len(writers) == 1, (topic.name, writers)
    for service in acl.SERVICES:
        assert DEAD_LETTERS[service] in acl.writes(service)


def test_the_readme_table_is_the_acl_rules() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text("utf-8")
    assert acl.acl_table() in readme


def test_acls_are_literal_per_prefix_and_least_privilege() -> None:
    rules = {str(a) for a in acl.acls_for("notification", "notification", "t1.")}
    assert rules == {
        "User:notification Write topic t1.lienthong.notification.v1",
        f"User:notification Write topic t1.{DEAD_LETTERS['notification'].name}",
        "User:notification Read topic t1.lienthong.dossier.v1",
        f"User:notification Read topic t1.{REPLAYS['notification'].name}",
        "User:notification Read topic t1.lienthong.consultation.v1",
        "User:notification Read topic t1.lienthong.routing.v1",
        "User:notification Read group t1.lienthong-notification",
    }


def test_principals_come_from_per_service_settings() -> None:
    assert acl.principals_from_env(ENV) == {"intake": "intake", "routing": "routing"}
    assert acl.principals_from_env({}) == {}
