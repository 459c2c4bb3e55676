"""ibkr_session with injected ib_factory, alert, sleep and clock (issue 3, points 1-13)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time
from ib_fakes import Factory
from structlog.testing import capture_logs

from ibkr_resilience import (
    ConnectionFailed,
    LiveAccountRefused,
    SessionConfig,
    TelegramAlert,
    configure_logging,
    ibkr_session,
)
from ibkr_resilience._notify.telegram import DisabledAlert
from ibkr_resilience.testing import FakeTime, RecordingAlert, restored_logging

TOKEN = "111222333:AAEsessionTokenForTests_abcdefghijk"


def session(
    factory: Factory,
    ft: FakeTime,
    alert: Any = None,
    env: dict[str, str] | None = None,
    **kw: Any,
) -> Any:
    return ibkr_session(
        ib_factory=factory,
        alert=alert if alert is not None else RecordingAlert(),
        sleep=ft.sleep,
        clock=ft.clock,
        env=env or {},
        **kw,
    )


def names(logs: Sequence[Mapping[str, Any]]) -> list[str]:
    return [e["event"] for e in logs]


# -- 1. import ---------------------------------------------------------------------------


def test_imports_cleanly_without_a_running_loop_under_deprecation_errors() -> None:
    result = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", "import ibkr_resilience"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 0, result.stderr


# -- happy path and 5. logging -----------------------------------------------------------


def test_yields_connected_ib_and_always_disconnects() -> None:
    ft = FakeTime()
    factory = Factory("ok")
    with capture_logs() as logs, session(factory, ft, client_id=11) as ib:
        assert ib is factory.made[0]
        assert ib.isConnected()
        assert ib.connect_calls == [("127.0.0.1", 7497, 11, 15.0)]
        ft.advance(2.5)
    assert not ib.isConnected() and ib.disconnect_calls == 1
    assert ib.sleep_calls == []  # no ib.sleep(2) after connecting
    assert names(logs) == ["ibkr.connect.attempt", "ibkr.connect.success", "ibkr.session.end"]
    success, end = logs[1], logs[2]
    assert success["server_version"] == 176 and success["accounts"] == ["DU1234567"]
    assert end["outcome"] == "ok" and end["connected_s"] == 2.5 and end["duration_s"] == 2.5
    assert end["client_id"] == 11


def test_none_means_environment_then_default() -> None:
    ft = FakeTime()
    factory = Factory("ok")
    env = {"IBKR_HOST": "gw.example", "IBKR_PORT": "4002", "IBKR_CONNECT_TIMEOUT": "3"}
    with session(factory, ft, env=env, host=None, port=None) as ib:
        assert ib.connect_calls == [("gw.example", 4002, 10, 3.0)]
    with session(Factory("ok"), ft, env=env, port=4001) as ib:
        assert ib.connect_calls[0][1] == 4001


def test_each_attempt_gets_a_fresh_instance_and_failed_ones_are_disconnected() -> None:
    ft = FakeTime()
    factory = Factory(["refused", "close_on_accept", "in_use_326", "ok"])
    with capture_logs() as logs, session(factory, ft) as ib:
        assert ib is factory.made[3]
    assert len({id(x) for x in factory.made}) == 4
    assert [x.disconnect_calls for x in factory.made] == [1, 1, 1, 1]
    failed = [e for e in logs if e["event"] == "ibkr.connect.failed"]
    assert [e["failure_class"] for e in failed] == ["refused", "closed", "rejected"]
    assert failed[0]["next_delay_s"] == 0.5
    assert "client id 10" in failed[2]["hint"]


# -- 2./3. bounds and classes through the session -----------------------------------------


def test_gives_up_by_attempt_count() -> None:
    ft = FakeTime()
    alert = RecordingAlert()
    body_ran = False
    with (
        pytest.raises(ConnectionFailed) as info,
        session(Factory("refused"), ft, alert=alert, max_attempts=4),
    ):
        body_ran = True
    assert not body_ran
    assert info.value.attempts == 4 and info.value.failure_class == "refused"
    assert isinstance(info.value.last_error, ConnectionRefusedError)
    assert len(alert.texts) == 1


def test_gives_up_by_budget_on_the_injected_clock() -> None:
    ft = FakeTime()
    factory = Factory("inner_timeout", time=ft, attempt_cost=10.0)
    with (
        capture_logs() as logs,
        pytest.raises(ConnectionFailed) as info,
        session(factory, ft, max_time=30, timeout=10),
    ):
        pass
    assert info.value.elapsed <= 30.1
    assert next(e for e in logs if e["event"] == "ibkr.connect.gave_up")["reason"] == "max_time"


def test_hung_gateway_is_bounded_per_attempt() -> None:
    ft = FakeTime()
    started = time.monotonic()
    with (
        pytest.raises(ConnectionFailed) as info,
        session(Factory("sync_hang"), ft, max_attempts=2, timeout=0.1),
    ):
        pass
    assert time.monotonic() - started < 1.0
    assert info.value.failure_class == "incomplete_sync"


# -- 6. give-up alert, errors in the block ---------------------------------------------------


def test_give_up_alert_says_everything_once() -> None:
    ft = FakeTime()
    alert = RecordingAlert()
    with (
        pytest.raises(ConnectionFailed),
        session(Factory("peer_closed"), ft, alert=alert, max_attempts=2, client_id=12),
    ):
        pass
    [text] = alert.texts
    assert text.startswith("IBKR CONNECTION FAILED")
    for expected in (
        "127.0.0.1:7497",
        "clientId: 12",
        "Attempts: 2/2",
        "Failure: rejected",
        "Last error: ConnectionError: Peer closed connection. clientId 12 already in use?",
        "Another process probably holds client id 12",
        "Machine: ",
        f"Script: {os.path.basename(sys.argv[0])}",
        "Elapsed: ",
    ):
        assert expected in text


def test_exception_in_block_is_logged_alerted_and_reraised_unchanged() -> None:
    ft = FakeTime()
    alert = RecordingAlert()
    error = RuntimeError("order rejected <bad> & worse")
    with (
        capture_logs() as logs,
        pytest.raises(RuntimeError) as info,
        session(Factory("ok"), ft, alert=alert) as ib,
    ):
        raise error
    assert info.value is error
    assert ib.disconnect_calls == 1
    [logged] = [e for e in logs if e["event"] == "ibkr.session.error"]
    assert logged["exc_info"][1] is error and logged["error_type"] == "RuntimeError"
    assert logs[-1]["event"] == "ibkr.session.end" and logs[-1]["outcome"] == "error"
    [text] = alert.texts
    assert "IBKR SESSION FAILED" in text and "RuntimeError: order rejected <bad> & worse" in text


def test_traceback_is_structured_json_without_token(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    with restored_logging():
        configure_logging(format="json", stream=out, env={"IFDS_TELEGRAM_BOT_TOKEN": TOKEN})
        with pytest.raises(ValueError), session(Factory("ok"), FakeTime()):
            token_in_local = TOKEN  # noqa: F841
            raise ValueError(f"bad call to /bot{TOKEN}/sendMessage")
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    [error] = [x for x in lines if x["event"] == "ibkr.session.error"]
    assert error["exception"][0]["exc_type"] == "ValueError"
    assert TOKEN not in out.getvalue()
    assert len({x["run_id"] for x in lines}) == 1


def test_keyboard_interrupt_is_logged_not_alerted() -> None:
    ft = FakeTime()
    alert = RecordingAlert()
    with (
        capture_logs() as logs,
        pytest.raises(KeyboardInterrupt),
        session(Factory("ok"), ft, alert=alert) as ib,
    ):
        raise KeyboardInterrupt
    assert alert.texts == [] and ib.disconnect_calls == 1
    assert "ibkr.session.interrupted" in names(logs)
    assert logs[-1]["outcome"] == "interrupted"


def test_keyboard_interrupt_during_retry_wait() -> None:
    alert = RecordingAlert()

    def sleep(seconds: float) -> None:
        raise KeyboardInterrupt

    with (
        capture_logs() as logs,
        pytest.raises(KeyboardInterrupt),
        ibkr_session(ib_factory=Factory("refused"), alert=alert, sleep=sleep, env={}),
    ):
        pass
    assert alert.texts == []
    assert logs[-1]["event"] == "ibkr.session.end" and logs[-1]["outcome"] == "interrupted"


# -- 7. exit always disconnects -------------------------------------------------------------


def test_disconnect_errors_are_swallowed_and_logged() -> None:
    ft = FakeTime()
    with capture_logs() as logs, session(Factory("ok", disconnect_raises=True), ft) as ib:
        pass
    assert ib.disconnect_calls == 1
    assert "ibkr.disconnect.failed" in names(logs)
    assert logs[-1]["outcome"] == "ok"


def test_sigterm_in_block_becomes_exit_143_and_handler_is_restored() -> None:
    ft = FakeTime()
    alert = RecordingAlert()

    def previous(signum: int, frame: Any) -> None:
        raise AssertionError("the previous handler must not run inside the session")

    old = signal.signal(signal.SIGTERM, previous)
    try:
        with (
            capture_logs() as logs,
            pytest.raises(SystemExit) as info,
            session(Factory("ok"), ft, alert=alert) as ib,
        ):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # interrupted by the signal; never completes
        assert signal.getsignal(signal.SIGTERM) is previous
    finally:
        signal.signal(signal.SIGTERM, old)
    assert info.value.code == 143
    assert ib.disconnect_calls == 1 and alert.texts == []
    assert "ibkr.session.terminated" in names(logs)
    assert logs[-1]["event"] == "ibkr.session.end" and logs[-1]["outcome"] == "terminated"


def test_sigterm_during_retry_waits() -> None:
    before = signal.getsignal(signal.SIGTERM)

    def sleep(seconds: float) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)

    with (
        capture_logs() as logs,
        pytest.raises(SystemExit) as info,
        ibkr_session(ib_factory=Factory("refused"), alert=RecordingAlert(), sleep=sleep, env={}),
    ):
        pass
    assert info.value.code == 143
    assert signal.getsignal(signal.SIGTERM) is before
    assert logs[-1]["outcome"] == "terminated"


def test_no_signal_handler_outside_the_main_thread() -> None:
    before = signal.getsignal(signal.SIGTERM)
    seen: list[Any] = []

    def run() -> None:
        with session(Factory("ok"), FakeTime()):
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(5)
    assert seen == [before]


# -- 8. mid-session loss ------------------------------------------------------------------


def test_mid_session_drop_is_logged_and_alerted_never_reconnected() -> None:
    ft = FakeTime()
    alert = RecordingAlert()
    factory = Factory("ok")
    with capture_logs() as logs, session(factory, ft, alert=alert) as ib:
        ft.advance(42.0)
        ib.drop()
        ib.drop()  # one loss, one alert
    assert len(factory.made) == 1
    [lost] = [e for e in logs if e["event"] == "ibkr.session.lost"]
    assert lost["log_level"] == "error" and lost["connected_s"] == 42.0
    [text] = alert.texts
    assert "IBKR CONNECTION LOST" in text and "Connected for: 42.0 s" in text
    assert logs[-1]["outcome"] == "lost" and logs[-1]["connection_lost"] is True


def test_the_drop_escaping_the_block_is_the_same_loss_not_a_second_alert() -> None:
    """A request the drop failed raises ``ConnectionError`` out of the block (ib_insync's
    "Socket disconnect"): the loss was already alerted, so no "SESSION FAILED" too."""
    alert = RecordingAlert()
    escaped = ConnectionError("Socket disconnect")
    with (
        capture_logs() as logs,
        pytest.raises(ConnectionError) as info,
        session(Factory("ok"), FakeTime(), alert=alert) as ib,
    ):
        ib.drop()
        raise escaped
    assert info.value is escaped  # re-raised unchanged
    [text] = alert.texts
    assert text.startswith("IBKR CONNECTION LOST")
    assert "ibkr.session.error" not in names(logs)
    [echo] = [e for e in logs if e["event"] == "ibkr.session.lost_error"]
    assert (echo["phase"], echo["error_type"]) == ("block", "ConnectionError")
    assert logs[-1]["event"] == "ibkr.session.end" and logs[-1]["outcome"] == "lost"


def test_a_connection_error_without_a_loss_is_a_failed_block() -> None:
    alert = RecordingAlert()
    with (
        capture_logs() as logs,
        pytest.raises(ConnectionError),
        session(Factory("ok"), FakeTime(), alert=alert),
    ):
        raise ConnectionError("the price feed is down")  # not the gateway: still connected
    [text] = alert.texts
    assert text.startswith("IBKR SESSION FAILED")
    assert logs[-1]["outcome"] == "error"


def test_our_own_disconnect_is_not_a_loss() -> None:
    alert = RecordingAlert()
    with capture_logs() as logs, session(Factory("ok"), FakeTime(), alert=alert):
        pass
    assert "ibkr.session.lost" not in names(logs) and alert.texts == []


# -- 9. paper guard -------------------------------------------------------------------------


def test_live_account_is_refused() -> None:
    alert = RecordingAlert()
    factory = Factory("ok", accounts=("U7654321",))
    body_ran = False
    with (
        capture_logs() as logs,
        pytest.raises(LiveAccountRefused) as info,
        session(factory, FakeTime(), alert=alert),
    ):
        body_ran = True
    assert not body_ran and info.value.accounts == ["U7654321"]
    assert factory.made[0].disconnect_calls == 1
    assert "IBKR LIVE ACCOUNT REFUSED" in alert.texts[0] and "U7654321" in alert.texts[0]
    assert logs[-1]["outcome"] == "live_account_refused"


@pytest.mark.parametrize(
    ("accounts", "paper_only", "env"),
    [
        (("U1", "DU2"), True, {}),
        (("U1",), False, {}),
        (("U1",), True, {"IBKR_ALLOW_LIVE": "1"}),
    ],
)
def test_live_allowed_cases(
    accounts: tuple[str, ...], paper_only: bool, env: dict[str, str]
) -> None:
    with session(
        Factory("ok", accounts=accounts), FakeTime(), env=env, paper_only=paper_only
    ) as ib:
        assert ib.isConnected()


# -- 10. alerts ------------------------------------------------------------------------------


def test_alert_that_raises_does_not_mask_connection_failed() -> None:
    def alert(text: str) -> None:
        raise RuntimeError("telegram down")

    with (
        pytest.raises(ConnectionFailed),
        session(Factory("refused"), FakeTime(), alert=alert, max_attempts=1),
    ):
        pass


def test_alert_that_hangs_is_abandoned_at_the_deadline() -> None:
    release = threading.Event()
    cfg = SessionConfig(alert_timeout=0.2, max_attempts=1)
    started = time.monotonic()
    with (
        capture_logs() as logs,
        pytest.raises(ConnectionFailed),
        ibkr_session(
            config=cfg,
            ib_factory=Factory("refused"),
            alert=lambda text: release.wait(10),
            sleep=FakeTime().sleep,
        ),
    ):
        pass
    release.set()
    assert time.monotonic() - started < 1.0
    assert "ibkr.alert.timed_out" in names(logs)


def test_default_alert_comes_from_the_environment() -> None:
    configured = ibkr_session(
        env={"IFDS_TELEGRAM_BOT_TOKEN": TOKEN, "IFDS_TELEGRAM_CHAT_ID": "5"}
    ).notifier.alert
    assert isinstance(configured, TelegramAlert) and TOKEN not in repr(configured)
    assert isinstance(ibkr_session(env={}).notifier.alert, DisabledAlert)


# -- wall clock under freezegun: the session still works, timestamps are frozen ---------------


def test_session_under_frozen_wall_clock() -> None:
    out = io.StringIO()
    with restored_logging():
        configure_logging(format="json", stream=out, env={})
        with (
            freeze_time("2024-06-03T07:00:00Z", real_asyncio=True),
            session(Factory("ok"), FakeTime()) as ib,
        ):
            assert ib.isConnected()
    stamps = {json.loads(x)["timestamp"] for x in out.getvalue().splitlines()}
    assert stamps == {"2024-06-03T07:00:00Z"}


@pytest.fixture(autouse=True)
def _no_leaked_sigterm_handler() -> Iterator[None]:
    before = signal.getsignal(signal.SIGTERM)
    yield
    assert signal.getsignal(signal.SIGTERM) is before
