"""The script frame ``submit_orders`` and ``close_positions`` share: options, run, summary.

Both scripts run from cron, so the contract with the crontab is the exit code and the
contract with the team is the journal and the summary; both must mean the same thing in
both scripts. So the options, the settings a run gets (:class:`ScriptRun`), how a run's
end becomes its exit code (:func:`run_script`) and the summary live here once; the
exit codes and stop reasons are in :mod:`.exits`, the order helpers in :mod:`.orders`.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NamedTuple

from ..._connect.failures import FailureClass
from ..._core.config import (
    DEFAULT_ACK_TIMEOUT,
    DEFAULT_CLIENT_ID,
    GATEWAY_PAPER_PORT,
    PAPER_PORT,
    JobSettings,
    SessionConfig,
    check_setting,
)
from ..._core.log import get_logger
from ..._core.logconfig import configure_logging
from ..._session.session import ibkr_session
from ..._session.signals import SignalGuard
from ...errors import ConfigError, ConnectionFailed, LiveAccountRefused
from ..usage import OneLineErrorParser
from .exits import EXIT_CODES_HELP, LOST_GATEWAY, ExitCode, how_stopped, stop_on_journal_failure
from .journal import (
    CANCEL_FAILED,
    NOT_PLACED,
    REJECTED,
    UNCONFIRMED,
    Journal,
    JournalError,
    journal_path,
)
from .placements import PLACEMENT_PROBLEMS
from .plan import PlanError
from .run_alerts import RunAlerts
from .run_metrics import write_run_metrics
from .runlock import RunLocked, RunLockError, lock_path, run_lock
from .summary import print_summary, problems_reason, write_line

log = get_logger("ibkr_resilience.script")
READ_ONLY_REASON = (
    'the gateway\'s API is read-only (error 321): untick "Read-Only API" (IBC: ReadOnlyApi=no)'
)
"""Exit 5's reason: a setting to change at the gateway, not a connection to wait for."""

PROBLEM_EVENTS = frozenset({REJECTED, UNCONFIRMED, CANCEL_FAILED, NOT_PLACED, *PLACEMENT_PROBLEMS})
"""Outcomes that make a run exit 3 (see :data:`.exits.EXIT_CODES_HELP`)."""


class UsageError(ValueError):
    """A command-line value that argparse accepted but the script cannot use."""


# ----------------------------------------------------------------------------- options
def add_common_arguments(parser: argparse.ArgumentParser, client_id: int) -> None:
    """The options both scripts take; ``None`` defaults mean "environment, then default"."""
    conn = parser.add_argument_group("connection (override IBKR_HOST / IBKR_PORT)")
    conn.add_argument("--host", help="gateway host (default: $IBKR_HOST, else 127.0.0.1)")
    conn.add_argument(
        "--port",
        type=_setting_arg("port", "--port"),
        help=f"gateway API port (default: $IBKR_PORT, else {PAPER_PORT}, TWS paper; IB Gateway "
        f"paper is {GATEWAY_PAPER_PORT})",
    )
    conn.add_argument(
        "--client-id",
        type=_setting_arg("client_id", "--client-id"),
        default=client_id,
        help=f"API client id (default: {client_id})",
    )
    run = parser.add_argument_group("run")
    run.add_argument(
        "--journal",
        metavar="PATH",
        help="trade journal (default: $IBKR_JOURNAL, else "
        "$XDG_STATE_HOME/ibkr_resilience/journal.jsonl, else "
        "~/.local/state/ibkr_resilience/journal.jsonl)",
    )
    run.add_argument(
        "--log-file",
        metavar="PATH",
        help="also write JSON log lines here (default: $IBKR_LOG_FILE)",
    )
    run.add_argument(
        "--ack-timeout",
        metavar="SECONDS",
        type=_setting_arg("ack_timeout", "--ack-timeout"),
        help=f"how long to wait for the gateway to confirm each order or cancel "
        f"(default: $IBKR_ACK_TIMEOUT, else {DEFAULT_ACK_TIMEOUT:g})",
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="connect, check and report what would be done; send no order",
    )


def new_parser(prog: str, description: str) -> argparse.ArgumentParser:
    return OneLineErrorParser(
        prog=prog,
        description=textwrap.fill(description, 79),
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _setting_arg(name: str, option: str) -> Callable[[str], Any]:
    """An option checked by the same rule (and message) as its setting: ``--port 70000``
    fails like ``IBKR_PORT=70000``, naming the option."""

    def parse(text: str) -> Any:
        try:
            return check_setting(name, text, label=option)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


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
        if args:  # a cron line with a bad option fails every day: as loud as a bad setting
            usage = RunAlerts(script, environ)
            reason = "bad command line (argparse's message is on stderr)"
            usage.finish(
                int(args), reason, reason, gateway=None, alerted=False, logging_ready=False
            )
        return int(args)
    state = RunState(script)

    def setup_and_run() -> None:
        run_id = configure_logging(file=args.log_file, script=script, env=environ)
        state.logging_ready = True
        settings = JobSettings.from_env(environ, ack_timeout=args.ack_timeout)
        body(ScriptRun(args, environ, state, run_id, settings))

    code = int(ExitCode.CONNECT_FAILED)  # what Python exits with if a bug escapes
    state.reason = "unexpected error (see the traceback on stderr)"
    # SIGTERM/SIGHUP outside the session (reading the plan, after the disconnect) end the
    # run as inside it: SystemExit(143/129), mapped by run_script, alerted and pinged.
    guard = SignalGuard()
    guard.install(interrupts=True)  # a second Ctrl-C must not cut the window's records short
    loud = RunAlerts(script, environ)
    loud.start()  # before the settings and the plan: a missing plan is start + failure
    try:
        code = run_script(state, setup_and_run)
        return code
    finally:
        # The run has its exit code: a signal now only waits for its report (metrics,
        # alert, ping: each bounded), else cron would never hear how the run ended.
        guard.defer()
        try:
            write_run_metrics(state, code, environ)
            loud.finish(
                code,
                state.reason,
                state.summary,
                gateway=_gateway(state, args, environ),
                alerted=bool(
                    getattr(getattr(state.session, "notifier", None), "failure_reported", 0)
                ),
                logging_ready=state.logging_ready,
            )
        finally:
            guard.restore()


def _gateway(state: RunState, args: argparse.Namespace, env: Mapping[str, str]) -> Any:
    """``(host, port, client_id)`` of the run, for its de-dup key; ``None`` if unknown."""
    config = getattr(state.session, "config", None)
    if config is None:
        try:
            config = session_config(args, env)
        except ConfigError:
            return None
    return (config.host, config.port, config.client_id)


class ScriptRun(NamedTuple):
    """What every script body gets: its arguments, environment, run state and settings."""

    args: argparse.Namespace
    env: Mapping[str, str]
    state: RunState
    run_id: str
    settings: JobSettings

    @property
    def ack_timeout(self) -> float:
        """Seconds to wait for each acknowledgement: ``--ack-timeout``, else the setting."""
        return self.settings.ack_timeout


def ack_timeout(given: float | None, env: Mapping[str, str]) -> float:
    """``given`` (``--ack-timeout``), else ``$IBKR_ACK_TIMEOUT``, else the default."""
    return JobSettings.from_env(env, ack_timeout=given).ack_timeout


def open_journal(run: ScriptRun, *, script: str) -> Journal:
    """``--journal``, else ``$IBKR_JOURNAL``, else the XDG default; a path from the
    environment that cannot be opened is reported with the variable's name."""
    given: str | None = run.args.journal
    if given:
        return Journal(Path(given).expanduser(), script=script, run_id=run.run_id)
    configured = run.settings.journal
    try:
        return Journal(journal_path(configured, run.env), script=script, run_id=run.run_id)
    except JournalError as exc:
        if configured:
            raise JournalError(f"IBKR_JOURNAL={configured!r}: {exc}", exc.errno) from None
        raise


def run_in_session(
    run: ScriptRun,
    script: str,
    start: Callable[[Journal, SessionConfig], Callable[[Any], None]],
) -> None:
    """What every script body does after checking its own input: settings, journal, session.

    ``start`` gets the open journal and the session settings, sets the summary header
    and returns the job, which then runs on the connected ``IB``. The order keeps the
    promise of exit code 2: bad settings or a journal that cannot take the ``run.start``
    record end the run before any connection is attempted. The gateway's run lock is
    held from before connecting until after disconnecting (:mod:`.runlock`); a journal
    failure once connected is exit 7 (:func:`.exits.stop_on_journal_failure`).
    """
    # An IB outage (1100) found at connect is waited on as long as one mid-run.
    config = session_config(run.args, run.env).replace(ib_offline_wait=run.settings.outage_wait)
    with open_journal(run, script=script) as journal:
        journal.start_run(
            host=config.host,
            port=config.port,
            client_id=config.client_id,
            dry_run=bool(run.args.dry_run),
        )
        run.state.footer = [f"journal: {journal.path}"]
        job = start(journal, config)
        holder = {"pid": os.getpid(), "script": script, "run_id": run.run_id}
        lock = lock_path(config.host, config.port, run.env)
        with run_lock(lock, wait=run.settings.lock_wait, holder=holder):
            # The run pings the healthcheck itself (start before the plan is read, the exit
            # code at the end: .run_alerts), so the session must not report its own outcome.
            run.state.session = ibkr_session(
                client_id=config.client_id, config=config, healthcheck=False
            )
            with run.state.session as ib, stop_on_journal_failure(journal):
                job(ib)
                # The gateway lost while the last row waited for its answer is a lost
                # gateway (exit 1) like on any other row, not just an unconfirmed order.
                run.state.check_connected(ib)


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
    started: float = field(default_factory=time.monotonic)
    session: Any = None  # the run's ibkr_session (its connect attempts go to the metrics)
    failure_class: str | None = None  # of the connect failure that ended the run
    reason: str = ""  # why the run failed, for its ERROR line, alert and ping
    summary: str = ""  # the printed summary (the healthcheck ping's body)

    def check_connected(self, ib: Any) -> bool:
        """Before each order: stop cleanly (exit 1) when the session lost the gateway.

        Returning from the block instead of raising lets the session report the loss
        once ("connection lost") rather than a second time as a failed block.
        """
        if ib.isConnected():
            return True
        self.lost = f"{LOST_GATEWAY}; the rest was not attempted: check TWS"
        return False

    @property
    def problems(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.event in PROBLEM_EVENTS]


def run_script(state: RunState, body: Callable[[], None], *, stderr: IO[str] | None = None) -> int:
    """Run ``body`` and turn how it ended into the documented exit code.

    Expected failures become one line on stderr, never a traceback, and one ERROR line
    in the log (``script.end``) with the exit code and the reason; the alert and the
    healthcheck ping are :func:`script_main`'s (:mod:`.run_alerts`). Unexpected
    exceptions propagate: they are bugs and deserve their traceback.
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
    except (ConfigError, PlanError, JournalError, UsageError, RunLockError) as exc:
        code, reason = ExitCode.BAD_INPUT, str(exc)
    except RunLocked as exc:
        code, reason = ExitCode.LOCKED, str(exc)
    except ConnectionFailed as exc:
        # Read-Only API is its own code whether it shows at connect (the sync's open-orders
        # request refused with 321) or on the first order: a setting to change, not a
        # gateway to wait for.
        read_only = exc.failure_class == FailureClass.READ_ONLY
        code = ExitCode.READ_ONLY_API if read_only else ExitCode.CONNECT_FAILED
        # The error's own text already starts "could not connect to HOST:PORT ...".
        reason = f"{READ_ONLY_REASON}; {exc}" if read_only else str(exc)
        state.failure_class = exc.failure_class
    except LiveAccountRefused as exc:
        code, reason = ExitCode.LIVE_ACCOUNT, f"live account refused, nothing sent: {exc}"
    except BaseException as exc:  # Ctrl-C, SIGTERM, a lost gateway; the rest propagates
        stop = how_stopped(exc)
        if stop is None:
            raise
        code, reason = stop.code, stop.reason
    state.reason = reason or problems_reason(state, code)
    if state.header:
        print_summary(state, code)
    if reason:
        write_line(err, f"{state.script}: error: {reason}")
    state.summary = "\n".join(filter(None, [state.summary, reason and f"error: {reason}"]))
    if state.logging_ready:
        counts: dict[str, int] = {}
        for o in state.outcomes:
            counts[o.event] = counts.get(o.event, 0) + 1
        end = log.error if code else log.info
        end("script.end", exit_code=int(code), outcomes=counts, reason=state.reason or None)
    return int(code)
