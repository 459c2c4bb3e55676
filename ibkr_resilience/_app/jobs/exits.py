"""How a run ends: the exit codes cron sees, and why a run was cut short.

A run stopped from outside (Ctrl-C, SIGTERM from cron or systemd, a gateway that goes
away) must end the same way in both scripts: the same exit code, the same words in the
summary and the same reason on the order that was in flight. So the ladder from an
exception to an exit code and a reason (:func:`how_stopped`) is here once, and so is the
one place an in-flight order is journaled on the way out (:func:`journal_if_cut_short`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from enum import IntEnum
from typing import NamedTuple, Protocol

from ..._session.signals import SIGHUP_EXIT_CODE, SIGTERM_EXIT_CODE
from .journal import JournalError


class ExitCode(IntEnum):
    """The documented exit codes (``EXIT_CODES_HELP``, docs/scripts.md)."""

    OK = 0
    CONNECT_FAILED = 1
    BAD_INPUT = 2
    ORDERS_FAILED = 3
    LIVE_ACCOUNT = 4
    READ_ONLY_API = 5
    LOCKED = 6
    UNRECORDED = 7
    HANGUP = SIGHUP_EXIT_CODE
    INTERRUPTED = 130
    TERMINATED = SIGTERM_EXIT_CODE


EXIT_CODES_HELP = """\
exit codes:
  0    success: every order accepted (or already placed; nothing to do)
  1    could not connect to the gateway (every attempt failed), or the connection was
       lost / the gateway stopped answering / IB stayed unreachable (error 1100 past
       IBKR_OUTAGE_WAIT) during the run
  2    bad input or configuration: arguments, environment, plan, journal (a run.start
       record could not be written) or run lock file (one line on stderr; nothing was sent)
  3    some orders were rejected, unconfirmed within the deadline, or not placed, or a
       plan row placed earlier was changed or removed since: not re-placed, see
       --amend (see the summary and the journal)
  4    the gateway offers no paper account: live account refused, nothing was sent
  5    the gateway's API is read-only (error 321 at connect or on an order): untick "Read-Only API"
       (IBC: ReadOnlyApi=no); the refused order is journaled, no further order was sent
  6    another run holds the gateway's run lock (same host:port) past IBKR_LOCK_WAIT;
       nothing was sent (stderr names the holder)
  7    the journal could not be written during the run (a full disk): placing stopped at
       once; stderr lists each order sent whose outcome is not in it, by orderRef and order
       id (they may be live and unrecorded), or says none is missing
  129  hung up (SIGHUP: the terminal or ssh session went away); as for 143
  130  interrupted (Ctrl-C)
  143  terminated (SIGTERM); the orders in flight are journaled as order.unconfirmed

Every non-zero exit is alerted (Telegram, de-duplicated across runs: a job failing
every 5 minutes alerts once, then reminds) unless the session already alerted the same
failure, and pings IBKR_HEALTHCHECK_URL with <url>/<exit code> (<url>/fail for 129,
130, 143); exit 0 pings <url>. Each failing run logs one ERROR line, script.end.

environment: IBKR_HOST, IBKR_PORT, IBKR_CONNECT_* (see docs/configuration.md),
IBKR_ACK_TIMEOUT, IBKR_OUTAGE_WAIT, IBKR_LOCK_WAIT, IBKR_ORDER_WINDOW, IBKR_JOURNAL,
IBKR_LOG_FORMAT/LEVEL/FILE.
Options override them.
Details: docs/scripts.md.
"""

LOST_GATEWAY = "lost the gateway during the run"
"""How the summary starts when the connection went away mid-run (exit 1)."""


class RunStopped(Exception):
    """The job stopped itself because the gateway cannot take orders now (read-only
    API, an IB outage that does not clear, a gateway that stopped answering).

    Raised out of the session's block, so the session logs and alerts it with its text
    (which names the cause and what to do); ``code`` is the run's exit code.
    """

    code: ExitCode = ExitCode.CONNECT_FAILED


class UnrecordedOrders(RunStopped):
    """The journal failed after the run had sent orders (exit 7): placing stopped.

    The text lists every order sent whose outcome is not in the journal (orderRef and
    order id): they may be live at the gateway with no record of them. Raised out of the
    session's block, so the session's alert carries that list.
    """

    code = ExitCode.UNRECORDED


class _Sent(Protocol):
    def unrecorded(self) -> list[tuple[str, int | None]]: ...


@contextlib.contextmanager
def stop_on_journal_failure(journal: _Sent) -> Iterator[None]:
    """Around the connected part of a run: a ``JournalError`` becomes
    :class:`UnrecordedOrders` naming the orders the journal has no outcome for.

    Exit 2 means "nothing was sent"; once connected that is no longer known to be true,
    and an order sent without its outcome record is exactly what the team must hear of.
    """
    try:
        yield
    except JournalError as exc:
        orders = journal.unrecorded()
        listed = ", ".join(
            f"{ref} (order id {order_id if order_id is not None else 'unknown'})"
            for ref, order_id in orders
        )
        what = (
            f"orders may be live and unrecorded: {listed}"
            if orders
            else "no order sent is missing from it"
        )
        raise UnrecordedOrders(
            f"the journal failed during the run ({exc}); placing stopped at once; {what}: "
            "check TWS and complete the record"
        ) from None


class Stop(NamedTuple):
    """Why a run was cut short: its exit code and the cause in a few words."""

    code: ExitCode
    cause: str
    """``interrupted (Ctrl-C)``, ``terminated (SIGTERM)``, ``hung up (SIGHUP)`` or
    ``<exception type>: <text>``."""
    lost_gateway: bool = False

    @property
    def reason(self) -> str:
        """The summary's error line: the cause, with what it means for a lost gateway."""
        return f"{LOST_GATEWAY} ({self.cause}); check TWS" if self.lost_gateway else self.cause


def how_stopped(exc: BaseException) -> Stop | None:
    """The :class:`Stop` for Ctrl-C, SIGTERM, SIGHUP or a connection error; ``None`` for the rest.

    The session raises ``ConnectionError``/``TimeoutError`` when the gateway goes away
    or stops answering mid-run; SIGTERM arrives as ``SystemExit(143)`` from the signal
    guard, SIGHUP as ``SystemExit(129)``. Anything else is not a stop but a failure or
    a bug, for the caller to judge.
    """
    if isinstance(exc, KeyboardInterrupt):
        return Stop(ExitCode.INTERRUPTED, "interrupted (Ctrl-C)")
    if isinstance(exc, RunStopped):
        return Stop(exc.code, str(exc))
    if isinstance(exc, SystemExit) and exc.code == SIGTERM_EXIT_CODE:
        return Stop(ExitCode.TERMINATED, "terminated (SIGTERM)")
    if isinstance(exc, SystemExit) and exc.code == SIGHUP_EXIT_CODE:
        return Stop(ExitCode.HANGUP, "hung up (SIGHUP)")
    if isinstance(exc, ConnectionError | TimeoutError):
        return Stop(ExitCode.CONNECT_FAILED, _exception_text(exc), lost_gateway=True)
    return None


def stop_cause(exc: BaseException) -> str:
    """A few words on why ``exc`` ended the run, for the journal of an in-flight order."""
    stop = how_stopped(exc)
    return stop.cause if stop is not None else _exception_text(exc)


@contextlib.contextmanager
def journal_if_cut_short(record: Callable[[str], None]) -> Iterator[None]:
    """Around placing one order: if anything ends the run before the order's outcome is
    journaled, call ``record(cause)`` and let the exception go on.

    An order handed to the client may reach the gateway even if the process dies next,
    so it must not be missing from the trade record. A journal that cannot be written
    at that point must not hide the original exception, hence ``JournalError`` is dropped.
    """
    try:
        yield
    except BaseException as exc:
        with contextlib.suppress(JournalError):
            record(stop_cause(exc))
        raise


def _exception_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
