#!/usr/bin/env python3
"""Place the day's order plan, each order once however often cron runs it.

Usage: ``submit_orders.py --plan PLAN.csv`` (see docs/scripts.md and ``--help`` for the
exit codes). The logic is ``ibkr_resilience._app.jobs.submit``, found by
``lib/job_entry.py`` with or without the package installed, so cron and the demo run
the same code.
"""

from __future__ import annotations

import sys

if __package__:  # python -m scripts.paper_trading.submit_orders
    from .lib.job_entry import early_signals, ended, job_main
else:  # python scripts/paper_trading/submit_orders.py: this folder is sys.path[0]
    from lib.job_entry import early_signals, ended, job_main  # type: ignore[no-redef]

if __name__ == "__main__":  # a process of its own: a signal during start-up ends it as 143
    early_signals()

main = job_main("submit", process_start=__name__ == "__main__")

if __name__ == "__main__":
    sys.exit(ended(main()))
