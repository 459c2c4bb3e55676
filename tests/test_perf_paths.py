"""Issue 13: what a cron run pays on its happy path (imports, log rendering, settings)."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest
import structlog

from ibkr_resilience import SessionConfig, configure_logging, ibkr_session
from ibkr_resilience._core import config as config_module
from ibkr_resilience._core.config import JobSettings
from ibkr_resilience._core.redact import register_secret
from ibkr_resilience.simulator import FakeGateway
from ibkr_resilience.testing import HttpServer

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("requests", "urllib3", "ibkr_resilience.simulator", "ibkr_resilience._app")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    structlog.reset_defaults()


# --------------------------------------------------------------------------- imports
def loaded_after(code: str) -> set[str]:
    """The top-level names of ``HEAVY`` modules in ``sys.modules`` after running ``code``."""
    probe = (
        f"{code}\nimport sys, json\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.startswith({HEAVY!r}))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_importing_the_package_loads_no_http_client_simulator_or_cli() -> None:
    assert loaded_after("import ibkr_resilience") == set()


def test_a_whole_session_without_alerts_loads_no_http_client_simulator_or_cli(
    fake_gateway: FakeGateway,
) -> None:
    # The session's whole path in its own process, against the gateway in this one:
    # logging set up, connect, sync, disconnect, healthcheck and alerts not configured.
    code = (
        "import io\n"
        "from ibkr_resilience import configure_logging, ibkr_session\n"
        "configure_logging(format='json', stream=io.StringIO(), env={})\n"
        f"with ibkr_session(10, '127.0.0.1', {fake_gateway.port}, timeout=5, env={{}}) as ib:\n"
        "    assert ib.isConnected()\n"
    )
    assert loaded_after(code) == set()


def test_the_submit_job_loads_no_http_client_or_simulator_before_it_sends() -> None:
    loaded = loaded_after("import ibkr_resilience._app.jobs.submit")
    assert not {m for m in loaded if not m.startswith("ibkr_resilience._app")}


# --------------------------------------------------------------------------- log lines
def two_sinks(tmp_path: Path, stream_level: str) -> tuple[io.StringIO, Path]:
    out, path = io.StringIO(), tmp_path / "run.log"
    configure_logging(
        format="json", stream=out, file=str(path), stream_level=stream_level, env={}, script="t"
    )
    return out, path


def test_a_line_both_sinks_take_is_rendered_once_and_is_the_same_in_both(
    tmp_path: Path,
) -> None:
    out, path = two_sinks(tmp_path, "INFO")
    render = structlog.stdlib.ProcessorFormatter.format
    with mock.patch.object(
        structlog.stdlib.ProcessorFormatter, "format", autospec=True, side_effect=render
    ) as rendered:
        structlog.get_logger("ibkr_resilience.t").info("ibkr.t.one", n=1)
        logging.getLogger("ib_insync.client").info("foreign %s", "line")
    assert rendered.call_count == 2  # two lines, two sinks: one rendering per line
    assert out.getvalue() == path.read_text() and len(out.getvalue().splitlines()) == 2


def test_each_sink_keeps_its_level_and_the_shared_line_is_redacted(tmp_path: Path) -> None:
    secret = "perf-secret-value-0123456789"
    register_secret(secret)
    out, path = two_sinks(tmp_path, "WARNING")
    log = structlog.get_logger("ibkr_resilience.t")
    log.info("ibkr.t.info", detail=secret)
    log.warning("ibkr.t.warning", detail=secret)
    to_stream = [json.loads(line) for line in out.getvalue().splitlines()]
    to_file = [json.loads(line) for line in path.read_text().splitlines()]
    assert [x["event"] for x in to_stream] == ["ibkr.t.warning"]
    assert [x["event"] for x in to_file] == ["ibkr.t.info", "ibkr.t.warning"]
    assert to_stream[0] == to_file[1]
    assert secret not in out.getvalue() + path.read_text()


def test_console_on_stderr_and_json_in_the_file_still_render_each_format(
    tmp_path: Path,
) -> None:
    out, path = io.StringIO(), tmp_path / "run.log"
    configure_logging(format="console", stream=out, file=str(path), stream_level="INFO", env={})
    structlog.get_logger("ibkr_resilience.t").info("ibkr.t.both")
    assert "ibkr.t.both" in out.getvalue() and not out.getvalue().startswith("{")
    assert json.loads(path.read_text())["event"] == "ibkr.t.both"


# --------------------------------------------------------------------------- settings
def test_a_session_config_from_the_environment_validates_each_field_once() -> None:
    env = {"IBKR_PORT": "4002", "IBKR_CONNECT_TIMEOUT": "3"}
    convert = config_module._convert
    with mock.patch.object(config_module, "_convert", side_effect=convert) as checked:
        config = SessionConfig.from_env(env, client_id=12, host="gw")
    fields = [call.args[0].field for call in checked.call_args_list]
    assert sorted(fields) == sorted(set(fields))  # no field checked twice
    assert {"port", "timeout", "client_id", "host"} <= set(fields)
    assert (config.port, config.timeout, config.client_id, config.host) == (4002, 3.0, 12, "gw")


def test_the_defaults_pass_the_checks_the_environment_path_no_longer_repeats() -> None:
    # from_env leaves defaults unchecked; direct construction checks (and normalises)
    # every field: equal objects mean every default is already valid and normal.
    assert SessionConfig.from_env({}) == SessionConfig()
    assert JobSettings.from_env({}) == JobSettings()
    assert SessionConfig().replace(port=4002) == SessionConfig(port=4002)
    assert SessionConfig.from_env({}, max_time=0.3).refused_retry_interval == 0.3


# --------------------------------------------------------------------------- healthcheck
def test_both_pings_of_a_session_share_one_http_connection(fake_gateway: FakeGateway) -> None:
    uuid = "0b8e4f7a-5f1c-4e10-9c6a-3b7d2a9e1c13"
    with HttpServer([(200, b"OK")], path=f"/{uuid}", keep_alive=True) as server:
        env = {"IBKR_HEALTHCHECK_URL": server.url}
        with ibkr_session(10, "127.0.0.1", fake_gateway.port, timeout=5, env=env):
            pass
        # The outcome ping is sent before the block returns (waiting for /start first).
        start, success = server.requests
    assert (start.route, success.route) == (f"/{uuid}/start", f"/{uuid}")
    assert start.peer == success.peer
