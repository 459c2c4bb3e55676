"""The async form of the connect policy: the same schedule and lines, awaited, never blocking.

Fake clock and fake async sleep: no test here waits for real time, except the bounded
attempts against ``FakeIB`` (a fraction of a second each), as in ``test_policy.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, MutableMapping
from typing import Any, TypeVar
from unittest import mock

import pytest
from ib_fakes import FakeIB
from loadslack import Load
from structlog.testing import capture_logs
from test_policy import Script as SyncScript
from test_policy import policy

from ibkr_resilience import ConnectionFailed, RunningEventLoopError
from ibkr_resilience._connect.attempt import (
    AttemptSpec,
    bounded_connect,
    bounded_connect_async,
    disconnect_quietly,
)
from ibkr_resilience._connect.failures import AttemptFailed, FailureClass
from ibkr_resilience._connect.policy import (
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


class AsyncFakeTime(FakeTime):
    """FakeTime whose sleep is a coroutine function (what the async form injects)."""

    async def sleep_async(self, seconds: float) -> None:
        self.sleep(seconds)


class Script(SyncScript):
    """``test_policy.Script`` (fails with the given classes, then succeeds), also awaitable."""

    async def coro(self, number: int, timeout: float) -> str:
        return self(number, timeout)


def both_forms(
    classes: list[FailureClass], **kw: Any
) -> tuple[tuple[Any, list[float], list[MutableMapping[str, Any]], list[tuple[int, float]]], ...]:
    """Run the same script through the sync and the async form; what each produced."""
    results = []
    for form in ("sync", "async"):
        ft = AsyncFakeTime()
        script = Script(classes, ft, cost=kw.get("cost", 0.0))
        args: dict[str, Any] = {
            "policy": policy(**kw.get("policy", {})),
            "target": TARGET,
            "clock": ft.clock,
        }
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
        run(
            connect_with_retries_async(
                Script([F.REJECTED] * 5, ft).coro,
                policy=policy(client_id_grace=1.0),
                target=TARGET,
                clock=ft.clock,
                sleep=ft.sleep_async,
            )
        )
    assert info.value.attempts == 2 and info.value.failure_class == "rejected"
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
                Script([F.TIMEOUT, F.REFUSED, F.TIMEOUT], ft).coro,
                policy=policy(),
                target=TARGET,
                clock=ft.clock,
            )

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
                Script([F.TIMEOUT] * 2, ft).coro,
                policy=policy(),
                target=TARGET,
                clock=ft.clock,
                sleep=ft.sleep_async,
            )

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
        task = asyncio.ensure_future(
            connect_with_retries_async(
                attempt, policy=policy(), target=TARGET, clock=ft.clock, sleep=sleep
            )
        )
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
        run(
            connect_with_retries_async(
                attempt, policy=policy(), target=TARGET, clock=ft.clock, sleep=ft.sleep_async
            )
        )
    assert ft.sleeps == []


# -- one bounded attempt, awaited -----------------------------------------------------------


Outcome = tuple[FailureClass | None, str, str, int, bool]


def attempt_in(form: str, behaviour: str, timeout: float) -> tuple[Outcome, float, FakeIB]:
    """One attempt against a scripted ``FakeIB``, sync or awaited; what came of it, how fast."""
    ib = FakeIB(behaviour)
    started = time.monotonic()
    failure: AttemptFailed | None = None
    try:
        if form == "sync":
            bounded_connect(ib, AttemptSpec("127.0.0.1", 7497, 10, timeout))
        else:
            run(bounded_connect_async(ib, AttemptSpec("127.0.0.1", 7497, 10, timeout)))
    except AttemptFailed as exc:
        failure = exc
    elapsed = time.monotonic() - started
    outcome: Outcome = (
        None if failure is None else failure.failure_class,
        "" if failure is None else type(failure.error).__name__,
        "" if failure is None else str(failure.error),
        ib.disconnect_calls,
        ib.cancelled,
    )
    return outcome, elapsed, ib


@pytest.mark.parametrize(
    ("behaviour", "timeout", "expected"),
    [
        ("ok", 2.0, None),
        ("refused", 5.0, F.REFUSED),
        ("multi", 5.0, F.REFUSED),
        ("error", 5.0, F.ERROR),
        ("close_on_accept", 5.0, F.CLOSED),
        ("in_use_326", 5.0, F.REJECTED),
        ("peer_closed", 5.0, F.REJECTED),
        ("hang", 0.15, F.TIMEOUT),
        ("not_logged_in", 0.15, F.NOT_LOGGED_IN),
        ("not_logged_in_quiet", 0.15, F.NOT_LOGGED_IN),
        ("sync_hang", 0.15, F.INCOMPLETE_SYNC),
        ("phases", 1.0, F.TIMEOUT),  # the bound covers ib_insync's four phases together
    ],
)
def test_async_attempt_is_the_sync_attempt(
    behaviour: str, timeout: float, expected: FailureClass | None
) -> None:
    """Each gateway behaviour: the same class, error, disconnects, and bound in both forms."""
    load = Load()
    sync, _, _ = attempt_in("sync", behaviour, timeout)
    async_, elapsed, ib = attempt_in("async", behaviour, timeout)
    assert async_ == sync
    assert async_[0] is expected
    # At once (a quarter of a 5 s bound), or at the bound (phases: 3.6 s if unbounded).
    bound = timeout / 4 if timeout > 1 else timeout + load.slack(0.45)
    assert elapsed < bound, (elapsed, load)
    assert ib.connect_calls == [("127.0.0.1", 7497, 10, timeout)]
    assert ib.disconnect_calls == (0 if expected is None else 1)


def test_cancelled_async_attempt_stops_connecting_and_disconnects() -> None:
    """Cancelling the awaiting task cancels ``connectAsync`` and disconnects the instance."""
    ib = FakeIB("hang")

    async def main() -> None:
        task = asyncio.ensure_future(
            bounded_connect_async(ib, AttemptSpec("127.0.0.1", 7497, 10, 30.0))
        )
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
        bounded_connect(ib, AttemptSpec("127.0.0.1", 7497, 10, 1.0))

    with pytest.raises(RunningEventLoopError, match="async with") as info:
        run(main())
    assert "\n" not in str(info.value)
    assert ib.connect_calls == []


def test_disconnect_quietly_leaves_a_running_loop_alone() -> None:
    """Inside a running loop it disconnects without trying to run the loop."""
    outcome, _, ib = attempt_in("async", "ok", 1.0)
    assert outcome[0] is None

    async def main() -> None:
        disconnect_quietly(ib, reason="test")  # would raise "loop already running" if it ran it

    with capture_logs() as logs:
        run(main())
    assert ib.disconnect_calls == 1 and not ib.isConnected()
    assert not [e for e in logs if e["event"] == "ibkr.disconnect.failed"]
