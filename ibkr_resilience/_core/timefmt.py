"""Times as people and log viewers read them: RFC 3339 UTC stamps and short durations."""

from __future__ import annotations

from datetime import UTC, datetime


def iso_utc(epoch: float) -> str:
    """RFC 3339 UTC with ``Z``, as in the log lines: the state file is read by people too."""
    return (
        datetime.fromtimestamp(epoch, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    )


def format_duration(seconds: float) -> str:
    """``45 s``, ``55 min``, ``2 h 5 min``: what a person reads on a phone."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, rest = divmod(minutes, 60)
    return f"{hours} h {rest} min"
