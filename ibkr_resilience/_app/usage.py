"""The command line's one rule for usage mistakes, shared by the CLI and both scripts."""

from __future__ import annotations

import argparse
from typing import NoReturn

__all__ = ["BAD_USAGE_EXIT", "OneLineErrorParser"]

BAD_USAGE_EXIT = 2
"""What argparse (and every documented exit-code table here) uses for bad usage."""


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse with a one-line usage error and exit 2: cron mail and logs get the reason,
    not the multi-line usage block (``--help`` still prints it)."""

    def error(self, message: str) -> NoReturn:
        self.exit(BAD_USAGE_EXIT, f"{self.prog}: error: {message} (see --help)\n")
