"""The idempotent producer's identity: its producer id and epoch, and each partition's next
sequence number (the idempotence part of Kafka's TransactionManager).

A batch's bytes are encoded once, on first dispatch, with the next sequence of its partition;
retries resend the same bytes. When a batch expires the id is reset, and the next batch starts a
fresh id at sequence 0 (see producer_sender.py).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from strom.v1 import broker_pb2, common_pb2

from .errors import TransactionStateError, error_from_code
from .producer_batch import ProducerBatch

if TYPE_CHECKING:
    from .cluster import ClusterClient


class SequenceState:
    def __init__(self, idempotent: bool, compression: int, transactional: bool = False) -> None:
        """`compression`: a `storage.record_batch.Compression` value. `transactional`: the
        id comes from the transaction coordinator (client/transactions.py), never from here,
        and batches carry the transactional bit."""
        self.idempotent = idempotent or transactional
        self.transactional = transactional
        self.compression = compression
        self.producer_id = -1
        self.producer_epoch = -1
        self._next_sequence: dict[tuple[str, int], int] = {}
        self._producer_id_lock = asyncio.Lock()

    async def ensure_producer_id(self, cluster: ClusterClient) -> None:
        if not self.idempotent or self.producer_id >= 0:
            return
        if self.transactional:
            raise TransactionStateError(
                common_pb2.INVALID_TXN_STATE, "call init_transactions() before sending"
            )
        async with self._producer_id_lock:
            if self.producer_id >= 0:
                return
            response = await cluster.call_any(
                lambda a: cluster.broker_stub(a).InitProducerId,
                broker_pb2.InitProducerIdRequest(),
            )
            if response.error_code != common_pb2.NONE:
                raise error_from_code(response.error_code, response.error_message)
            self.producer_id, self.producer_epoch = response.producer_id, response.producer_epoch

    def reset(self) -> None:
        """Forget the producer id and every sequence: the next batch starts a fresh id at 0."""
        self.producer_id = self.producer_epoch = -1
        self._next_sequence.clear()

    def encode(self, batch: ProducerBatch) -> bytes:
        """The batch's bytes, encoded on first use with the next sequence of its partition."""
        if batch.encoded is None:
            sequence = -1
            if self.idempotent:
                key = (batch.topic, batch.partition)
                sequence = self._next_sequence.get(key, 0)
                self._next_sequence[key] = (sequence + batch.record_count) % (1 << 31)
            batch.encoded = batch.builder.build(
                compression=self.compression,
                producer_id=self.producer_id if self.idempotent else -1,
                producer_epoch=self.producer_epoch if self.idempotent else -1,
                base_sequence=sequence,
                is_transactional=self.transactional,
            )
        return batch.encoded
