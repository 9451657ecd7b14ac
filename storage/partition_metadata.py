"""The `partition.metadata` file: which topic incarnation a partition folder belongs to.

Format (Kafka's PartitionMetadataFile, text)::

    version: 0
    topic_id: <topic id>

A topic deleted and re-created under the same name gets a new topic id, so a folder left
behind by the old incarnation is detected instead of being served as the new topic's data.
"""

from __future__ import annotations

import os

from .durability import write_atomically
from .errors import InconsistentTopicIdError, LogCorruptionError

FILE_NAME = "partition.metadata"


def read_topic_id(directory: str) -> str | None:
    path = os.path.join(directory, FILE_NAME)
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return None
    if len(lines) != 2 or lines[0] != "version: 0" or not lines[1].startswith("topic_id: "):
        raise LogCorruptionError(path, 0, "malformed partition.metadata")
    return lines[1][len("topic_id: ") :]


def write_topic_id(directory: str, topic_id: str) -> None:
    if not topic_id or "\n" in topic_id:
        raise ValueError(f"bad topic id {topic_id!r}")
    data = f"version: 0\ntopic_id: {topic_id}\n".encode()
    write_atomically(os.path.join(directory, FILE_NAME), data)


def check_topic_id(directory: str, topic_id: str | None) -> str | None:
    """Compare the folder's topic id with the expected one; record it if the folder has none.
    Returns the folder's topic id. Raises `InconsistentTopicIdError` on a mismatch."""
    stored = read_topic_id(directory)
    if topic_id is None:
        return stored
    if stored is None:
        write_topic_id(directory, topic_id)
        return topic_id
    if stored != topic_id:
        raise InconsistentTopicIdError(
            f"{directory} holds topic id {stored}, not {topic_id}: it belongs to a deleted "
            "incarnation of the topic; delete the folder or restore the old topic"
        )
    return stored
