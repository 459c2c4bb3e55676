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


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ.get("IBKR_PORT") or PAPER_PORT)
    ib = connect(client_id=10, port=port)
    try:
        account = get_account(ib)
        positions = [p for p in ib.positions() if p.account == account]
        print(f"connected: account {account}, {len(positions)} positions, "
              f"{len(ib.openTrades())} open orders")
    finally:
        disconnect(ib)
    print(f"disconnected: {not ib.isConnected()}")


if __name__ == "__main__":
    main()
