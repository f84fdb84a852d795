"""The local Apache Kafka launcher: configuration, persistence of identity, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy import kafka
from deploy.kafka import KafkaUnavailable, LocalKafka


def test_single_node_is_tuned_for_one_small_machine(tmp_path: Path) -> None:
    node = LocalKafka(tmp_path).nodes[0]
    conf = node.config(cluster_size=1)
    assert conf["process.roles"] == "broker,controller"
    assert conf["group.initial.rebalance.delay.ms"] == "0"
    assert conf["offsets.topic.replication.factor"] == "1"
    assert conf["transaction.state.log.min.isr"] == "1"
    assert conf["log.dirs"].startswith(str(tmp_path))
    assert conf["listeners"].startswith("PLAINTEXT://127.0.0.1:")


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
