"""``async with ibkr_session()`` against the simulated gateway: the real client library.

Every test runs its own event loop (``asyncio.run``) and waits for events (log records,
gateway events, alerts) with hard deadlines, never for "enough time". Each one checks
that the session disconnected: the gateway saw the client close its socket, or has no
connection left.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar, assert_type

import pytest

from ibkr_resilience import (
    ConnectionFailed,
    LiveAccountRefused,
    RunningEventLoopError,
    ibkr_session,
)
from ibkr_resilience._connect.compat import IB
from ibkr_resilience._session.session import IBKRSession
from ibkr_resilience.simulator import FakeGateway, SimPosition
from ibkr_resilience.testing import JsonLogCapture, RecordingAlert, read_json_lines

REPO = Path(__file__).resolve().parents[1]
DEADLINE = 10.0
T = TypeVar("T")


def session(gw: FakeGateway, **kw: Any) -> IBKRSession:
    kw.setdefault("timeout", 1.0)
    kw.setdefault("max_attempts", 3)
    kw.setdefault("max_time", 10.0)
    kw.setdefault("alert", RecordingAlert())
    env = kw.pop("env", {})
    return ibkr_session(kw.pop("client_id", 10), "127.0.0.1", gw.port, env=env, **kw)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def until(predicate: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    """Poll ``predicate`` from the loop (other tasks keep running) until it holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def closed_by_client(gw: FakeGateway, client_id: int = 10) -> bool:
    """The gateway saw this client close its connection, and has none left."""
    assert gw.wait_for(lambda: gw.connection_count() == 0, DEADLINE), "still connected"
    closes = gw.events("sim.connection.close")
    return any(c["reason"] == "client closed" and c["client_id"] == client_id for c in closes)


# -- the happy path ---------------------------------------------------------------------------


def test_happy_path_connects_reads_and_disconnects(
    fake_gateway: FakeGateway, json_logs: JsonLogCapture
) -> None:
    """Connected and synced inside the block, the same lines as the sync form, then closed."""
    alerts = RecordingAlert()

    async def main() -> tuple[bool, list[str], Any]:
        async with session(fake_gateway, alert=alerts) as ib:
            assert_type(ib, IB)  # a user's type checker sees the client library's IB
            now = await ib.reqCurrentTimeAsync()
            return ib.isConnected(), ib.managedAccounts(), now

    connected, accounts, now = run(main())
    assert connected and accounts == ["DU1234567"] and now is not None
    assert closed_by_client(fake_gateway)
    names = [r["event"] for r in json_logs.records if r["event"].startswith("ibkr.")]
    assert names == ["ibkr.connect.attempt", "ibkr.connect.success", "ibkr.session.end"]
    success = json_logs.events("ibkr.connect.success")[0]
    assert success["server_version"] == 157 and success["accounts"] == ["DU1234567"]
    end = json_logs.events("ibkr.session.end")[0]
    assert end["outcome"] == "ok" and end["connection_lost"] is False
    assert alerts.texts == []


def test_side_channels_run_off_the_loop(fake_gateway: FakeGateway) -> None:
    """The alert hook runs in another thread while the loop keeps serving other tasks."""
    fake_gateway.down()
    loop_answered = threading.Event()
    hook_called = threading.Event()
    seen: list[bool] = []

    def alert(text: str) -> None:
        hook_called.set()
        seen.append(loop_answered.wait(DEADLINE))  # only a free loop can set it

    async def answer_from_the_loop() -> None:
        await until(hook_called.is_set, "the alert hook")
        loop_answered.set()

    async def main() -> None:
        helper = asyncio.ensure_future(answer_from_the_loop())
        with pytest.raises(ConnectionFailed):
            async with session(fake_gateway, alert=alert, max_attempts=1):
                pass
        await helper

    run(main())
    assert seen == [True]  # and __aexit__ waited for the delivery to finish


# -- connect failures -------------------------------------------------------------------------


def test_restart_retries_refused_then_connects_when_the_port_opens(
    fake_gateway: FakeGateway, json_logs: JsonLogCapture
) -> None:
    """Port closed: refused attempts every 0.5 s; reopened: connected within about that."""
    fake_gateway.restart(600)  # closed until the test reopens it

    def refused() -> list[dict[str, Any]]:
        return [
            f for f in json_logs.events("ibkr.connect.failed") if f["failure_class"] == "refused"
        ]

    async def main() -> tuple[float, float, bool]:
        async def reopen_after_two_refusals() -> float:
            await until(lambda: len(refused()) >= 2, "two refused attempts")
            reopened = time.monotonic()
            await asyncio.to_thread(fake_gateway.up)
            return reopened

        reopening = asyncio.ensure_future(reopen_after_two_refusals())
        async with session(fake_gateway, max_attempts=100, max_time=60) as ib:
            ready = time.monotonic()
            connected = ib.isConnected()
        return await reopening, ready, connected

    reopened, ready, connected = run(main())
    assert connected
    assert 0 <= ready - reopened < 2.0  # one refused interval plus a connect, on a busy box
    assert len(refused()) >= 2 and all(f["next_delay_s"] <= 0.5 for f in refused())
    assert json_logs.events("ibkr.session.end")[0]["outcome"] == "ok"
    assert closed_by_client(fake_gateway)


def test_client_id_in_use_fails_fast_with_one_alert(
    fake_gateway: FakeGateway, json_logs: JsonLogCapture
) -> None:
    """Error 326: retried during its grace, one alert, far under the budget; no block run."""
    fake_gateway.set_scenario("client_id_in_use")
    alerts = RecordingAlert()
    ran = False

    async def main() -> None:
        nonlocal ran
        async with session(
            fake_gateway,
            alert=alerts,
            timeout=2.0,
            max_attempts=50,
            max_time=60,
            env={"IBKR_CLIENT_ID_GRACE": "1.5"},
        ):
            ran = True

    started = time.monotonic()
    with pytest.raises(ConnectionFailed) as info:
        run(main())
    assert not ran and time.monotonic() - started < 6.0
    assert info.value.failure_class == "rejected" and info.value.attempts >= 2
    assert json_logs.events("ibkr.connect.gave_up")[0]["reason"] == "fail_fast"
    assert len(alerts.texts) == 1 and "another process probably holds client id 10" in (
        alerts.texts[0].lower()
    )
    assert json_logs.events("ibkr.session.end")[0]["outcome"] == "connect_failed"
    assert fake_gateway.wait_for(lambda: fake_gateway.connection_count() == 0, DEADLINE)


def test_connection_failure_alerts_are_deduplicated_across_runs(
    fake_gateway: FakeGateway, tmp_path: Path
) -> None:
    """Two failing runs with a state file: one alert; the next success sends "recovered"."""
    fake_gateway.down()
    alerts = RecordingAlert()
    env = {"IBKR_ALERT_STATE_FILE": str(tmp_path / "alerts.json")}

    async def once() -> None:
        async with ibkr_session(
            10, "127.0.0.1", fake_gateway.port, timeout=1, max_attempts=1, alert=alerts, env=env
        ):
            pass

    for _ in range(2):
        with pytest.raises(ConnectionFailed):
            run(once())
    assert len(alerts.texts) == 1
    fake_gateway.up()
    run(once())
    assert len(alerts.texts) == 2 and "recovered" in alerts.texts[1].lower()
    assert closed_by_client(fake_gateway)


def test_live_account_is_refused_and_disconnected(json_logs: JsonLogCapture) -> None:
    """The paper guard runs in the async form too: one alert, disconnected, block not run."""
    alerts = RecordingAlert()
    with FakeGateway(accounts=["U1234567"]) as gw:

        async def main() -> None:
            async with session(gw, alert=alerts):
                pytest.fail("the block must not run on a live account")

        with pytest.raises(LiveAccountRefused):
            run(main())
        assert closed_by_client(gw)
    assert len(alerts.texts) == 1 and "U1234567" in alerts.texts[0]
    assert json_logs.events("ibkr.session.end")[0]["outcome"] == "live_account_refused"


# -- inside the block ---------------------------------------------------------------------------


def test_drop_inside_the_block_alerts_once_and_ends_lost(
    fake_gateway: FakeGateway, json_logs: JsonLogCapture
) -> None:
    """A dropped connection: one "CONNECTION LOST" alert, sent while the block still runs."""
    alerts = RecordingAlert()

    async def main() -> bool:
        async with session(fake_gateway, alert=alerts) as ib:
            await asyncio.to_thread(fake_gateway.drop_connections)
            await until(lambda: not ib.isConnected(), "the client to notice the drop")
            with pytest.raises(ConnectionError):
                await ib.reqCurrentTimeAsync()
            # scheduled from the disconnectedEvent callback, delivered off the loop
            return await asyncio.to_thread(alerts.wait, 1, DEADLINE)

    assert run(main())
    assert len(alerts.texts) == 1 and "LOST" in alerts.texts[0]
    assert len(json_logs.events("ibkr.session.lost")) == 1
    assert json_logs.events("ibkr.session.end")[0]["outcome"] == "lost"
    assert len(fake_gateway.events("sim.connection.open")) == 1  # no silent reconnect
    assert fake_gateway.wait_for(lambda: fake_gateway.connection_count() == 0, DEADLINE)


def test_exception_in_block_is_alerted_reraised_unchanged_and_disconnects(
    fake_gateway: FakeGateway, json_logs: JsonLogCapture
) -> None:
    """The block's exception propagates as it was, after an alert and a disconnect."""
    alerts = RecordingAlert()
    boom = ValueError("bad plan row 7")

    async def main() -> None:
        async with session(fake_gateway, alert=alerts):
            raise boom

    with pytest.raises(ValueError) as info:
        run(main())
    assert info.value is boom
    assert closed_by_client(fake_gateway)
    assert len(alerts.texts) == 1 and "bad plan row 7" in alerts.texts[0]
    err = json_logs.events("ibkr.session.error")[0]
    assert err["error_type"] == "ValueError" and err["phase"] == "block"
    assert json_logs.events("ibkr.session.end")[0]["outcome"] == "error"


def test_cancelled_task_disconnects_without_alert(
    fake_gateway: FakeGateway, json_logs: JsonLogCapture
) -> None:
    """``task.cancel()`` inside the block: disconnect, outcome cancelled, CancelledError."""
    alerts = RecordingAlert()

    async def bot(inside: asyncio.Event) -> None:
        async with session(fake_gateway, alert=alerts):
            inside.set()
            await asyncio.Event().wait()  # runs until cancelled

    async def main() -> None:
        inside = asyncio.Event()
        task = asyncio.ensure_future(bot(inside))
        await asyncio.wait_for(inside.wait(), DEADLINE)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main())
    assert closed_by_client(fake_gateway)
    assert alerts.texts == []
    assert json_logs.events("ibkr.session.cancelled")[0]["phase"] == "block"
    assert json_logs.events("ibkr.session.end")[0]["outcome"] == "cancelled"
    assert not json_logs.events("ibkr.session.error")


def test_asyncio_timeout_around_the_session_disconnects_without_alert(
    fake_gateway: FakeGateway, json_logs: JsonLogCapture
) -> None:
    """``asyncio.timeout`` expiring in the block: TimeoutError for the caller, no alert."""
    alerts = RecordingAlert()

    async def main() -> None:
        async with asyncio.timeout(None) as deadline, session(fake_gateway, alert=alerts):
            deadline.reschedule(asyncio.get_running_loop().time())  # expire now
            await asyncio.Event().wait()

    with pytest.raises(TimeoutError):
        run(main())
    assert closed_by_client(fake_gateway)
    assert alerts.texts == []
    assert json_logs.events("ibkr.session.end")[0]["outcome"] == "cancelled"


def test_cancel_during_the_retry_wait_ends_without_alert(
    fake_gateway: FakeGateway, json_logs: JsonLogCapture
) -> None:
    """Cancelled while retrying a closed port: no give-up, no alert, outcome cancelled."""
    fake_gateway.down()
    alerts = RecordingAlert()

    async def main() -> None:
        task = asyncio.ensure_future(
            session(fake_gateway, alert=alerts, max_attempts=100, max_time=60).__aenter__()
        )
        await until(lambda: bool(json_logs.events("ibkr.connect.failed")), "a failed attempt")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main())
    assert alerts.texts == []
    assert not json_logs.events("ibkr.connect.gave_up")
    assert json_logs.events("ibkr.session.cancelled")[0]["phase"] == "connect"
    assert json_logs.events("ibkr.session.end")[0]["outcome"] == "cancelled"
    assert fake_gateway.connection_count() == 0


# -- the sync form inside a running loop ----------------------------------------------------------


def test_sync_with_inside_a_running_loop_fails_at_once_without_alert(
    fake_gateway: FakeGateway, json_logs: JsonLogCapture
) -> None:
    """One line that says to use ``async with``; no alert, no attempt, nothing connected."""
    alerts = RecordingAlert()
    ran = False

    async def main() -> None:
        nonlocal ran
        with session(fake_gateway, alert=alerts):
            ran = True

    with pytest.raises(RunningEventLoopError) as info:
        run(main())
    message = str(info.value)
    assert "\n" not in message and "async with" in message
    assert isinstance(info.value, RuntimeError)
    assert not ran and alerts.texts == []
    assert not [r for r in json_logs.records if r["event"].startswith("ibkr.")]
    assert fake_gateway.events("sim.connection.open") == []


# -- SIGTERM, in a child process ------------------------------------------------------------------

ASYNC_SCRIPT = """
import asyncio, sys
import structlog
from ibkr_resilience import configure_logging, ibkr_session
configure_logging(format="json", file=sys.argv[2])

async def main():
    async with ibkr_session(10, "127.0.0.1", int(sys.argv[1]), timeout=1, max_attempts=200,
                            max_time=30) as ib:
        structlog.get_logger("bot").info("bot.ready")
        await asyncio.sleep(30)

asyncio.run(main())
"""


def _events(log_file: Path, name: str) -> list[dict[str, Any]]:
    return [r for r in read_json_lines(log_file) if r.get("event") == name]


def _sigterm_after(gw: FakeGateway, tmp_path: Path, event: str) -> tuple[int, Path]:
    """Run ``ASYNC_SCRIPT``, SIGTERM it once its log has ``event``; its exit status and log."""
    log_file = tmp_path / "run.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-c", ASYNC_SCRIPT, str(gw.port), str(log_file)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "IBKR_LOG_FORMAT": "json"},
    )
    try:
        deadline = time.monotonic() + DEADLINE
        while not _events(log_file, event):
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, f"no {event} in the child's log"
            time.sleep(0.05)  # polling a file another process writes
        proc.send_signal(signal.SIGTERM)
        status = proc.wait(timeout=DEADLINE)
        assert proc.stderr is not None and "Traceback" not in proc.stderr.read()
        return status, log_file
    finally:
        proc.kill()
        proc.wait()


def test_sigterm_in_the_async_block_exits_143_and_disconnects(
    fake_gateway: FakeGateway, tmp_path: Path
) -> None:
    """SIGTERM cancels the session's task: terminated, disconnected, no alert, exit 143."""
    status, log_file = _sigterm_after(fake_gateway, tmp_path, "bot.ready")
    assert status == 143
    assert closed_by_client(fake_gateway)
    assert _events(log_file, "ibkr.session.terminated")[0]["phase"] == "block"
    assert _events(log_file, "ibkr.session.end")[0]["outcome"] == "terminated"
    assert _events(log_file, "ibkr.alert.disabled") == []  # the default alert was not called


def test_sigterm_during_an_async_retry_wait_exits_143(
    fake_gateway: FakeGateway, tmp_path: Path
) -> None:
    """SIGTERM while retrying a closed port: terminated, no give-up alert, exit 143."""
    fake_gateway.down()
    status, log_file = _sigterm_after(fake_gateway, tmp_path, "ibkr.connect.failed")
    assert status == 143
    assert _events(log_file, "ibkr.session.terminated")[0]["phase"] == "connect"
    assert _events(log_file, "ibkr.session.end")[0]["outcome"] == "terminated"
    assert _events(log_file, "ibkr.connect.gave_up") == []
    assert _events(log_file, "ibkr.alert.disabled") == []
    assert fake_gateway.connection_count() == 0


# -- the example bot ------------------------------------------------------------------------------


def test_async_bot_example_runs_against_the_simulator(tmp_path: Path) -> None:
    """``docs/examples/async_bot.py`` connects, reads positions and orders, logs, exits 0."""
    with FakeGateway(positions=[SimPosition("DU1234567", "AAPL", 100, 150.0)]) as gw:
        log_file = tmp_path / "bot.jsonl"
        proc = subprocess.run(
            [sys.executable, str(REPO / "docs" / "examples" / "async_bot.py")],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            env={
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "IBKR_HOST": "127.0.0.1",
                "IBKR_PORT": str(gw.port),
                "IBKR_LOG_FORMAT": "json",
                "IBKR_LOG_FILE": str(log_file),
                "HOME": str(tmp_path),
            },
        )
        assert proc.returncode == 0, proc.stderr
        assert closed_by_client(gw)
    positions = _events(log_file, "bot.positions")
    assert positions and positions[0]["positions"] == [
        {"account": "DU1234567", "symbol": "AAPL", "quantity": 100.0, "avg_cost": 150.0}
    ]
    assert _events(log_file, "bot.open_orders")
    assert _events(log_file, "ibkr.session.end")[0]["outcome"] == "ok"
