"""Topics the cluster owns (Kafka's `Topic.isInternal`): `__consumer_offsets`.

Only the cluster writes, creates or removes them (issue #15, defects 2 and 3): a client's
produce to one is refused with INVALID_TOPIC_EXCEPTION, and a client's CreateTopics,
DeleteTopics or CreatePartitions naming one with INVALID_REQUEST. The group coordinator creates
`__consumer_offsets` on first use (node/group/service.py) and appends to it itself.
"""

from __future__ import annotations

OFFSETS_TOPIC = "__consumer_offsets"
INTERNAL_TOPICS = frozenset({OFFSETS_TOPIC})


def is_internal(name: str) -> bool:
    return name in INTERNAL_TOPICS


def internal_topic_refusal(name: str, action: str) -> str:
    return f"{name!r} is an internal topic: only the cluster manages it, so it cannot be {action}"
