"""pytest fixtures for the simulated gateway.

Enable with ``pytest_plugins = ["ibkr_resilience.simulator.pytest_plugin"]`` in a
``conftest.py``. ``fake_gateway`` is a started ``FakeGateway`` on a free port,
stopped after the test; a simulator bug seen during the test fails it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ._gateway import FakeGateway


@pytest.fixture
def fake_gateway() -> Iterator[FakeGateway]:
    with FakeGateway() as gw:
        yield gw
    errors = gw.events("sim.internal_error")
    assert not errors, f"the simulated gateway hit an internal error: {errors}"
