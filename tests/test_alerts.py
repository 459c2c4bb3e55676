"""Alerts: a real HTTP server on 127.0.0.1 stands in for the Telegram Bot API."""

from __future__ import annotations

import io
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from loadslack import Load
from structlog.testing import capture_logs

from ibkr_resilience import TelegramAlert
from ibkr_resilience._notify.bounded import run_bounded
from ibkr_resilience._notify.delivery import deliver_alert
from ibkr_resilience._notify.telegram import DisabledAlert, telegram_html
from ibkr_resilience._notify.texts import alert_text
from ibkr_resilience.testing import (
    BlackHole,
    BotApi,
    JsonLogCapture,
    closed_port_url,
    parse_json_lines,
)

TOKEN = "555000111:AAGtokenForTests_abcdefghijklmnopqrs"


@pytest.fixture
def black_hole() -> Iterator[str]:
    """Accepts connections and never answers."""
    with BlackHole() as hole:
        yield hole.url


@pytest.fixture
def closed_port() -> str:
    return closed_port_url()


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    with JsonLogCapture() as capture:
        yield capture.stream


def events(out: io.StringIO) -> list[dict[str, Any]]:
    return parse_json_lines(out.getvalue())


# -- text -----------------------------------------------------------------------------


def test_html_is_escaped() -> None:
    assert telegram_html("a < b && c > d") == "a &lt; b &amp;&amp; c &gt; d"


def test_long_text_is_cut_before_escaping_and_fits() -> None:
    text = "x" * 10 + "&" * 5000
    result = telegram_html(text)
    assert len(result) <= 4096
    body = result.removesuffix("\n[truncated]")
    assert body != result  # marked as truncated
    assert body.endswith("&amp;")  # never half an entity
    assert body.replace("&amp;", "&") == text[: len(body.replace("&amp;", "&"))]


def test_text_at_the_limit_is_not_cut() -> None:
    assert telegram_html("y" * 4096) == "y" * 4096


def test_alert_text_names_machine_and_script() -> None:
    text = alert_text("TITLE", [("clientId", 10)], ["note"])
    assert text.splitlines()[0] == "TITLE"
    assert "clientId: 10" in text
    assert f"Machine: {socket.gethostname()}" in text
    assert f"Script: {os.path.basename(sys.argv[0])}" in text
    assert text.endswith("note")


# -- TelegramAlert against the local Bot API -------------------------------------------


def test_posts_send_message_with_html(bot_api: BotApi, log_stream: io.StringIO) -> None:
    alert = TelegramAlert(TOKEN, "-100777", api_url=bot_api.url, timeout=2)
    assert alert("job <failed> & stopped") is True
    [request] = bot_api.requests
    path, body = request.path, request.json
    assert path == f"/bot{TOKEN}/sendMessage"
    assert body["chat_id"] == "-100777"
    assert body["parse_mode"] == "HTML"
    assert body["text"] == "job &lt;failed&gt; &amp; stopped"
    assert TOKEN not in log_stream.getvalue()
    assert TOKEN not in repr(alert)


def test_long_alert_is_cut(bot_api: BotApi) -> None:
    TelegramAlert(TOKEN, 1, api_url=bot_api.url, timeout=2)("<" * 9000)
    assert len(bot_api.requests[0].json["text"]) <= 4096


def test_400_fails_without_raising(bot_api: BotApi, log_stream: io.StringIO) -> None:
    bot_api.answers = [(400, {"ok": False, "description": "Bad Request: can't parse entities"})]
    assert TelegramAlert(TOKEN, 1, api_url=bot_api.url, timeout=2)("x") is False
    failed = [e for e in events(log_stream) if e["event"] == "ibkr.alert.telegram.failed"]
    assert failed[0]["status"] == 400 and "parse entities" in failed[0]["description"]
    assert TOKEN not in log_stream.getvalue()


def test_429_is_retried_once_when_retry_after_fits(bot_api: BotApi) -> None:
    bot_api.answers = [
        (429, {"ok": False, "parameters": {"retry_after": 0.1}}),
        (200, {"ok": True}),
    ]
    slept: list[float] = []
    alert = TelegramAlert(TOKEN, 1, api_url=bot_api.url, timeout=2, sleep=slept.append)
    assert alert("x") is True
    assert len(bot_api.requests) == 2 and slept == [0.1]


def test_429_twice_gives_up_after_one_retry(bot_api: BotApi) -> None:
    bot_api.answers = [(429, {"ok": False, "parameters": {"retry_after": 0}})]
    assert (
        TelegramAlert(TOKEN, 1, api_url=bot_api.url, timeout=2, sleep=lambda s: None)("x") is False
    )
    assert len(bot_api.requests) == 2


def test_429_not_retried_when_retry_after_exceeds_deadline(bot_api: BotApi) -> None:
    bot_api.answers = [(429, {"ok": False, "parameters": {"retry_after": 30}})]
    slept: list[float] = []
    alert = TelegramAlert(TOKEN, 1, api_url=bot_api.url, timeout=1, sleep=slept.append)
    assert alert("x") is False
    assert len(bot_api.requests) == 1 and slept == []


def test_500_fails(bot_api: BotApi) -> None:
    bot_api.answers = [(500, {"ok": False, "description": "Internal"})]
    assert TelegramAlert(TOKEN, 1, api_url=bot_api.url, timeout=2)("x") is False
    assert len(bot_api.requests) == 1


def test_black_hole_is_bounded_by_the_deadline(black_hole: str, log_stream: io.StringIO) -> None:
    started = time.monotonic()
    assert TelegramAlert(TOKEN, 1, api_url=black_hole, timeout=0.3)("x") is False
    assert time.monotonic() - started < 1.0
    assert TOKEN not in log_stream.getvalue()


def test_refused_port_fails_fast_and_never_leaks_token(
    closed_port: str, log_stream: io.StringIO
) -> None:
    started = time.monotonic()
    assert TelegramAlert(TOKEN, 1, api_url=closed_port, timeout=1)("x") is False
    assert time.monotonic() - started < 1.0
    text = log_stream.getvalue()
    assert "ibkr.alert.telegram.failed" in text
    assert TOKEN not in text and "bot[REDACTED]" in text  # requests put the URL in its error


def test_unresolvable_host_is_bounded_by_deliver_alert(log_stream: io.StringIO) -> None:
    alert = TelegramAlert(TOKEN, 1, api_url="http://nonexistent.invalid", timeout=0.5)
    started = time.monotonic()
    outcome = deliver_alert(alert, "x", timeout=0.5)
    assert time.monotonic() - started < 1.0
    assert outcome in ("failed", "timed_out")
    assert TOKEN not in log_stream.getvalue()


# -- from_env and the no-op ----------------------------------------------------------------


def test_from_env_unset_is_a_noop_logged_once() -> None:
    alert = TelegramAlert.from_env({"IFDS_TELEGRAM_CHAT_ID": "1"})
    assert isinstance(alert, DisabledAlert)
    with capture_logs() as logs:
        assert deliver_alert(alert, "a", 1) == "disabled"
        assert deliver_alert(alert, "b", 1) == "disabled"
    disabled = [e for e in logs if e["event"] == "ibkr.alert.disabled"]
    assert len(disabled) == 1 and "IFDS_TELEGRAM_BOT_TOKEN" in disabled[0]["reason"]


def test_from_env_configured(bot_api: BotApi) -> None:
    alert = TelegramAlert.from_env(
        {
            "IFDS_TELEGRAM_BOT_TOKEN": TOKEN,
            "IFDS_TELEGRAM_CHAT_ID": "42",
            "IFDS_TELEGRAM_API_URL": bot_api.url,
            "IBKR_ALERT_TIMEOUT": "2",
        }
    )
    assert isinstance(alert, TelegramAlert) and alert.timeout == 2
    assert deliver_alert(alert, "hello", 2) == "sent"
    assert bot_api.requests[0].json["chat_id"] == "42"


# -- deliver_alert with arbitrary callables ------------------------------------------------


def test_deliver_alert_outcomes() -> None:
    seen: list[tuple[str, bool]] = []

    def ok(text: str) -> None:
        seen.append((text, threading.current_thread().daemon))

    def boom(text: str) -> None:
        raise RuntimeError(f"bad url /bot{TOKEN}/sendMessage")

    with capture_logs() as logs:
        assert deliver_alert(ok, "t", 1) == "sent"
        assert deliver_alert(boom, "t", 1) == "failed"
        assert deliver_alert(lambda text: False, "t", 1) == "failed"
        assert deliver_alert(lambda text: sys.exit(3), "t", 1) == "failed"
    assert seen == [("t", True)]  # ran in a daemon thread
    assert not any(TOKEN in json.dumps(e, default=str) for e in logs)


def test_deliver_alert_stops_waiting_at_the_deadline() -> None:
    release = threading.Event()
    load = Load()
    started = time.monotonic()
    outcome = deliver_alert(lambda text: release.wait(10), "t", 0.2)
    elapsed = time.monotonic() - started
    release.set()
    assert outcome == "timed_out"
    assert 0.2 <= elapsed < 0.2 + load.slack(0.4), load


@pytest.mark.parametrize(
    ("ended_at", "timed_out"),
    [(1.05, True), (0.95, False)],
    ids=["ended-after-the-deadline", "ended-before-it"],
)
def test_the_outcome_is_decided_by_when_the_call_ended(ended_at: float, timed_out: bool) -> None:
    """Regression (seen under load): a silent Bot API's read timeout fired just after the
    1 s deadline, the waiting thread woke later still, found the call finished, and
    reported "failed" instead of "timed out". Clock reads: start, the call's end (in its
    thread), the waiter's return."""
    clock = iter([0.0, ended_at, 1.06])
    result = run_bounded(lambda: False, 1.0, "test-bounded", clock=lambda: next(clock))
    assert result.timed_out is timed_out
    assert result.elapsed_ms == 1060.0
    if not timed_out:
        assert result.value is False


def test_an_exception_text_carrying_the_token_is_scrubbed_in_the_alert() -> None:
    """A failed HTTP call inside the block quotes its URL (``/bot<token>/...``): the alert
    that quotes the exception must not carry the token to any channel."""
    sent: list[str] = []
    text = f"Error: ConnectionError: url: /bot{TOKEN}/sendMessage and bare {TOKEN}"
    assert deliver_alert(sent.append, text, 2.0) == "sent"
    assert TOKEN not in sent[0] and "bot[REDACTED]" in sent[0]
