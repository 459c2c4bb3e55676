"""``ibkr-resilience``: the ``check`` pre-flight and the offline ``demo``.

``check`` is for cron pre-flights and container health checks: one line on stdout and
exit 0/1, so a shell ``&&`` or a HEALTHCHECK can use it. ``demo`` is the main job on a
fresh machine: it runs the real scripts against the bundled simulated gateway while the
gateway is restarting, with no network and no configuration.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._connect.accounts import is_paper_account
from .._core.config import GATEWAY_PAPER_PORT
from ..errors import ConfigError, ConnectionFailed, LiveAccountRefused

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
CHECK_CLIENT_ID = 99
"""A client id of its own, so a pre-flight never collides with the trading scripts."""


def _no_alert(text: str) -> None:
    """A health check reports through its exit code; paging on every probe is noise."""


def check(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from .._connect.accounts import describe_ib
    from .._core.logconfig import configure_logging
    from .._session.session import ibkr_session

    try:
        configure_logging(script="ibkr-resilience-check", env=env)
        start = time.monotonic()
        with ibkr_session(
            args.client_id,
            args.host,
            args.port,
            timeout=args.timeout,
            max_attempts=1 if args.once else None,
            paper_only=False,
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
        print(f"ibkr-resilience check: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ConnectionFailed as exc:
        print(
            f"FAIL {exc.failure_class}: {type(exc.last_error).__name__}: {exc.last_error} "
            f"({exc.attempts} attempt(s), {exc.elapsed:.1f} s)"
        )
        return EXIT_FAILED
    except LiveAccountRefused as exc:  # paper_only=False makes this unreachable; kept safe
        print(f"FAIL live_account_refused: {exc}")
        return EXIT_FAILED
    accounts = ",".join(info["accounts"]) or "-"
    paper = bool(info["accounts"]) and all(is_paper_account(a) for a in info["accounts"])
    print(
        f"ok {host}:{port} server_version={info['server_version']} accounts={accounts} "
        f"{'paper' if paper else 'LIVE'} connect_ms={connect_ms:.1f}"
    )
    return EXIT_OK


def demo(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from .demo import run_demo

    return int(run_demo(restart_s=args.restart, workdir=args.dir, env=env))


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
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
    d.add_argument("--restart", type=float, default=4.0, metavar="SECONDS",
                   help="how long the simulated gateway stays closed (default 4)")
    d.add_argument("--dir", type=Path, default=None,
                   help="where to write the journal and the JSON log (default: a new temp dir)")

    c = sub.add_parser(
        "check",
        help="connect once with the configured settings; print one line; exit 0 or 1",
        description="Connects with the settings from the environment (IBKR_HOST, IBKR_PORT, "
        "IBKR_CONNECT_*), prints one line (ok, server version, accounts, connect time; or "
        "the failure class and reason) and exits 0 (ok), 1 (could not connect) or 2 (bad "
        "configuration). No alert is sent unless --alert is given.",
    )
    c.add_argument("--host", default=None, help="gateway host (default IBKR_HOST or 127.0.0.1)")
    c.add_argument("--port", type=int, default=None,
                   help=f"gateway port (default IBKR_PORT or 7497; IB Gateway paper is "
                        f"{GATEWAY_PAPER_PORT})")
    c.add_argument("--client-id", type=int, default=CHECK_CLIENT_ID,
                   help=f"client id (default {CHECK_CLIENT_ID}, kept apart from the scripts')")
    c.add_argument("--timeout", type=float, default=None,
                   help="per-attempt bound in seconds (default IBKR_CONNECT_TIMEOUT or 15)")
    c.add_argument("--once", action="store_true",
                   help="a single attempt instead of the configured retries")
    c.add_argument("--alert", action="store_true", help="send the alert if the check fails")
    return ap


def main(argv: Sequence[str] | None = None, *, env: Mapping[str, str] | None = None) -> int:
    args = _parser().parse_args(argv)
    environ: Mapping[str, str] = os.environ if env is None else env
    commands: dict[str, Any] = {"check": check, "demo": demo}
    try:
        return int(commands[args.command](args, environ))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
