"""The local Apache Kafka launcher: configuration, persistence of identity, clear errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from deploy import kafka
from deploy.kafka import KafkaUnavailable, LocalKafka
from services.runtime.kafka_auth import KafkaSecurity


def test_single_node_is_tuned_for_one_small_machine(tmp_path: Path) -> None:
    node = LocalKafka(tmp_path).nodes[0]
    conf = node.config(cluster_size=1)
    assert conf["process.roles"] == "broker,controller"
    assert conf["group.initial.rebalance.delay.ms"] == "0"
    assert conf["offsets.topic.replication.factor"] == "1"
    assert conf["transaction.state.log.min.isr"] == "1"
    assert conf["log.dirs"].startswith(str(tmp_path))
    assert conf["listeners"].startswith("SASL_PLAINTEXT://127.0.0.1:")
    assert conf["listener.security.protocol.map"].endswith("CONTROLLER:SASL_PLAINTEXT")
    assert conf["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert conf["authorizer.class.name"].endswith("StandardAuthorizer")
    assert conf["allow.everyone.if.no.acl.found"] == "false"
    assert conf["super.users"].split(";") == ["User:admin", "User:broker"]
    assert not any(f"User:{s}" in conf["super.users"] for s in kafka.SERVICES)


def test_the_controller_listener_takes_only_the_brokers_and_the_admin(tmp_path: Path) -> None:
    local = LocalKafka(tmp_path)
    assert local.credentials is not None
    pw = local.credentials.passwords
    conf = local.nodes[0].config(cluster_size=1)
    assert conf["controller.listener.names"] == "CONTROLLER"
    assert conf["sasl.mechanism.controller.protocol"] == "PLAIN"
    assert conf["listener.name.controller.sasl.enabled.mechanisms"] == "PLAIN"
    jaas = conf["listener.name.controller.plain.sasl.jaas.config"]
    assert jaas.startswith("org.apache.kafka.common.security.plain.PlainLoginModule required")
    assert f'username="broker" password="{pw["broker"]}"' in jaas
    assert set(re.findall(r'user_(\w+)="', jaas)) == {"broker", "admin"}
    assert f'user_admin="{pw["admin"]}"' in jaas
    assert "ANONYMOUS" not in conf["super.users"]
    assert local.controller_bootstrap == f"127.0.0.1:{local.nodes[0].controller_port}"


def test_server_properties_hold_passwords_so_only_this_user_reads_them(tmp_path: Path) -> None:
    node = LocalKafka(tmp_path).nodes[0]
    node.config_path.parent.mkdir(parents=True)
    node.config_path.write_text("old\n")
    node.config_path.chmod(0o644)  # written by an earlier version
    node.write_config(cluster_size=1)
    assert (node.config_path.stat().st_mode & 0o777) == 0o600
    assert "CONTROLLER:SASL_PLAINTEXT" in node.config_path.read_text()
    # the log folder holds every event: the node's and the cluster's folders are private
    assert (node.data_dir.stat().st_mode & 0o777) == 0o700
    assert (tmp_path.stat().st_mode & 0o777) == 0o700


def test_plaintext_when_security_is_off(tmp_path: Path) -> None:
    conf = LocalKafka(tmp_path, secure=False).nodes[0].config(cluster_size=1)
    assert conf["listeners"].startswith("PLAINTEXT://127.0.0.1:")
    assert "authorizer.class.name" not in conf


def test_credentials_are_private_and_survive_a_restart(tmp_path: Path) -> None:
    first = LocalKafka(tmp_path)
    assert (first.credentials_path.stat().st_mode & 0o777) == 0o600
    env = first.client_env()
    assert env["KAFKA_SASL_USERNAME"] == "admin"
    assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
    assert {env[f"{s.upper()}_KAFKA_SASL_USERNAME"] for s in kafka.SERVICES} == set(kafka.SERVICES)
    assert len({env[f"{s.upper()}_KAFKA_SASL_PASSWORD"] for s in kafka.SERVICES}) == len(
        kafka.SERVICES
    )
    assert LocalKafka(tmp_path).client_env() == env
    assert first.credentials is not None
    scram = first.credentials.scram_args()
    assert scram.count("--add-scram") == 2 + len(kafka.SERVICES)  # admin, broker, services


def test_storage_formatted_without_credentials_is_refused(tmp_path: Path) -> None:
    (tmp_path / "node1" / "logs").mkdir(parents=True)
    (tmp_path / "node1" / "logs" / "meta.properties").write_text("version=1\n")
    with pytest.raises(KafkaUnavailable, match="make clean"):
        LocalKafka(tmp_path)


def test_three_nodes_replicate_internal_topics_and_share_a_quorum(tmp_path: Path) -> None:
    cluster = LocalKafka(tmp_path, nodes=3)
    voters = {n.voters for n in cluster.nodes}
    assert len(voters) == 1 and voters.pop().count("@127.0.0.1:") == 3
    conf = cluster.nodes[2].config(cluster_size=3)
    assert conf["node.id"] == "3"
    assert conf["offsets.topic.replication.factor"] == "3"
    assert conf["min.insync.replicas"] == "2"
    ports = [n.port for n in cluster.nodes] + [n.controller_port for n in cluster.nodes]
    assert len(set(ports)) == 6
    assert len(cluster.bootstrap.split(",")) == 3


def test_identity_and_ports_survive_a_restart(tmp_path: Path) -> None:
    first = LocalKafka(tmp_path)
    again = LocalKafka(tmp_path)
    assert again.cluster_id == first.cluster_id
    assert again.bootstrap == first.bootstrap


def test_missing_java_or_maven_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIENTHONG_CACHE", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setattr(kafka.shutil, "which", lambda _: None)
    with pytest.raises(KafkaUnavailable, match="apt-get install maven"):
        kafka.ensure_jars()
    with pytest.raises(KafkaUnavailable, match="openjdk-17"):
        kafka.java()


def test_tools_get_the_bootstrap_server_when_missing() -> None:
    cmd = kafka.tool_command("topics", ["--list"], "127.0.0.1:19092")
    assert cmd[-3:] == ["--list", "--bootstrap-server", "127.0.0.1:19092"]
    assert "org.apache.kafka.tools.TopicCommand" in cmd
    with pytest.raises(KafkaUnavailable, match="unknown tool"):
        kafka.tool_command("nope", [])


def test_tools_get_the_client_properties_with_their_own_flag(tmp_path: Path) -> None:
    config = tmp_path / "client.properties"
    cmd = kafka.tool_command("consumer-groups", ["--list"], "127.0.0.1:1", config)
    assert cmd[-2:] == ["--command-config", str(config)]
    cmd = kafka.tool_command("console-consumer", ["--topic", "t"], "127.0.0.1:1", config)
    assert cmd[-2:] == ["--consumer.config", str(config)]
    assert "org.apache.kafka.tools.AclCommand" in kafka.tool_command("acls", ["--list"])


def test_tools_on_the_controller_get_no_bootstrap_server_and_log_in_with_plain() -> None:
    args = ["--bootstrap-controller", "127.0.0.1:19093", "--list"]
    cmd = kafka.tool_command("acls", args, "127.0.0.1:19092")
    assert "--bootstrap-server" not in cmd and cmd[-3:] == args
    assert kafka.targets_controller(["--bootstrap-controller=127.0.0.1:19093"])
    assert not kafka.targets_controller(["--bootstrap-server", "127.0.0.1:19092"])
    scram = KafkaSecurity("SASL_PLAINTEXT", "SCRAM-SHA-512", "admin", "pw")
    plain = kafka.controller_security(scram)
    assert (plain.protocol, plain.mechanism, plain.username, plain.password) == (
        "SASL_PLAINTEXT",
        "PLAIN",
        "admin",
        "pw",
    )
    assert "PlainLoginModule" in plain.properties()
    assert kafka.controller_security(KafkaSecurity()) == KafkaSecurity()


def test_dev_tools_read_make_runs_credentials_only_for_a_local_broker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = tmp_path / "credentials.env"
    creds.write_text("KAFKA_SASL_USERNAME=admin\nKAFKA_SASL_PASSWORD=pw\n")
    monkeypatch.setattr(kafka, "RUN_CREDENTIALS", creds)
    assert kafka.dev_env({})["KAFKA_SASL_USERNAME"] == "admin"
    local = {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:29092"}
    assert kafka.dev_env(local)["KAFKA_SASL_PASSWORD"] == "pw"
    remote = {"KAFKA_BOOTSTRAP_SERVERS": "kafka.example.vn:9092"}
    assert "KAFKA_SASL_USERNAME" not in kafka.dev_env(remote)
    own = {"KAFKA_SASL_USERNAME": "ops", "KAFKA_SASL_PASSWORD": "x"}
    assert kafka.dev_env(own)["KAFKA_SASL_USERNAME"] == "ops"
