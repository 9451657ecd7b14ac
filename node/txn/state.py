"""One transactional id's state and its transitions (Kafka's TransactionMetadata and the checks
of TransactionCoordinator), pure: no I/O, no clock; the coordinator persists each transition to
`__transaction_state` before it answers, and writes markers for the Prepare states.

States::

    EMPTY ──add partitions──▶ ONGOING ──EndTxn(commit)──▶ PREPARE_COMMIT ──markers──▶ COMPLETE_COMMIT
      ▲                          │     ──EndTxn(abort) / timeout──▶ PREPARE_ABORT ──▶ COMPLETE_ABORT
      └──────────────────────────┴──(a Complete state accepts new partitions: the next transaction)
    DEAD: the id expired; a new InitProducerId starts it afresh.

Rules (KIP-98):
- InitProducerId bumps the epoch (a new producer id when the epoch would overflow): every
  older instance of the transactional id is fenced (INVALID_PRODUCER_EPOCH, or PRODUCER_FENCED
  for Kafka's newer clients). With a transaction ONGOING it must be aborted first: the caller
  gets the abort to complete and retries (CONCURRENT_TRANSACTIONS), as Kafka does.
- AddPartitionsToTxn / AddOffsetsToTxn / EndTxn from an older epoch: INVALID_PRODUCER_EPOCH.
  During PREPARE_* (EndTxn is answered once PREPARE_* is persisted; the markers follow):
  CONCURRENT_TRANSACTIONS (retriable). EndTxn with nothing ongoing: INVALID_TXN_STATE, except
  the retry of the EndTxn decided or completed (same outcome) succeeds.
- An ONGOING transaction older than its timeout is aborted by the coordinator with a bumped
  epoch, so the late producer is fenced and told.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace

from strom.v1 import common_pb2

EPOCH_MAX = 32767  # int16
TRANSACTION_TIMEOUT_MS_MAX = 900_000  # transaction.max.timeout.ms default


class TxnState(enum.IntEnum):
    EMPTY = 0
    ONGOING = 1
    PREPARE_COMMIT = 2
    PREPARE_ABORT = 3
    COMPLETE_COMMIT = 4
    COMPLETE_ABORT = 5
    DEAD = 6


PREPARE_STATES = frozenset({TxnState.PREPARE_COMMIT, TxnState.PREPARE_ABORT})
COMPLETE_STATES = frozenset({TxnState.COMPLETE_COMMIT, TxnState.COMPLETE_ABORT})


class TxnError(Exception):
    """A refused request, with the Kafka error code it is answered with."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class TxnMetadata:
    """The state of one transactional id, as stored in `__transaction_state` (immutable: each
    transition makes the next one, which is written before it replaces this one)."""

    transactional_id: str
    producer_id: int
    producer_epoch: int
    timeout_ms: int
    state: TxnState
    partitions: frozenset[tuple[str, int]] = field(default_factory=frozenset)
    start_ms: int = -1  # when the ONGOING transaction began; -1 outside one
    last_update_ms: int = -1

    # ---- checks ----------------------------------------------------------------------------

    def _check_epoch(self, producer_id: int, producer_epoch: int) -> None:
        if producer_id != self.producer_id:
            raise TxnError(
                common_pb2.INVALID_PRODUCER_ID_MAPPING,
                f"{self.transactional_id!r} belongs to producer id {self.producer_id}, "
                f"not {producer_id}",
            )
        if producer_epoch != self.producer_epoch:
            raise TxnError(
                common_pb2.INVALID_PRODUCER_EPOCH,
                f"{self.transactional_id!r}: epoch {producer_epoch} is fenced by "
                f"{self.producer_epoch}",
            )

    def _check_not_preparing(self) -> None:
        if self.state in PREPARE_STATES:
            raise TxnError(
                common_pb2.CONCURRENT_TRANSACTIONS,
                f"{self.transactional_id!r}: the previous transaction is still completing",
            )

    # ---- transitions -----------------------------------------------------------------------

    def init_producer(self, timeout_ms: int, now_ms: int, new_producer_id: int) -> TxnMetadata:
        """InitProducerId for an existing id: the next epoch (a new producer id at the epoch's
        end, `new_producer_id`). ONGOING or PREPARE_*: CONCURRENT_TRANSACTIONS; the caller
        first aborts (`abort_for_fencing`) or completes, as Kafka does."""
        check_timeout(timeout_ms)
        self._check_not_preparing()
        if self.state == TxnState.ONGOING:
            raise TxnError(
                common_pb2.CONCURRENT_TRANSACTIONS,
                f"{self.transactional_id!r}: an ongoing transaction is being aborted first",
            )
        pid, epoch = self.producer_id, self.producer_epoch + 1
        if epoch > EPOCH_MAX - 1:  # leave EPOCH_MAX for the fencing abort of this id
            pid, epoch = new_producer_id, 0
        return replace(
            self, producer_id=pid, producer_epoch=epoch, timeout_ms=timeout_ms,
            state=TxnState.EMPTY, partitions=frozenset(), start_ms=-1, last_update_ms=now_ms,
        )  # fmt: skip

    def add_partitions(
        self, producer_id: int, producer_epoch: int, partitions: frozenset[tuple[str, int]],
        now_ms: int,
    ) -> TxnMetadata:  # fmt: skip
        """AddPartitionsToTxn (and AddOffsetsToTxn, with the group's offsets partition)."""
        self._check_epoch(producer_id, producer_epoch)
        self._check_not_preparing()
        if self.state == TxnState.DEAD:
            raise TxnError(common_pb2.INVALID_TXN_STATE, f"{self.transactional_id!r} is dead")
        if self.state == TxnState.ONGOING:
            if partitions <= self.partitions:
                return self
            return replace(self, partitions=self.partitions | partitions, last_update_ms=now_ms)
        return replace(
            self, state=TxnState.ONGOING, partitions=partitions, start_ms=now_ms,
            last_update_ms=now_ms,
        )  # fmt: skip

    def end(self, producer_id: int, producer_epoch: int, commit: bool, now_ms: int) -> TxnMetadata:
        """EndTxn: ONGOING → PREPARE_COMMIT / PREPARE_ABORT (markers follow). The retry of an
        EndTxn already done or under way answers the same; the opposite outcome is refused.
        An empty transaction (no partitions) completes at once."""
        self._check_epoch(producer_id, producer_epoch)
        done = TxnState.COMPLETE_COMMIT if commit else TxnState.COMPLETE_ABORT
        preparing = TxnState.PREPARE_COMMIT if commit else TxnState.PREPARE_ABORT
        if self.state in (done, preparing):
            return self
        if self.state == TxnState.EMPTY and not commit:
            return replace(self, state=done, last_update_ms=now_ms)
        if self.state != TxnState.ONGOING:
            raise TxnError(
                common_pb2.INVALID_TXN_STATE,
                f"{self.transactional_id!r}: EndTxn({'commit' if commit else 'abort'}) in "
                f"state {self.state.name}",
            )
        return replace(self, state=preparing, last_update_ms=now_ms)

    def complete(self, now_ms: int) -> TxnMetadata:
        """Every marker of a PREPARE state is written: the transaction is over."""
        if self.state not in PREPARE_STATES:
            raise TxnError(
                common_pb2.INVALID_TXN_STATE,
                f"{self.transactional_id!r}: nothing to complete in {self.state.name}",
            )
        done = (
            TxnState.COMPLETE_COMMIT
            if self.state == TxnState.PREPARE_COMMIT
            else TxnState.COMPLETE_ABORT
        )
        return replace(self, state=done, partitions=frozenset(), start_ms=-1, last_update_ms=now_ms)

    def abort_for_fencing(self, now_ms: int) -> TxnMetadata:
        """Abort the ONGOING transaction with a bumped epoch (timeout, or a new instance's
        InitProducerId): the markers carry the new epoch, so the old producer's late batches
        and EndTxn are refused everywhere."""
        if self.state != TxnState.ONGOING:
            raise TxnError(
                common_pb2.INVALID_TXN_STATE,
                f"{self.transactional_id!r}: no ongoing transaction to abort",
            )
        return replace(
            self, producer_epoch=min(self.producer_epoch + 1, EPOCH_MAX),
            state=TxnState.PREPARE_ABORT, last_update_ms=now_ms,
        )  # fmt: skip

    def expired(self, now_ms: int) -> bool:
        """An ONGOING transaction past its timeout (the coordinator aborts it)."""
        return self.state == TxnState.ONGOING and now_ms - self.start_ms > self.timeout_ms


def check_timeout(timeout_ms: int) -> None:
    if not 0 < timeout_ms <= TRANSACTION_TIMEOUT_MS_MAX:
        raise TxnError(
            common_pb2.INVALID_TRANSACTION_TIMEOUT,
            f"transaction.timeout.ms={timeout_ms} must be in 1..{TRANSACTION_TIMEOUT_MS_MAX}",
        )


def new_transactional_id(
    transactional_id: str, producer_id: int, timeout_ms: int, now_ms: int
) -> TxnMetadata:
    """InitProducerId for an id never seen (or DEAD): epoch 0 of a fresh producer id."""
    if not transactional_id:
        raise TxnError(common_pb2.INVALID_REQUEST, "the transactional id is empty")
    check_timeout(timeout_ms)
    return TxnMetadata(
        transactional_id, producer_id, 0, timeout_ms, TxnState.EMPTY, last_update_ms=now_ms
    )


def recovery_action(metadata: TxnMetadata) -> str:
    """What a coordinator that just loaded this state (failover) must do for it: resend the
    markers of a PREPARE state and complete it ("markers"), or nothing ("none": an ONGOING
    transaction either ends with its producer's EndTxn or times out and is aborted)."""
    return "markers" if metadata.state in PREPARE_STATES else "none"
