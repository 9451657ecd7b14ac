"""Typed client errors carrying Kafka's error names (DESIGN.md §9).

`RetriableError` means the same request may succeed later (a leader moved, a replica caught up);
the SDK retries those itself with backoff until its deadline. `FatalError` means retrying the
same request cannot help (a bad topic name, an oversized record). Both carry the Kafka error
`name` and number `code`, so applications can match on either.
"""

from __future__ import annotations

from strom.v1 import common_pb2

_RETRIABLE = frozenset(
    {
        common_pb2.UNKNOWN_TOPIC_OR_PARTITION,
        common_pb2.LEADER_NOT_AVAILABLE,
        common_pb2.NOT_LEADER_OR_FOLLOWER,
        common_pb2.REQUEST_TIMED_OUT,
        common_pb2.BROKER_NOT_AVAILABLE,
        common_pb2.REPLICA_NOT_AVAILABLE,
        common_pb2.NETWORK_EXCEPTION,
        common_pb2.COORDINATOR_LOAD_IN_PROGRESS,
        common_pb2.COORDINATOR_NOT_AVAILABLE,
        common_pb2.NOT_COORDINATOR,
        common_pb2.NOT_ENOUGH_REPLICAS,
        common_pb2.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        common_pb2.NOT_CONTROLLER,
        common_pb2.KAFKA_STORAGE_ERROR,
        common_pb2.FENCED_LEADER_EPOCH,
        common_pb2.UNKNOWN_LEADER_EPOCH,
        common_pb2.OFFSET_NOT_AVAILABLE,
        common_pb2.ELIGIBLE_LEADERS_NOT_AVAILABLE,
        common_pb2.REBALANCE_IN_PROGRESS,
        common_pb2.CONCURRENT_TRANSACTIONS,
        common_pb2.UNSTABLE_OFFSET_COMMIT,
    }
)

# Errors that mean "your view of the cluster is stale": refresh metadata before retrying.
METADATA_STALE = frozenset(
    {
        common_pb2.UNKNOWN_TOPIC_OR_PARTITION,
        common_pb2.LEADER_NOT_AVAILABLE,
        common_pb2.NOT_LEADER_OR_FOLLOWER,
        common_pb2.FENCED_LEADER_EPOCH,
        common_pb2.UNKNOWN_LEADER_EPOCH,
        common_pb2.BROKER_NOT_AVAILABLE,
        common_pb2.NETWORK_EXCEPTION,
    }
)


class StromError(Exception):
    """An error from strom; `name` is Kafka's error name, `code` its number."""

    retriable = False

    def __init__(self, code: int, message: str = "") -> None:
        self.code = code
        self.name = error_name(code)
        self.message = message
        super().__init__(f"{self.name}: {message}" if message else self.name)


class RetriableError(StromError):
    retriable = True


class FatalError(StromError):
    retriable = False


class AuthenticationFailedError(FatalError):
    """The cluster did not accept the client's credentials (SASL_AUTHENTICATION_FAILED)."""


class AuthorizationFailedError(FatalError):
    """The principal may not do this (TOPIC_, GROUP_ or CLUSTER_AUTHORIZATION_FAILED); an
    administrator must grant an ACL first. Retrying cannot help."""


class TransactionAbortableError(StromError):
    """The current transaction cannot commit (a record was not delivered, an offset commit was
    refused): call `abort_transaction()`, then the producer may begin a new one
    (confluent-kafka's `txn_requires_abort()`)."""

    retriable = False
    txn_requires_abort = True


class TransactionFatalError(FatalError):
    """The transactional producer can do nothing more (confluent-kafka's `fatal()`): close it
    and make a new one."""

    txn_requires_abort = False


class ProducerFencedError(TransactionFatalError):
    """Another producer with the same transactional id called init_transactions (or the
    coordinator aborted this one's transaction after its timeout, with a new epoch): this
    instance is a zombie and is fenced for good (INVALID_PRODUCER_EPOCH, PRODUCER_FENCED)."""


class TransactionalIdAuthorizationError(AuthorizationFailedError, TransactionFatalError):
    """The principal may not use this transactional id (TRANSACTIONAL_ID_AUTHORIZATION_FAILED:
    it needs WRITE on the TRANSACTIONAL_ID resource); fatal for the producer, as in Kafka."""


class TransactionStateError(FatalError):
    """A transactional call out of order (e.g. send() before begin_transaction(), commit
    without a transaction): the application's mistake, nothing was sent."""


# Answers that mean "a newer instance of this transactional id exists".
FENCED = frozenset(
    {
        common_pb2.INVALID_PRODUCER_EPOCH,
        common_pb2.PRODUCER_FENCED,
        common_pb2.TRANSACTION_COORDINATOR_FENCED,
    }
)


def transaction_error(code: int, message: str = "") -> StromError:
    """The typed error of a transactional request's answer: fenced (fatal), another fatal
    one, or a retriable one as `error_from_code` types it."""
    if code in FENCED:
        return ProducerFencedError(code, message)
    if code in (common_pb2.INVALID_PRODUCER_ID_MAPPING, common_pb2.INVALID_TXN_STATE,
                common_pb2.INVALID_TRANSACTION_TIMEOUT):  # fmt: skip
        return TransactionFatalError(code, message)
    return error_from_code(code, message)


_TYPED: dict[int, type[StromError]] = {
    common_pb2.SASL_AUTHENTICATION_FAILED: AuthenticationFailedError,
    common_pb2.TOPIC_AUTHORIZATION_FAILED: AuthorizationFailedError,
    common_pb2.GROUP_AUTHORIZATION_FAILED: AuthorizationFailedError,
    common_pb2.CLUSTER_AUTHORIZATION_FAILED: AuthorizationFailedError,
    common_pb2.TRANSACTIONAL_ID_AUTHORIZATION_FAILED: TransactionalIdAuthorizationError,
}


class KafkaTimeoutError(RetriableError):
    """A deadline passed before the operation completed (Kafka's TimeoutException)."""

    def __init__(self, message: str) -> None:
        super().__init__(common_pb2.REQUEST_TIMED_OUT, message)


def error_name(code: int) -> str:
    try:
        return common_pb2.ErrorCode.Name(code)  # type: ignore[arg-type]
    except ValueError:
        return f"UNKNOWN_ERROR_{code}"


def error_from_code(code: int, message: str = "") -> StromError:
    cls = _TYPED.get(code) or (RetriableError if code in _RETRIABLE else FatalError)
    return cls(code, message)
