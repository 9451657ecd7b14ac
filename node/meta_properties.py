"""Storage formatting: `meta.properties` in every data directory, as Kafka's `kafka-storage format`.

A node refuses to start on a directory that was never formatted, or that belongs to another
cluster or another node id, so it can never silently join with an empty or foreign log. The file
is Kafka's format (Java properties):

    version=1
    cluster.id=<22-character base64url UUID>
    node.id=<int>
    directory.id=<22-character base64url UUID>
"""

from __future__ import annotations

import base64
import os
import re
import uuid
from pathlib import Path

FILE_NAME = "meta.properties"
_CLUSTER_ID = re.compile(r"^[A-Za-z0-9_-]{22}$")


class StorageFormatError(Exception):
    """A data directory is unformatted, foreign, or cannot be formatted; says what to do."""


def random_uuid() -> str:
    """Kafka's `Uuid.randomUuid().toString()`: 16 random bytes, base64url without padding."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def validate_cluster_id(cluster_id: str) -> None:
    if not _CLUSTER_ID.match(cluster_id):
        raise StorageFormatError(
            f"cluster id {cluster_id!r} is not a 22-character base64url UUID; "
            "make one with `strom storage random-uuid`"
        )


def _read(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    return values


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def format_directories(
    directories: list[Path], cluster_id: str, node_id: int, ignore_formatted: bool = False
) -> list[Path]:
    """Write meta.properties into each directory; returns the directories formatted now."""
    validate_cluster_id(cluster_id)
    formatted = []
    for directory in dict.fromkeys(directories):  # unique, in order
        path = directory / FILE_NAME
        if path.exists():
            existing = _read(path)
            if ignore_formatted and existing.get("cluster.id") == cluster_id:
                continue
            raise StorageFormatError(
                f"{directory} is already formatted (cluster.id={existing.get('cluster.id')}); "
                "pass --ignore-formatted to skip it, or remove it to start over"
            )
        directory.mkdir(parents=True, exist_ok=True)
        _write_atomically(
            path,
            f"version=1\ncluster.id={cluster_id}\nnode.id={node_id}\n"
            f"directory.id={random_uuid()}\n",
        )
        formatted.append(directory)
    return formatted


def check_directories(directories: list[Path], node_id: int) -> str:
    """Return the cluster id every directory agrees on, or raise StorageFormatError."""
    cluster_ids = set()
    for directory in dict.fromkeys(directories):
        path = directory / FILE_NAME
        if not path.exists():
            raise StorageFormatError(
                f"{directory} is not formatted: run `strom storage format --cluster-id ID "
                "--config FILE` first (`strom storage random-uuid` makes an id)"
            )
        values = _read(path)
        if values.get("node.id") != str(node_id):
            raise StorageFormatError(
                f"{directory} belongs to node {values.get('node.id')}, not node.id {node_id}"
            )
        cluster_ids.add(values.get("cluster.id", ""))
    if len(cluster_ids) != 1:
        raise StorageFormatError(
            f"data directories belong to different clusters: {sorted(cluster_ids)}"
        )
    return cluster_ids.pop()
