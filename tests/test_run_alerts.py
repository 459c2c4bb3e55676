"""Unit tests of the pieces behind "every failing run is loud" (the rows that run the
scripts are in ``test_fault_matrix_loud.py``): exit-code pings, run de-dup keys, the
run-level channels read one setting at a time, the session's ``failure_reported``, and
SIGHUP in the signal guard (sync and async forms)."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from ib_fakes import Factory
from token_audit import TOKEN

from ibkr_resilience import ConnectionFailed, ibkr_session
from ibkr_resilience._app.jobs.kit import RunState
from ibkr_resilience._app.jobs.run_alerts import RunAlerts
from ibkr_resilience._app.jobs.summary import print_summary
from ibkr_resilience._notify.alert_state import FailureKey
from ibkr_resilience._notify.dedup import AlertDeduplicator, run_key
from ibkr_resilience._notify.healthcheck import Healthcheck
from ibkr_resilience._session.signals import SIGHUP_EXIT_CODE, SignalGuard
from ibkr_resilience.testing import BotApi, FakeTime, HttpServer, RecordingAlert

UUID = "6a0f3e2b-9c41-4d7e-8b15-2f7c9d0e4a68"
SCRIPT = "submit_orders.py"
GW = ("127.0.0.1", 4002, 10)


@pytest.fixture
def pings() -> Iterator[HttpServer]:
    with HttpServer([(200, b"OK")], path=f"/{UUID}") as server:
        yield server


def routes(server: HttpServer) -> list[str]:
    return [r.route.removeprefix(f"/{UUID}") for r in server.requests]


# -- healthcheck: <url>/<exit status> ------------------------------------------------------
@pytest.mark.parametrize(("kind", "suffix"), [(3, "/3"), (0, "/0"), (255, "/255"), (256, "/fail")])
def test_an_exit_status_is_pinged_as_its_own_path(
    pings: HttpServer, kind: int, suffix: str
) -> None:
    """healthchecks.io's ``<url>/<0-255>``; out of range is a plain ``/fail``, never a 404."""
    check = Healthcheck(pings.url, 2.0)
    assert check.ping(kind, "summary") == "sent"
    assert routes(pings) == [suffix]
    assert check.target(kind).endswith(f"/...{suffix}")
    assert UUID not in check.target(kind)


# -- run keys in the de-dup state ----------------------------------------------------------
def test_a_connect_success_neither_clears_nor_recovers_a_run_failure(tmp_path: Path) -> None:
    """A run that connected and then exited 3 keeps its failure key: the next connect
    does not say "connection recovered" about it; a run that exits 0 clears it, once."""
    dedup = AlertDeduplicator(tmp_path / "state.json", 1800)
    sent: list[str] = []

    def send(text: str) -> str:
        sent.append(text)
        return "sent"

    first = dedup.failure(run_key(SCRIPT, 3, GW), lambda o: f"failed {o.kind}", send)
    again = dedup.failure(run_key(SCRIPT, 3, GW), lambda o: f"failed {o.kind}", send)
    assert (first.kind, again.kind) == ("first", "suppressed") and sent == ["failed first"]
    assert dedup.success(*GW, lambda r: "connection recovered", send) is None
    assert dedup.run_succeeded("close_positions.py", GW, lambda r: "other", send) is None
    recovery = dedup.run_succeeded(SCRIPT, GW, lambda r: f"job recovered {r.failures}", send)
    assert recovery is not None and sent == ["failed first", "job recovered 2"]
    assert dedup.run_succeeded(SCRIPT, GW, lambda r: "twice", send) is None  # cleared


def test_a_run_key_without_a_gateway_is_cleared_by_the_next_good_run(tmp_path: Path) -> None:
    """Exit 2 from a bad IBKR_PORT has no gateway; the fixed run (with one) clears it."""
    dedup = AlertDeduplicator(tmp_path / "state.json", 1800)
    key = run_key(SCRIPT, 2, None)
    assert key == FailureKey("", 0, 0, f"run:{SCRIPT}:exit 2")
    dedup.failure(key, lambda o: "failed", lambda text: "sent")
    assert dedup.run_succeeded(SCRIPT, GW, lambda r: "recovered", lambda text: "sent")


# -- the run's channels, one setting at a time ---------------------------------------------
def channel_env(bot: BotApi, pings: HttpServer, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        "IFDS_TELEGRAM_BOT_TOKEN": TOKEN,
        "IFDS_TELEGRAM_CHAT_ID": "-100200",
        "IFDS_TELEGRAM_API_URL": bot.url,
        "IBKR_HEALTHCHECK_URL": pings.url,
        "IBKR_ALERT_TIMEOUT": "2",
        "IBKR_ALERT_STATE_FILE": str(tmp_path / "state.json"),
        "IBKR_PORT": "seventy",  # the run's own bad setting must not silence the channels
    }
    env.update(extra)
    return env


def test_an_unrelated_bad_setting_does_not_silence_the_run(
    bot_api: BotApi, pings: HttpServer, tmp_path: Path
) -> None:
    loud = RunAlerts(SCRIPT, channel_env(bot_api, pings, tmp_path))
    loud.start()
    loud.finish(2, "IBKR_PORT='seventy': ...", "", gateway=None, alerted=False, logging_ready=True)
    assert routes(pings) == ["/start", "/2"]
    assert len(bot_api.texts) == 1 and bot_api.texts[0].startswith(f"IBKR JOB FAILED: {SCRIPT}")
    assert "Reason: IBKR_PORT='seventy'" in bot_api.texts[0]


def test_a_bad_repeat_interval_still_alerts_and_says_so(
    bot_api: BotApi, pings: HttpServer, tmp_path: Path
) -> None:
    """Not a channel: the alert goes out without de-duplication, and the warning says
    that (it said "that channel is not used", found by a newcomer)."""
    from structlog.testing import capture_logs

    loud = RunAlerts(SCRIPT, channel_env(bot_api, pings, tmp_path, IBKR_ALERT_REPEAT_INTERVAL="0"))
    with capture_logs() as logs:
        loud.finish(2, "bad", "", gateway=None, alerted=False, logging_ready=True)
    [note] = [e for e in logs if e["event"] == "script.alert_setting_unusable"]
    assert note["variable"] == "IBKR_ALERT_REPEAT_INTERVAL"
    assert note["action"] == "alerts are sent without de-duplication for this run"
    assert len(bot_api.texts) == 1


@pytest.mark.parametrize(
    "bad",
    [
        {"IFDS_TELEGRAM_BOT_TOKEN": "424242 FaultMatrixToken"},
        {"IFDS_TELEGRAM_CHAT_ID": "my chat"},
        # never the token sent to the default api.telegram.org instead of the bad URL
        {"IFDS_TELEGRAM_API_URL": "api.telegram.org"},
    ],
)
def test_a_bad_telegram_setting_disables_only_the_alert(
    bot_api: BotApi, pings: HttpServer, tmp_path: Path, bad: dict[str, str]
) -> None:
    loud = RunAlerts(SCRIPT, channel_env(bot_api, pings, tmp_path, **bad))
    assert getattr(loud.alert, "enabled", True) is False, loud.alert
    assert list(loud.problems) == list(bad)
    loud.finish(2, "bad", "", gateway=None, alerted=False, logging_ready=True)
    assert bot_api.requests == []
    assert routes(pings) == ["/start", "/2"]


def test_a_bad_healthcheck_url_disables_only_the_pings(
    bot_api: BotApi, pings: HttpServer, tmp_path: Path
) -> None:
    env = channel_env(bot_api, pings, tmp_path, IBKR_HEALTHCHECK_URL="ftp://x/secret-uuid-1234")
    loud = RunAlerts(SCRIPT, env)
    assert loud.healthcheck is None and "secret-uuid" not in str(loud.problems)
    loud.finish(2, "bad", "", gateway=None, alerted=False, logging_ready=True)
    assert len(bot_api.requests) == 1 and pings.requests == []


def test_a_run_the_session_alerted_is_pinged_not_alerted_again(
    bot_api: BotApi, pings: HttpServer, tmp_path: Path
) -> None:
    loud = RunAlerts(SCRIPT, channel_env(bot_api, pings, tmp_path))
    loud.finish(1, "could not connect", "", gateway=GW, alerted=True, logging_ready=True)
    assert bot_api.requests == []
    assert routes(pings) == ["/start", "/1"]  # the start is sent first even when late


@pytest.mark.parametrize(("code", "suffix"), [(129, "/fail"), (130, "/fail"), (143, "/fail")])
def test_a_signal_pings_fail(
    bot_api: BotApi, pings: HttpServer, tmp_path: Path, code: int, suffix: str
) -> None:
    loud = RunAlerts(SCRIPT, channel_env(bot_api, pings, tmp_path))
    loud.finish(code, "stopped", "", gateway=GW, alerted=False, logging_ready=True)
    assert routes(pings) == ["/start", suffix]
    assert f"exit {code}" in bot_api.texts[0]


# -- the session says whether it alerted a failure -----------------------------------------
def test_the_session_reports_that_it_alerted_a_failure() -> None:
    ft = FakeTime()
    good = ibkr_session(
        ib_factory=Factory("ok"), alert=RecordingAlert(), sleep=ft.sleep, clock=ft.clock, env={}
    )
    with good:
        pass
    assert good.notifier.failure_reported is False
    bad = ibkr_session(
        ib_factory=Factory("refused"),
        alert=RecordingAlert(),
        max_attempts=1,
        sleep=ft.sleep,
        clock=ft.clock,
        env={},
    )
    with pytest.raises(ConnectionFailed), bad:
        pass
    assert bad.notifier.failure_reported is True


# -- the summary on a closed stdout --------------------------------------------------------
class _BrokenPipe(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_closed_stdout_keeps_the_summary_and_raises_nothing() -> None:
    state = RunState(SCRIPT, header="submit_orders.py: plan p, 0 rows")
    print_summary(state, 0, out=_BrokenPipe())
    assert state.summary.endswith("no order handled; exit 0")


# -- SIGHUP ----------------------------------------------------------------------------------
def test_sighup_raises_system_exit_129_and_is_restored() -> None:
    before = signal.getsignal(signal.SIGHUP)
    guard = SignalGuard()
    guard.install()
    try:
        with pytest.raises(SystemExit) as stopped:
            os.kill(os.getpid(), signal.SIGHUP)
    finally:
        guard.restore()
    assert stopped.value.code == SIGHUP_EXIT_CODE == 129
    assert guard.received == "SIGHUP" and guard.exit_code == 129
    assert signal.getsignal(signal.SIGHUP) is before


def test_sighup_during_cleanup_is_remembered() -> None:
    guard = SignalGuard()
    guard.install()
    try:
        guard.defer()
        os.kill(os.getpid(), signal.SIGHUP)
        assert guard.deferred and guard.received == "SIGHUP" and guard.exit_code == 129
    finally:
        guard.restore()


def test_only_the_first_signal_raises_until_the_last_guard_is_restored() -> None:
    """The run is ending from the first signal on: a later one (SIGTERM, SIGHUP or SIGINT,
    through any of the nested guards) is only remembered, so it cannot cut the cleanup
    short; once every guard is restored, a new guard raises again."""
    run_wide, session = SignalGuard(), SignalGuard()
    # A suite started in the background by a non-interactive shell inherits SIGINT
    # ignored, which the guard keeps: give this test Python's own SIGINT handler.
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    run_wide.install(interrupts=True)
    try:
        session.install()
        try:
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)  # inside the session: remembered
            os.kill(os.getpid(), signal.SIGINT)
            assert session.deferred and session.received == "SIGTERM"
        finally:
            session.restore()
        os.kill(os.getpid(), signal.SIGHUP)  # outside it, still the same ending run
        assert run_wide.deferred and run_wide.received == "SIGHUP"
    finally:
        run_wide.restore()
        signal.signal(signal.SIGINT, before)
    fresh = SignalGuard()
    fresh.install()
    try:
        with pytest.raises(SystemExit) as stopped:
            os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
    finally:
        fresh.restore()
    assert stopped.value.code == 143 and fresh.deferred


def test_a_signal_the_parent_ignores_stays_ignored() -> None:
    """``nohup`` ignores SIGHUP, a non-interactive shell's ``cmd &`` ignores SIGINT: the
    guards leave such a signal ignored (a job under nohup must survive the hang-up)."""
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    guard = SignalGuard()
    try:
        guard.install(interrupts=True)
        try:
            os.kill(os.getpid(), signal.SIGHUP)  # nothing raised, nothing remembered
            assert guard.received is None and signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
        finally:
            guard.restore()
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, before)


@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 130)]
)
def test_a_signal_while_the_wrapper_starts_ends_it_with_its_code(signum: int, code: int) -> None:
    """Between the wrapper's first line and the run's own guard (the package import,
    ~0.2 s) a signal ends the process with 128 + the signal, not "killed by signal",
    and Ctrl-C without a ``KeyboardInterrupt`` traceback."""
    wrapper_lib = Path(__file__).resolve().parents[1] / "scripts" / "paper_trading" / "lib"
    program = (
        "import os, signal, sys; sys.path.insert(0, sys.argv[1]); import job_entry; "
        # Python's own SIGINT handler, even when this suite was started in the background
        # (SIGINT inherited ignored, which early_signals rightly keeps).
        "signal.signal(signal.SIGINT, signal.default_int_handler); "
        f"job_entry.early_signals(); os.kill(os.getpid(), {int(signum)}); sys.exit(0)"
    )
    done = subprocess.run(
        [sys.executable, "-c", program, str(wrapper_lib)], capture_output=True, timeout=60
    )
    assert done.returncode == code and done.stderr == b""


def test_sighup_in_the_async_form_ends_the_session_with_129() -> None:
    ft = FakeTime()

    async def job() -> None:
        async with ibkr_session(
            ib_factory=Factory("ok"), alert=RecordingAlert(), sleep=ft.sleep, clock=ft.clock, env={}
        ):
            os.kill(os.getpid(), signal.SIGHUP)
            await asyncio.sleep(5)  # cancelled by the signal long before this ends

    with pytest.raises(SystemExit) as stopped:
        asyncio.run(job())
    assert stopped.value.code == 129


def test_every_exit_code_has_a_clean_meaning_for_the_alert() -> None:
    """Each documented code is worded from ``EXIT_CODES_HELP`` without a dangling
    separator (the exit-6 alert read "... past IBKR_LOCK_WAIT;")."""
    from ibkr_resilience._app.jobs.exits import ExitCode
    from ibkr_resilience._app.jobs.run_alerts import exit_meaning

    for code in ExitCode:
        meaning = exit_meaning(int(code))
        assert meaning and meaning != "failed", code
        assert not meaning.endswith((";", ",")), (code, meaning)
