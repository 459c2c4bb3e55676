#!/usr/bin/env python3
"""The OLD call style, unchanged: ``connect()`` / ``get_account()`` / ``disconnect()``.

Scripts written before ``ibkr_session`` existed look like this and must keep working;
``tests/test_scripts_e2e.py`` runs this file against the simulated gateway with the
real ib_insync client to prove it. New code should use ``with ibkr_session(...)``.

    python docs/examples/legacy_connect.py [PORT]      # default: $IBKR_PORT, else 7497

Retries, per-attempt timeout and the give-up alert come from ``IBKR_CONNECT_*`` and
``IFDS_TELEGRAM_*``, exactly as before; after the last failed attempt the process exits 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# Old scripts ran from the repository root; make that work from anywhere too.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scripts.paper_trading.lib.connection import (
    PAPER_PORT,
    connect,
    disconnect,
    get_account,
)


def parse_port(argv: list[str]) -> int:
    """The port argument; a mistake is one line on stderr and exit 2, never a traceback."""
    ap = argparse.ArgumentParser(
        prog="legacy_connect.py",
        description="Connect the old way (connect/get_account/disconnect) and print what "
        "the paper account holds. Exit 1 when every connect attempt failed.",
    )
    ap.add_argument("port", nargs="?", help="API port (default: $IBKR_PORT, else 7497)")
    args = ap.parse_args(argv)
    text = args.port if args.port is not None else os.environ.get("IBKR_PORT") or str(PAPER_PORT)
    if not text.strip().isdigit() or not 1 <= int(text) <= 65535:
        print(
            f"legacy_connect.py: error: port {text!r}: expected an integer 1-65535", file=sys.stderr
        )
        sys.exit(2)
    return int(text)


def main() -> None:
    port = parse_port(sys.argv[1:])
    ib = connect(client_id=10, port=port)
    try:
        account = get_account(ib)
        positions = [p for p in ib.positions() if p.account == account]
        print(
            f"connected: account {account}, {len(positions)} positions, "
            f"{len(ib.openTrades())} open orders"
        )
    finally:
        disconnect(ib)
    print(f"disconnected: {not ib.isConnected()}")


if __name__ == "__main__":
    main()
