#!/usr/bin/env python3
"""Close the paper account's positions (see docs/scripts.md).

A thin wrapper: the logic lives in ``ibkr_resilience._app.jobs.close`` so that the installed
package (and ``ibkr-resilience demo``) runs exactly the same code. Run it from a
checkout (``python scripts/paper_trading/close_positions.py --help``) or with the package
installed; exit codes are listed in ``--help``.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from ibkr_resilience._app.jobs.close import main
except ModuleNotFoundError as exc:  # a checkout without the package installed
    if exc.name != "ibkr_resilience":
        raise
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from ibkr_resilience._app.jobs.close import main

if __name__ == "__main__":
    sys.exit(main())
