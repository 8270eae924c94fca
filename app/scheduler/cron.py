"""Cron expressions: five fields (minute hour day-of-month month day-of-week), always UTC.

Parsing and iteration are croniter's; this module pins the dialect we accept (exactly five
fields, no seconds, no `@hourly` shortcuts or Jenkins `H`) and answers the two questions
the scheduler asks: when is the next occurrence, and which is the latest one that is due.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from croniter import CroniterBadDateError, CroniterError, croniter

MAX_CRON_LENGTH = 100
# Search at most this far for the next occurrence; `0 0 30 2 *` never comes.
_HORIZON = timedelta(days=366 * 5)
# croniter's Jenkins-style `H` and random `R` tokens (not inside names such as THU).
_HASHED = re.compile(r"(?<![A-Za-z])[HhRr](?![A-Za-z])")


class InvalidCron(ValueError):
    """The expression is not a five-field cron expression that ever fires."""


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


def next_after(expression: str, moment: datetime) -> datetime:
    """The first occurrence strictly after `moment` (UTC, whole minutes)."""
    try:
        found: datetime = croniter(expression, moment.astimezone(UTC)).get_next(datetime)
    except CroniterBadDateError:
        raise InvalidCron("this cron expression never fires") from None
    if found - moment > _HORIZON:
        raise InvalidCron("this cron expression never fires")
    return found.astimezone(UTC)


def latest_due(expression: str, now: datetime) -> datetime:
    """The latest occurrence at or before `now`.

    Occurrences fall on whole minutes, so it is the latest one strictly before the start of
    the next minute.
    """
    minute = now.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    try:
        found: datetime = croniter(expression, minute).get_prev(datetime)
    except CroniterBadDateError:
        raise InvalidCron("this cron expression never fires") from None
    return found.astimezone(UTC)
