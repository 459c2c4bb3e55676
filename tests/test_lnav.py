"""lnav reads our JSON lines: ``docs/lnav/ibkr_resilience.json`` against a real log.

The log comes from real sessions (the real client library against the simulated
gateway, written by ``configure_logging(format="json", file=...)``): one that gives up on a
hanging gateway, one that gives up on a closed port, one that connects. lnav runs headless
(``lnav -n -c ';SELECT ...'``) with the format installed by ``lnav -i`` into a throwaway
HOME, so the user's own lnav configuration is never read or written.

lnav drops a line it cannot parse (no timestamp, not JSON) without a word, so the first
check is that lnav's row count equals the file's line count.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog

from ibkr_resilience import ConnectionFailed, configure_logging, ibkr_session
from ibkr_resilience._connect.compat import LOGGER_PREFIX
from ibkr_resilience.simulator import FakeGateway
from ibkr_resilience.testing import restored_logging

LNAV = shutil.which("lnav")
# CI installs lnav (.ci/run): there a missing lnav fails the tests instead of skipping them.
IN_CI = os.environ.get("CI", "").lower() == "true"
pytestmark = pytest.mark.skipif(
    LNAV is None and not IN_CI,
    reason="lnav is not on PATH (Debian/Ubuntu: apt-get install -y lnav; CI installs it)",
)

REPO = Path(__file__).resolve().parents[1]
FORMAT = REPO / "docs" / "lnav" / "ibkr_resilience.json"
VIEW = REPO / "docs" / "lnav" / "ibkr_resilience.sql"
LOGGING_DOC = REPO / "docs" / "logging.md"
LNAV_TIMEOUT = 30.0

RUN_ID = "0123456789abcdef0123456789abcdef"
HANG_CLIENT, REFUSED_CLIENT, OK_CLIENT = 31, 32, 33
HANG_ATTEMPTS, REFUSED_ATTEMPTS = 2, 3

# The queries documented in docs/logging.md ("Every failed attempt this week"); the test
# checks that the document shows exactly these.
WEEK_QUERY = """
SELECT log_time, script, host, port, client_id, attempt, max_attempts,
       failure_class, error_type, error, elapsed_ms, run_id
FROM ibkr_events
WHERE event = 'ibkr.connect.failed'
  AND log_time >= datetime('now', '-7 days')
ORDER BY log_time
"""
CALENDAR_WEEK_CONDITION = "log_time >= date('now', '-6 days', 'weekday 1')"


# --------------------------------------------------------------------------- fixtures
def _no_wait(seconds: float) -> None:
    """The retry wait: skipped, the log still records the planned ``next_delay_s``."""


def _run_sessions() -> list[str]:
    """Two sessions that give up and one that connects; returns the alerts they sent."""
    alerts: list[str] = []
    with FakeGateway() as gw:

        def session(client_id: int, **kw: Any) -> Any:
            return ibkr_session(
                client_id, "127.0.0.1", gw.port, max_time=10.0, alert=alerts.append, env={}, **kw
            )

        gw.hang()
        fast = {"timeout": 0.25, "sleep": _no_wait}
        with (
            pytest.raises(ConnectionFailed),
            session(HANG_CLIENT, max_attempts=HANG_ATTEMPTS, **fast),
        ):
            pass
        gw.down()
        with (
            pytest.raises(ConnectionFailed),
            session(REFUSED_CLIENT, max_attempts=REFUSED_ATTEMPTS, **fast),
        ):
            pass
        gw.up()
        with session(OK_CLIENT, timeout=5.0, max_attempts=2) as ib:
            assert ib.isConnected()
    # No session path logs at critical; one line through the same pipeline checks the map.
    structlog.get_logger("ibkr_resilience.lnav_test").critical("lnav_test.critical")
    return alerts


@pytest.fixture(scope="module")
def real_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lnav-log") / "ibkr.log"
    with restored_logging():
        configure_logging(
            format="json",
            level="DEBUG",  # the client library's wire lines too: every kind of line must parse
            file=str(path),
            script="lnav_test.py",
            run_id=RUN_ID,
            stream=io.StringIO(),
            env={},
        )
        alerts = _run_sessions()
    assert len(alerts) == 2  # the two sessions that gave up
    return path


@pytest.fixture(scope="module")
def lnav_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway HOME with the format and the view installed by ``lnav -i``."""
    home = tmp_path_factory.mktemp("lnav-home")
    proc = _lnav(home, ["-i", str(FORMAT), str(VIEW)])
    assert proc.returncode == 0, proc.stderr
    # lnav 0.11 uses ~/.lnav, or ~/.config/lnav when ~/.config exists.
    installed = [p.name for p in home.glob("*/formats/installed/*")]
    installed += [p.name for p in home.glob(".config/lnav/formats/installed/*")]
    assert sorted(installed) == ["ibkr_resilience.json", "ibkr_resilience.sql"], proc.stderr
    return home


@pytest.fixture
def records(real_log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in real_log.read_text(encoding="utf-8").splitlines()]


# --------------------------------------------------------------------------- helpers
def _lnav(home: Path, args: list[str]) -> subprocess.CompletedProcess[str]:
    assert LNAV is not None, "lnav is not on PATH: CI must `apt-get install -y lnav`"
    env = {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "TZ": "UTC",
        "LANG": "C.UTF-8",
        "TERM": "dumb",
    }
    return subprocess.run(
        [LNAV, *args],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=LNAV_TIMEOUT,
        check=False,
    )


def query(home: Path, log: Path, *sqls: str) -> list[list[dict[str, Any]]]:
    """Run SQL queries headless over ``log``; one list of row dicts per query.

    lnav exits 0 even when a query fails (it prints the error on stderr), so stderr must
    be empty and every result file must exist.
    """
    out = Path(tempfile.mkdtemp(prefix="lnav-results-", dir=log.parent))
    args = ["-n", "-q"]
    for number, sql in enumerate(sqls):
        target = out / f"q{number}.json"
        args += ["-c", ";" + " ".join(sql.split()), "-c", f":write-json-to {target}"]
    proc = _lnav(home, [*args, str(log)])
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr
    return [json.loads((out / f"q{n}.json").read_text(encoding="utf-8")) for n in range(len(sqls))]


def line_count(path: Path) -> int:
    """What ``wc -l`` says."""
    return path.read_bytes().count(b"\n")


# --------------------------------------------------------------------------- tests
def test_the_format_loads_without_warnings(lnav_home: Path, real_log: Path) -> None:
    proc = _lnav(lnav_home, ["-W", "-n", "-q", "-c", ";SELECT 1", str(real_log)])
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""


def test_every_line_is_parsed(
    lnav_home: Path, real_log: Path, records: list[dict[str, Any]]
) -> None:
    loggers = Counter(r["logger"] for r in records)
    assert loggers[f"{LOGGER_PREFIX}.client"] > 0 and loggers["ibkr_resilience.connect"] > 0
    [total], by_logger = query(
        lnav_home,
        real_log,
        "SELECT count(*) AS n FROM ibkr_resilience",
        "SELECT logger, count(*) AS n FROM ibkr_resilience GROUP BY logger",
    )
    assert total["n"] == line_count(real_log) == len(records)
    assert {row["logger"]: row["n"] for row in by_logger} == dict(loggers)


def test_the_line_count_check_catches_a_dropped_line(
    lnav_home: Path, real_log: Path, tmp_path: Path
) -> None:
    """A JSON line without ``timestamp`` is dropped silently: the count check must see it."""
    log = tmp_path / "ibkr.log"
    shutil.copyfile(real_log, log)
    with log.open("a", encoding="utf-8") as f:
        f.write(json.dumps({"level": "error", "logger": "x", "event": "no timestamp"}) + "\n")
    [[total]] = query(lnav_home, log, "SELECT count(*) AS n FROM ibkr_resilience")
    assert total["n"] == line_count(log) - 1


def test_plain_text_lines_are_invalid_rows_and_jget_stays_null(
    lnav_home: Path, real_log: Path, tmp_path: Path
) -> None:
    """A traceback or a summary written into the JSON log: lnav keeps each such line as a
    row with level ``invalid``; the view's ``jget(log_raw_text, ...)`` gives NULL there
    instead of failing the whole query, and docs/logging.md's count check sees them."""
    log = tmp_path / "ibkr.log"
    lines = real_log.read_text(encoding="utf-8").splitlines(keepends=True)
    foreign = ["Traceback (most recent call last):", "submit_orders.py: plan x, 5 rows"]
    middle = len(lines) // 2  # between two runs' lines, as `job >> log 2>&1` leaves them
    log.write_text(
        "".join([*lines[:middle], *(f + "\n" for f in foreign), *lines[middle:]]), encoding="utf-8"
    )
    # (``WHERE log_level = 'invalid'`` finds nothing in lnav 0.11.1; json_valid() does.)
    invalid, jget_rows, [valid] = query(
        lnav_home,
        log,
        "SELECT log_raw_text FROM ibkr_resilience WHERE NOT json_valid(log_raw_text)",
        "SELECT log_level, jget(log_raw_text, '/logger') AS logger FROM ibkr_events",
        "SELECT count(*) AS n FROM ibkr_resilience WHERE json_valid(log_raw_text)",
    )
    assert [row["log_raw_text"] for row in invalid] == foreign
    assert [row["logger"] for row in jget_rows if row["log_level"] == "invalid"] == [None] * 2
    assert all(row["logger"] for row in jget_rows if row["log_level"] != "invalid")
    assert valid["n"] == line_count(log) - len(foreign)


def test_the_scripts_fields_are_columns(lnav_home: Path, tmp_path: Path) -> None:
    log = tmp_path / "ibkr.log"
    base = {
        "timestamp": "2024-06-03T07:00:00.123456Z",
        "level": "info",
        "run_id": RUN_ID,
        "script": "submit_orders.py",
    }
    lines = [
        {
            **base,
            "logger": "ibkr_resilience.submit",
            "event": "submit.order",
            "outcome": "order.submitted",
            "order_ref": "p-1:a",
            "line": 2,
            "order_id": 8,
            "status": "Submitted",
            "message": None,
        },
        {
            **base,
            "logger": "ibkr_resilience.script",
            "event": "script.end",
            "exit_code": 3,
            "outcomes": {"order.submitted": 1, "order.rejected": 1},
            "reason": None,
        },
    ]
    log.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    [rows] = query(
        lnav_home,
        log,
        "SELECT event, order_ref, order_id, status, exit_code, "
        "jget(log_raw_text, '/outcomes/order.rejected') AS rejected FROM ibkr_events",
    )
    # lnav hands integers of a mostly-NULL column back as text: compare as text.
    got = [{k: None if v is None else str(v) for k, v in row.items()} for row in rows]
    assert got == [
        {
            "event": "submit.order",
            "order_ref": "p-1:a",
            "order_id": "8",
            "status": "Submitted",
            "exit_code": None,
            "rejected": None,
        },
        {
            "event": "script.end",
            "order_ref": None,
            "order_id": None,
            "status": None,
            "exit_code": "3",
            "rejected": "1",
        },
    ]


def test_levels_map(lnav_home: Path, real_log: Path) -> None:
    pairs, by_event = query(
        lnav_home,
        real_log,
        "SELECT jget(log_raw_text, '/level') AS level, log_level, count(*) AS n "
        "FROM ibkr_resilience GROUP BY 1, 2",
        "SELECT DISTINCT event, log_level FROM ibkr_events "
        "WHERE event IN ('ibkr.connect.attempt', 'ibkr.connect.failed', "
        "'ibkr.connect.gave_up', 'ibkr.connect.success', 'lnav_test.critical')",
    )
    assert all(row["level"] == row["log_level"] for row in pairs), pairs
    assert {row["level"] for row in pairs} == {"debug", "info", "warning", "error", "critical"}
    levels: dict[str, set[str]] = {}
    for row in by_event:
        levels.setdefault(row["event"], set()).add(row["log_level"])
    assert levels == {
        "ibkr.connect.attempt": {"info"},
        # A retried failure is routine (info); the last one before a give-up is a warning.
        "ibkr.connect.failed": {"info", "warning"},
        "ibkr.connect.gave_up": {"error"},
        "ibkr.connect.success": {"info"},
        "lnav_test.critical": {"critical"},
    }


def test_attempt_fields_are_queryable(lnav_home: Path, real_log: Path) -> None:
    classes, base_table, attempts, gave_up, success, ends, runs = query(
        lnav_home,
        real_log,
        "SELECT failure_class, count(*) AS n FROM ibkr_events "
        "WHERE event = 'ibkr.connect.failed' GROUP BY failure_class ORDER BY failure_class",
        # The same through the format table itself, where the event is log_body.
        "SELECT failure_class, count(*) AS n FROM ibkr_resilience "
        "WHERE log_body = 'ibkr.connect.failed' GROUP BY failure_class ORDER BY failure_class",
        "SELECT client_id, attempt, max_attempts FROM ibkr_events "
        "WHERE event = 'ibkr.connect.attempt' ORDER BY log_time, log_line",
        "SELECT client_id, attempts, reason, failure_class, error_type, elapsed_ms "
        "FROM ibkr_events WHERE event = 'ibkr.connect.gave_up' ORDER BY client_id",
        "SELECT client_id, attempt, attempt_ms, server_version, accounts "
        "FROM ibkr_events WHERE event = 'ibkr.connect.success'",
        "SELECT client_id, outcome, duration_s, connection_lost FROM ibkr_events "
        "WHERE event = 'ibkr.session.end' ORDER BY client_id",
        "SELECT DISTINCT run_id, log_opid, script FROM ibkr_events",
    )
    expected = [
        {"failure_class": "refused", "n": REFUSED_ATTEMPTS},
        {"failure_class": "timeout", "n": HANG_ATTEMPTS},
    ]
    assert classes == expected
    assert base_table == expected
    per_client: dict[int, list[int]] = {}
    for row in attempts:
        per_client.setdefault(row["client_id"], []).append(row["attempt"])
    assert per_client == {
        HANG_CLIENT: list(range(1, HANG_ATTEMPTS + 1)),
        REFUSED_CLIENT: list(range(1, REFUSED_ATTEMPTS + 1)),
        OK_CLIENT: [1],
    }
    assert [(r["client_id"], r["attempts"], r["reason"], r["failure_class"]) for r in gave_up] == [
        (HANG_CLIENT, HANG_ATTEMPTS, "max_attempts", "timeout"),
        (REFUSED_CLIENT, REFUSED_ATTEMPTS, "max_attempts", "refused"),
    ]
    assert all(isinstance(r["elapsed_ms"], int | float) for r in gave_up)
    [ok] = success
    assert ok["client_id"] == OK_CLIENT and ok["attempt"] == 1
    assert isinstance(ok["attempt_ms"], int | float) and ok["attempt_ms"] >= 0
    assert ok["server_version"] == 157
    assert ok["accounts"] == ["DU1234567"]  # a "json" value: lnav hands back the array
    assert [(r["client_id"], r["outcome"]) for r in ends] == [
        (HANG_CLIENT, "connect_failed"),
        (REFUSED_CLIENT, "connect_failed"),
        (OK_CLIENT, "ok"),
    ]
    assert all(isinstance(r["duration_s"], int | float) for r in ends)
    assert runs == [{"run_id": RUN_ID, "log_opid": RUN_ID[:8], "script": "lnav_test.py"}]


def test_every_failed_attempt_this_week(
    lnav_home: Path, real_log: Path, records: list[dict[str, Any]], tmp_path: Path
) -> None:
    doc = " ".join(LOGGING_DOC.read_text(encoding="utf-8").split())
    assert " ".join(WEEK_QUERY.split()) in doc
    assert CALENDAR_WEEK_CONDITION in doc

    # One failed attempt from ten days ago (a copy of a real line) must not count.
    failed = [r for r in records if r["event"] == "ibkr.connect.failed"]
    old = dict(failed[0], run_id="f" * 32)
    old_time = datetime.now(UTC) - timedelta(days=10)
    old["timestamp"] = old_time.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    log = tmp_path / "ibkr.log"
    # First in the file: lnav moves a line whose time goes backwards up to its predecessor's.
    log.write_text(json.dumps(old) + "\n" + real_log.read_text(encoding="utf-8"), encoding="utf-8")

    calendar_week = WEEK_QUERY.replace(
        "log_time >= datetime('now', '-7 days')", CALENDAR_WEEK_CONDITION
    )
    assert calendar_week != WEEK_QUERY
    [total], last_7_days, this_week = query(
        lnav_home, log, "SELECT count(*) AS n FROM ibkr_resilience", WEEK_QUERY, calendar_week
    )
    assert total["n"] == line_count(log)
    assert len(last_7_days) == len(failed) == HANG_ATTEMPTS + REFUSED_ATTEMPTS
    assert {r["run_id"] for r in last_7_days} == {RUN_ID}
    assert sorted(r["failure_class"] for r in last_7_days) == sorted(
        r["failure_class"] for r in failed
    )
    today = datetime.now(UTC).date()
    monday = (today - timedelta(days=today.weekday())).isoformat()
    assert len(this_week) == sum(r["timestamp"] >= monday for r in failed)
    assert {r["run_id"] for r in this_week} <= {RUN_ID}


def test_the_line_format_shows_the_attempt(lnav_home: Path, real_log: Path) -> None:
    proc = _lnav(lnav_home, ["-n", str(real_log)])
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    shown = proc.stdout.splitlines()
    pattern = re.compile(
        r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3} 01234567 WARNING +ibkr_resilience\.connect +"
        r"ibkr\.connect\.failed 2 timeout"
    )
    assert any(pattern.match(line) for line in shown), "\n".join(shown[:40])
    assert any(
        re.search(r" INFO +ibkr_resilience\.session +ibkr\.session\.end +ok", s) for s in shown
    )


def test_the_documented_queries_run(lnav_home: Path, real_log: Path) -> None:
    """Every SQL query in docs/logging.md's lnav section runs on a real log and finds rows."""
    doc = LOGGING_DOC.read_text(encoding="utf-8")
    section = doc[doc.index("## Viewing the logs with lnav") :]
    section = section[: section.index("\n## ", 1)]
    statements: list[str] = []
    for block in re.findall(r"```sql\n(.*?)```", section, flags=re.DOTALL):
        code = "\n".join(line for line in block.splitlines() if not line.startswith("--"))
        statements += [s.strip() for s in code.split(";") if s.strip()]
    statements += re.findall(r'-c ";(SELECT [^"]+)"', section)  # the headless command
    assert len(statements) >= 5
    results = query(lnav_home, real_log, *statements)
    assert all(rows for rows in results), dict(zip(statements, results, strict=True))


def alert_query() -> str:
    """The lnav query of docs/logging.md's "What to alert on", as a user copies it."""
    text = (REPO / "docs" / "logging.md").read_text()
    section = text.split("## What to alert on", 1)[1]
    block = section.split("```sql", 1)[1].split("```", 1)[0]
    return block.strip()


def test_the_documented_alert_query_finds_exactly_the_failures(
    lnav_home: Path, real_log: Path, records: list[dict[str, Any]]
) -> None:
    """The two sessions that gave up, nothing from the one that connected."""
    [rows] = query(lnav_home, real_log, alert_query())
    expected = [r for r in records if r.get("event") == "ibkr.connect.gave_up"]
    assert len(rows) == len(expected) == 2
    assert {row["client_id"] for row in rows} == {HANG_CLIENT, REFUSED_CLIENT}
    assert {row["failure_class"] for row in rows} == {"timeout", "refused"}
