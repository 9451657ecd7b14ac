"""Transcript tests of classic Raft scenarios (etcd-io/raft's datadriven `testdata/*.txt`).

Each file in tests/sim/testdata/ is a story: blocks of `command args`, a `----` line, and the
expected output, separated by blank lines; lines starting with `#` before a command are comments
(they cite the paper). Commands are documented in raft_net.py. To regenerate the expected
output after an intended behaviour change, run with STROM_REWRITE_TRANSCRIPTS=1 and review
the diff.

Scenarios (paper sections in each file's header): basic election (Raft §5.2), Figure 8
(§5.4.2), pre-vote stopping a rejoining partitioned node from disrupting the leader (thesis
§9.6), check-quorum step-down (thesis §6.2), a lagging follower caught up by snapshot (§7),
leadership transfer and its abandonment after an election timeout (thesis §3.10).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from raft_net import Net, run_command

TESTDATA = Path(__file__).parent / "testdata"
REWRITE = os.environ.get("STROM_REWRITE_TRANSCRIPTS") == "1"


def _parse(text: str) -> list[tuple[list[str], str, list[str]]]:
    """Blocks of (comment lines, command line, expected output lines)."""
    blocks = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        comments: list[str] = []
        while i < len(lines) and (not lines[i].strip() or lines[i].startswith("#")):
            if lines[i].startswith("#"):
                comments.append(lines[i])
            i += 1
        if i >= len(lines):
            break
        command = lines[i]
        assert lines[i + 1] == "----", f"line {i + 2}: expected ----"
        i += 2
        expected = []
        while i < len(lines) and lines[i].strip():
            expected.append(lines[i])
            i += 1
        blocks.append((comments, command, expected))
    return blocks


def _render(blocks: list[tuple[list[str], str, list[str]]]) -> str:
    parts = []
    for comments, command, output in blocks:
        parts.append("\n".join([*comments, command, "----", *output]))
    return "\n\n".join(parts) + "\n"


@pytest.mark.parametrize("path", sorted(TESTDATA.glob("*.txt")), ids=lambda p: p.stem)
def test_transcript(path: Path) -> None:
    blocks = _parse(path.read_text())
    net: Net | None = None
    actual = []
    mismatches = []
    for comments, command, expected in blocks:
        cmd, *args = command.split()
        net, output = run_command(net, cmd, args)
        actual.append((comments, command, output))
        if output != expected:
            mismatches.append(
                f"{command}\n--- expected\n"
                + "\n".join(expected)
                + "\n--- got\n"
                + "\n".join(output)
            )
    if REWRITE:
        path.write_text(_render(actual))
        return
    assert not mismatches, f"{path.name}:\n" + "\n\n".join(mismatches)


def test_figure8_transcript_catches_commit_by_counting_old_term_replicas() -> None:
    """Raft §5.4.2: replaying figure8.txt with a core that commits an earlier term's entry by
    counting replicas shows the entry committed at step (c) and then overwritten at (d)."""
    from test_raft_swarm import Figure8Raft

    net: Net | None = None
    outputs = {}
    for _, command, _ in _parse((TESTDATA / "figure8.txt").read_text()):
        cmd, *args = command.split()
        net, outputs[command] = run_command(net, cmd, args, raft_factory=Figure8Raft)
    assert outputs["status 1"] == ["1: leader term=3 vote=1 leader=1 commit=2 applied=1 log=1..3"]
    assert outputs["log"][0] == "1: [1@1:noop 2@1:x 3@3:noop]"
    assert outputs["log"][1] == "2: [1@1:noop 2@2:noop 3@4:noop]"  # x, committed, is gone


def test_abandoned_transfer_transcript_catches_a_transfer_kept_forever() -> None:
    """Thesis §3.10: replaying leadership_transfer_abandoned.txt with a core that never aborts a
    transfer shows the leader still refusing proposals after the election timeout."""
    from test_raft_swarm import KeepTransferRaft

    net: Net | None = None
    outputs = {}
    for _, command, _ in _parse((TESTDATA / "leadership_transfer_abandoned.txt").read_text()):
        cmd, *args = command.split()
        net, outputs[command] = run_command(net, cmd, args, raft_factory=KeepTransferRaft)
    assert outputs["propose 1 x"] == ["ProposalDropped: leadership is moving to node 2"]
