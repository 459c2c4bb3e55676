"""Every alert's wording, in one place: plain text built from event records.

Texts stay raw (unescaped): each transport escapes what it needs (Telegram HTML). Every
text is a title line, ``key: value`` facts, the machine and script, then notes.
"""

from __future__ import annotations

from .._connect.hints import alert_hint
from .._core.identity import machine_name, script_name
from .._core.timefmt import format_duration, iso_utc
from .dedup import Occurrence, Recovery
from .events import BlockFailed, ConnectGaveUp, ConnectionLost, LiveAccountFound

MAX_SUMMARY_LINES = 12
"""A run alert quotes at most this many lines of the summary (the healthcheck ping has it all)."""


def alert_text(title: str, facts: list[tuple[str, object]], notes: list[str] | None = None) -> str:
    """A plain-text alert: ``title``, ``key: value`` facts, machine and script, notes."""
    lines = [title]
    lines.extend(f"{key}: {value}" for key, value in facts)
    lines.append(f"Machine: {machine_name()}")
    lines.append(f"Script: {script_name()}")
    lines.extend(notes or [])
    return "\n".join(lines)


def _connected_for(connected_s: float | None) -> str:
    return "never connected" if connected_s is None else f"{connected_s:.1f} s"


def _utc_hm(epoch: float) -> str:
    return iso_utc(epoch)[:16].replace("T", " ") + " UTC"


def gave_up_text(
    event: ConnectGaveUp,
    *,
    title: str = "IBKR CONNECTION FAILED",
    extra_facts: list[tuple[str, object]] | None = None,
    extra_notes: list[str] | None = None,
) -> str:
    """The give-up alert (also the legacy ``connect``'s); de-dup adds facts and notes."""
    exc, gw = event.error, event.gateway
    last = exc.last_error
    hint = alert_hint(str(exc.failure_class), gw.client_id)
    return alert_text(
        title,
        [
            ("Gateway", gw.address),
            ("clientId", gw.client_id),
            *(extra_facts or []),
            ("Attempts", f"{exc.attempts}/{event.max_attempts}"),
            ("Elapsed", f"{exc.elapsed:.1f} s"),
            ("Failure", exc.failure_class),
            ("Last error", f"{type(last).__name__}: {last}" if last is not None else "none"),
        ],
        ([hint] if hint else []) + (extra_notes or []),
    )


def occurrence_text(event: ConnectGaveUp, occurrence: Occurrence) -> str:
    """The give-up alert as the de-dup layer words it: first alert, or a reminder."""
    interval = format_duration(occurrence.repeat_interval)
    if occurrence.kind == "reminder":
        return gave_up_text(
            event,
            title="IBKR CONNECTION STILL FAILING",
            extra_facts=[
                (
                    "Down for",
                    f"{format_duration(occurrence.down_s)} "
                    f"(since {_utc_hm(occurrence.first_failure_at)})",
                ),
                ("Failed runs", occurrence.failures),
            ],
            extra_notes=[f"Reminder: next one in {interval} if it keeps failing."],
        )
    if occurrence.kind == "first":
        return gave_up_text(
            event,
            extra_notes=[
                f"Repeats are not alerted for {interval}; a message follows when it connects again."
            ],
        )
    return gave_up_text(event)


def recovered_text(recovery: Recovery) -> str:
    """The one message after an alerted outage: how long it was down, how often it failed."""
    return alert_text(
        "IBKR CONNECTION RECOVERED",
        [
            ("Gateway", f"{recovery.host}:{recovery.port}"),
            ("clientId", recovery.client_id),
            ("Down for", f"{format_duration(recovery.down_s)} (since {_utc_hm(recovery.since)})"),
            ("Failed runs", recovery.failures),
            ("Failure", ", ".join(recovery.failure_classes)),
        ],
    )


def live_account_text(event: LiveAccountFound) -> str:
    """The paper guard refused the session: nothing was traded."""
    return alert_text(
        "IBKR LIVE ACCOUNT REFUSED",
        [
            ("Gateway", event.gateway.address),
            ("clientId", event.gateway.client_id),
            ("Accounts", ", ".join(event.accounts) or "none"),
        ],
        ["No paper account (id starting with D): wrong port? Nothing was traded."],
    )


def lost_text(event: ConnectionLost) -> str:
    """The gateway dropped the session inside the block."""
    return alert_text(
        "IBKR CONNECTION LOST",
        [
            ("Gateway", event.gateway.address),
            ("clientId", event.gateway.client_id),
            ("Connected for", _connected_for(event.connected_s)),
        ],
        ["The job was not reconnected: check its orders and positions."],
    )


def block_failed_text(event: BlockFailed) -> str:
    """An exception escaped the session."""
    return alert_text(
        "IBKR SESSION FAILED",
        [
            ("Gateway", event.gateway.address),
            ("clientId", event.gateway.client_id),
            ("Phase", event.phase),
            ("Error", f"{event.error_type}: {event.error}"),
            ("Connected for", _connected_for(event.connected_s)),
        ],
    )


def run_failed_text(
    script: str,
    code: int,
    meaning: str,
    reason: str,
    occurrence: Occurrence | None = None,
    summary: str = "",
) -> str:
    """A script run ended with a non-zero exit that the session had not alerted.

    ``meaning``: the exit code's line from the documented table; ``reason``: the run's
    own error line; ``occurrence``: how the de-dup layer sees it (first or reminder);
    ``summary``: the printed run summary, of which the last lines are quoted.
    """
    reminder = occurrence is not None and occurrence.kind == "reminder"
    # The title names the script: ``alert_text``'s "Script:" line is the process's
    # (the same under cron; ``ibkr-resilience`` when the demo runs the job in-process).
    facts: list[tuple[str, object]] = [("Exit code", f"{code} ({meaning})")]
    if reason:
        facts.append(("Reason", reason))
    notes: list[str] = []
    if occurrence is not None and reminder:
        facts.append(
            (
                "Failing for",
                f"{format_duration(occurrence.down_s)} "
                f"(since {_utc_hm(occurrence.first_failure_at)})",
            )
        )
        facts.append(("Failed runs", occurrence.failures))
    lines = summary.strip().splitlines()
    if lines:
        cut = lines[-MAX_SUMMARY_LINES:]
        notes.append("Summary:" + ("\n  ..." if len(cut) < len(lines) else ""))
        notes.extend(f"  {line.strip()}" for line in cut)
    if occurrence is not None and occurrence.kind in ("first", "reminder"):
        interval = format_duration(occurrence.repeat_interval)
        notes.append(
            f"Repeats are not alerted for {interval}; a message follows when a run succeeds."
        )
    title = "IBKR JOB STILL FAILING" if reminder else "IBKR JOB FAILED"
    return alert_text(f"{title}: {script} exit {code}", facts, notes)


def run_recovered_text(script: str, recovery: Recovery) -> str:
    """The first successful run of ``script`` after alerted failed runs."""
    codes = ", ".join(c.rpartition(":")[2] for c in recovery.failure_classes)
    return alert_text(
        f"IBKR JOB RECOVERED: {script}",
        [
            ("Job", script),
            (
                "Failing for",
                f"{format_duration(recovery.down_s)} (since {_utc_hm(recovery.since)})",
            ),
            ("Failed runs", recovery.failures),
            ("Failures", codes),
        ],
    )
