"""Authorization rules of the Transaction service (Kafka's KafkaApis checks for the same APIs,
KIP-98), on the TRANSACTIONAL_ID resource:

| RPC                  | needs                                                                |
|----------------------|----------------------------------------------------------------------|
| InitProducerId       | WRITE on the transactional id, else                                  |
|                      | TRANSACTIONAL_ID_AUTHORIZATION_FAILED                                |
| AddPartitionsToTxn   | WRITE on the transactional id; WRITE on every topic, else            |
|                      | TOPIC_AUTHORIZATION_FAILED (strom adds a request's partitions at once)|
| AddOffsetsToTxn      | WRITE on the transactional id; READ on the group, else               |
|                      | GROUP_AUTHORIZATION_FAILED                                           |
| EndTxn               | WRITE on the transactional id                                        |
| TxnOffsetCommit      | WRITE on the transactional id; READ on the group; READ on each topic,|
|                      | else that topic's partitions answer TOPIC_AUTHORIZATION_FAILED       |
| ListTransactions     | lists only the ids the caller may DESCRIBE                           |
| DescribeTransactions | DESCRIBE on each id (per id)                                         |

FindCoordinator with key type TRANSACTION needs DESCRIBE on the id (node/security/
rules_group.py). A transactional batch needs no check of its own on the gRPC Produce: a
partition's leader takes transactional batches only from a producer id and epoch the
coordinator registered there, which AddPartitionsToTxn (WRITE on the id) did. The Kafka
listener's Produce, which names the transactional id, checks WRITE on it as Kafka does.
"""

from __future__ import annotations

from typing import Any

from strom.client.acl import Operation
from strom.v1 import common_pb2, txn_pb2

from .access import Access, Call, split_call
from .rules_group import commit_readable_topics

TXN_FAILED = common_pb2.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
GROUP_FAILED = common_pb2.GROUP_AUTHORIZATION_FAILED
TOPIC_FAILED = common_pb2.TOPIC_AUTHORIZATION_FAILED


Refusal = tuple[common_pb2.ErrorCode.ValueType, str]


def _refused_id(access: Access, operation: Operation, tid: str) -> Refusal | None:
    if access.transactional_id(operation, tid):
        return None
    return TXN_FAILED, access.refusal(operation, "transactional id", tid)


async def init_producer_id(access: Access, request: Any, call: Call) -> Any:
    refused = _refused_id(access, Operation.WRITE, request.transactional_id)
    if refused is not None:
        return txn_pb2.TxnInitProducerIdResponse(
            error_code=refused[0], error_message=refused[1], producer_id=-1, producer_epoch=-1
        )
    return await call(request)


async def add_partitions(access: Access, request: Any, call: Call) -> Any:
    refused = _refused_id(access, Operation.WRITE, request.transactional_id)
    if refused is not None:
        return txn_pb2.TxnResponse(error_code=refused[0], error_message=refused[1])
    topics = {p.topic for p in request.partitions}
    hidden = sorted(t for t in topics if not access.topic(Operation.WRITE, t))
    if hidden:
        return txn_pb2.TxnResponse(
            error_code=TOPIC_FAILED,
            error_message=f"{access.principal} is not authorized to WRITE topics {hidden}",
        )
    return await call(request)


async def add_offsets(access: Access, request: Any, call: Call) -> Any:
    refused: Refusal | None = _refused_id(access, Operation.WRITE, request.transactional_id)
    if refused is None and not access.group(Operation.READ, request.group_id):
        refused = GROUP_FAILED, access.refusal(Operation.READ, "group", request.group_id)
    if refused is not None:
        return txn_pb2.TxnResponse(error_code=refused[0], error_message=refused[1])
    return await call(request)


async def end_txn(access: Access, request: Any, call: Call) -> Any:
    refused = _refused_id(access, Operation.WRITE, request.transactional_id)
    if refused is not None:
        return txn_pb2.TxnResponse(error_code=refused[0], error_message=refused[1])
    return await call(request)


async def txn_offset_commit(access: Access, request: Any, call: Call) -> Any:
    refused: Refusal | None = _refused_id(access, Operation.WRITE, request.transactional_id)
    if refused is None and not access.group(Operation.READ, request.group_id):
        refused = GROUP_FAILED, access.refusal(Operation.READ, "group", request.group_id)
    if refused is not None:
        return txn_pb2.TxnOffsetCommitResponse(error_code=refused[0], error_message=refused[1])

    return await commit_readable_topics(
        access, request, call, txn_pb2.TxnOffsetCommitTopicResult, txn_pb2.TxnOffsetCommitResponse
    )


async def list_transactions(access: Access, request: Any, call: Call) -> Any:
    response = await call(request)
    visible = [
        t for t in response.transactions
        if access.transactional_id(Operation.DESCRIBE, t.transactional_id)
    ]  # fmt: skip
    del response.transactions[:]
    response.transactions.extend(visible)
    return response


async def describe_transactions(access: Access, request: Any, call: Call) -> Any:
    def refused(tid: str) -> txn_pb2.TransactionDescription:
        return txn_pb2.TransactionDescription(
            transactional_id=tid, error_code=TXN_FAILED,
            error_message=access.refusal(Operation.DESCRIBE, "transactional id", tid),
        )  # fmt: skip

    return await split_call(
        request, "transactional_ids",
        lambda tid: access.transactional_id(Operation.DESCRIBE, tid), call, "transactions",
        refused, txn_pb2.DescribeTransactionsResponse,
    )  # fmt: skip
