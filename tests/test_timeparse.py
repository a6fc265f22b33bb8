"""`streamskew.timeparse`: the times people type (`--since`) and how times are shown."""

from __future__ import annotations

import time

import pytest

from streamskew.timeparse import ACCEPTED_FORMS, format_time, parse_time

T = 1_764_324_000_000  # 2025-11-28T10:00:00Z


@pytest.mark.parametrize(("text", "expected"), [
    ("2025-11-28T10:00:00Z", T),
    ("2025-11-28T10:00:00z", T),
    ("2025-11-28 10:00:00Z", T),
    ("2025-11-28T10:00Z", T),
    ("2025-11-28T10:00:00.250Z", T + 250),
    ("2025-11-28T10:00:00.250+01:00", T + 250 - 3_600_000),
    ("2025-11-28T10:00:00-05:30", T + 5 * 3_600_000 + 30 * 60_000),
    ("2025-11-28T10:00:00+00:00", T),
    ("2025-11-28T10:00:00.123456Z", T + 123),  # microseconds: truncated to the millisecond
    ("  2025-11-28T10:00:00Z  ", T),
    ("2025-11-28", T - 10 * 3_600_000),
    ("1970-01-01", 0),
    ("1764324000000", T),
    ("1764324000250", T + 250),
])
def test_absolute_forms(text, expected):
    assert parse_time(text) == expected
    assert parse_time(text, now_ms=12345) == expected  # now does not matter


@pytest.mark.parametrize(("text", "delta"), [
    ("now", 0), ("NOW", 0),
    ("-2h", -2 * 3_600_000), ("-15m", -15 * 60_000), ("-90s", -90_000),
    ("-1d", -86_400_000), ("-500ms", -500), ("+10m", 10 * 60_000), ("+1d", 86_400_000),
    ("-1.5h", -5_400_000), ("-2H", -2 * 3_600_000), ("- 15m", -15 * 60_000),
])
def test_relative_forms_with_fixed_now(text, delta):
    assert parse_time(text, now_ms=T) == T + delta


def test_relative_forms_use_the_clock_without_now_ms():
    before = time.time_ns() // 1_000_000
    got = parse_time("-1h")
    after = time.time_ns() // 1_000_000
    assert before - 3_600_000 <= got <= after - 3_600_000
    got = parse_time("now")
    assert before <= got <= time.time_ns() // 1_000_000


def test_time_without_zone_is_ambiguous():
    with pytest.raises(ValueError) as info:
        parse_time("2025-11-28T10:00:00")
    message = str(info.value)
    assert "'2025-11-28T10:00:00'" in message
    assert "add Z" in message and "offset" in message
    assert "2025-11-28T10:00:00Z" in message


@pytest.mark.parametrize("text", [
    "", "   ", "yesterday", "10:00", "2025-13-01", "2025-11-31", "2025-11-28T25:00:00Z",
    "2025-11-28Tfoo", "-2", "-2x", "2h", "--2h", "1764324000", "12", "1.5e12", "2025/11/28",
    "-h",
])
def test_errors_show_the_input_and_the_accepted_forms(text):
    with pytest.raises(ValueError) as info:
        parse_time(text)
    message = str(info.value)
    assert repr(text) in message
    assert ACCEPTED_FORMS in message
    for form in ("Z", "2025-11-28", "1764324000000", "now", "-2h", "-500ms", "+10m"):
        assert form in message


def test_epoch_seconds_are_refused_with_a_hint():
    with pytest.raises(ValueError, match="epoch seconds need 000 appended"):
        parse_time("1764324000")


def test_non_string_is_an_error():
    with pytest.raises(ValueError, match="expected a string"):
        parse_time(1764324000000)  # type: ignore[arg-type]


@pytest.mark.parametrize(("ms", "text"), [
    (T, "2025-11-28T10:00:00Z"),
    (T + 250, "2025-11-28T10:00:00.250Z"),
    (T + 5, "2025-11-28T10:00:00.005Z"),
    (0, "1970-01-01T00:00:00Z"),
    (None, "-"),
])
def test_format_time(ms, text):
    assert format_time(ms) == text


@pytest.mark.parametrize("ms", [0, T, T + 1, T + 999, 253402300799999])
def test_format_then_parse_round_trips(ms):
    assert parse_time(format_time(ms)) == ms
