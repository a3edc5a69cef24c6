"""The local cluster's pure parts: port layout, each node's server.properties, the
quorum voters, the settings that follow the node count, the data's node-count check.
The cluster itself is tested in tests/integration/test_kafka_cluster.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.config import Settings, kafka_node_ports
from streams.kafka.cluster import LocalCluster, check_mode, made_for, voters
from streams.kafka.local import KafkaError


def _props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines()
                if line and not line.startswith("#") and "=" in line)


def test_default_ports_give_three_nodes_distinct_pairs() -> None:
    assert kafka_node_ports(9092, 9093, 3) == [(9092, 9093), (9094, 9095), (9096, 9097)]
    assert kafka_node_ports(9092, 9093, 1) == [(9092, 9093)]


@pytest.mark.parametrize("controller", [9094, 9096, 9092])
def test_colliding_ports_are_refused(controller: int) -> None:
    with pytest.raises(ValueError, match="collide"):
        kafka_node_ports(9092, controller, 3)


def test_ports_past_65535_are_refused() -> None:
    with pytest.raises(ValueError, match="overflow"):
        kafka_node_ports(65532, 65533, 3)


def test_voters_name_every_controller() -> None:
    assert voters([(9092, 9093), (9094, 9095), (9096, 9097)]) == (
        "1@127.0.0.1:9093,2@127.0.0.1:9095,3@127.0.0.1:9097")


def test_bootstrap_lists_every_node_when_three() -> None:
    assert Settings(kafka_port=9100, kafka_brokers=3).bootstrap_servers == (
        "127.0.0.1:9100,127.0.0.1:9102,127.0.0.1:9104")
    assert Settings(kafka_port=9100).bootstrap_servers == "127.0.0.1:9100"
    assert Settings(kafka_brokers=3, bootstrap="h:1").bootstrap_servers == "h:1"


def test_three_brokers_make_replication_three_and_min_isr_two(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REPLICATION_FACTOR", "MIN_INSYNC_REPLICAS", "KAFKA_BROKERS"):
        monkeypatch.delenv(f"IOACCT_{name}", raising=False)
    one, three = Settings.from_env(), Settings.from_env(kafka_brokers=3)
    assert (one.replication_factor, one.min_insync_replicas) == (1, 1)
    assert (three.replication_factor, three.min_insync_replicas) == (3, 2)
    monkeypatch.setenv("IOACCT_MIN_INSYNC_REPLICAS", "3")  # what is set wins
    chosen = Settings.from_env(kafka_brokers=3, replication_factor=2)
    assert (chosen.replication_factor, chosen.min_insync_replicas) == (2, 3)


def test_node_properties_of_a_secured_three_node_cluster(tmp_path: Path) -> None:
    settings = Settings(kafka_port=9100, kafka_controller_port=9101, kafka_brokers=3,
                        state_dir=tmp_path)
    cluster = LocalCluster.from_settings(settings)
    (cluster.home / "tls").mkdir(parents=True)
    (cluster.home / "tls" / "trust.p12").write_bytes(b"")  # no keytool in a unit test
    node = cluster.node(2)
    props = _props(node.properties_text())
    assert node.home == tmp_path / "kafka-9100" / "node-2"
    assert props["node.id"] == "2"
    assert props["controller.quorum.voters"] == (
        "1@127.0.0.1:9101,2@127.0.0.1:9103,3@127.0.0.1:9105")
    assert props["listeners"] == "SASL_SSL://127.0.0.1:9102,CONTROLLER://127.0.0.1:9103"
    assert props["advertised.listeners"] == "SASL_SSL://127.0.0.1:9102"
    assert props["inter.broker.listener.name"] == "SASL_SSL"
    assert props["log.dirs"] == str(node.home / "data")
    # One CA, one certificate, one set of passwords for every node: the cluster home's.
    assert props["ssl.keystore.location"] == str(cluster.home / "tls" / "broker.p12")
    assert (cluster.home / "secrets" / "admin.password").exists()
    assert not (node.home / "secrets").exists()
    for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor",
                "default.replication.factor"):
        assert props[key] == "3", key
    assert props["transaction.state.log.min.isr"] == props["min.insync.replicas"] == "2"
    assert props["authorizer.class.name"].endswith("StandardAuthorizer")


def test_a_single_broker_keeps_its_layout(tmp_path: Path) -> None:
    settings = Settings(kafka_port=9100, kafka_controller_port=9101, state_dir=tmp_path,
                        kafka_security="PLAINTEXT")
    (node,) = LocalCluster.from_settings(settings).nodes
    props = _props(node.properties_text())
    assert node.home == settings.kafka_home()
    assert props["node.id"] == "1" and props["controller.quorum.voters"] == "1@127.0.0.1:9101"
    assert props["offsets.topic.replication.factor"] == props["min.insync.replicas"] == "1"


def test_data_made_for_one_node_is_not_started_as_three(tmp_path: Path) -> None:
    one = LocalCluster.from_settings(Settings(state_dir=tmp_path))
    three = LocalCluster.from_settings(Settings(state_dir=tmp_path, kafka_brokers=3))
    assert made_for(three) is None
    (one.home / "data").mkdir(parents=True)
    (one.home / "data" / "meta.properties").write_text("cluster.id=x\n")  # a broker of old
    assert made_for(three) == 1
    check_mode(one)
    with pytest.raises(KafkaError, match="made for 1 node"):
        check_mode(three)
    (three.home / "brokers").write_text("3\n")
    with pytest.raises(KafkaError, match="made for 3 node"):
        check_mode(one)


def test_colliding_ports_are_a_kafka_error(tmp_path: Path) -> None:
    with pytest.raises(KafkaError, match="collide"):
        LocalCluster.from_settings(Settings(kafka_port=9100, kafka_controller_port=9102,
                                            kafka_brokers=3, state_dir=tmp_path))


def test_a_single_broker_command_refuses_a_cluster_setting(tmp_path: Path) -> None:
    """bench and the session fixture start one broker: with IOACCT_KAFKA_BROKERS=3 their
    clients would look for three (and RF 3): a clear error instead."""
    from streams.kafka.local import LocalBroker

    with pytest.raises(KafkaError, match="IOACCT_KAFKA_BROKERS=3"):
        LocalBroker.from_settings(Settings(kafka_brokers=3, state_dir=tmp_path))
