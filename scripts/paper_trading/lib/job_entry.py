"""Find a job's ``main`` in the package, from a checkout whether it is installed or not.

The cron wrappers ``submit_orders.py`` and ``close_positions.py`` must run the same code
as the installed package (and ``ibkr-resilience demo``), yet also run straight from a
checkout on a machine where nobody ran ``pip install``. This module imports only the
standard library, so the wrappers can load it before the package is on the path.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[3]
"""The repository root: ``scripts/paper_trading/lib/`` is three levels below it."""


def job_main(job: str) -> Callable[[], int]:
    """``ibkr_resilience._app.jobs.<job>.main``; the checkout's copy if none is installed."""
    module = f"ibkr_resilience._app.jobs.{job}"
    try:
        loaded = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != "ibkr_resilience":
            raise
        sys.path.insert(0, str(CHECKOUT))
        loaded = importlib.import_module(module)
    main: Callable[[], int] = loaded.main
    return main
