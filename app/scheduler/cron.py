"""Cron expressions: five fields (minute hour day-of-month month day-of-week) in a time zone.

Parsing and iteration are croniter's; this module pins the dialect we accept (exactly five
fields, no seconds, no `@hourly` shortcuts or Jenkins `H`) and answers the two questions
the scheduler asks: when is the next occurrence, and which is the latest one that is due.

An expression is read in the schedule's IANA time zone, on its wall clock: croniter walks
naive local times and each is then placed in the zone. Daylight saving time: a local time
that happens twice (autumn) fires once, at its first occurrence; a local time that does not
exist (spring) fires as late as the clock jumped (02:30 in a one-hour gap fires at 03:30).
Results are always UTC.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter

MAX_CRON_LENGTH = 100
# Search at most this far for the next occurrence; `0 0 30 2 *` never comes.
_HORIZON = timedelta(days=366 * 5)
# croniter's Jenkins-style `H` and random `R` tokens (not inside names such as THU).
_HASHED = re.compile(r"(?<![A-Za-z])[HhRr](?![A-Za-z])")


class InvalidCron(ValueError):
    """The expression is not a five-field cron expression that ever fires."""


class InvalidTimezone(ValueError):
    """Not an IANA time zone name this system knows."""


def zone(name: str) -> tzinfo:
    """The IANA zone `name` (e.g. Europe/Paris); raises InvalidTimezone."""
    if name == "UTC":
        return UTC
    # ZoneInfo also reads paths: refuse anything that is not a plain zone name first.
    if not re.fullmatch(r"[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*", name) or len(name) > 64:
        raise InvalidTimezone(f"{name!r} is not an IANA time zone name such as Europe/Paris")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidTimezone(f"unknown time zone {name!r}") from None


def _slack(tz: tzinfo) -> timedelta:
    """How far the wall clock may jump in `tz` (none in UTC, where it never does)."""
    return timedelta(0) if tz is UTC else timedelta(hours=3)


def _placed(local: datetime, tz: tzinfo) -> datetime:
    """A naive wall-clock time in `tz` (first occurrence if repeated, shifted if skipped)."""
    return local.replace(tzinfo=tz, fold=0)


def parse(expression: str) -> str:
    """The expression normalised (single spaces); raises InvalidCron with the reason."""
    fields = expression.split()
    if len(fields) != 5:
        raise InvalidCron(
            "a cron expression has 5 fields (minute hour day-of-month month day-of-week), "
            f"not {len(fields)}"
        )
    normalised = " ".join(fields)
    if len(normalised) > MAX_CRON_LENGTH:
        raise InvalidCron(f"a cron expression has at most {MAX_CRON_LENGTH} characters")
    if _HASHED.search(normalised):
        raise InvalidCron("hashed (H) and random (R) cron fields are not supported")
    try:
        croniter(normalised, datetime(2000, 1, 1, tzinfo=UTC))
    except (CroniterError, ValueError, KeyError) as exc:
        raise InvalidCron(f"not a valid cron expression: {exc}") from None
    # A valid-looking expression may still never fire (February 30th).
    try:
        next_after(normalised, datetime(2000, 1, 1, tzinfo=UTC))
    except InvalidCron:
        raise InvalidCron("this cron expression has no occurrence within 5 years") from None
    return normalised


def next_after(expression: str, moment: datetime, tz: tzinfo = UTC) -> datetime:
    """The first occurrence strictly after `moment` (UTC, whole minutes), read in `tz`."""
    # From a few hours earlier on the wall clock: a skipped local time before `moment`'s
    # may be placed after it; occurrences placed at or before `moment` are passed over.
    local = moment.astimezone(tz).replace(tzinfo=None) - _slack(tz)
    try:
        walk = croniter(expression, local)
        while True:
            found = _placed(walk.get_next(datetime), tz)
            if found > moment:
                break
    except CroniterBadDateError:
        raise InvalidCron("this cron expression never fires") from None
    if found - moment > _HORIZON:
        raise InvalidCron("this cron expression never fires")
    return found.astimezone(UTC)


def latest_due(expression: str, now: datetime, tz: tzinfo = UTC) -> datetime:
    """The latest occurrence at or before `now`, read in `tz`.

    Occurrences fall on whole minutes, so it is the latest one strictly before the start of
    the next minute.
    """
    minute = now.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    # A few hours later on the wall clock, then back: a skipped time placed after the gap
    # may still be due, and a repeated hour's times are placed at their first pass.
    local = minute.astimezone(tz).replace(tzinfo=None) + _slack(tz)
    try:
        walk = croniter(expression, local)
        while True:
            found = _placed(walk.get_prev(datetime), tz)
            if found < minute:
                break
    except CroniterBadDateError:
        raise InvalidCron("this cron expression never fires") from None
    return found.astimezone(UTC)
