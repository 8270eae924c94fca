"""Cron parsing (five fields, UTC) and the two questions the runner asks of an expression."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.scheduler import cron


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


class TestParse:
    @pytest.mark.parametrize(
        ("expression", "normalised"),
        [
            ("0 */3 * * *", "0 */3 * * *"),
            ("  0   */3 * *  * ", "0 */3 * * *"),
            ("*/5 9-17 * * 1-5", "*/5 9-17 * * 1-5"),
            ("0 6 1,15 * *", "0 6 1,15 * *"),
            ("30 2 * JAN-MAR thu", "30 2 * JAN-MAR thu"),
            ("0 0 L * *", "0 0 L * *"),
        ],
    )
    def test_accepts_five_field_expressions(self, expression: str, normalised: str) -> None:
        assert cron.parse(expression) == normalised

    @pytest.mark.parametrize(
        ("expression", "reason"),
        [
            ("", "5 fields"),
            ("0 */3 * *", "not 4"),
            ("0 0 */3 * * *", "not 6"),
            ("@hourly", "not 1"),
            ("61 * * * *", "not a valid cron expression"),
            ("0 24 * * *", "not a valid cron expression"),
            ("0 0 0 * *", "not a valid cron expression"),
            ("0 0 * 13 *", "not a valid cron expression"),
            ("a b c d e", "not a valid cron expression"),
            ("H * * * *", "hashed (H) and random (R)"),
            ("0 R * * *", "hashed (H) and random (R)"),
            ("0 0 30 2 *", "no occurrence"),
            ("0 0 " + ",".join(["1"] * 60) + " * *", "at most 100 characters"),
        ],
    )
    def test_rejects_with_the_reason(self, expression: str, reason: str) -> None:
        with pytest.raises(cron.InvalidCron, match=reason.replace("(", r"\(").replace(")", r"\)")):
            cron.parse(expression)


class TestOccurrences:
    def test_next_after_is_strictly_after(self) -> None:
        assert cron.next_after("0 */3 * * *", at("2026-01-01T01:30:00")) == at(
            "2026-01-01T03:00:00"
        )
        assert cron.next_after("0 */3 * * *", at("2026-01-01T03:00:00")) == at(
            "2026-01-01T06:00:00"
        )
        assert cron.next_after("0 */3 * * *", at("2026-01-01T21:00:00.5")) == at(
            "2026-01-02T00:00:00"
        )

    def test_latest_due_includes_now(self) -> None:
        assert cron.latest_due("0 */3 * * *", at("2026-01-01T03:00:00")) == at(
            "2026-01-01T03:00:00"
        )
        assert cron.latest_due("0 */3 * * *", at("2026-01-01T05:59:59.999")) == at(
            "2026-01-01T03:00:00"
        )
        assert cron.latest_due("0 */3 * * *", at("2026-01-01T02:59:59.999")) == at(
            "2026-01-01T00:00:00"
        )

    def test_always_utc(self) -> None:
        found = cron.next_after("0 9 * * *", at("2026-06-01T08:00:00"))
        assert found == at("2026-06-01T09:00:00")
        assert found.tzinfo is not None
        assert found.utcoffset() == timedelta(0)

    def test_day_of_month_or_day_of_week(self) -> None:
        # Vixie cron: when both are restricted, either one matching is enough.
        found = cron.next_after("0 0 13 * 5", at("2026-02-01T00:00:00"))
        assert found == at("2026-02-06T00:00:00")  # a Friday, before the 13th
