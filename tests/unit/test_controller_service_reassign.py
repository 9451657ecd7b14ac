"""The controller shell's reassignment, unregistration and election RPCs over a real Raft driver
(a single-voter quorum, as in test_controller_service.py): per-item results, records committed
before the answer."""

from __future__ import annotations

import asyncio

from test_controller_service import running_quorum

from strom.v1 import admin_pb2, common_pb2, controller_pb2


def test_reassign_unregister_and_unclean_election_through_the_service() -> None:
    async def scenario() -> None:
        async with running_quorum() as quorum:
            service = quorum.service
            for broker_id in (1, 2):
                assert (await quorum.register(broker_id)).status.error_code == common_pb2.NONE
                epoch = quorum.metadata.image.brokers[broker_id].broker_epoch
                await service.BrokerHeartbeat(
                    controller_pb2.BrokerHeartbeatRequest(
                        broker_id=broker_id,
                        broker_epoch=epoch,
                        current_metadata_offset=quorum.metadata.image.last_index,
                    ),
                    None,  # type: ignore[arg-type]
                )
            created = await service.CreateTopics(
                admin_pb2.CreateTopicsRequest(
                    topics=[admin_pb2.CreatableTopic(name="t", num_partitions=1,
                                                     replication_factor=1)]
                ),
                None,  # type: ignore[arg-type]
            )  # fmt: skip
            assert created.topics[0].error_code == common_pb2.NONE
            (part,) = quorum.metadata.image.topic_by_name("t").partitions.values()  # type: ignore[union-attr]
            other = 2 if part.replicas == (1,) else 1
            answer = await service.AlterPartitionReassignments(
                admin_pb2.AlterPartitionReassignmentsRequest(
                    partitions=[
                        admin_pb2.ReassignablePartition(topic="t", partition=0, replicas=[other]),
                        admin_pb2.ReassignablePartition(topic="t", partition=0, replicas=[9]),
                        admin_pb2.ReassignablePartition(topic="t", partition=3, cancel=True),
                    ]
                ),
                None,  # type: ignore[arg-type]
            )
            codes = [r.error_code for r in answer.results]
            assert codes == [
                common_pb2.NONE,
                common_pb2.INVALID_REPLICA_ASSIGNMENT,
                common_pb2.UNKNOWN_TOPIC_OR_PARTITION,
            ]
            # Committed before the answer: the image already shows the move.
            moved = quorum.metadata.image.topic_by_name("t").partitions[0]  # type: ignore[union-attr]
            assert moved.adding_replicas == (other,) and moved.target_replicas == (other,)
            refused = await service.UnregisterBroker(
                admin_pb2.UnregisterBrokerRequest(broker_id=1),
                None,  # type: ignore[arg-type]
            )
            assert refused.error_code == common_pb2.INVALID_REQUEST
            assert "controller voter" in refused.error_message
            elected = await service.ElectLeaders(
                admin_pb2.ElectLeadersRequest(election_type=admin_pb2.ELECTION_UNCLEAN),
                None,  # type: ignore[arg-type]
            )
            assert [r.error_code for r in elected.results] == [common_pb2.ELECTION_NOT_NEEDED]

    asyncio.run(scenario())
