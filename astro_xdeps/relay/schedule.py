"""Deadline schedules: a cron expression in a time zone, turned into deadline instants. Pure.

A deadline such as "06:00 Europe/Berlin on weekdays" is the cron ``0 6 * * 1-5`` read in local
(wall-clock) time. Every instant this module returns is a UTC ``datetime``.

Daylight saving time, decided once here:

- A local time that does not exist (the spring gap, e.g. 02:30 on the last Sunday of March in
  Berlin) is moved forward by the gap: the deadline is 03:30 local that day, once.
- A local time that exists twice (the autumn repeat) is the first of the two: one deadline.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from astro_xdeps.exceptions import ConfigError

# How far around an instant the cron is scanned in local time: more than any UTC offset change.
_SLACK = timedelta(hours=3)
_MAX_STEPS = 1000


@dataclass(frozen=True)
class DeadlineSchedule:
    """When the expected event must have happened by: ``cron`` in ``timezone``.

    ``within_seconds``: the window of a deadline opens this long before it; ``None`` opens it at
    the previous deadline. ``grace_seconds``: the clock decides a deadline this long after it
    (events take a moment to arrive), but an event counts by when it happened, not when it came.
    """

    cron: str
    timezone: str
    within_seconds: float | None = None
    grace_seconds: float = 60.0

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def _local(self, instant: datetime) -> datetime:
        return instant.astimezone(self.zone).replace(tzinfo=None)

    def _utc(self, local: datetime) -> datetime:
        # fold=0: a repeated local time is its first occurrence; a missing one keeps the offset
        # from before the gap, which moves it forward by the gap.
        return local.replace(tzinfo=self.zone, fold=0).astimezone(timezone.utc)

    def _scan(self, instant: datetime, forward: bool) -> list[datetime]:
        """Deadlines around ``instant``, scanned in local time from ``_SLACK`` on the other side.

        Local and UTC order differ only inside a DST change, so the scan runs until it is
        ``_SLACK`` past ``instant`` (or ``_MAX_STEPS`` deadlines, for a cron firing every minute).
        """
        from croniter import croniter

        zone = self.zone
        if (instant - _SLACK).astimezone(zone).utcoffset() == (instant + _SLACK).astimezone(zone).utcoffset():
            # No offset change nearby (the usual case): local order is UTC order, a few steps do.
            it = croniter(self.cron, self._local(instant) + timedelta(seconds=-1 if forward else 1))
            step = it.get_next if forward else it.get_prev
            return [self._utc(step(datetime)) for _ in range(3)]
        start = self._local(instant) + (-_SLACK if forward else _SLACK)
        it = croniter(self.cron, start)
        step = it.get_next if forward else it.get_prev
        found = []
        for _ in range(_MAX_STEPS):
            d = self._utc(step(datetime))
            found.append(d)
            if (d > instant + _SLACK) if forward else (d < instant - _SLACK):
                break
        return found

    def next_deadline(self, instant: datetime) -> datetime:
        """The first deadline at or after ``instant``."""
        return min(d for d in self._scan(instant, forward=True) if d >= instant)

    def previous_deadline(self, instant: datetime) -> datetime:
        """The last deadline at or before ``instant``."""
        return max(d for d in self._scan(instant, forward=False) if d <= instant)

    def window(self, deadline: datetime) -> tuple[datetime, datetime]:
        """``(opens, deadline)``: an event that happened in between is in time for ``deadline``."""
        if self.within_seconds is not None:
            return deadline - timedelta(seconds=self.within_seconds), deadline
        return self.previous_deadline(deadline - timedelta(microseconds=1)), deadline


def check_schedule(cron: str, tz: str, where: str) -> None:
    """Raise ConfigError unless ``cron`` and ``tz`` are a usable schedule."""
    from croniter import croniter

    if not isinstance(cron, str) or not croniter.is_valid(cron) or len(cron.split()) != 5:
        raise ConfigError(
            f"{where}.cron: expected a 5-field cron expression such as '0 6 * * 1-5' "
            f"(minute hour day month weekday), got {cron!r}."
        )
    if not isinstance(tz, str) or not tz:
        raise ConfigError(f"{where}.timezone: required, an IANA time zone such as Europe/Berlin.")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"{where}.timezone: {tz!r} is not a known IANA time zone (e.g. Europe/Berlin, UTC)."
        ) from None
