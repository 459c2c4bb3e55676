"""What the simulator tests do with a real client, written once: the initial-sync
requests, waiting on the client's own loop, connecting while a client id is busy."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ibkr_resilience._connect.compat import IB
from ibkr_resilience.simulator import FakeGateway

SYNC_REQUESTS = [
    "startApi",
    "reqPositions",
    "reqOpenOrders",
    "reqCompletedOrders",
    "reqAccountUpdates",
    "reqAccountUpdatesMulti",
    "reqExecutions",
]
"""What a client sends when it connects (``ib_insync``'s initial sync, the official
client's equivalent requests), in the order ``ib_insync`` sends them."""


def wait_until(ib: IB, predicate: Callable[[], bool], timeout: float = 3.0) -> bool:
    """Run the client's loop until ``predicate()`` holds (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        ib.waitOnUpdate(timeout=0.05)
    return True


def connect_once_the_id_is_free(gw: FakeGateway, client_id: int = 10) -> tuple[IB, int]:
    """Connect as ``client_id``, retrying each 326 (a 0.5 s attempt) for up to 5 s; the
    connected client and how many attempts were refused."""
    refused = 0
    deadline = time.monotonic() + 5
    while True:
        ib = IB()
        try:
            ib.connect("127.0.0.1", gw.port, clientId=client_id, timeout=0.5)
            return ib, refused
        except TimeoutError:
            refused += 1
            assert time.monotonic() < deadline


@pytest.fixture(name="ib")
def connected_ib(fake_gateway: FakeGateway) -> Iterator[Any]:
    """A real client connected to the test's gateway (client id 10), disconnected after.

    A test module uses it as ``ib`` by importing ``connected_ib``."""
    client = IB()
    client.connect("127.0.0.1", fake_gateway.port, clientId=10, timeout=5)
    try:
        yield client
    finally:
        client.disconnect()
