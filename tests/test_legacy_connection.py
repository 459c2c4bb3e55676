"""The legacy contract, tested the way an old caller's suite tests it (mock.patch everywhere)."""

from __future__ import annotations

import importlib
import io
import json
from collections.abc import Iterator
from unittest import mock

import pytest

import ibkr_resilience
from ibkr_resilience._connect import compat
from ibkr_resilience.testing import BotApi, JsonLogCapture, closed_port_url, restored_logging
from scripts.paper_trading.lib import connection

MODULE = "scripts.paper_trading.lib.connection"
LEGACY_ENV = ("IBKR_CONNECT_MAX_RETRIES", "IBKR_CONNECT_RETRY_DELAY", "IBKR_CONNECT_TIMEOUT")


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in (
        *LEGACY_ENV,
        "IFDS_TELEGRAM_BOT_TOKEN",
        "IFDS_TELEGRAM_CHAT_ID",
        "IBKR_ALLOW_LIVE",
    ):
        monkeypatch.delenv(name, raising=False)
    importlib.reload(connection)
    with restored_logging():
        yield
        monkeypatch.undo()
        importlib.reload(connection)


def test_public_names_and_defaults() -> None:
    assert connection.PAPER_PORT == 7497
    assert connection.LIVE_PORT == 7496
    assert connection.DEFAULT_CLIENT_ID == 10
    assert connection.CONNECT_MAX_RETRIES == 3
    assert connection.CONNECT_RETRY_DELAY == 5.0
    assert connection.CONNECT_TIMEOUT == 15.0
    assert connection.IB is compat.IB


def test_reload_picks_up_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IBKR_CONNECT_MAX_RETRIES", "5")
    monkeypatch.setenv("IBKR_CONNECT_RETRY_DELAY", "1.5")
    monkeypatch.setenv("IBKR_CONNECT_TIMEOUT", "7")
    importlib.reload(connection)
    assert (connection.CONNECT_MAX_RETRIES, connection.CONNECT_RETRY_DELAY) == (5, 1.5)
    assert connection.CONNECT_TIMEOUT == 7.0
    with (
        mock.patch(f"{MODULE}.IB") as mock_ib_cls,
        mock.patch(f"{MODULE}.time.sleep") as mock_sleep,
        mock.patch(f"{MODULE}._send_telegram_alert"),
        pytest.raises(SystemExit),
    ):
        mock_ib_cls.return_value.connect.side_effect = ConnectionRefusedError()
        connection.connect()
    assert mock_ib_cls.call_count == 5
    mock_ib_cls.return_value.connect.assert_called_with("127.0.0.1", 7497, clientId=10, timeout=7.0)
    assert mock_sleep.call_args_list == [mock.call(1.5)] * 4


def test_bad_environment_fails_at_import(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IBKR_CONNECT_MAX_RETRIES", "abc")
    with pytest.raises(ValueError, match="IBKR_CONNECT_MAX_RETRIES='abc'"):
        importlib.reload(connection)


@mock.patch(f"{MODULE}.time.sleep")
@mock.patch(f"{MODULE}.IB")
def test_connect_first_try(mock_ib_cls: mock.MagicMock, mock_sleep: mock.MagicMock) -> None:
    ib = connection.connect(client_id=10)
    assert ib is mock_ib_cls.return_value
    ib.connect.assert_called_once_with("127.0.0.1", 7497, clientId=10, timeout=15.0)
    mock_sleep.assert_not_called()
    ib.disconnect.assert_not_called()


@mock.patch(f"{MODULE}._send_telegram_alert")
@mock.patch(f"{MODULE}.time.sleep")
@mock.patch(f"{MODULE}.IB")
def test_connect_retries_with_fresh_instances(
    mock_ib_cls: mock.MagicMock, mock_sleep: mock.MagicMock, mock_alert: mock.MagicMock
) -> None:
    first, second = mock.MagicMock(), mock.MagicMock()
    first.connect.side_effect = ConnectionRefusedError(111, "Connect call failed")
    mock_ib_cls.side_effect = [first, second]
    ib = connection.connect(client_id=11, port=4002)
    assert ib is second
    first.disconnect.assert_called_once()
    second.connect.assert_called_once_with("127.0.0.1", 4002, clientId=11, timeout=15.0)
    mock_sleep.assert_called_once_with(5.0)
    mock_alert.assert_not_called()


@mock.patch(f"{MODULE}._send_telegram_alert")
@mock.patch(f"{MODULE}.time.sleep")
@mock.patch(f"{MODULE}.IB")
def test_connect_all_fail_alerts_once_then_exits(
    mock_ib_cls: mock.MagicMock, mock_sleep: mock.MagicMock, mock_alert: mock.MagicMock
) -> None:
    mock_ib_cls.return_value.connect.side_effect = TimeoutError("API connection timed out")
    with pytest.raises(SystemExit) as info:
        connection.connect(client_id=10, max_retries=3, retry_delay=2, timeout=4)
    assert info.value.code == 1
    assert mock_ib_cls.call_count == 3
    assert mock_ib_cls.return_value.disconnect.call_count == 3
    assert mock_sleep.call_args_list == [mock.call(2), mock.call(2)]
    mock_alert.assert_called_once()
    message = mock_alert.call_args.args[0]
    for expected in (
        "IBKR CONNECTION FAILED",
        "127.0.0.1:7497",
        "clientId: 10",
        "Attempts: 3/3",
        "API connection timed out",
    ):
        assert expected in message


@mock.patch(f"{MODULE}._send_telegram_alert", side_effect=RuntimeError("telegram down"))
@mock.patch(f"{MODULE}.time.sleep")
@mock.patch(f"{MODULE}.IB")
def test_alert_failure_still_exits(
    mock_ib_cls: mock.MagicMock, mock_sleep: mock.MagicMock, mock_alert: mock.MagicMock
) -> None:
    mock_ib_cls.return_value.connect.side_effect = ConnectionRefusedError()
    with pytest.raises(SystemExit) as info:
        connection.connect(max_retries=1)
    assert info.value.code == 1
    mock_alert.assert_called_once()
    mock_sleep.assert_not_called()


@mock.patch(f"{MODULE}.sys.exit")
@mock.patch(f"{MODULE}._send_telegram_alert")
@mock.patch(f"{MODULE}.time.sleep")
@mock.patch(f"{MODULE}.IB")
def test_patched_exit_is_called_with_one(
    mock_ib_cls: mock.MagicMock,
    mock_sleep: mock.MagicMock,
    mock_alert: mock.MagicMock,
    mock_exit: mock.MagicMock,
) -> None:
    mock_ib_cls.return_value.connect.side_effect = OSError("Multiple exceptions: ...")
    assert connection.connect(max_retries=2) is None
    mock_exit.assert_called_once_with(1)
    assert "Attempts: 2/2" in mock_alert.call_args.args[0]


@mock.patch(f"{MODULE}.time.sleep")
@mock.patch(f"{MODULE}.IB")
def test_every_attempt_is_logged_as_json(
    mock_ib_cls: mock.MagicMock, mock_sleep: mock.MagicMock
) -> None:
    out = io.StringIO()
    ibkr_resilience.configure_logging(format="json", stream=out, env={})
    first, second = mock.MagicMock(), mock.MagicMock()
    first.connect.side_effect = ConnectionRefusedError(111, "refused")
    second.managedAccounts.return_value = ["DU1"]
    mock_ib_cls.side_effect = [first, second]
    connection.connect()
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    events = [x["event"] for x in lines if str(x["event"]).startswith("ibkr.")]
    assert events == [
        "ibkr.connect.attempt",
        "ibkr.connect.failed",
        "ibkr.connect.attempt",
        "ibkr.connect.success",
    ]
    failed = next(x for x in lines if x["event"] == "ibkr.connect.failed")
    assert failed["failure_class"] == "refused" and failed["next_delay_s"] == 5.0
    assert next(x for x in lines if x["event"] == "ibkr.connect.success")["accounts"] == ["DU1"]


def test_send_telegram_alert_is_a_noop_when_unset() -> None:
    with mock.patch("requests.post") as post:
        connection._send_telegram_alert("hello")
    post.assert_not_called()


def test_send_telegram_alert_posts_html(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IFDS_TELEGRAM_BOT_TOKEN", "123:abc")
    monkeypatch.setenv("IFDS_TELEGRAM_CHAT_ID", "99")
    with mock.patch("requests.post") as post:
        post.return_value.status_code = 200
        connection._send_telegram_alert("a < b")
    url = post.call_args.args[0]
    assert url.endswith("/bot123:abc/sendMessage")
    assert post.call_args.kwargs["json"]["parse_mode"] == "HTML"
    assert post.call_args.kwargs["json"]["text"] == "a &lt; b"
    assert post.call_args.kwargs["json"]["chat_id"] == "99"


def test_send_telegram_alert_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IFDS_TELEGRAM_BOT_TOKEN", "123:abc")
    monkeypatch.setenv("IFDS_TELEGRAM_CHAT_ID", "99")
    with mock.patch("requests.post", side_effect=Exception("network down")):
        connection._send_telegram_alert("hello")


def test_get_account_returns_the_paper_account() -> None:
    ib = mock.MagicMock()
    ib.managedAccounts.return_value = ["U1111111", "DU2222222"]
    assert connection.get_account(ib) == "DU2222222"


def test_get_account_refuses_a_live_only_gateway() -> None:
    ib = mock.MagicMock()
    ib.managedAccounts.return_value = ["U1111111"]
    with pytest.raises(ibkr_resilience.LiveAccountRefused, match="U1111111"):
        connection.get_account(ib)
    ib.managedAccounts.return_value = []
    with pytest.raises(ibkr_resilience.LiveAccountRefused):
        connection.get_account(ib)


def test_get_account_live_when_explicitly_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IBKR_ALLOW_LIVE", "1")
    ib = mock.MagicMock()
    ib.managedAccounts.return_value = ["U1111111"]
    assert connection.get_account(ib) == "U1111111"


def test_disconnect_never_raises() -> None:
    ib = mock.MagicMock()
    connection.disconnect(ib)
    ib.disconnect.assert_called_once()
    ib.disconnect.side_effect = ConnectionError("Not connected")
    connection.disconnect(ib)
    ib.isConnected.side_effect = RuntimeError("weird")
    connection.disconnect(ib)
    connection.disconnect(None)


def test_disconnect_skips_a_disconnected_instance() -> None:
    ib = mock.MagicMock()
    ib.isConnected.return_value = False
    connection.disconnect(ib)
    ib.disconnect.assert_not_called()


@mock.patch("ibkr_resilience._legacy.connection._send_telegram_alert")
@mock.patch("ibkr_resilience._legacy.connection.IB")
def test_package_level_connect_is_the_same_contract(
    mock_ib_cls: mock.MagicMock, mock_alert: mock.MagicMock
) -> None:
    assert ibkr_resilience.connect is ibkr_resilience._legacy.connection.connect
    mock_ib_cls.return_value.connect.side_effect = ConnectionRefusedError()
    with mock.patch("time.sleep") as sleep, pytest.raises(SystemExit):
        ibkr_resilience.connect(max_retries=2, retry_delay=0.25)
    assert sleep.call_args_list == [mock.call(0.25)]
    mock_alert.assert_called_once()


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [((200, {"ok": True, "result": {}}), "ibkr.alert.sent"), ((500, {"ok": False}), None)],
)
def test_connect_logs_the_real_alert_outcome(
    answer: tuple[int, dict[str, object]],
    outcome: str | None,
    bot_api: BotApi,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A failed post is never logged as ``ibkr.alert.sent`` (the real Bot API on loopback,
    a closed gateway port)."""
    monkeypatch.setenv("IFDS_TELEGRAM_BOT_TOKEN", "123:legacy-token")
    monkeypatch.setenv("IFDS_TELEGRAM_CHAT_ID", "99")
    monkeypatch.setenv("IFDS_TELEGRAM_API_URL", bot_api.url)
    bot_api.answer(answer)
    port = int(closed_port_url().rsplit(":", 1)[1])
    with JsonLogCapture() as logs, pytest.raises(SystemExit):
        connection.connect(port=port, max_retries=1, retry_delay=0, timeout=1)
    assert len(bot_api.requests) >= 1
    events = [r["event"] for r in logs.records if r["event"].startswith("ibkr.alert")]
    assert ("ibkr.alert.sent" in events) == (outcome is not None), events
    if outcome is None:
        assert "ibkr.alert.failed" in events or "ibkr.alert.telegram.failed" in events


def test_connect_without_telegram_logs_disabled_only() -> None:
    port = int(closed_port_url().rsplit(":", 1)[1])
    with JsonLogCapture() as logs, pytest.raises(SystemExit):
        connection.connect(port=port, max_retries=1, retry_delay=0, timeout=1)
    events = [r["event"] for r in logs.records if r["event"].startswith("ibkr.alert")]
    assert events == ["ibkr.alert.disabled"]
