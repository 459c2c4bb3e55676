"""Helpers shared by the paper-trading jobs."""
