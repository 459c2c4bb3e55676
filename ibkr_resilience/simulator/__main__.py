"""``python -m ibkr_resilience.simulator``: serve a simulated IB Gateway until Ctrl-C.

Example::

    python -m ibkr_resilience.simulator --port 4002 --scenario restart:20 \\
        --accounts DU1234567 --positions positions.csv

Each connection and message is logged as one JSON line on stderr (or as console
lines with ``IBKR_LOG_FORMAT=console``). Bad arguments print one line and exit 2.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from .._core.config import GATEWAY_PAPER_PORT
from .._core.logconfig import configure_logging
from ._gateway import FakeGateway
from ._scenarios import SCENARIOS, Scenario
from ._state import load_positions_csv

EXIT_BAD_INPUT = 2


def _parser() -> argparse.ArgumentParser:
    scenarios = "\n".join(
        f"  {name}{':SECONDS' if takes else ''}: {text}"
        for name, (takes, text) in SCENARIOS.items()
    )
    ap = argparse.ArgumentParser(
        prog="python -m ibkr_resilience.simulator",
        description="Serve a simulated IB Gateway (TWS API) on loopback, with faults.",
        epilog=f"scenarios:\n{scenarios}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    ap.add_argument(
        "--port",
        type=int,
        default=GATEWAY_PAPER_PORT,
        help=f"port (default {GATEWAY_PAPER_PORT}, IB Gateway paper; 0 = any free)",
    )
    ap.add_argument("--scenario", default="normal", help="NAME or NAME:SECONDS (see below)")
    ap.add_argument(
        "--accounts",
        default="DU1234567",
        help="comma-separated managed accounts (paper ids start with D)",
    )
    ap.add_argument(
        "--relay",
        action="store_true",
        help="put a socat-like relay in front (as ib-gateway-docker does): the port "
        "stays open while the gateway is down or restarting, and connections are "
        "then accepted and closed at once",
    )
    ap.add_argument(
        "--positions", metavar="CSV", help="positions file: symbol,quantity[,avg_cost,account]"
    )
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        scenario = Scenario.parse(args.scenario)
        accounts = [a.strip() for a in args.accounts.split(",") if a.strip()]
        if not accounts:
            raise ValueError("--accounts: at least one account is needed")
        if not 0 <= args.port <= 65535:
            raise ValueError(f"--port: {args.port} is not a port number (0-65535)")
        positions = load_positions_csv(args.positions, accounts[0]) if args.positions else []
        gateway = FakeGateway(
            args.port,
            args.host,
            accounts=accounts,
            positions=positions,
            scenario=scenario,
            relay=args.relay,
        )
    except (ValueError, OSError) as exc:
        print(f"simulator: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    configure_logging(script="simulator")
    # Every message is a DEBUG line of the simulator's logger: shown here, where the
    # simulator is the application, and kept out of the scripts' logs in the demo.
    logging.getLogger("ibkr_resilience.simulator").setLevel(logging.DEBUG)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        gateway.start()
    except OSError as exc:
        print(
            f"simulator: error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    print(
        f"simulated IB Gateway on {args.host}:{gateway.port} (scenario {scenario}); Ctrl-C to stop",
        file=sys.stderr,
        flush=True,
    )
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        gateway.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
