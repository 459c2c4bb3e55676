"""What real gateways do at connect time (FACTS.md, "What real gateways do"), end to end.

Each test drives ``ibkr_session`` with the real client over TCP against the simulated
gateway, with the incident played by a fault on the simulator's public hook API: a socat
relay in front of a restarting gateway, transient error 326, a completed-orders request
that is never answered, the Read-Only API, and IB's servers unreachable (1100) while the
gateway's socket stays up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from client_helpers import wait_until
from loadslack import Load
from test_simulator_faults import (
    ClientIdBusyFor,
    Outage,
    ReadOnlyApi,
    RelayFront,
    Unanswered,
)

from ibkr_resilience import ConnectionFailed, SessionConfig, ibkr_session
from ibkr_resilience.simulator import (
    Connection,
    FakeGateway,
    Fault,
    Proceed,
    StartApi,
    StartApiAnswer,
)
from ibkr_resilience.testing import JsonLogCapture, RecordingAlert

LOST = "Connectivity between IB and Trader Workstation has been lost."
RESTORED = "Connectivity between IB and Trader Workstation has been restored - data maintained."


class OfflineAtConnect(Fault):
    """The gateway is up but cut off from IB (TWS 1100), from the API start of every
    connection; ending the fault sends 1102 (restored, data maintained) to everyone."""

    def on_start_api(self, conn: Connection, request: StartApi) -> StartApiAnswer:
        return Proceed(notices=((1100, LOST),))

    def on_remove(self) -> None:
        for conn in self.gateway.connections():
            self.gateway.send_error(conn, -1, 1102, RESTORED)


class EndAfter(Fault):
    """Ends another fault ``seconds`` after being installed (an incident that clears)."""

    def __init__(self, other: Fault, seconds: float) -> None:
        self.other, self.seconds = other, seconds

    def on_install(self) -> None:
        self.gateway.call_later(self.seconds, self.other.gateway.end)
        self.gateway.call_later(self.seconds, self.gateway.end)


def session(gw: FakeGateway, alerts: RecordingAlert, **kw: Any) -> Any:
    kw.setdefault("timeout", 1.0)
    kw.setdefault("max_attempts", 100)
    kw.setdefault("max_time", 10.0)
    env = kw.pop("env", {})
    return ibkr_session(10, "127.0.0.1", gw.port, alert=alerts, env=env, **kw)


def connect_fails(open_session: Callable[[], Any]) -> tuple[JsonLogCapture, ConnectionFailed]:
    """Enter the session ``open_session()`` makes, under a log capture, expecting it to
    give up: the captured log lines and the :class:`ConnectionFailed` raised."""
    with JsonLogCapture() as logs, pytest.raises(ConnectionFailed) as info, open_session():
        pass
    return logs, info.value


def test_a_relayed_restart_is_ridden_out_at_the_short_interval(fake_gateway: FakeGateway) -> None:
    """socat accepts and closes while the gateway behind restarts: retried every 0.5 s,
    connected within one interval of the gateway coming back, no alert."""
    alerts = RecordingAlert()
    fake_gateway.add_fault(RelayFront(1.5))
    with JsonLogCapture() as logs, session(fake_gateway, alerts) as ib:
        assert ib.isConnected()
    failed = logs.events("ibkr.connect.failed")
    assert failed and {f["failure_class"] for f in failed} == {"closed"}
    assert all(f["next_delay_s"] <= 0.5 for f in failed)
    back = fake_gateway.events("sim.fault.removed")[0]["at"]
    served = [e["at"] for e in fake_gateway.events("sim.api_started")]
    assert served and 0 <= served[0] - back < 1.0  # the target: within 1 s of coming back
    assert alerts.texts == []


def test_a_relay_that_never_comes_back_gives_up_at_the_budget_with_one_alert(
    fake_gateway: FakeGateway,
) -> None:
    alerts = RecordingAlert()
    fake_gateway.add_fault(RelayFront(3600))
    load = Load()
    started = time.monotonic()
    with pytest.raises(ConnectionFailed) as info, session(fake_gateway, alerts, max_time=2.0):
        pass
    assert info.value.failure_class == "closed" and info.value.attempts >= 3
    assert time.monotonic() - started < 2.0 + load.slack(1.0), load
    [text] = alerts.texts
    assert "relay" in text and "Trusted IPs" in text  # the hint names both causes


def test_transient_326_after_a_restart_connects_with_the_same_id(
    fake_gateway: FakeGateway,
) -> None:
    alerts = RecordingAlert()
    fake_gateway.add_fault(ClientIdBusyFor(10, seconds=1.0))
    with JsonLogCapture() as logs, session(fake_gateway, alerts) as ib:
        assert ib.isConnected()
    failed = logs.events("ibkr.connect.failed")
    assert failed and {f["failure_class"] for f in failed} == {"rejected"}
    assert alerts.texts == []


def test_an_unanswered_completed_orders_request_is_a_warning_not_a_failure(
    fake_gateway: FakeGateway,
) -> None:
    """Some gateways never answer reqCompletedOrders: connected inside one attempt."""
    alerts = RecordingAlert()
    fake_gateway.add_fault(Unanswered("reqCompletedOrders"))
    with JsonLogCapture() as logs, session(fake_gateway, alerts, timeout=1.0) as ib:
        assert ib.isConnected()
    success = logs.events("ibkr.connect.success")[0]
    assert success["attempt"] == 1 and success["attempt_ms"] < 1000
    [partial] = logs.events("ibkr.connect.sync_partial")
    assert partial["unanswered"] == ["completed orders"] and partial["level"] == "warning"
    assert logs.events("ibkr.connect.failed") == [] and alerts.texts == []


def test_a_stalled_sync_names_the_requests_that_got_no_answer(fake_gateway: FakeGateway) -> None:
    alerts = RecordingAlert()
    fake_gateway.set_scenario("stall_sync")
    with pytest.raises(ConnectionFailed) as info, session(fake_gateway, alerts, max_attempts=1):
        pass
    assert info.value.failure_class == "incomplete_sync"
    message = str(info.value.last_error)
    assert "no answer to:" in message and "positions" in message and "open orders" in message
    assert "no answer to:" in alerts.texts[0]


def test_read_only_api_fails_at_once_with_its_own_class_and_hint(
    fake_gateway: FakeGateway,
) -> None:
    """TWS 321 on the open-orders sync request: given up after the first attempt."""
    alerts = RecordingAlert()
    fake_gateway.add_fault(ReadOnlyApi())
    started = time.monotonic()
    logs, error = connect_fails(lambda: session(fake_gateway, alerts, timeout=5.0))
    assert time.monotonic() - started < 5.0 / 2  # at once: not the 5 s bound, not the budget
    assert error.failure_class == "read_only" and error.attempts == 1
    assert logs.events("ibkr.connect.gave_up")[0]["failure_class"] == "read_only"
    [text] = alerts.texts
    assert "Failure: read_only" in text and "Read-Only API" in text and "ReadOnlyApi=no" in text


def test_a_readonly_session_works_against_a_read_only_gateway(fake_gateway: FakeGateway) -> None:
    alerts = RecordingAlert()
    fake_gateway.add_fault(ReadOnlyApi())
    with session(fake_gateway, alerts, readonly=True) as ib:
        assert ib.isConnected() and ib.positions() == []
    assert fake_gateway.messages("reqOpenOrders") == [] and alerts.texts == []


def test_ib_offline_at_connect_is_waited_on_then_its_own_class_with_an_alert(
    fake_gateway: FakeGateway,
) -> None:
    alerts = RecordingAlert()
    fake_gateway.add_fault(OfflineAtConnect())
    load = Load()
    logs, error = connect_fails(lambda: session(fake_gateway, alerts, timeout=0.5, max_time=2.0))
    assert error.failure_class == "ib_offline"
    # One connection, held for the rest of the budget while waiting for 1101/1102: a
    # reconnect cannot help (the gateway is fine, IB is not).
    [failed] = logs.events("ibkr.connect.failed")
    assert 2000 * 0.9 <= failed["attempt_ms"] <= (2.0 + load.slack(0.3)) * 1000, (failed, load)
    assert "within 2 s" in failed["error"] or "within 1.9" in failed["error"]
    [waiting] = logs.events("ibkr.connect.ib_offline")
    assert waiting["wait_s"] <= 2.0
    assert logs.events("ibkr.connect.gave_up")[0]["reason"] == "max_time"
    assert len(fake_gateway.events("sim.connection.open")) == 1
    [text] = alerts.texts
    assert "Failure: ib_offline" in text and "1100" in text
    assert fake_gateway.wait_for(lambda: fake_gateway.connection_count() == 0, 5)


def test_ib_offline_wait_is_configured_apart_from_the_budget(fake_gateway: FakeGateway) -> None:
    """``ib_offline_wait`` (the scripts: IBKR_OUTAGE_WAIT) bounds the wait, not the budget."""
    alerts = RecordingAlert()
    fake_gateway.add_fault(OfflineAtConnect())
    load = Load()
    started = time.monotonic()
    logs, error = connect_fails(
        lambda: ibkr_session(
            10,
            "127.0.0.1",
            fake_gateway.port,
            alert=alerts,
            config=SessionConfig(timeout=0.5, max_time=30.0, ib_offline_wait=0.5),
        )
    )
    assert time.monotonic() - started < 0.5 + load.slack(1.5)  # not the 30 s budget
    assert error.failure_class == "ib_offline" and error.attempts == 1
    assert logs.events("ibkr.connect.gave_up")[0]["reason"] == "fail_fast"
    assert "within 0.5 s" in str(error.last_error)
    [text] = alerts.texts
    assert "1100" in text


def test_ib_offline_at_connect_async_form_waits_the_same(fake_gateway: FakeGateway) -> None:
    """``async with``: the same one-connection wait, bounded by ``ib_offline_wait``."""
    alerts = RecordingAlert()
    fake_gateway.add_fault(OfflineAtConnect())
    config = SessionConfig(timeout=0.5, max_time=30.0, ib_offline_wait=0.5)

    async def enter() -> None:
        async with ibkr_session(10, "127.0.0.1", fake_gateway.port, alert=alerts, config=config):
            pass

    load = Load()
    started = time.monotonic()
    with pytest.raises(ConnectionFailed) as info:
        asyncio.run(enter())
    assert time.monotonic() - started < 0.5 + load.slack(1.5), load
    assert info.value.failure_class == "ib_offline" and info.value.attempts == 1
    assert len(fake_gateway.events("sim.connection.open")) == 1


def test_ib_offline_that_clears_inside_the_attempt_connects(fake_gateway: FakeGateway) -> None:
    alerts = RecordingAlert()
    offline = fake_gateway.add_fault(OfflineAtConnect())
    fake_gateway.add_fault(EndAfter(offline, 0.5))
    with JsonLogCapture() as logs, session(fake_gateway, alerts, timeout=3.0) as ib:
        assert ib.isConnected()
    assert logs.events("ibkr.connect.success")[0]["attempt"] == 1
    assert alerts.texts == []


def test_the_session_tracks_ib_connectivity_while_the_socket_stays_up(
    fake_gateway: FakeGateway,
) -> None:
    """1100 then 1102 on a connected session: ``ib_connected`` follows, one line each."""
    alerts = RecordingAlert()
    with JsonLogCapture() as logs, (s := session(fake_gateway, alerts)) as ib:
        assert s.ib_connected is True
        outage = fake_gateway.add_fault(Outage())
        assert wait_until(ib, lambda: s.ib_connected is False)
        fake_gateway.remove_fault(outage)
        assert wait_until(ib, lambda: s.ib_connected is True)
    changes = logs.events("ibkr.session.ib_connectivity")
    assert [(c["code"], c["ib_connected"]) for c in changes] == [(1100, False), (1102, True)]
    assert changes[0]["level"] == "warning" and alerts.texts == []
