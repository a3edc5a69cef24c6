"""The failover settings reach faust: standby replicas, the static membership id and the
commit interval; and the producer's compression."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from aiokafka.codec import has_zstd

from streams.config import Settings
from streams.pipeline.app import build_app, commit_interval_s, group_instance_id


def test_the_group_instance_id_is_per_host_and_port_unless_given_or_off() -> None:
    s = Settings(topic_prefix="p", web_port=6070)
    assert group_instance_id(s) == f"p-worker-{socket.gethostname()}-6070"
    assert group_instance_id(s.with_overrides(web_port=6071)) != group_instance_id(s)
    assert group_instance_id(s.with_overrides(group_instance_id="off")) is None
    assert group_instance_id(s.with_overrides(group_instance_id="w7")) == "w7"


def test_faust_gets_them(tmp_path: Path) -> None:
    s = Settings(state_dir=tmp_path, kafka_security="PLAINTEXT", table_standby_replicas=2,
                 group_instance_id="w1")
    app = build_app(s).app
    assert app.conf.table_standby_replicas == 2 and app.assignor.replicas == 2
    assert app.conf.consumer_group_instance_id == "w1"
    off = build_app(s.with_overrides(group_instance_id="off",
                                     state_dir=tmp_path / "b")).app
    assert off.conf.consumer_group_instance_id is None


def test_faust_compresses_what_the_worker_writes(tmp_path: Path) -> None:
    s = Settings(state_dir=tmp_path, kafka_security="PLAINTEXT")
    assert build_app(s).app.conf.producer_compression_type == "zstd"
    assert has_zstd()  # aiokafka's codec is installed (cramjam): the producer can send it
    off = build_app(s.with_overrides(kafka_compression="none", state_dir=tmp_path / "b")).app
    assert off.conf.producer_compression_type is None


def test_the_worker_commits_every_commit_interval(tmp_path: Path) -> None:
    s = Settings(state_dir=tmp_path, kafka_security="PLAINTEXT")
    assert s.commit_interval_s == 0.5  # faust's own default is 2.8 s
    app = build_app(s).app
    assert app.conf.broker_commit_interval == 0.5
    assert app.consumer.commit_interval == 0.5  # what faust's commit timer waits
    slower = build_app(s.with_overrides(commit_interval_s=2.0, state_dir=tmp_path / "b")).app
    assert slower.consumer.commit_interval == 2.0


@pytest.mark.parametrize("interval", [0.0, -1.0])
def test_a_commit_interval_that_is_not_positive_is_refused(interval: float) -> None:
    # faust would take 0 for its own 2.8 s default, and a negative one for a busy loop
    with pytest.raises(ValueError, match="IOACCT_COMMIT_INTERVAL_S"):
        commit_interval_s(Settings(commit_interval_s=interval))
