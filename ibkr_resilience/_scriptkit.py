"""What ``submit_orders`` and ``close_positions`` share: options, exit codes, order waits.

Both scripts run from cron, so the contract with the crontab is the exit code and the
contract with the team is the journal; both must mean the same thing in both scripts.
So the exit-code mapping (:func:`run_script`), the acknowledgement rules
(:func:`wait_for_acks`, :func:`trade_outcome`) and the summary live here once.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import textwrap
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import IO, Any

import structlog

from ._config import DEFAULT_CLIENT_ID, GATEWAY_PAPER_PORT, PAPER_PORT, SessionConfig
from ._errors import ConfigError, ConnectionFailed, LiveAccountRefused
from ._ibcompat import ensure_event_loop, ib_insync
from ._journal import (
    CANCEL_FAILED,
    NOT_PLACED,
    REJECTED,
    UNCONFIRMED,
    Journal,
    JournalError,
)
from ._logging import configure_logging
from ._plan import PlanError
from ._session import SIGTERM_EXIT_CODE, is_paper_account, managed_accounts

log = structlog.get_logger("ibkr_resilience.script")

DEFAULT_ACK_TIMEOUT = 10.0
ACK_TIMEOUT_ENV = "IBKR_ACK_TIMEOUT"

ACCEPTED_STATUSES = frozenset({"Submitted", "PreSubmitted", "Filled"})
"""The gateway took the order: it is working, waiting for its parent, or done."""
REJECTED_STATUSES = frozenset({"Cancelled", "ApiCancelled", "Inactive"})
"""The gateway refused or dropped the order (ib_insync marks an order error Cancelled)."""
PROBLEM_EVENTS = frozenset({REJECTED, UNCONFIRMED, CANCEL_FAILED, NOT_PLACED})


class ExitCode(IntEnum):
    OK = 0
    CONNECT_FAILED = 1
    BAD_INPUT = 2
    ORDERS_FAILED = 3
    LIVE_ACCOUNT = 4
    INTERRUPTED = 130
    TERMINATED = SIGTERM_EXIT_CODE


EXIT_CODES_HELP = """\
exit codes:
  0    success: every order accepted (or already placed; nothing to do)
  1    could not connect to the gateway (every attempt failed), or the connection was
       lost / a request timed out during the run
  2    bad input or configuration: arguments, environment, plan or journal (one line on
       stderr; nothing was sent)
  3    some orders were rejected, unconfirmed within the deadline, or not placed
       (see the summary and the journal)
  4    the gateway offers no paper account: live account refused, nothing was sent
  130  interrupted (Ctrl-C)
  143  terminated (SIGTERM); the order in flight is journaled as order.unconfirmed

environment: IBKR_HOST, IBKR_PORT, IBKR_CONNECT_* (see docs/configuration.md),
IBKR_ACK_TIMEOUT, IBKR_JOURNAL, IBKR_LOG_FORMAT/LEVEL/FILE. Options override them.
Details: docs/scripts.md.
"""


class UsageError(ValueError):
    """A command-line value that argparse accepted but the script cannot use."""


# ----------------------------------------------------------------------------- options
def add_common_arguments(parser: argparse.ArgumentParser, client_id: int) -> None:
    """The options both scripts take; ``None`` defaults mean "environment, then default"."""
    conn = parser.add_argument_group("connection (override IBKR_HOST / IBKR_PORT)")
    conn.add_argument("--host", help="gateway host (default: $IBKR_HOST, else 127.0.0.1)")
    conn.add_argument(
        "--port", type=_int_arg("port"),
        help=f"gateway API port (default: $IBKR_PORT, else {PAPER_PORT}, TWS paper; IB Gateway "
        f"paper is {GATEWAY_PAPER_PORT})",
    )  # fmt: skip
    conn.add_argument(
        "--client-id", type=_int_arg("client id"), default=client_id,
        help=f"API client id (default: {client_id})",
    )  # fmt: skip
    run = parser.add_argument_group("run")
    run.add_argument(
        "--journal", metavar="PATH",
        help="trade journal (default: $IBKR_JOURNAL, else "
        "$XDG_STATE_HOME/ibkr_resilience/journal.jsonl, else "
        "~/.local/state/ibkr_resilience/journal.jsonl)",
    )  # fmt: skip
    run.add_argument("--log-file", metavar="PATH", help="also write JSON log lines here "
                     "(default: $IBKR_LOG_FILE)")  # fmt: skip
    run.add_argument(
        "--ack-timeout", metavar="SECONDS", type=_seconds_arg,
        help=f"how long to wait for the gateway to confirm each order or cancel "
        f"(default: ${ACK_TIMEOUT_ENV}, else {DEFAULT_ACK_TIMEOUT:g})",
    )  # fmt: skip
    run.add_argument("--dry-run", action="store_true",
                     help="connect, check and report what would be done; send no order")


def new_parser(prog: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog=prog,
        description=textwrap.fill(description, 79),
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _int_arg(what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be an integer, not {text!r}") from None

    return parse


def _seconds_arg(text: str) -> float:
    try:
        return _seconds(text, "--ack-timeout")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seconds(text: str, label: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{label}={text!r}: expected a finite number of seconds > 0")
    return value


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> Any:
    """Parsed arguments, or the exit code argparse chose (``--help``: 0, bad usage: 2).

    argparse ends the process itself; a script's ``main`` may run in-process (the demo),
    so its ``SystemExit`` becomes a return value here.
    """
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else ExitCode.BAD_INPUT


def script_main(
    script: str,
    build_parser: Callable[[], argparse.ArgumentParser],
    body: Callable[[ScriptRun], None],
    argv: Sequence[str] | None,
    env: Mapping[str, str] | None,
) -> int:
    """A script's ``main``: parse, set up logging, run the body under :func:`run_script`.

    It never calls ``sys.exit``, so the demo can run the scripts in-process. Logging is
    configured inside ``run_script`` so that a bad log setting is a one-line exit 2.
    """
    environ = os.environ if env is None else env
    args = parse_args(build_parser(), argv)
    if not isinstance(args, argparse.Namespace):
        return int(args)
    state = RunState(script)

    def setup_and_run() -> None:
        run_id = configure_logging(file=args.log_file, script=script, env=environ)
        state.logging_ready = True
        body(ScriptRun(args, environ, state, run_id, ack_timeout(args.ack_timeout, environ)))

    return run_script(state, setup_and_run)


@dataclass(frozen=True)
class ScriptRun:
    """What every script body gets: its arguments, environment, run state and settings."""

    args: argparse.Namespace
    env: Mapping[str, str]
    state: RunState
    run_id: str
    ack_timeout: float


def ack_timeout(given: float | None, env: Mapping[str, str]) -> float:
    if given is not None:
        return given
    raw = env.get(ACK_TIMEOUT_ENV, "").strip()
    return _seconds(raw, ACK_TIMEOUT_ENV) if raw else DEFAULT_ACK_TIMEOUT


def open_journal(given: str | None, env: Mapping[str, str], *, script: str, run_id: str) -> Journal:
    """``--journal``, else ``$IBKR_JOURNAL``, else the XDG default; a path from the
    environment that cannot be opened is reported with the variable's name."""
    if given:
        return Journal(Path(given).expanduser(), script=script, run_id=run_id)
    path = Journal.default_path(env)
    try:
        return Journal(path, script=script, run_id=run_id)
    except JournalError as exc:
        raw = env.get("IBKR_JOURNAL", "").strip()
        if raw:
            raise JournalError(f"IBKR_JOURNAL={raw!r}: {exc}", exc.errno) from None
        raise


def session_config(args: Any, env: Mapping[str, str]) -> SessionConfig:
    """Environment first, then the command line on top (``--host/--port/--client-id``)."""
    return SessionConfig.from_env(
        env,
        host=args.host,
        port=args.port,
        client_id=args.client_id if args.client_id is not None else DEFAULT_CLIENT_ID,
    )


# ----------------------------------------------------------------------------- running
@dataclass
class Outcome:
    """One line of the summary (and, usually, one journal record)."""

    event: str
    what: str
    order_ref: str
    status: str = ""
    order_id: int | None = None
    message: str = ""


@dataclass
class RunState:
    """What :func:`run_script` needs to know about a run to end it properly."""

    script: str
    logging_ready: bool = False
    outcomes: list[Outcome] = field(default_factory=list)
    header: str = ""
    footer: list[str] = field(default_factory=list)
    lost: str = ""  # why the run stopped early because the gateway went away

    def check_connected(self, ib: Any) -> bool:
        """Before each order: stop cleanly (exit 1) when the session lost the gateway.

        Returning from the block instead of raising lets the session report the loss
        once ("connection lost") rather than a second time as a failed block.
        """
        if ib.isConnected():
            return True
        self.lost = "lost the gateway during the run; the rest was not attempted: check TWS"
        return False

    @property
    def problems(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.event in PROBLEM_EVENTS]


def run_script(state: RunState, body: Callable[[], None], *, stderr: IO[str] | None = None) -> int:
    """Run ``body`` and turn how it ended into the documented exit code.

    Expected failures become one line on stderr, never a traceback; the session has
    already logged and alerted about connection problems, so nothing here alerts again.
    Unexpected exceptions propagate: they are bugs and deserve their traceback.
    """
    err = sys.stderr if stderr is None else stderr
    code: int
    reason = ""
    try:
        body()
        if state.lost:
            code, reason = ExitCode.CONNECT_FAILED, state.lost
        else:
            code = ExitCode.ORDERS_FAILED if state.problems else ExitCode.OK
    except (ConfigError, PlanError, JournalError, UsageError) as exc:
        code, reason = ExitCode.BAD_INPUT, str(exc)
    except ConnectionFailed as exc:
        code, reason = ExitCode.CONNECT_FAILED, f"could not connect: {exc}"
    except LiveAccountRefused as exc:
        code, reason = ExitCode.LIVE_ACCOUNT, f"live account refused, nothing sent: {exc}"
    except (ConnectionError, TimeoutError) as exc:
        code = ExitCode.CONNECT_FAILED
        reason = f"lost the gateway during the run ({type(exc).__name__}: {exc}); check TWS"
    except KeyboardInterrupt:
        code, reason = ExitCode.INTERRUPTED, "interrupted (Ctrl-C)"
    except SystemExit as exc:
        if exc.code != SIGTERM_EXIT_CODE:
            raise
        code, reason = ExitCode.TERMINATED, "terminated (SIGTERM)"
    if state.header:
        print_summary(state, code)
    if reason:
        print(f"{state.script}: error: {reason}", file=err)
    if state.logging_ready:
        counts: dict[str, int] = {}
        for o in state.outcomes:
            counts[o.event] = counts.get(o.event, 0) + 1
        log.info("script.end", exit_code=int(code), outcomes=counts, reason=reason or None)
    return int(code)


def print_summary(state: RunState, code: int, out: IO[str] | None = None) -> None:
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
    print("\n".join(lines), file=stream, flush=True)


# ----------------------------------------------------------------------------- gateway
def paper_account(ib: Any) -> str:
    """The account to trade: the first paper account; the session already refused a
    gateway without one unless live trading was explicitly allowed."""
    accounts = managed_accounts(ib)
    for account in accounts:
        if is_paper_account(account):
            return account
    if not accounts:
        raise LiveAccountRefused("the gateway reported no account at all", accounts=[])
    return accounts[0]


def trade_error(trade: Any) -> str:
    """The gateway's last error for an order (``"error 201: ..."``), or ``""``."""
    for entry in reversed(getattr(trade, "log", [])):
        if getattr(entry, "errorCode", 0):
            return f"error {entry.errorCode}: {entry.message}"
    return ""


def trade_outcome(trade: Any) -> str:
    """``accepted``, ``rejected`` or ``pending`` by the rules in docs/scripts.md."""
    status = trade.orderStatus.status
    if status in ACCEPTED_STATUSES:
        return "accepted"
    if status in REJECTED_STATUSES:
        return "rejected"
    return "pending"


def wait_for_acks(ib: Any, trades: Iterable[Any], timeout: float) -> None:
    """Run the client's loop until every trade is accepted or rejected, or ``timeout``."""
    pending = list(trades)
    wait_for_update(ib, lambda: all(trade_outcome(t) != "pending" for t in pending), timeout)


def wait_for_update(ib: Any, done: Callable[[], bool], timeout: float) -> bool:
    """Run the client's loop until ``done()`` holds or ``timeout``; return ``done()``.

    Wakes on ib_insync's ``updateEvent`` (emitted after every batch of incoming
    messages), so it returns as soon as the deciding message is processed. The handler
    is attached *before* the loop runs: ``IB.waitOnUpdate`` attaches it one loop step
    late and misses a reply that is already waiting in the socket.

    A lost gateway ends the wait through ``disconnectedEvent``: it returns ``done()``
    (false unless the update came first) and never raises, on every Python. So the loop
    is run directly, not through ``ib_insync.util.run``: that cancels what it runs when
    the socket drops (``globalErrorEvent``) and re-raises the drop as ``ConnectionError``;
    Python 3.11's ``asyncio.wait_for`` hid that by returning the woken future's result,
    3.12's (built on ``asyncio.timeout``) lets the ``ConnectionError`` escape.
    """
    loop = ensure_event_loop()  # the loop ib_insync runs on
    deadline = time.monotonic() + timeout
    while not done():
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not ib.isConnected():
            return done()
        woken: asyncio.Future[None] = loop.create_future()

        def wake(*_: Any, woken: asyncio.Future[None] = woken) -> None:
            if not woken.done():
                woken.set_result(None)

        ib.updateEvent += wake
        ib.disconnectedEvent += wake  # a lost gateway ends the wait at once
        try:
            # asyncio.wait neither raises on its timeout nor cancels ``woken``.
            loop.run_until_complete(asyncio.wait({woken}, timeout=remaining))
        finally:
            ib.updateEvent -= wake
            ib.disconnectedEvent -= wake
    return True


def unconfirmed_message(ib: Any, timeout: float) -> str:
    """Why an order placed is journaled unconfirmed: the deadline, or the lost session."""
    if not ib.isConnected():
        return "the connection was lost before the gateway confirmed it: check TWS"
    return f"no acknowledgement within {timeout:g} s: check TWS"


def wait_until(ib: Any, done: Callable[[], bool], timeout: float, poll: float = 0.2) -> bool:
    """Poll ``done()`` while the client's loop runs, for state the gateway does not push
    (another client's cancels are only seen by asking again)."""
    deadline = time.monotonic() + timeout
    while not done():
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not ib.isConnected():
            return False
        ib.sleep(min(poll, remaining))
    return True


def live_open_orders(ib: Any, account: str) -> list[Any]:
    """Every client's open orders in ``account`` (``reqAllOpenOrders``), freshly asked.

    ``openTrades()`` alone is not enough: it only follows this client's orders, and
    another client's order cancelled since our last request would still look open.
    """
    seen: dict[Any, Any] = {}
    for trade in ib.reqAllOpenOrders():
        order = trade.order
        if order.account not in (account, ""):
            continue
        if trade.orderStatus.status in ib_insync.OrderStatus.DoneStates:
            continue
        seen[order_key(order)] = trade
    return list(seen.values())


def order_key(order: Any) -> Any:
    """TWS's permanent id when known (stable across clients), else (client id, order id)."""
    return order.permId or (order.clientId, order.orderId)


def contract_fields(contract: Any) -> dict[str, str]:
    return {
        "symbol": contract.symbol,
        "sec_type": contract.secType or "STK",
        "exchange": contract.exchange or "SMART",
        "currency": contract.currency or "USD",
    }
