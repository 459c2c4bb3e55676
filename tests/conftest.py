"""Shared fixtures: the simulated gateway (``fake_gateway``) comes from the package's plugin."""

pytest_plugins = ["ibkr_resilience.simulator.pytest_plugin"]
