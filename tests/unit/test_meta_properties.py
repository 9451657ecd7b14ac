"""Storage formatting guards against empty or foreign data directories."""

from __future__ import annotations

from pathlib import Path

import pytest

from strom.node.meta_properties import (
    StorageFormatError,
    check_directories,
    format_directories,
    random_uuid,
)


def test_format_then_check(tmp_path: Path) -> None:
    cluster_id = random_uuid()
    assert len(cluster_id) == 22
    dirs = [tmp_path / "a", tmp_path / "b"]
    assert format_directories(dirs, cluster_id, node_id=1) == dirs
    assert check_directories(dirs, node_id=1) == cluster_id
    assert format_directories(dirs, cluster_id, node_id=1, ignore_formatted=True) == []


def test_unformatted_foreign_and_bad_ids_are_refused(tmp_path: Path) -> None:
    with pytest.raises(StorageFormatError, match="not formatted: run `strom storage format"):
        check_directories([tmp_path / "x"], node_id=1)
    format_directories([tmp_path / "a"], random_uuid(), node_id=1)
    format_directories([tmp_path / "b"], random_uuid(), node_id=1)
    with pytest.raises(StorageFormatError, match="different clusters"):
        check_directories([tmp_path / "a", tmp_path / "b"], node_id=1)
    with pytest.raises(StorageFormatError, match="belongs to node 1, not node.id 2"):
        check_directories([tmp_path / "a"], node_id=2)
    with pytest.raises(StorageFormatError, match="already formatted"):
        format_directories([tmp_path / "a"], random_uuid(), node_id=1)
    with pytest.raises(StorageFormatError, match="not a 22-character"):
        format_directories([tmp_path / "c"], "my-cluster", node_id=1)
