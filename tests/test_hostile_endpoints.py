"""Alert and healthcheck transports and state files against hostile or broken peers.

Each case uses a real peer on 127.0.0.1 or a real file of the hostile kind (a FIFO, a
2 GB sparse file): a Bot API that streams gigabytes, answers 200 with non-JSON or
redirects; a state file or lock that is not a regular file. The promise in every case:
bounded time, bounded memory, the alert never counted as sent when it was not, and an
alert never lost to the de-dup layer.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from ibkr_resilience import ConfigError, SessionConfig, TelegramAlert
from ibkr_resilience._core.statedir import state_dir
from ibkr_resilience._notify.alert_state import FailureKey
from ibkr_resilience._notify.dedup import AlertDeduplicator
from ibkr_resilience.simulator import FakeGateway
from ibkr_resilience.testing import BotApi, HttpServer, JsonLogCapture

TOKEN = "777000111:AAHostileEndpointToken_abcdefghijkl"
ROOT = Path(__file__).resolve().parents[1]


class Firehose:
    """Answers every request with 200, a 4 GB Content-Length, and zeros until the peer leaves."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.sent = 0
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> Firehose:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._listener.close()
        self._thread.join(5)

    def _serve(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except OSError:
            return
        with conn:
            conn.recv(65536)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: 4294967296\r\n\r\n"
            )
            chunk = b"\0" * 65536
            try:
                while self.sent < 4 * 2**30:
                    conn.sendall(chunk)
                    self.sent += len(chunk)
            except OSError:
                pass  # the client hung up: what we want
        self.done.set()


def telegram(url: str, timeout: float = 3.0) -> TelegramAlert:
    return TelegramAlert(TOKEN, "42", api_url=url, timeout=timeout)


def test_a_bot_api_streaming_gigabytes_is_read_only_a_little() -> None:
    """The body is read up to a small cap, then the connection is dropped: not sent."""
    with Firehose() as hose, capture_logs() as logs:
        started = time.monotonic()
        assert telegram(hose.url)("hello") is False
        took = time.monotonic() - started
        assert hose.done.wait(5), "the client never hung up"
    assert took < 3.0
    # What we read plus what the kernel buffers held: megabytes, never gigabytes.
    assert hose.sent < 64 * 2**20, hose.sent
    [failed] = [e for e in logs if e["event"] == "ibkr.alert.telegram.failed"]
    assert failed["status"] == 200


@pytest.mark.parametrize("body", [b"<html>captive portal</html>", b'{"ok": false}', b"[1, 2]", b""])
def test_a_200_that_is_not_ok_true_json_is_not_delivered(body: bytes) -> None:
    """Only ``{"ok": true}`` from the Bot API counts as delivered."""
    with HttpServer([(200, body)]) as api:
        assert telegram(api.url)("hello") is False
        assert len(api.requests) == 1


def test_a_redirect_is_not_followed() -> None:
    """A 307 elsewhere is an error, never a second POST (with the token) somewhere else."""
    with BotApi() as elsewhere:
        target = elsewhere.url + f"/bot{TOKEN}/sendMessage"

        class Redirect(HttpServer):
            def _handler(self):  # type: ignore[no-untyped-def]
                base = super()._handler()

                class Handler(base):  # type: ignore[valid-type,misc]
                    def do_POST(self) -> None:
                        self.send_response(307)
                        self.send_header("Location", target)
                        self.send_header("Content-Length", "0")
                        self.end_headers()

                return Handler

        with Redirect() as api:
            assert telegram(api.url)("hello") is False
        assert elsewhere.requests == []


# -- state files that are not regular files --------------------------------------------------
@pytest.fixture
def sender() -> list[str]:
    return []


def _record(texts: list[str], text: str) -> str:
    texts.append(text)
    return "sent"


def alert_through_dedup(path: Path, texts: list[str]) -> float:
    started = time.monotonic()
    AlertDeduplicator(path, 1800, lock_timeout=1.0).failure(
        FailureKey("127.0.0.1", 4002, 10, "refused"),
        lambda occurrence: "IBKR CONNECTION FAILED",
        lambda text: _record(texts, text),
    )
    return time.monotonic() - started


def test_a_fifo_as_state_file_never_blocks_and_the_alert_is_sent(
    tmp_path: Path, sender: list[str]
) -> None:
    path = tmp_path / "state.json"
    os.mkfifo(path)
    assert alert_through_dedup(path, sender) < 2.0
    assert sender == ["IBKR CONNECTION FAILED"]


def test_a_fifo_as_lock_file_never_blocks_and_the_alert_is_sent(
    tmp_path: Path, sender: list[str]
) -> None:
    path = tmp_path / "state.json"
    os.mkfifo(tmp_path / "state.json.lock")
    assert alert_through_dedup(path, sender) < 2.0
    assert sender == ["IBKR CONNECTION FAILED"]


def test_a_2gb_sparse_state_file_is_not_read(tmp_path: Path, sender: list[str]) -> None:
    path = tmp_path / "state.json"
    with open(path, "wb") as f:
        f.truncate(2 * 2**30)
    with capture_logs() as logs:
        assert alert_through_dedup(path, sender) < 2.0
    assert sender == ["IBKR CONNECTION FAILED"]
    [corrupt] = [e for e in logs if e["event"] == "ibkr.alert.state_corrupt"]
    assert "bytes" in corrupt["reason"]


# -- secrets ---------------------------------------------------------------------------------
def test_a_config_error_about_a_url_never_shows_the_token() -> None:
    url = f"https://api.telegram.org/bot{TOKEN}/sendMessage with space"
    with pytest.raises(ConfigError) as info:
        SessionConfig.from_env({"IFDS_TELEGRAM_API_URL": url})
    assert TOKEN not in str(info.value) and "IFDS_TELEGRAM_API_URL" in str(info.value)


def test_a_log_sink_on_a_full_disk_reports_one_scrubbed_line() -> None:
    """Python's own "--- Logging error ---" report would quote the raw record."""
    code = (
        "import logging\n"
        "from ibkr_resilience import configure_logging\n"
        "configure_logging(format='json', file='/dev/full', env={})\n"
        f"logging.getLogger('urllib3.connectionpool').warning('POST /bot{TOKEN}/sendMessage')\n"
        "print('still running')\n"
    )
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert "still running" in result.stdout
    assert TOKEN not in result.stderr and TOKEN not in result.stdout
    assert "--- Logging error ---" not in result.stderr
    lost = [line for line in result.stderr.splitlines() if "log line lost" in line]
    assert lost and all("Traceback" not in line for line in lost)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run as a uid with no passwd entry")
def test_no_home_and_no_passwd_entry_falls_back_with_a_warning(tmp_path: Path) -> None:
    code = (
        "import os, json, tempfile\n"
        "from ibkr_resilience import configure_logging\n"
        "from ibkr_resilience._core.statedir import state_dir\n"
        "configure_logging(format='json', env={})\n"
        "tempfile.gettempdir()\n"
        # Imported first: this uid cannot read the interpreter's own files under /root.
        "os.setgid(54321); os.setuid(54321)\n"
        "print(state_dir())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout.strip().endswith("ibkr_resilience-54321/state")
    warnings = [json.loads(x) for x in result.stderr.splitlines() if x.startswith("{")]
    assert [w["event"] for w in warnings] == ["ibkr.state_dir.fallback"]


@pytest.mark.parametrize("home", ["", "  ", "relative/dir"])
def test_an_empty_or_relative_home_is_ignored_for_the_passwd_entry(
    home: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``~`` expands an empty HOME to ``/`` and a relative one under the cron job's working
    directory; neither is a home. The passwd entry's is used, as for no HOME at all."""
    monkeypatch.setenv("HOME", home)  # the process's own too: ``~`` reads it
    monkeypatch.delenv("XDG_STATE_HOME")
    expected = Path(pwd.getpwuid(os.getuid()).pw_dir) / ".local" / "state" / "ibkr_resilience"
    assert state_dir({"HOME": home}) == expected
    assert state_dir() == expected


def test_a_relative_xdg_state_home_is_ignored_with_one_warning(tmp_path: Path) -> None:
    """The XDG spec says ignore it; it is, but never silently (the journal would move
    without a word, and a run would forget what it placed)."""
    env = {"HOME": str(tmp_path), "XDG_STATE_HOME": "relative/state-dir"}
    with JsonLogCapture() as logs:
        first, second = state_dir(env), state_dir(env)
    assert first == second == tmp_path / ".local" / "state" / "ibkr_resilience"
    (warning,) = logs.events("ibkr.state_dir.relative_xdg_ignored")
    assert warning["level"] == "warning" and warning["xdg_state_home"] == "relative/state-dir"
    assert warning["used"] == str(first)


def test_the_relative_xdg_warning_of_a_script_run_is_a_json_line_in_its_log_file(
    fake_gateway: FakeGateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # With Telegram set, the run's alert de-dup state lives under the state directory:
    # finding it must wait until the run's logging is set up, or its warning is the one
    # line that is not JSON and not in the log file.
    from ibkr_resilience._app.jobs import submit as submit_job

    plan = tmp_path / "plan.csv"
    plan.write_text(
        "id,symbol,side,quantity,order_type,limit_price,stop_price,tif,take_profit,stop_loss\n"
        "xdg-1,AAPL,BUY,10,MKT,,,DAY,,\n"
    )
    log_file = tmp_path / "run.jsonl"
    env = {
        "HOME": str(tmp_path),
        "XDG_STATE_HOME": f"relative/{tmp_path.name}",  # one warning per process and value
        "IFDS_TELEGRAM_BOT_TOKEN": TOKEN,
        "IFDS_TELEGRAM_CHAT_ID": "42",
        "IFDS_TELEGRAM_API_URL": "http://127.0.0.1:9",  # never used: the run succeeds
        "IBKR_LOG_FORMAT": "json",
        "IBKR_LOG_FILE": str(log_file),
        "IBKR_CONNECT_TIMEOUT": "5",
    }
    args = ["--plan", str(plan), "--port", str(fake_gateway.port), "--dry-run"]
    try:
        assert submit_job.main(args, env=env) == 0
    finally:
        for handler in [
            h for h in logging.getLogger().handlers if hasattr(h, "_ibkr_resilience_handler")
        ]:
            logging.getLogger().removeHandler(handler)
            handler.close()
    err = capsys.readouterr().err
    assert all(line.startswith("{") for line in err.splitlines()), err
    events = [json.loads(line)["event"] for line in log_file.read_text().splitlines()]
    assert "ibkr.state_dir.relative_xdg_ignored" in events


def test_a_session_given_an_environment_keeps_its_alert_state_where_that_environment_says(
    tmp_path: Path,
) -> None:
    # ibkr_session(env=...) reads its settings from that mapping; the de-dup state's
    # default place (XDG_STATE_HOME) must come from it too, not from os.environ.
    from ibkr_resilience import ibkr_session

    env = {
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "IFDS_TELEGRAM_BOT_TOKEN": TOKEN,
        "IFDS_TELEGRAM_CHAT_ID": "42",
    }
    session = ibkr_session(env=env)
    assert session.notifier.dedup is not None
    expected = tmp_path / "state" / "ibkr_resilience" / "alert_state.json"
    assert Path(session.notifier.dedup.store.path) == expected
