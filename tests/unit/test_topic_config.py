"""One table for every topic config and the broker key behind it (issue #15, defect 1).

Before, the controller checked only lower bounds, so `segment.bytes=2147483648` or
`retention.ms=10**20` was written to the metadata log; every broker then failed to open the
topic's partitions (storage's LogConfig requires 32 bits) and produce hung. Now the controller
checks with the table the brokers apply, Java int/long ranges included, and refuses with
INVALID_CONFIG before anything is written; a broker that still meets a value it cannot apply (an
older version wrote it) takes that topic's replicas offline with a one-line reason and keeps
serving the rest.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest
from replica_fixtures import TOPIC_ID, changed, image, led_by, manager, until
from test_controller_logic import Cluster
from test_controller_service import Quorum, running_quorum

from strom.node.config import NODE_KEYS_BY_NAME, ConfigError, build_config
from strom.node.group.offsets_log import last_offset_of
from strom.node.metadata.image import PartitionInfo
from strom.node.topic_config import (
    INT_MAX,
    LONG_MAX,
    TOPIC_CONFIGS,
    InvalidTopicConfig,
    TopicConfigKey,
    canonical_text,
    parse_topic_config,
    resolve,
)
from strom.storage.batch_validation import split_batches
from strom.storage.log_config import LogConfig
from strom.storage.record_batch import Record, encode_batch
from strom.storage.record_decode import decode_batch
from strom.v1 import admin_pb2, common_pb2, controller_pb2, metadata_pb2

NUMERIC = [key for key in TOPIC_CONFIGS if key.kind in ("int", "long")]


# ---- the table -------------------------------------------------------------------------------


@pytest.mark.parametrize("key", NUMERIC, ids=lambda k: k.name)
def test_each_number_is_bounded_by_its_java_type(key: TopicConfigKey) -> None:
    maximum = INT_MAX if key.kind == "int" else LONG_MAX
    assert key.parse(str(key.minimum)) == key.minimum
    assert key.parse(str(maximum)) == maximum
    for bad in (key.minimum - 1, maximum + 1, 10**20):
        with pytest.raises(InvalidTopicConfig, match=key.name):
            key.parse(str(bad))


def test_kafkas_types_and_the_values_the_probe_sent() -> None:
    kinds = {key.name: key.kind for key in TOPIC_CONFIGS}
    assert kinds["segment.bytes"] == kinds["max.message.bytes"] == "int"
    assert kinds["retention.ms"] == kinds["segment.ms"] == kinds["retention.bytes"] == "long"
    with pytest.raises(InvalidTopicConfig, match=r"segment.bytes: must be from 14 to 2147483647"):
        parse_topic_config("segment.bytes", "2147483648")
    for name in ("retention.ms", "max.message.bytes"):
        with pytest.raises(InvalidTopicConfig, match=name):
            parse_topic_config(name, str(10**20))
    with pytest.raises(InvalidTopicConfig, match="unknown topic config 'retention.hours'"):
        parse_topic_config("retention.hours", "1")
    with pytest.raises(InvalidTopicConfig, match="expected an integer"):
        parse_topic_config("retention.ms", "soon")
    with pytest.raises(InvalidTopicConfig, match="expected true or false"):
        parse_topic_config("unclean.leader.election.enable", "yes")
    assert canonical_text("unclean.leader.election.enable", "TRUE") == "true"
    assert canonical_text("retention.ms", " 1000 ") == "1000"


def test_cleanup_policy_takes_compact_delete_or_both() -> None:
    assert canonical_text("cleanup.policy", "delete") == "delete"
    assert canonical_text("cleanup.policy", "delete, compact") == "compact,delete"
    assert canonical_text("cleanup.policy", "compact,delete,compact") == "compact,delete"
    for bad in ("never", "compact,never", "", " , "):
        with pytest.raises(InvalidTopicConfig, match="cleanup.policy"):
            parse_topic_config("cleanup.policy", bad)


def test_storage_guards_the_same_ranges_as_the_table() -> None:
    """LogConfig (storage) refuses exactly what the table refuses for the keys it holds, so a
    value the controller accepts can always be applied."""
    fields = LogConfig.keys()
    shared = [key for key in NUMERIC if key.name in fields]
    assert {key.name for key in shared} == set(fields) & {key.name for key in TOPIC_CONFIGS}
    for key in shared:
        for good in (key.minimum, key.maximum):
            LogConfig.from_kafka({key.name: good})
        for bad in (key.minimum - 1, key.maximum + 1):
            with pytest.raises(ValueError, match=key.name):
                LogConfig.from_kafka({key.name: bad})


def test_broker_keys_are_checked_by_the_same_table() -> None:
    minimal = {"node.id": 1, "controller.quorum.voters": "1@localhost:9093"}
    for key in TOPIC_CONFIGS:
        broker = NODE_KEYS_BY_NAME[key.broker_key]
        key.parse(broker.default)  # every default passes
        assert broker.check is not None or key.kind == "boolean", key.broker_key
    with pytest.raises(ConfigError, match=r"log.segment.bytes: must be from 14 to 2147483647"):
        build_config({**minimal, "log.segment.bytes": 2**31}, environ={})
    with pytest.raises(ConfigError, match="log.retention.bytes"):
        build_config({**minimal, "log.retention.bytes": -2}, environ={})
    config = build_config({**minimal, "log.cleanup.policy": "compact,delete"}, environ={})
    defaults = config.topic_defaults()
    assert defaults["retention.ms"] == 7 * 24 * 3600 * 1000
    assert defaults["segment.bytes"] == 1 << 30
    assert resolve(defaults, {})["cleanup.policy"] == ("compact", "delete")


def test_resolve_applies_overrides_and_names_a_value_it_cannot_apply() -> None:
    defaults = {"segment.bytes": 1 << 30, "min.insync.replicas": 1}
    resolved = resolve(defaults, {"segment.bytes": "1048576", "from.a.newer.version": "x"})
    assert resolved == {"segment.bytes": 1048576, "min.insync.replicas": 1}
    with pytest.raises(InvalidTopicConfig, match="min.insync.replicas"):
        resolve(defaults, {"min.insync.replicas": "0"})


# ---- the controller refuses before anything is written ---------------------------------------


BAD = [{"segment.bytes": "2147483648"}, {"retention.ms": str(10**20)}]


async def _unfenced_broker(quorum: Quorum) -> None:
    registered = await quorum.register(1)
    assert registered.status.error_code == common_pb2.NONE
    heartbeat = controller_pb2.BrokerHeartbeatRequest(
        broker_id=1,
        broker_epoch=registered.broker_epoch,
        current_metadata_offset=quorum.metadata.image.last_index,
    )
    answer = await quorum.service.BrokerHeartbeat(heartbeat, None)  # type: ignore[arg-type]
    assert not answer.is_fenced


def _create(
    name: str, configs: dict[str, str], validate_only: bool
) -> admin_pb2.CreateTopicsRequest:
    return admin_pb2.CreateTopicsRequest(
        topics=[
            admin_pb2.CreatableTopic(
                name=name, num_partitions=1, replication_factor=1, configs=configs
            )
        ],
        validate_only=validate_only,
    )


@pytest.mark.parametrize("configs", BAD, ids=lambda c: next(iter(c)))
def test_the_controller_refuses_out_of_range_configs_with_invalid_config(
    configs: dict[str, str],
) -> None:
    async def scenario() -> None:
        async with running_quorum() as quorum:
            await _unfenced_broker(quorum)
            service = quorum.service
            before = quorum.metadata.image.last_index
            for validate_only in (True, False):
                answer = await service.CreateTopics(_create("t", configs, validate_only), None)  # type: ignore[arg-type]
                (result,) = answer.topics
                assert result.error_code == common_pb2.INVALID_CONFIG, result
                assert next(iter(configs)) in result.error_message
            assert quorum.service.logic.image.topic_by_name("t") is None  # nothing proposed
            assert quorum.metadata.image.last_index == before  # nor committed

            created = await service.CreateTopics(_create("ok", {}, False), None)  # type: ignore[arg-type]
            assert created.topics[0].error_code == common_pb2.NONE
            (name, value), = configs.items()  # fmt: skip
            alter = admin_pb2.IncrementalAlterConfigsRequest(
                resources=[
                    admin_pb2.AlterConfigsResource(
                        resource=admin_pb2.ConfigResource(
                            resource_type=metadata_pb2.CONFIG_RESOURCE_TOPIC, resource_name="ok"
                        ),
                        configs=[admin_pb2.AlterableConfig(name=name, value=value)],
                    )
                ]
            )
            altered = await service.IncrementalAlterConfigs(alter, None)  # type: ignore[arg-type]
            assert altered.results[0].error_code == common_pb2.INVALID_CONFIG
            assert quorum.metadata.image.topic_configs("ok") == {}

    asyncio.run(scenario())


# ---- a broker that meets a value it cannot apply ---------------------------------------------


@pytest.mark.parametrize(
    "configs",
    [
        {"segment.bytes": "2147483648"},
        # Refused by no check on the broker before: the partition served with them.
        {"min.insync.replicas": "0"},
        {"cleanup.policy": "never"},
    ],
    ids=lambda c: next(iter(c)),
)
def test_a_broker_meeting_a_bad_config_takes_that_topic_offline_and_keeps_serving(
    tmp_path: Path, configs: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """The metadata log of an older version holds a value the table refuses: on its first
    image (a restart) and on a later change, the topic's replicas go offline on this broker,
    with one clear log line naming the key; the broker goes on serving its other topics."""
    other_id = bytes(range(1, 17))

    async def scenario() -> None:
        replicas = manager(tmp_path)
        good = image({0: led_by(1)}, topic="fine", topic_id=other_id)
        replicas.on_metadata(good, changed(good))
        bad = image({0: led_by(1), 1: led_by(1)}, configs=configs)
        with caplog.at_level(logging.ERROR, logger="strom.replica"):
            replicas.on_metadata(bad, changed(bad))
        assert replicas.offline_replicas() == [(TOPIC_ID, 0), (TOPIC_ID, 1)]
        (name,) = configs
        lines = [r for r in caplog.records if "OFFLINE" in r.getMessage()]
        assert len(lines) == 2 and all(name in r.getMessage() for r in lines)
        assert all(r.exc_info is None for r in lines)  # a reason, not a traceback
        # The other topic's replica is still served (the image of `bad` has only topic t, so
        # ask the partition object the manager kept).
        assert replicas.partitions[(other_id, 0)].is_leader
        await replicas.stop()
        replicas.logs.close()

    asyncio.run(scenario())


# ---- cleanup.policy=compact,delete -----------------------------------------------------------


def test_the_controller_accepts_compact_delete() -> None:
    cluster = Cluster()
    cluster.add_broker(1)
    cluster.create("both", 1, 1, **{"cleanup.policy": "delete, compact"})
    assert cluster.committed.topic_configs("both") == {"cleanup.policy": "compact,delete"}


def test_compact_and_delete_together_run_both_retention_and_the_cleaner(tmp_path: Path) -> None:
    """Kafka's `compact,delete`: the cleaner keeps each key's latest record, and retention
    still drops segments older than retention.ms (main: the controller refused the value, and
    a broker treated anything but `compact` as delete-only, so the cleaner never ran)."""

    alone = PartitionInfo(replicas=(1,), isr=(1,), leader=1, leader_epoch=1, partition_epoch=1)
    configs = {
        "cleanup.policy": "compact,delete",
        "retention.ms": str(24 * 3600 * 1000),
        "segment.bytes": "100",  # one batch per segment
        "delete.retention.ms": "0",
    }

    async def scenario() -> list[tuple[int, bytes | None]]:
        replicas = manager(
            tmp_path, **{"log.retention.check.interval.ms": 10, "log.cleaner.backoff.ms": 10}
        )
        img = image({0: alone}, configs=configs)
        replicas.on_metadata(img, changed(img))
        partition = replicas.partitions[(TOPIC_ID, 0)]
        now = int(time.time() * 1000)
        for key, timestamp in [(b"a", 1000), (b"b", now), (b"b", now), (b"b", now), (b"c", now)]:
            batch = encode_batch([Record(key, b"v", (), timestamp)])
            partition.append_as_leader(batch, 1, 1, now_ms=now)
        replicas.start()
        try:
            await until(
                lambda: (
                    partition.log_start_offset == 1  # retention: the old segment
                    and len(_keys(partition)) == 2
                )  # the cleaner: b@1 and b@2 superseded
            )
            return _keys(partition)
        finally:
            await replicas.stop()
            replicas.logs.close()

    def _keys(partition: object) -> list[tuple[int, bytes | None]]:
        log = partition.log  # type: ignore[attr-defined]
        found: list[tuple[int, bytes | None]] = []
        offset = log.log_start_offset
        while offset < log.log_end_offset:
            data = log.read(offset, 1 << 20)  # up to the end of one segment
            if not data:
                break
            for position, _ in split_batches(data):
                found += [(r.offset, r.key) for r in decode_batch(data, position)[1]]
            offset = last_offset_of(data) + 1
        return found

    assert asyncio.run(scenario()) == [(3, b"b"), (4, b"c")]
