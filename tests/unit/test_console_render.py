"""The console's pure parts: how bytes are shown, how typed input is read, the reset planner,
rates from admin-listener samples and the lag chart."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from strom.client.offset_reset import ResetRequest, plan_offsets_reset
from strom.node.console.cluster import ResetPlan, decode_plan, lag_chart_points
from strom.node.console.messages import decode_positions, encode_positions
from strom.node.console.rates import BYTES_OUT, MESSAGES_IN, Sample, parse_sample, rates_between
from strom.node.console.render import (
    InputError,
    parse_headers,
    parse_int,
    parse_timestamp_ms,
    render_bytes,
)


def test_json_objects_are_pretty_printed() -> None:
    r = render_bytes(b'{"id":7,"items":["a","b"],"name":"caf\xc3\xa9"}')
    assert r.kind == "json" and not r.truncated and r.size_bytes == 41
    assert r.text == json.dumps({"id": 7, "items": ["a", "b"], "name": "café"}, indent=2,
                                ensure_ascii=False)  # fmt: skip


def test_text_that_is_not_json_stays_text_and_json_mode_says_why() -> None:
    assert render_bytes(b"Order1\tpaid\n").kind == "text"
    assert render_bytes(b"42").kind == "text"  # a bare number is shown as it is
    forced = render_bytes(b"{not json", "json")
    assert forced.kind == "text" and forced.note == "not valid JSON: shown as text"


def test_binary_values_become_a_hexdump() -> None:
    data = bytes(range(20))
    r = render_bytes(data)
    assert r.kind == "hex"
    lines = r.text.splitlines()
    assert lines[0].startswith("00000000  00 01 02 03") and lines[0].endswith("................")
    assert lines[1].startswith("00000010  10 11 12 13")
    assert render_bytes(b"ab\x00cd").kind == "hex"  # a control byte is binary
    assert render_bytes(b"hi", "hex").text == "00000000  68 69" + " " * 42 + "  hi"


def test_text_mode_replaces_bad_bytes_and_says_so() -> None:
    r = render_bytes(b"ok \xff\xfe", "text")
    assert r.text == "ok \ufffd\ufffd" and "not valid UTF-8" in r.note


def test_every_rendering_is_capped_and_says_how_large_the_value_was() -> None:
    big = b"x" * 100_000
    text = render_bytes(big, "auto", cap_bytes=1000)
    assert text.kind == "text" and len(text.text) == 1000 and text.truncated
    assert text.size_bytes == 100_000
    hexed = render_bytes(big, "hex", cap_bytes=1024)
    assert hexed.truncated and len(hexed.text) < 1500
    doc = json.dumps({"k": ["v" * 50] * 100}).encode()
    pretty = render_bytes(doc, "auto", cap_bytes=200)
    assert pretty.kind == "json" and pretty.truncated and len(pretty.text) == 200
    # A cap that splits a multi-byte character does not make the text "binary".
    assert render_bytes("é".encode() * 10, "auto", cap_bytes=5).kind == "text"
    assert render_bytes(None).text == "null"


def test_unknown_render_mode_is_an_input_error() -> None:
    with pytest.raises(InputError, match="render must be one of"):
        render_bytes(b"x", "yaml")


def test_numbers_typed_by_people() -> None:
    assert parse_int(" 12 ", "offset") == 12
    for bad, message in [("abc", "whole number"), ("", "empty"), ("1.5", "whole number"),
                         ("-3", "at least 0"), ("9" * 30, "whole number")]:  # fmt: skip
        with pytest.raises(InputError, match=message):
            parse_int(bad, "offset")
    with pytest.raises(InputError, match="at most 500"):
        parse_int("501", "limit", maximum=500)


def test_timestamps_as_milliseconds_or_iso() -> None:
    assert parse_timestamp_ms("1700000000000") == 1_700_000_000_000
    expected = int(datetime(2026, 11, 27, 10, 0, tzinfo=UTC).timestamp() * 1000)
    assert parse_timestamp_ms("2026-11-27T10:00") == expected
    assert parse_timestamp_ms("2026-11-27T11:00:00+01:00") == expected
    with pytest.raises(InputError, match="neither milliseconds"):
        parse_timestamp_ms("yesterday")


def test_headers_from_a_form() -> None:
    assert parse_headers("trace: abc\n\nsource:web ") == [("trace", b"abc"), ("source", b"web")]
    with pytest.raises(InputError, match="line 1"):
        parse_headers("no colon here")


def test_reset_plans_clamp_into_each_partition_range() -> None:
    tps = [("t", 0), ("t", 1)]
    committed = {("t", 0): 5}
    earliest = {("t", 0): 2, ("t", 1): 0}
    latest = {("t", 0): 10, ("t", 1): 4}

    def plan(strategy: str, value: int | None = None, by_time: dict | None = None) -> dict:
        return plan_offsets_reset(ResetRequest(strategy, value), tps, committed, earliest,
                                  latest, by_time)  # fmt: skip

    assert plan("to-earliest") == {("t", 0): 2, ("t", 1): 0}
    assert plan("to-latest") == {("t", 0): 10, ("t", 1): 4}
    assert plan("to-offset", 7) == {("t", 0): 7, ("t", 1): 4}
    assert plan("shift-by", -4) == {("t", 0): 2, ("t", 1): 0}  # committed (or earliest) - 4
    assert plan("to-datetime", 0, {("t", 0): 6, ("t", 1): -1}) == {("t", 0): 6, ("t", 1): 4}
    with pytest.raises(ValueError, match="needs a value"):
        ResetRequest("to-offset")


def test_a_confirmed_plan_is_exactly_the_plan_shown() -> None:
    plan = ResetPlan("g", (("orders.eu", 0, 5, 2), ("a:b", 1, -1, 0)))
    assert decode_plan(plan.encode()) == {("orders.eu", 0): 2, ("a:b", 1): 0}
    with pytest.raises(ValueError):
        decode_plan("t:x:1")


def test_tail_positions_round_trip_and_ignore_garbage() -> None:
    assert decode_positions(encode_positions({2: 40, 0: 7})) == {0: 7, 2: 40}
    assert decode_positions("0:5,junk,1:-3,:4") == {0: 5}
    assert decode_positions(None) == {}


METRICS = """# HELP strom_server_brokertopicmetrics_messagesin Records appended
# TYPE strom_server_brokertopicmetrics_messagesin counter
strom_server_brokertopicmetrics_messagesin_total{{topic="a"}} {a}
strom_server_brokertopicmetrics_messagesin_total{{topic="b"}} {b}
# HELP strom_server_brokertopicmetrics_bytesout Bytes out
# TYPE strom_server_brokertopicmetrics_bytesout counter
strom_server_brokertopicmetrics_bytesout_total{{topic="a"}} {out}
"""


def test_rates_are_counter_deltas_summed_over_nodes() -> None:
    node1 = (parse_sample(METRICS.format(a=100, b=0, out=0), 10.0),
             parse_sample(METRICS.format(a=300, b=50, out=4096), 12.0))  # fmt: skip
    node2 = (Sample(10.0, {MESSAGES_IN: {"a": 10.0}}), Sample(12.0, {MESSAGES_IN: {"a": 30.0}}))
    rates = rates_between([node1, node2])
    assert rates.messages_in_per_s == pytest.approx((200 + 50 + 20) / 2)
    assert rates.messages_in_per_s_by_topic == pytest.approx({"a": 110.0, "b": 25.0})
    assert rates.bytes_out_per_s == pytest.approx(2048.0)
    # A node that restarted (its counters went down) adds nothing for that interval.
    restarted = (Sample(10.0, {BYTES_OUT: {"a": 500.0}}), Sample(12.0, {BYTES_OUT: {"a": 20.0}}))
    assert rates_between([restarted]).bytes_out_per_s == 0.0


def test_lag_chart_points_span_the_box() -> None:
    assert lag_chart_points([], 600, 120) == ""
    assert lag_chart_points([(1000, 5)], 600, 120) == "0.0,0.0"
    points = lag_chart_points([(0, 0), (500, 10), (1000, 5)], 600, 120)
    assert points == "0.0,120.0 300.0,0.0 600.0,60.0"
