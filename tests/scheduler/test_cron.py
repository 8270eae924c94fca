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


class TestTimeZones:
    """`timezone`: the expression is read on that zone's wall clock; answers stay UTC."""

    paris = cron.zone("Europe/Paris")

    def test_a_daily_time_follows_the_zone_across_daylight_saving(self) -> None:
        # 09:00 in Paris is 08:00 UTC in winter (CET) and 07:00 UTC in summer (CEST).
        assert cron.next_after("0 9 * * *", at("2026-01-10T00:00:00"), self.paris) == at(
            "2026-01-10T08:00:00"
        )
        assert cron.next_after("0 9 * * *", at("2026-07-10T00:00:00"), self.paris) == at(
            "2026-07-10T07:00:00"
        )
        # Across the spring change (29 March 2026, 02:00 → 03:00 local).
        assert cron.next_after("0 9 * * *", at("2026-03-28T08:00:00"), self.paris) == at(
            "2026-03-29T07:00:00"
        )

    def test_a_skipped_local_time_fires_once_after_the_jump(self) -> None:
        # 02:30 does not exist on 29 March 2026 in Paris: it fires at 03:30 CEST (01:30 UTC).
        fires = [at("2026-03-28T00:00:00")]
        for _ in range(3):
            fires.append(cron.next_after("30 2 * * *", fires[-1], self.paris))
        assert fires[1:] == [
            at("2026-03-28T01:30:00"),  # 02:30 CET
            at("2026-03-29T01:30:00"),  # the skipped 02:30, at 03:30 CEST
            at("2026-03-30T00:30:00"),  # 02:30 CEST
        ]

    def test_a_repeated_local_time_fires_once(self) -> None:
        # 02:30 happens twice on 25 October 2026 in Paris (00:30 and 01:30 UTC): one fire.
        fires = [at("2026-10-24T12:00:00")]
        for _ in range(3):
            fires.append(cron.next_after("30 2 * * *", fires[-1], self.paris))
        assert fires[1:] == [
            at("2026-10-25T00:30:00"),  # the first 02:30 (CEST)
            at("2026-10-26T01:30:00"),  # the next day's 02:30 (CET)
            at("2026-10-27T01:30:00"),
        ]
        # From inside the repeated hour's second pass, the next is the next day's.
        assert cron.next_after("30 2 * * *", at("2026-10-25T01:10:00"), self.paris) == at(
            "2026-10-26T01:30:00"
        )

    def test_latest_due_agrees_with_next_after(self) -> None:
        for expression in ("30 2 * * *", "0 9 * * *", "*/20 * * * *"):
            moment = at("2026-03-28T20:00:00")
            for _ in range(80):
                following = cron.next_after(expression, moment, self.paris)
                # Just before an occurrence, the latest due one is the previous occurrence.
                assert cron.latest_due(expression, following, self.paris) == following
                before = following - timedelta(minutes=1)
                assert cron.latest_due(expression, before, self.paris) <= moment
                moment = following

    @pytest.mark.parametrize("name", ["Mars/Olympus", "../../etc/passwd", "", "utc+2", "x" * 80])
    def test_unknown_zones_are_refused(self, name: str) -> None:
        with pytest.raises(cron.InvalidTimezone):
            cron.zone(name)

    def test_utc_is_the_default(self) -> None:
        assert cron.zone("UTC") is UTC
        assert cron.next_after("0 9 * * *", at("2026-06-01T08:00:00")) == at("2026-06-01T09:00:00")
