"""Resilient IB Gateway / TWS sessions for unattended trading scripts."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
