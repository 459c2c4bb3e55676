"""Trading scripts, importable from the repository root (``scripts.paper_trading...``)."""
