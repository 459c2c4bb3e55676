"""Issue 13: what a cron run pays on its happy path (imports, log rendering, settings)."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import textwrap
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
SUBMIT = ROOT / "scripts" / "paper_trading" / "submit_orders.py"
NEVER_QUIET = (
    *("requests", "urllib3", "html", "difflib"),
    *("ibkr_resilience.simulator", "ibkr_resilience._app.cli", "ibkr_resilience._app.demo"),
    "ibkr_resilience._legacy",
    *(f"ibkr_resilience._notify.{m}" for m in ("dedup", "alert_state", "texts", "healthcheck")),
    *(f"ibkr_resilience._notify.{m}" for m in ("metrics", "bounded")),
)
"""Modules a quiet run (no alert, no ping, no metrics, a good plan) never needs: the HTTP
client, the de-dup state, the alert texts, the healthcheck, the legacy API, the simulator,
the CLI; ``html`` only escapes a Telegram message, ``difflib`` only words a bad header."""


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
def loaded_after(
    code: str, prefixes: tuple[str, ...] = NEVER_QUIET, env: dict[str, str] | None = None
) -> set[str]:
    """The modules named by ``prefixes`` (or below them) in ``sys.modules`` once ``code``
    has run in a fresh interpreter; ``code`` must succeed (``sys.exit(0)`` included)."""
    probe = (
        "import json, sys\n"
        f"try:\n{textwrap.indent(code, '    ')}\nexcept SystemExit as exc:\n"
        "    if exc.code:\n        raise\n"
        f"print(json.dumps(sorted(m for m in sys.modules if "
        f"any(m == p or m.startswith(p + '.') for p in {prefixes!r}))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_importing_the_package_loads_only_its_core() -> None:
    # Settings, errors and the client library (IBKR_CLIENT_LIBRARY fails at the import
    # line); the session, the side channels and the legacy API wait for first use.
    layers = tuple(f"ibkr_resilience.{m}" for m in ("_session", "_notify", "_legacy", "_app"))
    assert loaded_after("import ibkr_resilience", NEVER_QUIET + layers) == set()


def test_the_lazy_package_still_offers_every_public_name() -> None:
    code = (
        "import ibkr_resilience as pkg\n"
        "names = {}\n"
        "exec('from ibkr_resilience import *', names)\n"
        "assert set(pkg.__all__) <= set(names) and set(pkg.__all__) <= set(dir(pkg))\n"
        "from ibkr_resilience._session.session import ibkr_session\n"
        "assert pkg.ibkr_session is ibkr_session\n"
        "try:\n    pkg.no_such_name\nexcept AttributeError as exc:\n    print(exc)\n"
    )
    # Every name resolved: now the legacy API is loaded, on demand.
    assert loaded_after(code, ("ibkr_resilience._legacy",)) == {
        "ibkr_resilience._legacy",
        "ibkr_resilience._legacy.connection",
    }


def test_a_whole_session_without_alerts_loads_none_of_the_quiet_run_extras(
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
    assert loaded_after(code, (*NEVER_QUIET, "ibkr_resilience._app")) == set()


def test_the_submit_job_loads_none_of_the_quiet_run_extras_before_it_runs() -> None:
    assert loaded_after("import ibkr_resilience._app.jobs.submit") == set()


def test_a_one_row_submit_run_loads_none_of_the_quiet_run_extras(
    fake_gateway: FakeGateway, tmp_path: Path
) -> None:
    # The whole cron run, as the wrapper runs it: settings, logging to a file, plan,
    # journal, run lock, session, one order acknowledged, summary; exit 0.
    plan = tmp_path / "plan.csv"
    plan.write_text(
        "id,symbol,side,quantity,order_type,limit_price,stop_price,tif,take_profit,stop_loss\n"
        "perf-1,AAPL,BUY,10,MKT,,,DAY,,\n"
    )
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "IBKR_LOG_FORMAT": "json",
        "IBKR_LOG_FILE": str(tmp_path / "job.jsonl"),
        "IBKR_JOURNAL": str(tmp_path / "journal.jsonl"),
    }
    argv = [str(SUBMIT), "--plan", str(plan), "--port", str(fake_gateway.port)]
    code = (
        "import runpy, sys\n"
        f"sys.argv = {argv!r}\n"
        f"sys.path.insert(0, {str(SUBMIT.parent)!r})\n"
        f"runpy.run_path({str(SUBMIT)!r}, run_name='__main__')"
    )
    assert loaded_after(code, env=env) == set()
    journal = [json.loads(line) for line in (tmp_path / "journal.jsonl").read_text().splitlines()]
    assert [r["event"] for r in journal][-1] == "order.submitted"


def gc_after_job_main(before: str, *, process_start: bool = True) -> dict[str, object]:
    """The collector's state once the wrapper's ``job_main`` has imported the job, in a
    fresh interpreter that ran ``before`` first."""
    probe = (
        f"import gc, json, sys\n{before}\n"
        f"sys.path.insert(0, {str(SUBMIT.parent)!r})\n"
        "from lib.job_entry import job_main\n"
        "frozen_before = gc.get_freeze_count()\n"
        f"job_main('submit', process_start={process_start})\n"
        "print(json.dumps({'enabled': gc.isenabled(), "
        "'frozen': gc.get_freeze_count() - frozen_before, "
        "'job': 'ibkr_resilience._app.jobs.submit' in sys.modules}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_the_wrapper_imports_the_job_then_freezes_it_and_collects_again() -> None:
    # The import's objects are out of the collector's reach, and the collector is on
    # again for what the run creates: a run must not grow without bound.
    state = gc_after_job_main("")
    assert state == {"enabled": True, "frozen": state["frozen"], "job": True}
    assert isinstance(state["frozen"], int) and state["frozen"] > 10_000


def test_the_wrapper_leaves_a_collector_the_caller_disabled_disabled() -> None:
    assert gc_after_job_main("gc.disable()")["enabled"] is False


def test_a_program_that_imports_a_wrapper_keeps_its_heap_unfrozen() -> None:
    # Only the wrapper run as the main program (cron) freezes its import; a test or a
    # program importing it does not get its whole heap frozen.
    state = gc_after_job_main("", process_start=False)
    assert state == {"enabled": True, "frozen": 0, "job": True}
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import gc, scripts.paper_trading.submit_orders as s; print(gc.get_freeze_count())",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stdout.strip() == "0", done.stderr


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
