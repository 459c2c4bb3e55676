"""``ibkr-resilience``: the ``check`` pre-flight and the offline ``demo``.

``check`` is for cron pre-flights and container health checks: one bounded attempt (or
retries within ``--wait``), one line on stdout and nothing else, exit 0/1/2/4, so a shell
``&&`` or a HEALTHCHECK can use it. ``demo`` is the main job on a
fresh machine: it runs the real scripts against the bundled simulated gateway while the
gateway is restarting, with no network and no configuration.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .._connect.accounts import is_paper_account
from .._core.config import GATEWAY_PAPER_PORT, SessionConfig, check_setting
from ..errors import ConfigError, ConnectionFailed, LiveAccountRefused
from .jobs.summary import write_line
from .usage import OneLineErrorParser

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_LIVE_ACCOUNT = 4
"""The same codes as the trading scripts' table (docs/scripts.md): 4 is a live account."""
CHECK_CLIENT_ID = 99
"""A client id of its own, so a pre-flight never collides with the trading scripts."""
_NOT_FOR_CHECK = ("IBKR_LOG_FILE", "IBKR_LOG_STDERR_LEVEL")
"""The job's log settings: a probe every 30 s (a HEALTHCHECK) must not fill the job's log."""


def _no_alert(text: str) -> None:
    """A health check reports through its exit code; paging on every probe is noise."""


def _quiet_logging(args: argparse.Namespace, env: Mapping[str, str]) -> None:
    """``-v``: the JSON log lines on stderr; else nowhere (stdout has the one line)."""
    from .._core.logconfig import configure_logging

    log_env = {k: v for k, v in env.items() if k not in _NOT_FOR_CHECK}
    if args.verbose:
        configure_logging(script="ibkr-resilience-check", env=log_env)
    else:
        # Configured all the same (unconfigured structlog would print to stdout), into
        # a buffer nobody reads: a probe's few lines.
        configure_logging(script="ibkr-resilience-check", env=log_env, stream=io.StringIO())


def _attempt_bound(timeout: float | None, env: Mapping[str, str]) -> float:
    """``--timeout``, else the configured per-attempt bound (``IBKR_CONNECT_TIMEOUT``)."""
    return timeout if timeout is not None else float(SessionConfig.from_env(env).timeout)


def check(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from .._connect.accounts import describe_ib
    from .._session.session import ibkr_session

    try:
        _quiet_logging(args, env)
        start = time.monotonic()
        with ibkr_session(
            args.client_id,
            args.host,
            args.port,
            timeout=args.timeout,
            # One bounded attempt unless --wait gives a budget to ride out a restart in.
            # Without --wait the budget is that attempt's --timeout: a gateway in an IB
            # outage (1100) is then reported at once, not waited on for
            # IBKR_CONNECT_MAX_TIME (found by a newcomer: 120 s for `--timeout 3`).
            max_attempts=None if args.wait else 1,
            max_time=args.wait or _attempt_bound(args.timeout, env),
            alert=None if args.alert else _no_alert,
            # A probe is not the job: it must not ping the job's healthcheck, nor touch
            # the job's alert de-dup state unless it alerts itself.
            healthcheck=False,
            dedup=None if args.alert else False,
            env=env,
        ) as ib:
            connect_ms = (time.monotonic() - start) * 1000
            info = describe_ib(ib)
            host, port = ib.client.host, ib.client.port
    except ConfigError as exc:
        write_line(sys.stderr, f"ibkr-resilience check: error: {exc}")
        return EXIT_BAD_INPUT
    except ConnectionFailed as exc:
        write_line(
            sys.stdout,
            f"FAIL {exc.failure_class}: {type(exc.last_error).__name__}: {exc.last_error} "
            f"({exc.attempts} attempt(s), {exc.elapsed:.1f} s)",
        )
        return EXIT_FAILED
    except LiveAccountRefused as exc:
        accounts = ",".join(exc.accounts) or "-"
        write_line(
            sys.stdout,
            f"FAIL live_account: accounts={accounts}, no paper account (IBKR_ALLOW_LIVE=1 "
            "allows it)",
        )
        return EXIT_LIVE_ACCOUNT
    accounts = ",".join(info["accounts"]) or "-"
    kinds = {is_paper_account(a) for a in info["accounts"]}
    # A login with both kinds is not "LIVE": the jobs trade its paper account.
    label = {frozenset({True}): "paper", frozenset({True, False}): "paper+LIVE"}.get(
        frozenset(kinds), "LIVE"
    )
    # A closed pipe (`check | true`) or a full disk changes neither the code nor adds a
    # traceback: the code is the answer a monitoring script reads.
    write_line(
        sys.stdout,
        f"ok {host}:{port} server_version={info['server_version']} accounts={accounts} "
        f"{label} connect_ms={connect_ms:.1f}",
    )
    return EXIT_OK


def demo(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from .demo import run_demo

    if args.dir is not None:
        # Checked before the gateway starts: an unwritable place is a user mistake
        # (one line, exit 2), not a traceback halfway through the demo.
        try:
            args.dir.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=args.dir):
                pass
        except OSError as exc:
            write_line(
                sys.stderr,
                f"ibkr-resilience demo: error: --dir {str(args.dir)!r}: cannot write there "
                f"({exc.strerror or exc})",
            )
            return EXIT_BAD_INPUT
    return int(run_demo(restart_s=args.restart, workdir=args.dir, env=env))


def _seconds(*, zero_ok: bool) -> Callable[[str], float]:
    """An argparse type: a finite number of seconds (> 0, or >= 0 with ``zero_ok``)."""

    def parse(text: str) -> float:
        try:
            return float(check_setting("max_retry_delay" if zero_ok else "timeout", text))
        except ConfigError:
            expected = ">= 0" if zero_ok else "> 0"
            raise argparse.ArgumentTypeError(
                f"expected a finite number of seconds {expected}, not {text!r}"
            ) from None

    return parse


def _parser() -> argparse.ArgumentParser:
    ap = OneLineErrorParser(
        prog="ibkr-resilience",
        description="Resilient IB Gateway sessions: offline demo and connection check.",
    )
    sub = ap.add_subparsers(dest="command", required=True)

    d = sub.add_parser(
        "demo",
        help="run the trading scripts against a simulated gateway that is restarting",
        description="Starts the simulated IB Gateway in-process, closed for a few seconds "
        "(a restart), runs submit_orders on the bundled example plan (refused attempts, "
        "then the connect as soon as the port opens), runs it again (nothing is placed "
        "twice), then close_positions. Needs no network and no configuration.",
    )
    d.add_argument(
        "--restart",
        type=_seconds(zero_ok=True),
        default=4.0,
        metavar="SECONDS",
        help="how long the simulated gateway stays closed (default 4)",
    )
    d.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="where to write the journal and the JSON log (default: a new temp dir)",
    )

    c = sub.add_parser(
        "check",
        help="one bounded connect attempt; print one line; exit 0, 1, 2 or 4",
        description="Connects once with the settings from the environment (IBKR_HOST, "
        "IBKR_PORT, IBKR_CONNECT_TIMEOUT), prints one line on stdout (ok, server version, "
        "accounts, connect time; or FAIL, the failure class and reason) and nothing else, "
        "and exits 0 (ok), 1 (could not connect), 2 (bad configuration or arguments) or 4 "
        "(the gateway offers no paper account and IBKR_ALLOW_LIVE is not set). For cron "
        "pre-flights and container HEALTHCHECKs. No alert is sent unless --alert is given.",
    )
    c.add_argument("--host", default=None, help="gateway host (default IBKR_HOST or 127.0.0.1)")
    c.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"gateway port (default IBKR_PORT or 7497; IB Gateway paper is {GATEWAY_PAPER_PORT})",
    )
    c.add_argument(
        "--client-id",
        type=int,
        default=CHECK_CLIENT_ID,
        help=f"client id (default {CHECK_CLIENT_ID}, kept apart from the scripts')",
    )
    c.add_argument(
        "--timeout",
        type=_seconds(zero_ok=False),
        default=None,
        metavar="SECONDS",
        help="per-attempt bound (default IBKR_CONNECT_TIMEOUT or 15)",
    )
    c.add_argument(
        "--wait",
        type=_seconds(zero_ok=True),
        default=None,
        metavar="SECONDS",
        help="retry for up to this long (e.g. to ride out a gateway restart), "
        "each attempt still bounded by --timeout; default: one attempt",
    )
    c.add_argument("--once", action="store_true", help=argparse.SUPPRESS)  # the default now
    c.add_argument("--alert", action="store_true", help="send the alert if the check fails")
    c.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="the JSON log lines of the attempt(s) on stderr",
    )
    return ap


def main(argv: Sequence[str] | None = None, *, env: Mapping[str, str] | None = None) -> int:
    args = _parser().parse_args(argv)
    environ: Mapping[str, str] = os.environ if env is None else env
    commands: dict[str, Any] = {"check": check, "demo": demo}
    try:
        return int(commands[args.command](args, environ))
    except ConfigError as exc:
        # A setting read where the client library loads (IBKR_CLIENT_LIBRARY): the
        # commands import it only when they run, so this is one line too.
        write_line(sys.stderr, f"ibkr-resilience {args.command}: error: {exc}")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        write_line(sys.stderr, "interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
