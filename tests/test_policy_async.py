"""The async form of the connect policy: the same schedule and lines, awaited, never blocking.

Fake clock and fake async sleep: no test here waits for real time, except the bounded
attempts against ``FakeIB`` (a fraction of a second each), as in ``test_policy.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any, TypeVar
from unittest import mock

import pytest
from ib_fakes import FakeIB
from structlog.testing import capture_logs

from ibkr_resilience import ConnectionFailed, RunningEventLoopError
from ibkr_resilience._connect.attempt import (
    AttemptFailed,
    FailureClass,
    bounded_connect,
    bounded_connect_async,
    disconnect_quietly,
)
from ibkr_resilience._connect.policy import (
    RetryPolicy,
    Target,
    connect_with_retries,
    connect_with_retries_async,
)
from ibkr_resilience.testing import FakeTime

F = FailureClass
R = TypeVar("R")
TARGET = Target("127.0.0.1", 7497, 10, 15.0)


def run(coro: Awaitable[R]) -> R:
    async def main() -> R:
        return await coro

    return asyncio.run(main())


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


class AsyncFakeTime(FakeTime):
    """FakeTime whose sleep is a coroutine function (what the async form injects)."""

    async def sleep_async(self, seconds: float) -> None:
        self.sleep(seconds)


class Script:
    """Attempts failing with the given classes, then succeeding; sync and async flavours."""

    def __init__(self, classes: list[FailureClass], ft: FakeTime, cost: float = 0.0) -> None:
        self.classes = classes
        self.ft = ft
        self.cost = cost
        self.calls: list[tuple[int, float]] = []

    def __call__(self, number: int, timeout: float) -> str:
        self.calls.append((number, timeout))
        self.ft.advance(min(self.cost, timeout))
        if number <= len(self.classes):
            raise AttemptFailed(self.classes[number - 1], TimeoutError(f"attempt {number}"))
        return "connected"

    async def coro(self, number: int, timeout: float) -> str:
        return self(number, timeout)


def both_forms(
    classes: list[FailureClass], **kw: Any
) -> tuple[tuple[Any, list[float], list[dict[str, Any]], list[tuple[int, float]]], ...]:
    """Run the same script through the sync and the async form; what each produced."""
    results = []
    for form in ("sync", "async"):
        ft = AsyncFakeTime()
        script = Script(classes, ft, cost=kw.get("cost", 0.0))
        args: dict[str, Any] = {"policy": policy(**kw.get("policy", {})), "target": TARGET,
                                "clock": ft.clock}  # fmt: skip
        outcome: Any
        with capture_logs() as logs:
            try:
                if form == "sync":
                    outcome = connect_with_retries(script, sleep=ft.sleep, **args)
                else:
                    outcome = run(
                        connect_with_retries_async(script.coro, sleep=ft.sleep_async, **args)
                    )
            except ConnectionFailed as exc:
                outcome = (exc.attempts, exc.elapsed, exc.failure_class, str(exc))
        results.append((outcome, ft.sleeps, logs, script.calls))
    return tuple(results)


@pytest.mark.parametrize(
    "classes, kw",
    [
        ([F.REFUSED] * 4, {}),
        ([F.TIMEOUT, F.REFUSED, F.NOT_LOGGED_IN, F.CLOSED, F.INCOMPLETE_SYNC, F.ERROR], {}),
        ([F.REJECTED] * 10, {"policy": {"max_attempts": 10}}),  # fail fast
        ([F.TIMEOUT] * 10, {"policy": {"max_attempts": 3}, "cost": 1.0}),  # max_attempts
        ([F.TIMEOUT] * 1000, {"policy": {"max_time": 60.0}, "cost": 15.0}),  # budget
    ],
    ids=["refused", "backoff", "fail_fast", "max_attempts", "max_time"],
)
def test_async_form_makes_the_same_attempts_waits_and_lines(
    classes: list[FailureClass], kw: dict[str, Any]
) -> None:
    """Same script, both forms: same result or error, same waits, same log lines."""
    sync, async_ = both_forms(classes, **kw)
    assert async_[0] == sync[0]  # result, or ConnectionFailed's attempts/elapsed/class/text
    assert async_[1] == sync[1]  # planned waits, each given to the injected sleep
    assert async_[2] == sync[2]  # every log line with every field (fake clock: identical)
    assert async_[3] == sync[3]  # attempt numbers and their clamped timeouts
    assert sync[2], "the script logged nothing"


def test_async_gave_up_line_and_error_name_the_last_failure() -> None:
    """The give-up reasons reach the async form too (fail-fast here)."""
    ft = AsyncFakeTime()
    with capture_logs() as logs, pytest.raises(ConnectionFailed) as info:
        run(connect_with_retries_async(
            Script([F.REJECTED] * 5, ft).coro, policy=policy(), target=TARGET, clock=ft.clock,
            sleep=ft.sleep_async,
        ))  # fmt: skip
    assert info.value.attempts == 3 and info.value.failure_class == "rejected"
    assert isinstance(info.value.__cause__, TimeoutError)
    assert logs[-1]["event"] == "ibkr.connect.gave_up" and logs[-1]["reason"] == "fail_fast"


def test_without_injected_sleep_backoff_awaits_asyncio_sleep() -> None:
    """No injected sleep: backoff awaits ``asyncio.sleep(planned)``; ``time.sleep`` never runs."""
    ft = FakeTime()
    awaited: list[float] = []

    async def fake_asyncio_sleep(seconds: float, result: Any = None) -> Any:
        awaited.append(seconds)
        return result

    async def main() -> str:
        with (
            mock.patch("time.sleep", side_effect=AssertionError("time.sleep in async form")),
            mock.patch.object(asyncio, "sleep", fake_asyncio_sleep),
        ):
            return await connect_with_retries_async(
                Script([F.TIMEOUT, F.REFUSED, F.TIMEOUT], ft).coro, policy=policy(),
                target=TARGET, clock=ft.clock,
            )  # fmt: skip

    assert asyncio.run(main()) == "connected"
    assert awaited == [1.0, 0.5, 2.0]


def test_injected_async_sleep_means_backoff_awaits_zero() -> None:
    """With an injected sleep, backoff's own wait is ``asyncio.sleep(0)`` (one loop step)."""
    ft = AsyncFakeTime()
    awaited: list[float] = []
    real_sleep = asyncio.sleep

    async def spy(seconds: float, result: Any = None) -> Any:
        awaited.append(seconds)
        return await real_sleep(0, result)

    async def main() -> None:
        with mock.patch.object(asyncio, "sleep", spy):
            await connect_with_retries_async(
                Script([F.TIMEOUT] * 2, ft).coro, policy=policy(), target=TARGET,
                clock=ft.clock, sleep=ft.sleep_async,
            )  # fmt: skip

    asyncio.run(main())
    assert ft.sleeps == [1.0, 2.0]
    assert awaited == [0.0, 0.0]


def test_cancellation_ends_the_async_loop_at_once() -> None:
    """A cancelled retry loop stops where it is: no more attempts, no give-up line."""
    ft = AsyncFakeTime()
    calls: list[int] = []
    in_wait = asyncio.Event()

    async def attempt(number: int, timeout: float) -> str:
        calls.append(number)
        raise AttemptFailed(F.REFUSED, ConnectionRefusedError())

    async def sleep(seconds: float) -> None:
        in_wait.set()
        await asyncio.Event().wait()  # a wait that only a cancellation ends

    async def main() -> None:
        task = asyncio.ensure_future(connect_with_retries_async(
            attempt, policy=policy(), target=TARGET, clock=ft.clock, sleep=sleep))  # fmt: skip
        await in_wait.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with capture_logs() as logs:
        asyncio.run(main())
    assert calls == [1]
    assert [e["event"] for e in logs] == ["ibkr.connect.attempt", "ibkr.connect.failed"]


def test_other_exceptions_end_the_async_loop_at_once() -> None:
    """Only AttemptFailed is retried; anything else propagates from the first attempt."""
    ft = AsyncFakeTime()

    async def attempt(number: int, timeout: float) -> None:
        raise RuntimeError("bug")

    with pytest.raises(RuntimeError, match="bug"):
        run(connect_with_retries_async(attempt, policy=policy(), target=TARGET, clock=ft.clock,
                                       sleep=ft.sleep_async))  # fmt: skip
    assert ft.sleeps == []


# -- one bounded attempt, awaited -----------------------------------------------------------


def attempt_async(behaviour: str, timeout: float) -> tuple[AttemptFailed | None, float, FakeIB]:
    ib = FakeIB(behaviour)
    started = time.monotonic()
    try:
        run(bounded_connect_async(ib, "127.0.0.1", 7497, 10, timeout))
    except AttemptFailed as failure:
        return failure, time.monotonic() - started, ib
    return None, time.monotonic() - started, ib


def test_async_attempt_success_passes_timeout_to_connect_async() -> None:
    """A good gateway: connected, ``connectAsync`` got the bound, nothing disconnected."""
    failure, _, ib = attempt_async("ok", 2.0)
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
def test_async_attempt_classifies_immediate_failures_at_once(
    behaviour: str, expected: FailureClass
) -> None:
    """The same classes as the sync attempt, without waiting for the timeout."""
    failure, elapsed, ib = attempt_async(behaviour, 5.0)
    assert failure is not None and failure.failure_class is expected
    assert elapsed < 0.5
    assert ib.disconnect_calls == 1


@pytest.mark.parametrize(
    ("behaviour", "expected", "message"),
    [
        ("hang", F.TIMEOUT, "no API handshake"),
        ("not_logged_in", F.NOT_LOGGED_IN, "API did not start"),
        ("sync_hang", F.INCOMPLETE_SYNC, "initial sync did not finish"),
    ],
)
def test_async_attempt_ends_silent_gateways_at_the_bound(
    behaviour: str, expected: FailureClass, message: str
) -> None:
    """Our bound, not ib_insync's per-phase timeouts, ends a silent gateway."""
    failure, elapsed, ib = attempt_async(behaviour, 0.15)
    assert failure is not None and failure.failure_class is expected
    assert isinstance(failure.error, TimeoutError) and message in str(failure.error)
    assert 0.15 <= elapsed < 0.6
    assert ib.cancelled and ib.disconnect_calls == 1


def test_cancelled_async_attempt_stops_connecting_and_disconnects() -> None:
    """Cancelling the awaiting task cancels ``connectAsync`` and disconnects the instance."""
    ib = FakeIB("hang")

    async def main() -> None:
        task = asyncio.ensure_future(bounded_connect_async(ib, "127.0.0.1", 7497, 10, 30.0))
        while not ib.connect_calls:
            await asyncio.sleep(0)  # until the attempt has started (a few loop steps)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main())
    assert ib.cancelled and ib.disconnect_calls == 1


def test_sync_attempt_inside_a_running_loop_is_refused_before_connecting() -> None:
    """``bounded_connect`` cannot run a loop that already runs: one-line error, no attempt."""
    ib = FakeIB("ok")

    async def main() -> None:
        bounded_connect(ib, "127.0.0.1", 7497, 10, 1.0)

    with pytest.raises(RunningEventLoopError, match="async with") as info:
        run(main())
    assert "\n" not in str(info.value)
    assert ib.connect_calls == []


def test_disconnect_quietly_leaves_a_running_loop_alone() -> None:
    """Inside a running loop it disconnects without trying to run the loop."""
    failure, _, ib = attempt_async("ok", 1.0)
    assert failure is None

    async def main() -> None:
        disconnect_quietly(ib, reason="test")  # would raise "loop already running" if it ran it

    with capture_logs() as logs:
        run(main())
    assert ib.disconnect_calls == 1 and not ib.isConnected()
    assert not [e for e in logs if e["event"] == "ibkr.disconnect.failed"]
