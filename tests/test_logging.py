"""configure_logging: one JSON stream for ours and the client library's lines, secrets scrubbed."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import structlog
from freezegun import freeze_time

from ibkr_resilience import ConfigError, TelegramAlert, configure_logging
from ibkr_resilience._connect.compat import LOGGER_PREFIX
from ibkr_resilience.testing import BotApi, restored_logging

TOKEN = "987654321:AAHsecretTokenValue-abcdefghij_KLMN"
RFC3339_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    with restored_logging():
        yield


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_json_lines_have_the_common_keys_and_run_context() -> None:
    out = io.StringIO()
    run_id = configure_logging(format="json", stream=out, script="submit_orders.py", env={})
    structlog.get_logger("ibkr_resilience.test").info("ibkr.connect.attempt", attempt=1, port=7497)
    logging.getLogger(f"{LOGGER_PREFIX}.client").info(
        "Connecting to %s:%s", "127.0.0.1", 7497, extra={"conn": 3, "peer": f"bot{TOKEN}"}
    )
    ours, foreign = lines(out)
    assert foreign["conn"] == 3 and foreign["peer"] == "bot[REDACTED]"
    for line in (ours, foreign):
        assert RFC3339_Z.match(str(line["timestamp"])), line
        assert line["level"] == "info"
        assert line["run_id"] == run_id and line["script"] == "submit_orders.py"
    assert ours["event"] == "ibkr.connect.attempt" and ours["logger"] == "ibkr_resilience.test"
    assert ours["attempt"] == 1 and ours["port"] == 7497
    assert foreign["logger"] == f"{LOGGER_PREFIX}.client"
    assert foreign["event"] == "Connecting to 127.0.0.1:7497"
    assert list(ours)[:4] == ["timestamp", "level", "logger", "event"]


def test_timestamp_is_utc_wall_clock() -> None:
    out = io.StringIO()
    configure_logging(format="json", stream=out, env={})
    with freeze_time("2024-03-31T01:30:00+02:00"):  # a DST day in Europe
        structlog.get_logger("t").warning("ibkr.test")
    assert lines(out)[0]["timestamp"] == "2024-03-30T23:30:00Z"


def test_exceptions_are_structured_without_locals_and_redacted() -> None:
    out = io.StringIO()
    configure_logging(format="json", stream=out, env={"IFDS_TELEGRAM_BOT_TOKEN": TOKEN})

    def post() -> None:
        secret_local = f"https://api.telegram.org/bot{TOKEN}/sendMessage"
        raise ConnectionError(f"Max retries exceeded with url: {secret_local}")

    try:
        post()
    except ConnectionError:
        structlog.get_logger("t").exception("ibkr.test.failed")
    try:
        post()
    except ConnectionError:
        logging.getLogger(f"{LOGGER_PREFIX}.wrapper").exception("foreign failure")
    text = out.getvalue()
    assert TOKEN not in text and TOKEN.split(":")[1] not in text
    ours, foreign = lines(out)
    for line in (ours, foreign):
        exc = line["exception"]
        assert isinstance(exc, list) and exc[0]["exc_type"] == "ConnectionError"
        assert "bot[REDACTED]" in exc[0]["exc_value"]
        assert all("locals" not in frame or not frame["locals"] for frame in exc[0]["frames"])
        assert "secret_local" not in json.dumps(line)


def test_one_processor_redacts_every_string() -> None:
    out = io.StringIO()
    custom = "not-token-shaped-secret-42"
    configure_logging(format="json", stream=out, env={"IFDS_TELEGRAM_BOT_TOKEN": custom})
    log = structlog.get_logger("t")
    log.info(f"event with bot{TOKEN}", nested={"url": [f"/bot{TOKEN}/x", ("a", custom)]})
    logging.getLogger(f"{LOGGER_PREFIX}.client").error("foreign %s and %s", TOKEN, custom)
    text = out.getvalue()
    assert TOKEN not in text and custom not in text
    assert text.count("[REDACTED]") >= 4


def test_urllib3_debug_lines_are_redacted() -> None:
    with BotApi([(200, {"ok": True})]) as server:
        out = io.StringIO()
        configure_logging(format="json", level="DEBUG", stream=out, env={})
        requests.get(f"{server.url}/bot{TOKEN}/getMe", timeout=2)
    urllib3_lines = [x for x in lines(out) if str(x["logger"]).startswith("urllib3")]
    assert any("/bot[REDACTED]/getMe" in str(x["event"]) for x in urllib3_lines)
    assert TOKEN not in out.getvalue()


def test_console_format_is_rendered_and_redacted() -> None:
    out = io.StringIO()
    configure_logging(stream=out, env={"IBKR_LOG_FORMAT": "console"})
    structlog.get_logger("t").info("ibkr.connect.attempt", url=f"bot{TOKEN}")
    text = out.getvalue()
    assert "ibkr.connect.attempt" in text and not text.lstrip().startswith("{")
    assert TOKEN not in text


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_format_defaults_to_console_on_a_terminal_else_json() -> None:
    tty = _Tty()
    configure_logging(stream=tty, env={})
    structlog.get_logger("t").info("ibkr.test")
    assert not tty.getvalue().startswith("{")
    pipe = io.StringIO()
    configure_logging(stream=pipe, env={})
    structlog.get_logger("t").info("ibkr.test")
    assert json.loads(pipe.getvalue())["event"] == "ibkr.test"


def test_calling_twice_does_not_duplicate_lines(tmp_path: Path) -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging(format="json", stream=first, file=str(tmp_path / "a.jsonl"), env={})
    run_id = configure_logging(format="json", stream=second, run_id="fixed-run", env={})
    assert run_id == "fixed-run"
    structlog.get_logger("t").info("ibkr.once")
    logging.getLogger(f"{LOGGER_PREFIX}.ib").warning("once too")
    assert first.getvalue() == ""
    assert [x["event"] for x in lines(second)] == ["ibkr.once", "once too"]
    marked = [h for h in logging.getLogger().handlers if getattr(h, "_ibkr_resilience_handler", 0)]
    assert len(marked) == 1


def test_log_file_appends_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    path.write_text('{"earlier": "line"}\n')
    configure_logging(format="console", stream=io.StringIO(), env={"IBKR_LOG_FILE": str(path)})
    structlog.get_logger("t").info("ibkr.to.file", token=f"bot{TOKEN}")
    logging.getLogger(f"{LOGGER_PREFIX}.client").info("foreign to file")
    configure_logging(format="json", stream=io.StringIO(), file=str(path), env={})
    structlog.get_logger("t").info("ibkr.second.run")
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert rows[0] == {"earlier": "line"}
    assert [r["event"] for r in rows[1:]] == ["ibkr.to.file", "foreign to file", "ibkr.second.run"]
    assert TOKEN not in path.read_text()


def test_level_filters_ours_and_foreign() -> None:
    out = io.StringIO()
    configure_logging(format="json", stream=out, env={"IBKR_LOG_LEVEL": "warning"})
    structlog.get_logger("t").info("ibkr.hidden")
    logging.getLogger(f"{LOGGER_PREFIX}.client").info("hidden too")
    structlog.get_logger("t").warning("ibkr.shown")
    assert [x["event"] for x in lines(out)] == ["ibkr.shown"]


def test_bad_settings_raise_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^IBKR_LOG_FORMAT='xml'"):
        configure_logging(stream=io.StringIO(), env={"IBKR_LOG_FORMAT": "xml"})
    with pytest.raises(ConfigError, match=r"^log_level='chatty'"):
        configure_logging(level="chatty", stream=io.StringIO(), env={})


@pytest.mark.parametrize("where", ["missing/dir/run.jsonl", "."])
def test_unopenable_log_file_is_a_config_error_and_changes_nothing(
    tmp_path: Path, where: str
) -> None:
    """Regression: a log file path that cannot be appended to (missing directory, a
    directory) raised FileNotFoundError/IsADirectoryError with a traceback, exit 1."""
    first = io.StringIO()
    configure_logging(format="json", stream=first, env={})
    path = str(tmp_path / where)
    with pytest.raises(ConfigError, match=r"^IBKR_LOG_FILE='.*': cannot open for appending"):
        configure_logging(stream=io.StringIO(), env={"IBKR_LOG_FILE": path})
    with pytest.raises(ConfigError, match=r"^file='.*': cannot open for appending"):
        configure_logging(stream=io.StringIO(), file=path, env={})
    structlog.get_logger("t").info("ibkr.still.here")  # the previous setup is intact
    assert [x["event"] for x in lines(first)] == ["ibkr.still.here"]


def test_importing_the_package_configures_nothing() -> None:
    code = (
        "import logging, structlog, ibkr_resilience, scripts.paper_trading.lib.connection;"
        "print(len(logging.getLogger().handlers), structlog.is_configured())"
    )
    result = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.stdout.split() == ["0", "False"]


def test_a_record_formatted_by_another_handler_first_has_no_duplicate_message() -> None:
    buf = io.StringIO()
    configure_logging(format="json", stream=buf, env={})
    other = logging.StreamHandler(io.StringIO())
    other.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    root = logging.getLogger()
    root.handlers.insert(0, other)  # formats the record before ours does
    try:
        logging.getLogger(f"{LOGGER_PREFIX}.client").info("Connecting to %s", "127.0.0.1")
    finally:
        root.removeHandler(other)
    line = json.loads(buf.getvalue().splitlines()[-1])
    assert line["event"] == "Connecting to 127.0.0.1"
    assert "message" not in line and "asctime" not in line


# -- stderr vs file, and log rotation -------------------------------------------------------
def test_with_a_log_file_stderr_gets_only_warnings_and_the_file_everything(tmp_path: Path) -> None:
    """Cron mails stderr: with a file configured it holds the failure lines, not the log."""
    path = tmp_path / "run.jsonl"
    err = io.StringIO()
    configure_logging(format="json", stream=err, env={"IBKR_LOG_FILE": str(path)})
    structlog.get_logger("t").info("ibkr.connect.attempt")
    structlog.get_logger("t").warning("ibkr.connect.failed")
    structlog.get_logger("t").error("ibkr.connect.gave_up")
    assert [x["event"] for x in lines(err)] == ["ibkr.connect.failed", "ibkr.connect.gave_up"]
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert [r["event"] for r in rows] == [
        "ibkr.connect.attempt",
        "ibkr.connect.failed",
        "ibkr.connect.gave_up",
    ]


def test_the_stderr_threshold_is_configurable(tmp_path: Path) -> None:
    err = io.StringIO()
    env = {"IBKR_LOG_FILE": str(tmp_path / "run.jsonl"), "IBKR_LOG_STDERR_LEVEL": "error"}
    configure_logging(format="json", stream=err, env=env)
    structlog.get_logger("t").warning("ibkr.connect.failed")
    structlog.get_logger("t").error("ibkr.connect.gave_up")
    assert [x["event"] for x in lines(err)] == ["ibkr.connect.gave_up"]
    with pytest.raises(ConfigError, match=r"^IBKR_LOG_STDERR_LEVEL='loud': expected one of"):
        configure_logging(stream=io.StringIO(), env={"IBKR_LOG_STDERR_LEVEL": "loud"})


def test_writing_goes_on_after_logrotate_moves_the_file(tmp_path: Path) -> None:
    """logrotate's default (``create``): the file is renamed, the next line opens a new one."""
    path = tmp_path / "run.jsonl"
    configure_logging(format="json", stream=io.StringIO(), file=str(path), env={})
    structlog.get_logger("t").info("ibkr.before")
    path.rename(tmp_path / "run.jsonl.1")
    structlog.get_logger("t").info("ibkr.after")
    assert [json.loads(x)["event"] for x in path.read_text().splitlines()] == ["ibkr.after"]
    rotated = (tmp_path / "run.jsonl.1").read_text().splitlines()
    assert [json.loads(x)["event"] for x in rotated] == ["ibkr.before"]


def test_writing_goes_on_after_copytruncate(tmp_path: Path) -> None:
    """logrotate's ``copytruncate``: appending resumes at the new end, no hole of NULs."""
    path = tmp_path / "run.jsonl"
    configure_logging(format="json", stream=io.StringIO(), file=str(path), env={})
    structlog.get_logger("t").info("ibkr.before")
    (tmp_path / "run.jsonl.1").write_bytes(path.read_bytes())
    with open(path, "r+b") as f:
        f.truncate(0)
    structlog.get_logger("t").info("ibkr.after")
    data = path.read_bytes()
    assert b"\0" not in data
    assert [json.loads(x)["event"] for x in data.decode().splitlines()] == ["ibkr.after"]


def test_capture_logs_after_configure_logging_still_sees_the_package_lines() -> None:
    """structlog.testing.capture_logs() swaps the items of the configured processors
    list in place: the package's lines must follow it, not the JSON sinks."""
    from structlog.testing import capture_logs

    from ibkr_resilience._core.log import get_logger

    sink = io.StringIO()
    configure_logging(format="json", level="INFO", stream=sink, env={})
    log = get_logger("ibkr_resilience.test").bind(client_id=7)
    with capture_logs() as captured:
        log.info("ibkr.test.captured", attempt=1)
    log.info("ibkr.test.after", attempt=2)
    assert captured == [
        {"event": "ibkr.test.captured", "client_id": 7, "attempt": 1, "log_level": "info"}
    ]
    [line] = [json.loads(x) for x in sink.getvalue().splitlines()]
    assert (line["event"], line["client_id"], line["attempt"]) == ("ibkr.test.after", 7, 2)


def test_urllib3_lines_reach_an_applications_own_handler_scrubbed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # An application that set up logging itself (logging.basicConfig at DEBUG) and
    # never called configure_logging: urllib3's line for the Bot API request reaches
    # its handler, which this package does not format, so the record itself is scrubbed.
    root = logging.getLogger()
    own = logging.StreamHandler(sys.stderr)
    own.setFormatter(logging.Formatter("%(levelname)s:%(name)s:%(message)s"))
    root.addHandler(own)
    root.setLevel(logging.DEBUG)
    with BotApi([(200, {"ok": True, "result": {}})]) as server:
        alert = TelegramAlert(TOKEN, "42", api_url=server.url, timeout=5)
        alert("the gateway is down")
        assert server.wait_for_requests(1)
    err = capsys.readouterr().err
    assert "urllib3.connectionpool" in err and "/bot[REDACTED]/sendMessage" in err
    assert TOKEN not in err
