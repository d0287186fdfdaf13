"""``grctl.duration``: the durations ``--retention`` and ``prune --older-than`` take."""

from __future__ import annotations

from datetime import timedelta

import pytest

from grctl.duration import duration_ms, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", timedelta(0)),
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("30d", timedelta(days=30)),
        ("2w", timedelta(weeks=2)),
        ("250ms", timedelta(milliseconds=250)),
        (" 1.5h ", timedelta(minutes=90)),
    ],
)
def test_durations_parse(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "30", "d", "1x", "-1d", "1d 2h", "1h30"])
def test_a_bad_duration_says_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match="such as 90s, 15m, 1h30m or 30d"):
        parse_duration(text)


def test_duration_ms() -> None:
    assert duration_ms("30d") == 30 * 86_400_000
