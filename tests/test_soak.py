"""Soak: many sessions against one simulated gateway, nothing left behind.

500 sequential ``ibkr_session`` enter/exit cycles in one thread, and 20 concurrent
sessions with distinct client ids (one thread each, each with its own asyncio loop, as
ib_insync needs), all with the real client library on 127.0.0.1. After each: every
descriptor and thread that existed before is all that exists (``/proc/self/fd``,
``threading.active_count()``), no ResourceWarning (unclosed socket, transport or loop),
and the gateway saw exactly the expected connections, each closed by the client.
Results are in docs/reliability.md.
"""

from __future__ import annotations

import gc
import io
import json
import os
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from ibkr_resilience import configure_logging, ibkr_session
from ibkr_resilience._connect.compat import ensure_event_loop
from ibkr_resilience.simulator import FakeGateway
from ibkr_resilience.testing import restored_logging

SEQUENTIAL = 500
CONCURRENT = 20
ROUNDS = 5  # concurrent rounds, to catch a leak that only shows some of the time


@pytest.fixture
def log_buffer() -> Iterator[io.StringIO]:
    """The real JSON logging into a buffer, undone after the test."""
    buf = io.StringIO()
    with restored_logging():
        configure_logging(format="json", level="INFO", stream=buf, script="soak", env={})
        yield buf


def ended(buf: io.StringIO) -> Counter[str]:
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    return Counter(r["outcome"] for r in lines if r["event"] == "ibkr.session.end")


def baseline_fds() -> dict[int, str]:
    """``open_fds()`` once earlier tests' garbage is collected: a file or pipe object an
    earlier test dropped would otherwise be counted here and closed by the collector
    during this test (a "leak" in reverse that says nothing about the sessions)."""
    gc.collect()
    return open_fds()


def open_fds() -> dict[int, str]:
    """This process's descriptors and what they point to (``socket:[inode]``, files)."""
    fds: dict[int, str] = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue  # the descriptor listdir itself used, closed since
    return fds


def session(gw: FakeGateway, client_id: int, alerts: list[str]) -> Any:
    return ibkr_session(
        client_id,
        "127.0.0.1",
        gw.port,
        timeout=5,
        max_attempts=1,
        max_time=10,
        alert=alerts.append,
        dedup=False,
        healthcheck=False,
        env={},
    )


def client_socket(ib: Any) -> str:
    """The client's socket as ``/proc/self/fd`` shows it (``socket:[inode]``)."""
    sock = ib.client.conn.transport.get_extra_info("socket")
    return f"socket:[{os.fstat(sock.fileno()).st_ino}]"


def warm_up(gw: FakeGateway) -> int:
    """One session first: this thread's event loop (selector, self-pipe) is created once
    and lives on; what is measured is what each session adds. Returns the number of
    connections the gateway has closed so far."""
    with session(gw, 1, []) as ib:
        assert ib.isConnected()
    assert gw.wait_for(lambda: len(gw.events("sim.connection.close")) == 1, timeout=5)
    return 1


def gateway_saw(gw: FakeGateway, expected: int) -> tuple[list[Any], list[Any]]:
    """The connections opened and closed after the warm-up, once the gateway has closed
    its side of all ``expected`` of them (it does so after seeing the client's close)."""
    assert gw.wait_for(lambda: len(gw.events("sim.connection.close")) >= expected + 1, 10)
    assert gw.connection_count() == 0
    return gw.events("sim.connection.open")[1:], gw.events("sim.connection.close")[1:]


def test_the_socket_is_closed_when_the_block_exits(log_buffer: io.StringIO) -> None:
    """Regression: asyncio closes a transport's socket on the loop's next step, and after
    the block nothing may run the loop again; the session finishes the close itself."""
    with FakeGateway() as gw:
        warm_up(gw)
        before = baseline_fds()
        with session(gw, 10, []) as ib:
            assert ib.isConnected()
            mine = client_socket(ib)
            assert mine in open_fds().values()
        assert mine not in open_fds().values()  # at once: no loop step, no gc in between
        gateway_saw(gw, 1)
        assert open_fds() == before


def test_500_sequential_sessions_leak_nothing(log_buffer: io.StringIO) -> None:
    alerts: list[str] = []
    with FakeGateway() as gw:
        warm_up(gw)
        fds, threads = baseline_fds(), threading.active_count()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            started = time.monotonic()
            for _ in range(SEQUENTIAL):
                with session(gw, 10, alerts) as ib:
                    assert ib.reqCurrentTime() is not None  # one real round trip each
                    mine = client_socket(ib)
                assert mine not in open_fds().values()
            took = time.monotonic() - started
            gc.collect()
        opened, closed = gateway_saw(gw, SEQUENTIAL)
        assert open_fds() == fds
        assert threading.active_count() == threads
        assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
        assert len(opened) == len(closed) == SEQUENTIAL
        assert {e["reason"] for e in closed} == {"client closed"}
        assert {e["client_id"] for e in closed} == {10}
        assert len(gw.messages("startApi", client_id=10)) == SEQUENTIAL
    assert alerts == []
    assert ended(log_buffer) == {"ok": SEQUENTIAL + 1}  # + the warm-up
    assert took < 30  # ~1.5 s here; a leak or a stall would show long before
    print(
        f"\n{SEQUENTIAL} sequential sessions: {took:.2f} s, "
        f"{took / SEQUENTIAL * 1000:.2f} ms per enter+exit"
    )


def test_20_concurrent_sessions_with_distinct_client_ids(log_buffer: io.StringIO) -> None:
    """Each thread has its own event loop (``ensure_event_loop()`` creates it; the thread
    that made it closes it). All 20 are connected at the same moment, then leave."""
    alerts: list[str] = []
    client_ids = list(range(100, 100 + CONCURRENT))
    main_loop = ensure_event_loop()
    with FakeGateway() as gw:
        warm_up(gw)
        fds, threads = baseline_fds(), threading.active_count()
        rounds: list[float] = []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            for _ in range(ROUNDS):
                barrier = threading.Barrier(CONCURRENT + 1)
                errors: list[BaseException] = []
                loops: list[Any] = []

                def work(
                    client_id: int,
                    barrier: threading.Barrier = barrier,
                    errors: list[BaseException] = errors,
                    loops: list[Any] = loops,
                ) -> None:
                    loop = ensure_event_loop()  # new in this thread
                    loops.append(loop)
                    try:
                        with session(gw, client_id, alerts) as ib:
                            assert ib.reqCurrentTime() is not None
                            mine = client_socket(ib)
                            barrier.wait(60)  # all connected now
                            barrier.wait(60)  # the main thread has looked
                        assert mine not in open_fds().values()  # before the loop closes
                    except BaseException as exc:
                        errors.append(exc)
                        barrier.abort()
                    finally:
                        loop.close()

                workers = [threading.Thread(target=work, args=(cid,)) for cid in client_ids]
                started = time.monotonic()
                for worker in workers:
                    worker.start()
                # The deadlines are hard stops (20 connects share two cores with whatever
                # else runs); the test asserts what the gateway saw, not how fast.
                barrier.wait(60)
                connected = gw.connected_client_ids()
                barrier.wait(60)
                for worker in workers:
                    worker.join(60)
                rounds.append(time.monotonic() - started)
                assert errors == []
                assert connected == client_ids  # 20 sessions at once, each with its id
                assert len({id(loop) for loop in loops}) == CONCURRENT
                assert main_loop not in loops
            gc.collect()
        opened, closed = gateway_saw(gw, CONCURRENT * ROUNDS)
        assert open_fds() == fds
        assert threading.active_count() == threads
        assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
        assert len(opened) == len(closed) == CONCURRENT * ROUNDS
        assert {e["reason"] for e in closed} == {"client closed"}
        assert Counter(e["client_id"] for e in closed) == {cid: ROUNDS for cid in client_ids}
    assert alerts == []
    assert ended(log_buffer) == {"ok": CONCURRENT * ROUNDS + 1}
    print(
        f"\n{CONCURRENT} concurrent sessions: {max(rounds) * 1000:.0f} ms per round "
        f"(slowest of {ROUNDS})"
    )
