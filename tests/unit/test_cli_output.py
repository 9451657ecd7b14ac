"""CLI tables size their columns from their data (issue #19: long names misaligned)."""

from __future__ import annotations

from strom.node.cli.output import format_table


def test_columns_fit_their_widest_cell() -> None:
    long_group = "a-consumer-group-with-a-name-much-longer-than-twenty-eight-characters"
    text = format_table(
        ["GROUP", "TOPIC", "PARTITION", "LAG"],
        [[long_group, "orders", 0, 5], ["g", "a-very-long-topic-name-indeed", 12, "-"]],
    )
    lines = text.splitlines()
    header = lines[0]
    starts = [header.index(name) for name in ("GROUP", "TOPIC", "PARTITION", "LAG")]
    assert starts[1] == len(long_group) + 2
    for line in lines[1:]:
        for start in starts[1:]:  # every cell begins where its header does, after a gap
            assert line[start - 2 : start] == "  " and line[start] != " ", text
    assert all(line == line.rstrip() for line in lines)


def test_a_table_without_rows_is_its_header() -> None:
    assert format_table(["A", "B"], []) == "A  B"
