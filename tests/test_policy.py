"""Connect policy: failure classes, the per-attempt hard bound, the backoff-driven schedule."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar
from unittest import mock

import pytest
from freezegun import freeze_time
from ib_fakes import FakeIB
from loadslack import Load
from structlog.testing import capture_logs

from ibkr_resilience import ConnectionFailed
from ibkr_resilience._connect.attempt import AttemptSpec, blocking_connect, bounded_connect
from ibkr_resilience._connect.compat import IB
from ibkr_resilience._connect.failures import AttemptFailed, FailureClass
from ibkr_resilience._connect.policy import (
    MIN_ATTEMPT_WINDOW,
    RetryPolicy,
    Target,
    connect_with_retries,
)
from ibkr_resilience._connect.watch import Progress as _Progress
from ibkr_resilience._connect.watch import classify
from ibkr_resilience.testing import FakeTime

F = FailureClass

# -- classification -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ConnectionRefusedError(111, "refused"), F.REFUSED),
        (OSError("Multiple exceptions: [Errno 111] ..., [Errno 99] ..."), F.REFUSED),
        (socket.gaierror(-2, "Name or service not known"), F.REFUSED),
        (OSError(113, "No route to host"), F.REFUSED),
        (TimeoutError(), F.TIMEOUT),
        (ConnectionError("Socket disconnect"), F.CLOSED),
        (ValueError("bug"), F.ERROR),
    ],
)
def test_classify_without_progress(error: BaseException, expected: FailureClass) -> None:
    assert classify(error) is expected


def test_classify_uses_how_far_the_attempt_got() -> None:
    assert classify(TimeoutError(), _Progress(handshake=True)) is F.NOT_LOGGED_IN
    assert (
        classify(TimeoutError(), _Progress(handshake=True, api_started=True)) is F.INCOMPLETE_SYNC
    )
    assert classify(ConnectionError("x"), _Progress(handshake=True)) is F.REJECTED
    signalled = _Progress(signal=F.REJECTED)
    assert classify(TimeoutError(), signalled) is F.REJECTED
    assert classify(ConnectionRefusedError(), signalled) is F.REFUSED


# -- one bounded attempt with a fake IB ------------------------------------------------


def attempt_with(behaviour: str, timeout: float) -> tuple[AttemptFailed | None, float, FakeIB]:
    ib = FakeIB(behaviour)
    started = time.monotonic()
    try:
        bounded_connect(ib, AttemptSpec("127.0.0.1", 7497, 10, timeout))
    except AttemptFailed as failure:
        return failure, time.monotonic() - started, ib
    return None, time.monotonic() - started, ib


def test_success_passes_timeout_to_ib_insync() -> None:
    failure, _, ib = attempt_with("ok", 2.0)
    assert failure is None
    assert ib.connect_calls == [("127.0.0.1", 7497, 10, 2.0)]
    assert ib.disconnect_calls == 0


@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [
        ("refused", F.REFUSED),
        ("multi", F.REFUSED),
        ("error", F.ERROR),
        ("close_on_accept", F.CLOSED),
        ("in_use_326", F.REJECTED),
        ("peer_closed", F.REJECTED),
    ],
)
def test_immediate_failures_do_not_wait_for_the_timeout(
    behaviour: str, expected: FailureClass
) -> None:
    failure, elapsed, ib = attempt_with(behaviour, 5.0)
    assert failure is not None and failure.failure_class is expected
    assert elapsed < 5.0 / 4  # at once: waiting the 5 s bound would take all of it
    assert ib.disconnect_calls == 1  # the failed instance is always disconnected


@pytest.mark.parametrize(
    ("behaviour", "expected", "message"),
    [
        ("hang", F.TIMEOUT, "no API handshake"),
        ("not_logged_in", F.NOT_LOGGED_IN, "API did not start"),
        ("not_logged_in_quiet", F.NOT_LOGGED_IN, "API did not start"),
        ("sync_hang", F.INCOMPLETE_SYNC, "initial sync did not finish"),
    ],
)
def test_silent_gateways_end_at_the_bound(
    behaviour: str, expected: FailureClass, message: str
) -> None:
    load = Load()
    failure, elapsed, ib = attempt_with(behaviour, 0.15)
    assert failure is not None and failure.failure_class is expected
    assert isinstance(failure.error, TimeoutError) and message in str(failure.error)
    assert 0.15 <= elapsed < 0.15 + load.slack(0.45), load
    assert ib.cancelled and ib.disconnect_calls == 1


def test_bound_covers_all_phases_together() -> None:
    # Each of four phases stays under the timeout (0.9 T), as ib_insync allows; ours bounds
    # the sum: cut at T = 1 s, where the phases alone would take 3.6 s.
    load = Load()
    failure, elapsed, _ = attempt_with("phases", 1.0)
    assert failure is not None and failure.failure_class is F.TIMEOUT
    assert 1.0 <= elapsed < 1.0 + load.slack(0.2), load


def test_disconnect_errors_on_a_failed_instance_are_swallowed() -> None:
    ib = FakeIB("hang", disconnect_raises=True)
    with capture_logs() as logs, pytest.raises(AttemptFailed):
        bounded_connect(ib, AttemptSpec("127.0.0.1", 7497, 10, 0.05))
    assert any(e["event"] == "ibkr.disconnect.failed" for e in logs)
    assert ib.client.disconnect_calls >= 1


def test_rejected_detail_keeps_the_gateway_error() -> None:
    failure, _, _ = attempt_with("in_use_326", 5.0)
    assert failure is not None and failure.detail is not None
    assert "326" in failure.detail and "already in use" in str(failure.error)


# -- the real client library against tiny raw gateways on 127.0.0.1 ----------------------


def _frame(*fields: str) -> bytes:
    payload = "".join(f + "\0" for f in fields).encode()
    return struct.pack(">I", len(payload)) + payload


def _read_frame(conn: socket.socket) -> bytes:
    header = b""
    while len(header) < 4:
        chunk = conn.recv(4 - len(header))
        if not chunk:
            return b""
        header += chunk
    (size,) = struct.unpack(">I", header)
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


class MiniGateway:
    """Just enough of the TWS API handshake to reproduce each failure mode."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4)
        self.port = self.listener.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        self.conns.append(conn)
        if self.mode == "close":
            conn.close()
            return
        if self.mode == "hang":
            return
        conn.recv(4)  # b"API\0"
        _read_frame(conn)  # version range
        conn.sendall(_frame("176", "20240102 09:30:00 EST"))
        _read_frame(conn)  # startApi
        if self.mode == "handshake_close":
            conn.close()
        elif self.mode == "error326":
            conn.sendall(
                _frame(
                    "4",
                    "2",
                    "-1",
                    "326",
                    "Unable to connect as the client id is already in use.",
                    "",
                )
            )
        elif self.mode == "api_no_sync":
            conn.sendall(_frame("15", "1", "DU1234567") + _frame("9", "1", "1"))
        # "handshake_silent": say nothing more

    def close(self) -> None:
        self.listener.close()
        for conn in self.conns:
            conn.close()


@pytest.fixture
def gateway() -> Iterator[Callable[[str], MiniGateway]]:
    made: list[MiniGateway] = []

    def make(mode: str) -> MiniGateway:
        made.append(MiniGateway(mode))
        return made[-1]

    yield make
    for gw in made:
        gw.close()


def real_attempt(port: int, timeout: float) -> tuple[AttemptFailed, float]:
    ib = IB()
    started = time.monotonic()
    with pytest.raises(AttemptFailed) as info:
        bounded_connect(ib, AttemptSpec("127.0.0.1", port, 10, timeout))
    assert not ib.client.isConnected()
    return info.value, time.monotonic() - started


def test_real_client_refused() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    failure, elapsed = real_attempt(port, 2.0)
    assert failure.failure_class is F.REFUSED and elapsed < 0.5


@pytest.mark.parametrize(
    ("mode", "expected", "immediate"),
    [
        ("hang", F.TIMEOUT, False),
        ("close", F.CLOSED, True),
        ("handshake_silent", F.NOT_LOGGED_IN, False),
        ("handshake_close", F.REJECTED, True),
        ("error326", F.REJECTED, True),
        ("api_no_sync", F.INCOMPLETE_SYNC, False),
    ],
)
def test_real_client_classes(
    gateway: Callable[[str], MiniGateway], mode: str, expected: FailureClass, immediate: bool
) -> None:
    gw = gateway(mode)
    timeout = 5.0 if immediate else 0.3
    load = Load()
    failure, elapsed = real_attempt(gw.port, timeout)
    assert failure.failure_class is expected, failure
    if immediate:
        assert elapsed < timeout / 4  # waiting the bound out would take all 5 s
    else:
        assert timeout <= elapsed < timeout + load.slack(0.5), load


def test_blocking_connect_calls_ib_connect_exactly_and_classifies(
    gateway: Callable[[str], MiniGateway],
) -> None:
    gw = gateway("error326")
    ib = IB()
    with pytest.raises(AttemptFailed) as info:
        blocking_connect(ib, "127.0.0.1", gw.port, 10, 0.3)
    # ib_insync itself waits out its timeout here, but the class is still right.
    assert info.value.failure_class is F.REJECTED
    assert isinstance(info.value.error, TimeoutError)


# -- the schedule, driven by backoff, on a fake clock ---------------------------------------

TARGET = Target("127.0.0.1", 7497, 10, 15.0)
T = TypeVar("T")


def policy(**kw: object) -> RetryPolicy:
    base: dict[str, object] = {
        "max_attempts": 100,
        "max_time": 120.0,
        "retry_delay": 1.0,
        "max_retry_delay": 8.0,
        "refused_interval": 0.5,
        "jitter": lambda v: v,
    }
    base.update(kw)
    return RetryPolicy(**base)  # type: ignore[arg-type]


def on_fake_time(
    attempt: Callable[[int, float], T],
    ft: FakeTime,
    *,
    target: Target = TARGET,
    describe: Callable[[T], Mapping[str, Any]] = lambda _result: {},
    **policy_kw: object,
) -> T:
    """``connect_with_retries`` on ``ft``'s clock and sleep, with ``policy(**policy_kw)``."""
    return connect_with_retries(
        attempt,
        policy=policy(**policy_kw),
        target=target,
        clock=ft.clock,
        sleep=ft.sleep,
        describe=describe,
    )


class Script:
    """An attempt function failing with the given classes, then succeeding."""

    def __init__(self, classes: list[FailureClass], ft: FakeTime, cost: float = 0.0) -> None:
        self.classes = classes
        self.ft = ft
        self.cost = cost
        self.calls: list[tuple[int, float]] = []

    def __call__(self, number: int, timeout: float) -> str:
        self.calls.append((number, timeout))
        self.ft.advance(min(self.cost, timeout))  # a real attempt never outlives its bound
        if number <= len(self.classes):
            raise AttemptFailed(self.classes[number - 1], TimeoutError(f"attempt {number}"))
        return "connected"


def test_refused_retries_at_a_short_fixed_interval() -> None:
    ft = FakeTime()
    script = Script([F.REFUSED] * 4, ft)
    result = on_fake_time(script, ft)
    assert result == "connected"
    assert ft.sleeps == [0.5] * 4


def test_misbehaving_gateway_gets_capped_exponential_backoff() -> None:
    ft = FakeTime()
    script = Script(
        [F.TIMEOUT, F.REFUSED, F.NOT_LOGGED_IN, F.CLOSED, F.INCOMPLETE_SYNC, F.ERROR], ft
    )
    on_fake_time(script, ft)
    # The class is sent into the wait generator: refused and closed (a relay in front of a
    # restarting gateway) take the short interval and do not advance the exponent.
    assert ft.sleeps == [1.0, 0.5, 2.0, 0.5, 4.0, 8.0]


def test_full_jitter_stays_within_the_exponential_envelope() -> None:
    ft = FakeTime()
    script = Script([F.TIMEOUT] * 6, ft)
    on_fake_time(script, ft, jitter=RetryPolicy._field_defaults["jitter"])  # the default
    for delay, ceiling in zip(ft.sleeps, [1, 2, 4, 8, 8, 8], strict=True):
        assert 0 <= delay <= ceiling
    assert len(set(ft.sleeps)) > 1


def test_max_attempts_gives_up_with_details() -> None:
    ft = FakeTime()
    script = Script([F.REJECTED] * 10, ft, cost=1.0)
    with capture_logs() as logs, pytest.raises(ConnectionFailed) as info:
        on_fake_time(script, ft, max_attempts=3)
    exc = info.value
    assert exc.attempts == 3 and exc.failure_class == "rejected"
    assert isinstance(exc.last_error, TimeoutError) and str(exc.last_error) == "attempt 3"
    assert exc.elapsed == pytest.approx(3 + 0.5 + 0.5)  # 326 retried at the short interval
    assert len(script.calls) == 3
    names = [e["event"] for e in logs]
    assert names == [
        "ibkr.connect.attempt",
        "ibkr.connect.failed",
        "ibkr.connect.attempt",
        "ibkr.connect.failed",
        "ibkr.connect.attempt",
        "ibkr.connect.failed",
        "ibkr.connect.gave_up",
    ]
    first_failed = logs[1]
    assert first_failed["failure_class"] == "rejected"
    assert first_failed["error_type"] == "TimeoutError"
    assert first_failed["next_delay_s"] == 0.5 and first_failed["attempt_ms"] == 1000.0
    assert "client id 10" in first_failed["hint"]
    assert logs[-2]["next_delay_s"] is None
    assert logs[-1]["reason"] == "max_attempts" and logs[-1]["attempts"] == 3
    assert logs[0]["attempt"] == 1 and logs[0]["max_attempts"] == 3
    assert logs[0]["host"] == "127.0.0.1" and logs[0]["port"] == 7497 and logs[0]["timeout_s"] == 15


def test_budget_is_on_the_injected_monotonic_clock_not_wall_clock() -> None:
    ft = FakeTime()
    script = Script([F.TIMEOUT] * 1000, ft, cost=15.0)
    # Wall clock frozen (and backoff's own max_time would read it): irrelevant here.
    with freeze_time("2024-01-01"), capture_logs() as logs, pytest.raises(ConnectionFailed) as info:
        on_fake_time(script, ft, max_time=60.0)
    assert info.value.elapsed <= 60.0 + MIN_ATTEMPT_WINDOW
    assert logs[-1]["reason"] == "max_time"
    # Attempt timeouts and delays are clamped to what is left of the budget.
    assert all(t <= 15.0 for _, t in script.calls)
    assert script.calls[-1][1] < 15.0


def test_attempt_timeout_is_clamped_to_remaining_budget() -> None:
    ft = FakeTime()
    script = Script([F.TIMEOUT] * 5, ft, cost=4.0)
    with pytest.raises(ConnectionFailed):
        on_fake_time(script, ft, target=Target("h", 1, 1, 6.0), max_time=10.0, retry_delay=0.0)
    assert [t for _, t in script.calls] == [6.0, 6.0, 2.0]


def test_recovers_within_a_second_of_a_restart() -> None:
    ft = FakeTime()
    restart_ends = ft.now + 3.0

    def attempt(number: int, timeout: float) -> float:
        if ft.now < restart_ends:
            raise AttemptFailed(F.REFUSED, ConnectionRefusedError())
        return ft.now

    connected_at = on_fake_time(attempt, ft)
    assert restart_ends <= connected_at < restart_ends + 1.0


def test_injected_sleep_means_backoff_sleeps_zero() -> None:
    ft = FakeTime()
    with mock.patch("time.sleep") as real_sleep:
        on_fake_time(Script([F.TIMEOUT] * 2, ft), ft)
    assert ft.sleeps == [1.0, 2.0]
    assert all(c.args == (0.0,) for c in real_sleep.call_args_list)


def test_without_injected_sleep_backoff_sleeps_the_delay_itself() -> None:
    ft = FakeTime()
    with mock.patch("time.sleep") as real_sleep:
        connect_with_retries(
            Script([F.TIMEOUT] * 2, ft), policy=policy(), target=TARGET, clock=ft.clock
        )
    assert [c.args for c in real_sleep.call_args_list] == [(1.0,), (2.0,)]


def test_fixed_delay_schedule_for_legacy() -> None:
    ft = FakeTime()
    on_fake_time(
        Script([F.REFUSED, F.TIMEOUT], ft), ft, fixed_delay=True, retry_delay=5.0, max_time=None
    )
    assert ft.sleeps == [5.0, 5.0]


def test_interrupt_ends_the_loop_at_once() -> None:
    ft = FakeTime()
    calls: list[int] = []

    def attempt(number: int, timeout: float) -> None:
        calls.append(number)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        on_fake_time(attempt, ft)
    assert calls == [1] and ft.sleeps == []


def test_success_line_reports_server_and_accounts() -> None:
    ft = FakeTime()
    with capture_logs() as logs:
        on_fake_time(
            Script([], ft), ft, describe=lambda r: {"server_version": 176, "accounts": ["DU1"]}
        )
    success = logs[-1]
    assert success["event"] == "ibkr.connect.success"
    assert success["server_version"] == 176 and success["accounts"] == ["DU1"]
    assert success["attempt"] == 1 and "elapsed_ms" in success


def test_326_is_retried_at_the_short_interval_during_its_grace_period_then_given_up() -> None:
    """Transient 326 after a gateway restart: retried every refused_interval, then fail fast."""
    ft = FakeTime()
    script = Script([F.REJECTED] * 10, ft)
    with capture_logs() as logs, pytest.raises(ConnectionFailed) as info:
        on_fake_time(script, ft, max_attempts=10, client_id_grace=2.0)
    assert ft.sleeps == [0.5, 0.5, 0.5]  # attempts at 0, 0.5, 1.0, 1.5: none past the grace
    assert info.value.attempts == 4
    assert logs[-1]["event"] == "ibkr.connect.gave_up" and logs[-1]["reason"] == "fail_fast"


def test_326_that_clears_inside_the_grace_period_connects() -> None:
    ft = FakeTime()
    script = Script([F.REJECTED] * 3, ft)
    on_fake_time(script, ft)
    assert ft.sleeps == [0.5, 0.5, 0.5]


def test_no_grace_gives_up_at_the_first_326() -> None:
    ft = FakeTime()
    script = Script([F.REJECTED] * 3, ft)
    with pytest.raises(ConnectionFailed) as info:
        on_fake_time(script, ft, client_id_grace=0.0)
    assert info.value.attempts == 1 and ft.sleeps == []


def test_closed_before_the_handshake_is_retried_at_the_short_interval_to_the_budget() -> None:
    """A socat relay in front of a restarting gateway accepts and closes: not fail fast."""
    ft = FakeTime()
    script = Script([F.CLOSED] * 1000, ft, cost=0.01)
    with capture_logs() as logs, pytest.raises(ConnectionFailed) as info:
        on_fake_time(script, ft, max_attempts=1000, max_time=10.0)
    assert ft.sleeps.count(0.5) >= 18  # the last waits are clamped to the budget
    assert info.value.attempts >= 19
    assert logs[-1]["reason"] == "max_time"


def test_legacy_fixed_schedule_is_not_cut_short_by_fail_fast() -> None:
    ft = FakeTime()
    script = Script([F.REJECTED] * 5, ft)
    with pytest.raises(ConnectionFailed) as info:
        on_fake_time(script, ft, max_attempts=5, fixed_delay=True)
    assert info.value.attempts == 5
