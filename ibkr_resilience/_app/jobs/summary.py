"""The run summary the scripts print at the end, and the reason of a run that ended 3.

The summary is a courtesy to whoever watches the terminal; the record is the journal,
the log and the exit code. So printing it must never change how the run ends: a closed
stdout (``| head -1``, a terminal that went away) is ignored without a traceback, and
the text is kept (``RunState.summary``) as the body of the run's healthcheck ping.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from .kit import RunState

__all__ = ["print_summary", "problems_reason"]


def problems_reason(state: RunState, code: int) -> str:
    """The reason of a run that ended 3: how many rows of each problem."""
    if not code:
        return ""
    counts: dict[str, int] = {}
    for o in state.problems:
        key = o.event.removeprefix("order.")
        counts[key] = counts.get(key, 0) + 1
    listed = ", ".join(f"{n} {k}" for k, n in counts.items())
    return f"orders not all placed: {listed}; see the summary and the journal" if listed else ""


def print_summary(state: RunState, code: int, out: IO[str] | None = None) -> None:
    """Print the summary (and keep it in ``state.summary``); a closed stdout is ignored."""
    stream = sys.stdout if out is None else out
    lines = [state.header]
    for o in state.outcomes:
        event = o.event.removeprefix("order.")
        order = f"#{o.order_id}" if o.order_id is not None else ""
        lines.append(f"  {event:<13} {o.status or '-':<12} {order:<7} {o.what}")
        if o.message:
            lines.append(f"  {'':<13} {o.message}")
    counts: dict[str, int] = {}
    for o in state.outcomes:
        key = o.event.removeprefix("order.")
        counts[key] = counts.get(key, 0) + 1
    tally = ", ".join(f"{n} {k}" for k, n in counts.items()) or "no order handled"
    lines.append(f"result: {tally}; exit {code}")
    lines.extend(state.footer)
    state.summary = "\n".join(lines)
    write_line(stream, state.summary)


def write_line(stream: IO[str], text: str) -> None:
    """Print ``text`` to ``stream``; a closed pipe, a full disk or a closed file is ignored.

    `| head -1`, a dead terminal, a log collector gone, ``>> /var/log/ibkr/job.out`` on a
    full ``/var/log``: the run's outcome is in the journal, the log and the exit code,
    and none of them may change because a courtesy line could not be shown. Such a
    ``sys.stdout``/``sys.stderr`` is pointed at /dev/null, so that Python's flush at exit
    does not fail again (a traceback, exit 120).
    """
    try:
        print(text, file=stream, flush=True)
    except (OSError, ValueError):
        if stream is sys.stdout or stream is sys.stderr:
            _to_devnull(stream)


def _to_devnull(stream: IO[str]) -> None:
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, stream.fileno())
        finally:
            os.close(devnull)
