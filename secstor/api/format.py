"""Value formats of CloudStack responses."""

from __future__ import annotations

from datetime import datetime, timezone


def cs_date(moment: datetime | None) -> str | None:
    """CloudStack's ``yyyy-MM-dd'T'HH:mm:ssZ`` (e.g. ``2025-06-01T10:00:00+0000``)."""
    if moment is None:
        return None
    if moment.tzinfo is None or moment.tzinfo is timezone.utc:
        # The database's timestamps (UTC): 4 times faster than strftime, which was a tenth of
        # listTemplates' time for 500 templates.
        return "%d-%02d-%02dT%02d:%02d:%02d+0000" % (moment.year, moment.month, moment.day, moment.hour,
                                                      moment.minute, moment.second)
    return moment.strftime("%Y-%m-%dT%H:%M:%S%z")


def drop_none(obj: dict) -> dict:
    """CloudStack omits null fields from responses."""
    return {k: v for k, v in obj.items() if v is not None}
