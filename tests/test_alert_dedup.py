"""Alert de-duplication across cron runs (issue 5, "Alerts that stay useful").

The store is tested with an injected wall clock; whole cron mornings are simulated with
freezegun around real ``ibkr_session`` runs (fake gateway, fake retry clock and sleep).
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time
from ib_fakes import Factory
from structlog.testing import capture_logs

from ibkr_resilience import ConfigError, ConnectionFailed, SessionConfig, ibkr_session
from ibkr_resilience._core import statedir
from ibkr_resilience._core.timefmt import format_duration
from ibkr_resilience._notify import alert_state
from ibkr_resilience._notify.alert_state import (
    AlertStateStore,
    FailureKey,
    StateUnavailable,
    default_state_path,
    parse_state,
)
from ibkr_resilience._notify.dedup import AlertDeduplicator, Occurrence, Recovery
from ibkr_resilience.testing import FakeTime, RecordingAlert

T0 = datetime(2024, 6, 3, 7, 0, tzinfo=UTC).timestamp()
KEY = FailureKey("127.0.0.1", 7497, 10, "refused")
TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


class Clock:
    """An injectable wall clock for the store's unit tests."""

    def __init__(self, start: float = T0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def minutes(self, n: float) -> None:
        self.now += n * 60


class Sender:
    """Stands in for ``deliver_alert``: records texts, answers a scripted outcome."""

    def __init__(self, outcome: str = "sent") -> None:
        self.texts: list[str] = []
        self.outcome = outcome

    def __call__(self, text: str) -> str:
        self.texts.append(text)
        return self.outcome


def build(occurrence: Occurrence) -> str:
    return f"{occurrence.kind} failures={occurrence.failures} down={occurrence.down_s:.0f}"


def build_recovered(recovery: Recovery) -> str:
    return f"recovered down={recovery.down_s:.0f} failures={recovery.failures}"


def dedup(path: Path, clock: Clock, interval: float = 1800, **kw: Any) -> AlertDeduplicator:
    return AlertDeduplicator(path, interval, now=clock, **kw)


def events(logs: Sequence[Mapping[str, Any]], name: str) -> list[Mapping[str, Any]]:
    return [e for e in logs if e["event"] == name]


# -- the store and the decision, with an injected clock -----------------------------------


def test_first_alerts_repeats_are_logged_not_sent_then_a_reminder(tmp_path: Path) -> None:
    clock, send = Clock(), Sender()
    d = dedup(tmp_path / "state.json", clock)
    kinds = []
    with capture_logs() as logs:
        for _ in range(8):  # every 5 minutes: 0, 5, ..., 35
            kinds.append(d.failure(KEY, build, send).kind)
            clock.minutes(5)
    assert kinds == ["first"] + ["suppressed"] * 5 + ["reminder", "suppressed"]
    assert send.texts == ["first failures=1 down=0", "reminder failures=7 down=1800"]
    suppressed = events(logs, "ibkr.alert.suppressed")
    assert len(suppressed) == 6
    assert suppressed[0]["key"] == KEY.id == "127.0.0.1:7497|client_id=10|refused"
    assert suppressed[0]["failures"] == 2
    assert suppressed[0]["last_alert_at"] == "2024-06-03T07:00:00.000000Z"
    assert suppressed[-1]["last_alert_at"] == "2024-06-03T07:30:00.000000Z"
    assert [e["kind"] for e in events(logs, "ibkr.alert.firing")] == ["first", "reminder"]


def test_state_file_is_versioned_readable_json(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "state.json"
    clock = Clock()
    d = dedup(path, clock)
    d.failure(KEY, build, Sender())
    clock.minutes(5)
    d.failure(KEY, build, Sender())
    data = json.loads(path.read_text())
    assert data == {
        "version": 1,
        "entries": {
            KEY.id: {
                "host": "127.0.0.1",
                "port": 7497,
                "client_id": 10,
                "failure_class": "refused",
                "first_failure_at": "2024-06-03T07:00:00.000000Z",
                "last_failure_at": "2024-06-03T07:05:00.000000Z",
                "failures": 2,
                "last_alert_at": "2024-06-03T07:00:00.000000Z",
                "alerts_sent": 1,
            }
        },
    }
    assert (path.parent / "state.json.lock").exists()
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_recovery_after_an_alerted_failure_is_sent_once_and_clears(tmp_path: Path) -> None:
    clock, send = Clock(), Sender()
    d = dedup(tmp_path / "state.json", clock)
    for _ in range(3):
        d.failure(KEY, build, send)
        clock.minutes(5)
    with capture_logs() as logs:
        recovery = d.success("127.0.0.1", 7497, 10, build_recovered, send)
        again = d.success("127.0.0.1", 7497, 10, build_recovered, send)
    assert recovery is not None and again is None
    assert send.texts[-1] == "recovered down=900 failures=3"
    assert len(send.texts) == 2
    [logged] = events(logs, "ibkr.alert.recovered")
    assert logged["down_s"] == 900 and logged["keys"] == [KEY.id]
    assert logged["down_since"] == "2024-06-03T07:00:00.000000Z"
    assert parse_state((tmp_path / "state.json").read_text()) == {}


def test_success_without_any_failure_touches_nothing(tmp_path: Path) -> None:
    path = tmp_path / "not_yet" / "state.json"
    send = Sender()
    assert dedup(path, Clock()).success("127.0.0.1", 7497, 10, build_recovered, send) is None
    assert send.texts == [] and not path.parent.exists()


def test_success_after_unalerted_failures_sends_nothing(tmp_path: Path) -> None:
    clock = Clock()
    d = dedup(tmp_path / "state.json", clock)
    d.failure(KEY, build, Sender("failed"))  # delivery failed: nothing was alerted
    send = Sender()
    with capture_logs() as logs:
        assert d.success("127.0.0.1", 7497, 10, build_recovered, send) is None
    assert send.texts == [] and len(events(logs, "ibkr.alert.state_cleared")) == 1
    assert parse_state((tmp_path / "state.json").read_text()) == {}


@pytest.mark.parametrize("outcome", ["failed", "timed_out", "disabled"])
def test_undelivered_alert_is_retried_by_the_next_run(tmp_path: Path, outcome: str) -> None:
    clock = Clock()
    d = dedup(tmp_path / "state.json", clock)
    assert d.failure(KEY, build, Sender(outcome)).kind == "first"
    clock.minutes(5)
    send = Sender()
    assert d.failure(KEY, build, send).kind == "first"  # fail open: not marked as sent
    assert send.texts == ["first failures=2 down=300"]


def test_keys_are_separate_per_failure_class_client_id_and_gateway(tmp_path: Path) -> None:
    clock, send = Clock(), Sender()
    d = dedup(tmp_path / "state.json", clock)
    keys = [
        KEY,
        FailureKey("127.0.0.1", 7497, 10, "not_logged_in"),
        FailureKey("127.0.0.1", 7497, 11, "refused"),
        FailureKey("127.0.0.1", 4002, 10, "refused"),
    ]
    assert [d.failure(k, build, send).kind for k in keys] == ["first"] * 4
    assert [d.failure(k, build, send).kind for k in keys] == ["suppressed"] * 4
    clock.minutes(10)
    recovery = d.success("127.0.0.1", 7497, 10, build_recovered, send)
    assert recovery is not None
    assert recovery.failure_classes == ("not_logged_in", "refused") and recovery.failures == 4
    left = parse_state((tmp_path / "state.json").read_text())
    assert sorted(left) == sorted(k.id for k in keys[2:])


def test_clock_stepped_back_sends_one_reminder_and_reanchors(tmp_path: Path) -> None:
    clock, send = Clock(), Sender()
    d = dedup(tmp_path / "state.json", clock)
    d.failure(KEY, build, send)
    clock.minutes(-120)
    assert d.failure(KEY, build, send).kind == "reminder"
    clock.minutes(5)
    assert d.failure(KEY, build, send).kind == "suppressed"


# -- locking, atomic replace, damage: never fatal, never an alert lost ----------------------


def test_lock_is_exclusive_and_the_wait_is_bounded(tmp_path: Path) -> None:
    store = AlertStateStore(tmp_path / "state.json", lock_timeout=0.1)
    held = store.begin()
    try:
        started = time.monotonic()
        with pytest.raises(StateUnavailable, match="still held"):
            store.begin()
        assert time.monotonic() - started < 1.0
    finally:
        held.close()
    store.begin().close()  # released: free again


def test_lock_held_elsewhere_fails_open_and_sends(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    clock, send = Clock(), Sender()
    d = dedup(path, clock)
    d.failure(KEY, build, send)  # alerted once: the next would be suppressed
    d.store.lock_timeout = 0.05
    fd = os.open(path.with_name("state.json.lock"), os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with capture_logs() as logs:
            occurrence = d.failure(KEY, build, send)
    finally:
        os.close(fd)
    assert occurrence.kind == "unguarded" and len(send.texts) == 2
    [logged] = events(logs, "ibkr.alert.state_unavailable")
    assert "still held" in logged["error"] and logged["key"] == KEY.id


def test_unwritable_state_dir_fails_open(tmp_path: Path) -> None:
    # Root ignores permission bits, so make the directory impossible: a file is in the way.
    (tmp_path / "blocker").write_text("not a directory")
    path = tmp_path / "blocker" / "state.json"
    clock, send = Clock(), Sender()
    d = dedup(path, clock)
    with capture_logs() as logs:
        for _ in range(3):
            assert d.failure(KEY, build, send).kind == "unguarded"
            clock.minutes(5)
        assert d.success("127.0.0.1", 7497, 10, build_recovered, send) is None
    assert len(send.texts) == 3  # every failure alerted: no de-dup, but nothing lost
    actions = [e["action"] for e in events(logs, "ibkr.alert.state_unavailable")]
    assert actions == ["sending the alert without de-duplication"] * 3 + ["recovery not recorded"]


def test_write_failure_is_logged_and_the_alert_still_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.json"
    clock, send = Clock(), Sender()
    d = dedup(path, clock)
    d.failure(FailureKey("h", 1, 1, "timeout"), build, send)
    before = path.read_text()

    def broken(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("ibkr_resilience._notify.alert_state.os.replace", broken)
    with capture_logs() as logs:
        assert d.failure(KEY, build, send).kind == "first"
    assert len(send.texts) == 2
    assert events(logs, "ibkr.alert.state_write_failed")[0]["error_type"] == "OSError"
    assert path.read_text() == before  # the old file is intact
    assert [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_crash_between_temp_write_and_replace_keeps_the_old_file(tmp_path: Path) -> None:
    """A real crash (``os._exit``) after the temp file is fsynced, before ``os.replace``."""
    path = tmp_path / "state.json"
    clock = Clock()
    dedup(path, clock).failure(FailureKey("h", 1, 1, "timeout"), build, Sender())
    before = path.read_text()
    code = textwrap.dedent(
        """
        import os, sys
        import ibkr_resilience._notify.alert_state as state
        import ibkr_resilience._notify.dedup as dedup
        state.os.replace = lambda src, dst: os._exit(9)
        d = dedup.AlertDeduplicator(sys.argv[1], 1800)
        d.failure(state.FailureKey("127.0.0.1", 7497, 10, "refused"),
                  lambda o: "text", lambda text: "sent")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(path)], cwd=ROOT, capture_output=True, timeout=30
    )
    assert result.returncode == 9, result.stderr
    assert path.read_text() == before
    stale = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(stale) == 1 and KEY.id in stale[0].read_text()  # written, never renamed
    # The next run ignores the torn write, sees the old state, and tidies up.
    send = Sender()
    assert dedup(path, clock).failure(KEY, build, send).kind == "first"
    assert [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    assert sorted(parse_state(path.read_text())) == sorted([KEY.id, "h:1|client_id=1|timeout"])


@pytest.mark.parametrize(
    "content",
    [
        b"{",
        b"null",
        b"\xff\xfe\x00garbage",
        b'{"version": 99, "entries": {}}',
        b'{"version": 1, "entries": {"x": {"host": "h"}}}',
        b'{"version": 1, "entries": []}',
        b"",
    ],
    ids=["truncated", "null", "binary", "version", "bad-entry", "entries-list", "empty"],
)
def test_corrupt_state_is_logged_and_replaced(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(content)
    send = Sender()
    with capture_logs() as logs:
        assert dedup(path, Clock()).failure(KEY, build, send).kind == "first"
    assert len(send.texts) == 1
    [corrupt] = events(logs, "ibkr.alert.state_corrupt")
    assert corrupt["path"] == str(path) and corrupt["log_level"] == "warning"
    assert list(parse_state(path.read_text())) == [KEY.id]


def test_corrupt_state_is_repaired_by_a_success_too(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("{not json")
    with capture_logs() as logs:
        assert dedup(path, Clock()).success("h", 1, 1, build_recovered, Sender()) is None
    assert len(events(logs, "ibkr.alert.state_corrupt")) == 1
    assert parse_state(path.read_text()) == {}


def test_unreadable_state_is_logged_and_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.json"
    path.write_text("{}")
    real = statedir.read_small_file

    def denied(where: Path, limit: int) -> str:
        if where == path:
            raise PermissionError(13, "Permission denied", str(where))
        return real(where, limit)

    monkeypatch.setattr(alert_state, "read_small_file", denied)
    send = Sender()
    with capture_logs() as logs:
        assert dedup(path, Clock()).failure(KEY, build, send).kind == "first"
    monkeypatch.undo()
    [corrupt] = events(logs, "ibkr.alert.state_corrupt")
    assert "PermissionError" in corrupt["reason"]
    assert list(parse_state(path.read_text())) == [KEY.id]


def test_state_path_that_is_a_directory_is_never_fatal(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.mkdir()
    send = Sender()
    with capture_logs() as logs:
        dedup(path, Clock()).failure(KEY, build, send)
    assert len(send.texts) == 1
    assert events(logs, "ibkr.alert.state_corrupt") and events(
        logs, "ibkr.alert.state_write_failed"
    )


# -- configuration and defaults -----------------------------------------------------------


def test_default_state_path_follows_xdg() -> None:
    assert default_state_path({"XDG_STATE_HOME": "/s", "HOME": "/h"}) == Path(
        "/s/ibkr_resilience/alert_state.json"
    )
    # A relative XDG_STATE_HOME is invalid per the spec and ignored.
    assert default_state_path({"XDG_STATE_HOME": "rel", "HOME": "/h"}) == Path(
        "/h/.local/state/ibkr_resilience/alert_state.json"
    )
    assert default_state_path({"HOME": "/h"}) == Path(
        "/h/.local/state/ibkr_resilience/alert_state.json"
    )


def test_config_reads_and_validates_the_new_variables() -> None:
    cfg = SessionConfig.from_env(
        {"IBKR_ALERT_STATE_FILE": "~/alerts.json", "IBKR_ALERT_REPEAT_INTERVAL": "600"}
    )
    assert cfg.alert_state_file == os.path.expanduser("~/alerts.json")
    assert cfg.alert_repeat_interval == 600.0
    assert SessionConfig.from_env({}).alert_repeat_interval == 1800.0
    for bad in ("0", "-5", "soon", "nan", "inf"):
        with pytest.raises(ConfigError, match=r"^IBKR_ALERT_REPEAT_INTERVAL="):
            SessionConfig.from_env({"IBKR_ALERT_REPEAT_INTERVAL": bad})
    with pytest.raises(ConfigError, match=r"^alert_state_file=3"):
        SessionConfig(alert_state_file=3)  # type: ignore[arg-type]


def test_who_gets_de_duplication(tmp_path: Path) -> None:
    telegram = {
        "IFDS_TELEGRAM_BOT_TOKEN": "987654:dedupTestTokenNotReal",
        "IFDS_TELEGRAM_CHAT_ID": "5",
    }
    state = str(tmp_path / "explicit.json")
    default = Path(os.environ["XDG_STATE_HOME"]) / "ibkr_resilience" / "alert_state.json"

    def path(**kw: Any) -> Path | None:
        d = ibkr_session(**kw).notifier.dedup
        return None if d is None else d.store.path

    rec = RecordingAlert()
    assert path(env={}) is None  # no Telegram: nothing to protect
    assert path(env={}, alert=rec) is None  # tests and hooks see every event
    assert path(env=telegram, alert=rec) is None
    assert path(env=telegram) == default
    assert path(env={"IBKR_ALERT_STATE_FILE": state}, alert=rec) == Path(state)
    assert path(env={"IBKR_ALERT_STATE_FILE": state}, dedup=False) is None
    assert path(env={}, alert=rec, dedup=True) == default
    assert path(config=SessionConfig(alert_state_file=state), alert=rec) == Path(state)
    assert not default.exists()  # deciding creates nothing


# -- simulated cron mornings: real sessions, frozen wall clock -----------------------------


def cron_run(
    state: Path,
    alert: RecordingAlert,
    behaviour: str,
    *,
    client_id: int = 10,
    env: Mapping[str, str] | None = None,
) -> str:
    """One cron run of a job: a session with a fake gateway and a fake retry clock."""
    ft = FakeTime()
    try:
        with ibkr_session(
            client_id,
            ib_factory=Factory(behaviour),
            alert=alert,
            sleep=ft.sleep,
            clock=ft.clock,
            max_attempts=3,
            env={"IBKR_ALERT_STATE_FILE": str(state), **(env or {})},
        ):
            return "ok"
    except ConnectionFailed as exc:
        return str(exc.failure_class)


@pytest.fixture
def morning() -> Iterator[Any]:
    with freeze_time("2024-06-03T07:00:00Z", real_asyncio=True) as frozen:
        yield frozen


@pytest.mark.parametrize(
    ("env", "reminders"),
    [
        # The "must show": reminders every hour, so the 55 minutes of failing
        # runs give exactly one alert and one "recovered".
        ({"IBKR_ALERT_REPEAT_INTERVAL": "3600"}, 0),
        # The default (30 min) adds one reminder at 07:30, and nothing else.
        ({}, 1),
    ],
    ids=["hourly", "default-30min"],
)
def test_a_down_morning_sends_one_alert_and_one_recovered(
    tmp_path: Path, morning: Any, env: dict[str, str], reminders: int
) -> None:
    state, alert = tmp_path / "alert_state.json", RecordingAlert()
    with capture_logs() as logs:
        for _ in range(12):  # 07:00 ... 07:55, every 5 minutes
            assert cron_run(state, alert, "refused", env=env) == "refused"
            morning.tick(timedelta(minutes=5))
        assert cron_run(state, alert, "ok", env=env) == "ok"  # 08:00: the gateway is back
        morning.tick(timedelta(minutes=5))
        assert cron_run(state, alert, "ok", env=env) == "ok"  # 08:05: nothing more to say
    titles = [t.splitlines()[0] for t in alert.texts]
    assert titles == [
        "IBKR CONNECTION FAILED",
        *["IBKR CONNECTION STILL FAILING"] * reminders,
        "IBKR CONNECTION RECOVERED",
    ]
    failed, recovered = alert.texts[0], alert.texts[-1]
    assert "Failure: refused" in failed and "clientId: 10" in failed
    assert "Repeats are not alerted for" in failed
    assert "Down for: 1 h 0 min (since 2024-06-03 07:00 UTC)" in recovered
    assert "Failed runs: 12" in recovered and "clientId: 10" in recovered
    assert "Gateway: 127.0.0.1:7497" in recovered and "Failure: refused" in recovered
    if reminders:
        assert "Down for: 30 min" in alert.texts[1] and "Failed runs: 7" in alert.texts[1]
    suppressed = events(logs, "ibkr.alert.suppressed")
    assert len(suppressed) == 11 - reminders
    assert suppressed[0]["failures"] == 2
    assert suppressed[0]["last_alert_at"] == "2024-06-03T07:00:00.000000Z"
    [done] = events(logs, "ibkr.alert.recovered")
    assert done["down_s"] == 3600 and done["failures"] == 12
    assert parse_state(state.read_text()) == {}


@pytest.mark.parametrize(
    ("interval", "reminders"),
    [("1800", ["07:30", "08:00", "08:30"]), ("3600", ["08:00"])],
)
def test_a_two_hour_outage_sends_reminders_every_interval(
    tmp_path: Path, morning: Any, interval: str, reminders: list[str]
) -> None:
    state, alert = tmp_path / "alert_state.json", RecordingAlert()
    for _ in range(24):  # 07:00 ... 08:55
        cron_run(state, alert, "refused", env={"IBKR_ALERT_REPEAT_INTERVAL": interval})
        morning.tick(timedelta(minutes=5))
    cron_run(state, alert, "ok", env={"IBKR_ALERT_REPEAT_INTERVAL": interval})  # 09:00
    titles = [t.splitlines()[0] for t in alert.texts]
    assert titles == [
        "IBKR CONNECTION FAILED",
        *["IBKR CONNECTION STILL FAILING"] * len(reminders),
        "IBKR CONNECTION RECOVERED",
    ]
    for text, at in zip(alert.texts[1:-1], reminders, strict=True):
        hours, minutes = (int(x) for x in at.split(":"))
        down = (hours - 7) * 3600 + minutes * 60
        runs = down // 300 + 1
        assert f"Down for: {format_duration(down)} (since 2024-06-03 07:00 UTC)" in text
        assert f"Failed runs: {runs}" in text
    assert "Down for: 2 h 0 min" in alert.texts[-1] and "Failed runs: 24" in alert.texts[-1]


def test_a_new_failure_class_or_client_id_alerts_on_its_own(tmp_path: Path, morning: Any) -> None:
    state, alert = tmp_path / "alert_state.json", RecordingAlert()
    assert cron_run(state, alert, "refused", client_id=10) == "refused"
    assert cron_run(state, alert, "refused", client_id=11) == "refused"
    morning.tick(timedelta(minutes=5))
    # The gateway came up but is not logged in: a different problem, told at once.
    assert cron_run(state, alert, "inner_timeout", client_id=10) == "timeout"
    assert cron_run(state, alert, "refused", client_id=11) == "refused"  # suppressed
    morning.tick(timedelta(minutes=5))
    assert cron_run(state, alert, "ok", client_id=10) == "ok"
    assert [(t.splitlines()[0], _fact(t, "clientId")) for t in alert.texts] == [
        ("IBKR CONNECTION FAILED", "10"),
        ("IBKR CONNECTION FAILED", "11"),
        ("IBKR CONNECTION FAILED", "10"),
        ("IBKR CONNECTION RECOVERED", "10"),
    ]
    assert _fact(alert.texts[-1], "Failure") == "refused, timeout"
    assert _fact(alert.texts[-1], "Down for") == "10 min (since 2024-06-03 07:00 UTC)"
    assert list(parse_state(state.read_text())) == ["127.0.0.1:7497|client_id=11|refused"]


def _fact(text: str, name: str) -> str:
    return next(line.split(": ", 1)[1] for line in text.splitlines() if line.startswith(name))


def test_job_failures_are_always_sent(tmp_path: Path, morning: Any) -> None:
    """Exceptions in the block, drops and live accounts bypass de-dup (docs/alerts.md)."""
    state, alert = tmp_path / "alert_state.json", RecordingAlert()
    env = {"IBKR_ALERT_STATE_FILE": str(state)}
    for _ in range(2):
        with (
            pytest.raises(RuntimeError),
            ibkr_session(ib_factory=Factory("ok"), alert=alert, env=env, sleep=FakeTime().sleep),
        ):
            raise RuntimeError("order rejected")
        factory = Factory("ok")
        with ibkr_session(ib_factory=factory, alert=alert, env=env, sleep=FakeTime().sleep):
            factory.made[-1].drop()
        morning.tick(timedelta(minutes=5))
    titles = [t.splitlines()[0] for t in alert.texts]
    assert titles == ["IBKR SESSION FAILED", "IBKR CONNECTION LOST"] * 2
    assert not state.exists()  # nothing to de-duplicate was ever recorded


def test_a_broken_de_dup_layer_still_sends_the_alert(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: Any, **kw: Any) -> None:
        raise RuntimeError("bug in the de-dup layer")

    monkeypatch.setattr(AlertDeduplicator, "failure", boom)
    monkeypatch.setattr(AlertDeduplicator, "success", boom)
    alert = RecordingAlert()
    with capture_logs() as logs:
        assert cron_run(tmp_path / "s.json", alert, "refused") == "refused"
        assert cron_run(tmp_path / "s.json", alert, "ok") == "ok"
    assert [t.splitlines()[0] for t in alert.texts] == ["IBKR CONNECTION FAILED"]
    assert len(events(logs, "ibkr.alert.dedup_failed")) == 2


# -- concurrent runs ---------------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import os, sys, time
    sys.path.insert(0, sys.argv[4])
    from ib_fakes import Factory
    from ibkr_resilience.testing import FakeTime
    from ibkr_resilience import ConnectionFailed, ibkr_session

    state, out, go = sys.argv[1:4]

    def alert(text):
        with open(out, "a") as f:  # O_APPEND: one line per alert, whole
            f.write(text.splitlines()[0] + "\\n")

    open(out + "." + str(os.getpid()) + ".ready", "w").close()
    for _ in range(12000):  # at most ~60 s: a hard stop, the parent says go
        if os.path.exists(go):
            break
        time.sleep(0.005)
    ft = FakeTime()
    try:
        with ibkr_session(ib_factory=Factory("refused"), alert=alert, sleep=ft.sleep,
                          clock=ft.clock, max_attempts=1,
                          env={"IBKR_ALERT_STATE_FILE": state}):
            pass
    except ConnectionFailed:
        pass
    """
)


def _has_open(pid: int, path: Path) -> bool:
    """Whether process ``pid`` has ``path`` open (its ``/proc/<pid>/fd`` links)."""
    fd_dir, target = Path(f"/proc/{pid}/fd"), os.path.realpath(path)
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return False
    for name in names:
        try:
            if os.readlink(fd_dir / name) == target:
                return True
        except OSError:
            continue
    return False


def test_concurrent_runs_send_one_alert_and_lose_no_update(tmp_path: Path) -> None:
    state, out, go = tmp_path / "state.json", tmp_path / "alerts.txt", tmp_path / "go"
    n = 4
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(state), str(out), str(go), str(TESTS)],
            cwd=ROOT,
            stderr=subprocess.PIPE,
        )
        for _ in range(n)
    ]
    # Hold the lock while all children start, so that they all meet at it: release it
    # only once every child has opened the lock file (it then polls for the lock), not
    # after a pause that a loaded machine can outlast.
    store = AlertStateStore(state)
    held = store.begin()
    try:
        deadline = time.monotonic() + 60  # hard stops: n interpreters start on a busy machine
        while len(list(tmp_path.glob("alerts.txt.*.ready"))) < n:
            assert all(c.poll() is None for c in children), "a child ended early"
            assert time.monotonic() < deadline, "the children never got ready"
            time.sleep(0.005)
        go.touch()
        while not all(_has_open(c.pid, store.lock_path) for c in children):
            assert all(c.poll() is None for c in children), "a child ended early"
            assert time.monotonic() < deadline, "the children never reached the lock"
            time.sleep(0.005)
    finally:
        held.close()
    for child in children:
        _, err = child.communicate(timeout=60)
        assert child.returncode == 0, err.decode()
    assert out.read_text().splitlines() == ["IBKR CONNECTION FAILED"]
    [entry] = parse_state(state.read_text()).values()
    assert entry.failures == n and entry.alerts_sent == 1


def test_failure_reads_the_clock_while_holding_the_lock(tmp_path: Path) -> None:
    """Regression: a run that waited for the lock used a "now" older than the alert the
    previous holder recorded, saw a negative interval and sent a spurious reminder."""
    path = tmp_path / "s.json"
    seen: list[str] = []

    def now() -> float:
        fd = os.open(str(path) + ".lock", os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            seen.append("locked")
        else:
            seen.append("unlocked")
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        return 1_700_000_000.0

    AlertDeduplicator(path, 1800, now=now).failure(KEY, build, lambda text: "sent")
    assert seen and set(seen) == {"locked"}
