#!/usr/bin/env python3
"""Flatten the paper account: cancel the orders that could reopen it, then close.

Run it after the close or with ``--moc`` before it (docs/scripts.md; exit codes in
``--help``). This file only hands over to ``ibkr_resilience._app.jobs.close``, which
``lib/job_entry.py`` finds in the installed package or, failing that, in this checkout.
"""

from __future__ import annotations

import sys

if __package__:  # python -m scripts.paper_trading.close_positions
    from .lib.job_entry import early_signals, ended, job_main
else:  # python scripts/paper_trading/close_positions.py: this folder is sys.path[0]
    from lib.job_entry import early_signals, ended, job_main  # type: ignore[no-redef]

if __name__ == "__main__":  # a process of its own: a signal during start-up ends it as 143
    early_signals()

main = job_main("close", process_start=__name__ == "__main__")

if __name__ == "__main__":
    sys.exit(ended(main()))
