"""``python -m ibkr_resilience`` is the ``ibkr-resilience`` command."""

import sys

from ._app.cli import main

sys.exit(main())
