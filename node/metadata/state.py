"""The committed metadata image of a node, and who is told when it changes.

`MetadataState` is the state machine both metadata paths feed: the Raft driver on controllers
(committed entries and snapshots) and the observer on broker-only nodes (the same, fetched from
a controller). Listeners get the new image and the delta after every entry, in log order, on the
event loop; they must not block.

A listener's exception is a bug and surfaces: every listener still sees the change (the image
is already applied), each failure is logged at ERROR, and then `MetadataListenerError` is raised
to whoever applied the entry. The Raft driver and the observer do not catch it, so their task
ends and the node stops (node/server.py), rather than serve from state a listener failed to
update.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from strom.raft.types import Entry, Snapshot

from .image import (
    MetadataDelta,
    MetadataImage,
    apply_batch,
    decode_snapshot,
    encode_snapshot,
)

log = logging.getLogger("strom.metadata")

Listener = Callable[[MetadataImage, MetadataDelta], None]


class MetadataListenerError(RuntimeError):
    """A metadata listener raised; its exception is the cause."""


def full_delta(old: MetadataImage, new: MetadataImage) -> MetadataDelta:
    """Everything that may differ between two unrelated images (after loading a snapshot)."""
    delta = MetadataDelta()
    delta.changed_brokers = set(old.brokers) | set(new.brokers)
    delta.created_topics = set(new.topics) - set(old.topics)
    delta.removed_topics = {tid: t for tid, t in old.topics.items() if tid not in new.topics}
    delta.changed_partitions = {
        (tid, p) for tid, topic in new.topics.items() for p in topic.partitions
    }
    delta.changed_configs = set(old.configs) | set(new.configs)
    delta.changed_users = old.user_names() | new.user_names()
    delta.acls_changed = old.acls != new.acls
    return delta


class MetadataState:
    def __init__(self, cluster_id: str) -> None:
        self.cluster_id = cluster_id
        self.image = MetadataImage()
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _publish(self, delta: MetadataDelta) -> None:
        failed: list[tuple[Listener, Exception]] = []
        for listener in self._listeners:
            try:
                listener(self.image, delta)
            except Exception as exc:  # the others must still see the change: raised below
                log.exception("metadata listener %r failed", listener)
                failed.append((listener, exc))
        if failed:
            listener, first = failed[0]
            raise MetadataListenerError(
                f"{len(failed)} metadata listener(s) failed, first {listener!r}: {first!r}"
            ) from first

    def apply(self, entry: Entry) -> None:
        self.image, delta = apply_batch(self.image, entry.data, entry.index, entry.term)
        if not delta.is_empty():
            self._publish(delta)

    def restore(self, snapshot: Snapshot) -> None:
        if not snapshot.data:
            return
        image, cluster_id = decode_snapshot(snapshot.data)
        if cluster_id and cluster_id != self.cluster_id:
            raise ValueError(
                f"metadata snapshot belongs to cluster {cluster_id}, not {self.cluster_id}"
            )
        old, self.image = self.image, image
        log.info("loaded metadata snapshot at index %d", snapshot.index)
        self._publish(full_delta(old, image))

    def snapshot(self) -> bytes:
        return encode_snapshot(self.image, self.cluster_id)
