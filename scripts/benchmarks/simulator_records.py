"""Bench section: the simulator's records stay flat over long runs (issue 13, item 5).

After N recorded messages (1k, 10k, 100k; the gateway's default ring keeps the last
``DEFAULT_RECORD_LIMIT``), how long a query for a rare name takes, how long ``wait_for``
takes to see a new record, and how much memory the records hold; next to the same
history kept the old way (an unbounded list scanned on every query).
"""

from __future__ import annotations

import statistics
import threading
import time
import tracemalloc
from typing import Any

from ibkr_resilience.simulator import Received
from ibkr_resilience.simulator._recording import Recorder

NAMES = ("reqMktData", "placeOrder", "reqPositions", "reqOpenOrders")
FIELDS = ("1", "11", "1", "265598", "AAPL", "STK")


def record(i: int, name: str) -> Received:
    return Received(i, 1, 1, name, FIELDS, float(i), None)


class ScanAll:
    """The old way: every message kept in one list, every query a full scan."""

    def __init__(self) -> None:
        self.all: list[Received] = []

    def message(self, r: Received) -> None:
        self.all.append(r)

    def messages(self, name: str) -> list[Received]:
        return [r for r in self.all if r.name == name]


def fill(store: Any, n: int) -> None:
    for i in range(n):
        store.message(record(i, NAMES[i % len(NAMES)]))
    store.message(record(n, "reqCurrentTime"))  # the rare one a test waits for


def query_us(store: Any, repeat: int = 200) -> float:
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        found = store.messages("reqCurrentTime")
        samples.append(time.perf_counter() - t0)
        assert len(found) == 1
    return statistics.median(samples) * 1e6


def wait_for_us(rec: Recorder, repeat: int = 50) -> float:
    """From a record appended by another thread to ``wait_for`` returning."""
    samples = []
    for k in range(repeat):
        name = f"sim.bench.{k}"
        appended: list[float] = []

        def later(name: str = name, appended: list[float] = appended) -> None:
            time.sleep(0.001)  # a benchmark: let the waiter block first
            appended.append(time.perf_counter())
            rec.event(name)

        t = threading.Thread(target=later)
        t.start()
        assert rec.wait_for(lambda name=name: bool(rec.events(name)), 5)  # type: ignore[misc]
        done = time.perf_counter()
        t.join()
        samples.append(done - appended[0])
    return statistics.median(samples) * 1e6


def memory_kb(make: Any, n: int) -> float:
    tracemalloc.start()
    store = make()
    fill(store, n)
    size = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return size / 1024


def simulator_records(sizes: tuple[int, ...] = (1_000, 10_000, 100_000)) -> list[dict[str, Any]]:
    rows = []
    for n in sizes:
        rec, old = Recorder(), ScanAll()
        fill(rec, n)
        fill(old, n)
        rows.append(
            {
                "recorded": n,
                "kept": len(rec.messages()),
                "query_us": query_us(rec),
                "old_query_us": query_us(old),
                "wait_for_us": wait_for_us(rec),
                "memory_kb": memory_kb(Recorder, n),
                "old_memory_kb": memory_kb(ScanAll, n),
            }
        )
    return rows
