"""``async with ibkr_session()`` with injected ``FakeIB``s, fake time and a recording alert.

The async form drives the sync form's steps: for the same script it must write the same
connect and session lines and send the same alerts. These tests also pin what only the
async form has: delivery off the loop that outlasts a cancellation, and the SIGTERM
handler it borrows from the loop and gives back.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import threading
from collections.abc import Callable
from typing import Any

import pytest
from ib_fakes import Factory
from structlog.testing import capture_logs

from ibkr_resilience import ConnectionFailed, LiveAccountRefused, ibkr_session
from ibkr_resilience.testing import FakeTime, HttpServer, RecordingAlert

Block = Callable[[Any], None]


def session(factory: Factory, ft: FakeTime, alert: RecordingAlert, **kw: Any) -> Any:
    kw.setdefault("timeout", 0.2)  # a "hang" attempt really waits for its bound
    kw.setdefault("env", {})
    return ibkr_session(ib_factory=factory, alert=alert, sleep=ft.sleep, clock=ft.clock, **kw)


def drop(ib: Any) -> None:
    ib.drop()


def fail(ib: Any) -> None:
    raise ValueError("bad plan row 7")


def nothing(ib: Any) -> None:
    pass


def run_form(form: str, make: Callable[[FakeTime], Factory], block: Block) -> tuple[Any, ...]:
    """One session in ``form``; its connect/session lines, alerts, sleeps and outcome."""
    ft = FakeTime()
    alert = RecordingAlert()
    factory = make(ft)
    outcome: str = "returned"
    random.seed(8)  # the same full-jitter delays in both forms

    async def in_loop() -> None:
        async with session(factory, ft, alert) as ib:
            block(ib)

    with capture_logs() as logs:
        try:
            if form == "sync":
                with session(factory, ft, alert) as ib:
                    block(ib)
            else:
                asyncio.run(in_loop())
        except Exception as exc:
            outcome = f"{type(exc).__name__}: {exc}"
    # Alert delivery logs from worker threads in the async form: keep the session's own lines.
    lines = [e for e in logs if e["event"].startswith(("ibkr.connect.", "ibkr.session."))]
    for line in lines:  # the traceback objects differ; their exception type must not
        if "exc_info" in line:
            line["exc_info"] = line["exc_info"][0]
    return lines, alert.texts, ft.sleeps, outcome, [ib.disconnect_calls for ib in factory.made]


@pytest.mark.parametrize(
    ("make", "block"),
    [
        (lambda ft: Factory("ok"), nothing),
        (lambda ft: Factory(["refused", "hang", "ok"], time=ft, attempt_cost=0.2), nothing),
        (lambda ft: Factory("refused", time=ft, attempt_cost=0.01), nothing),  # gives up
        (lambda ft: Factory("in_use_326"), nothing),  # fail fast
        (lambda ft: Factory("ok", accounts=("U1234567",)), nothing),  # live account
        (lambda ft: Factory("ok"), fail),
        (lambda ft: Factory("ok"), drop),
    ],
    ids=["ok", "retries", "gives_up", "fail_fast", "live", "exception", "drop"],
)
def test_async_form_writes_the_same_lines_and_alerts(
    make: Callable[[FakeTime], Factory], block: Block
) -> None:
    """Same factory, same fake time: same lines, alerts, waits, outcome and disconnects."""
    sync = run_form("sync", make, block)
    async_ = run_form("async", make, block)
    assert async_ == sync
    assert sync[0][-1]["event"] == "ibkr.session.end"


def test_async_form_raises_what_the_sync_form_raises() -> None:
    """The public exceptions are the same objects' types with the same details."""
    ft = FakeTime()

    async def main(factory: Factory) -> None:
        async with session(factory, ft, RecordingAlert(), max_attempts=2):
            pass

    with pytest.raises(ConnectionFailed) as failed:
        asyncio.run(main(Factory("refused")))
    assert failed.value.attempts == 2 and failed.value.failure_class == "refused"
    with pytest.raises(LiveAccountRefused) as live:
        asyncio.run(main(Factory("ok", accounts=("U1",))))
    assert live.value.accounts == ["U1"]


def test_cancel_during_alert_delivery_waits_for_it_then_propagates() -> None:
    """A cancel while the lost alert is delivered: the delivery ends first, then CancelledError."""
    ft = FakeTime()
    hook_entered = threading.Event()
    release = threading.Event()
    delivered: list[str] = []

    def slow_alert(text: str) -> None:
        hook_entered.set()
        release.wait(10)
        delivered.append(text)

    async def bot() -> None:
        async with session(Factory("ok"), ft, slow_alert) as ib:  # type: ignore[arg-type]
            ib.drop()  # schedules the "CONNECTION LOST" alert off the loop

    async def main() -> None:
        task = asyncio.ensure_future(bot())
        await asyncio.to_thread(hook_entered.wait, 10)
        task.cancel()  # lands in __aexit__, which is waiting for the delivery
        await asyncio.sleep(0)
        assert not task.done()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task

    with capture_logs() as logs:
        asyncio.run(main())
    assert len(delivered) == 1 and "LOST" in delivered[0]
    end = [e for e in logs if e["event"] == "ibkr.session.end"]
    assert end and end[0]["outcome"] == "lost"


def test_exception_in_block_wins_over_a_cancel_during_cleanup() -> None:
    """The block's exception is on its way out: it propagates after the delivery, unchanged."""
    ft = FakeTime()
    hook_entered = threading.Event()
    release = threading.Event()
    boom = ValueError("bad plan row 7")

    def slow_alert(text: str) -> None:
        hook_entered.set()
        release.wait(10)

    async def bot() -> None:
        async with session(Factory("ok"), ft, slow_alert):  # type: ignore[arg-type]
            raise boom

    async def main() -> None:
        task = asyncio.ensure_future(bot())
        await asyncio.to_thread(hook_entered.wait, 10)
        task.cancel()
        release.set()
        with pytest.raises(ValueError) as info:
            await task
        assert info.value is boom

    asyncio.run(main())


def test_sigterm_handler_is_borrowed_from_the_loop_and_given_back() -> None:
    """Inside: SIGTERM is the session's; after: the application's own loop handler again."""
    ft = FakeTime()
    before = signal.getsignal(signal.SIGTERM)
    seen: dict[str, Any] = {}

    def app_handler() -> None:  # pragma: no cover  (never signalled here)
        pass

    async def main() -> None:
        loop = asyncio.get_running_loop()
        handlers = loop._signal_handlers  # type: ignore[attr-defined]
        async with session(Factory("ok"), ft, RecordingAlert()):
            seen["without_app"] = handlers[signal.SIGTERM]._callback.__name__
        seen["after_without_app"] = signal.SIGTERM in handlers
        loop.add_signal_handler(signal.SIGTERM, app_handler)
        async with session(Factory("ok"), ft, RecordingAlert()):
            seen["with_app"] = handlers[signal.SIGTERM]._callback.__name__
        seen["after_with_app"] = handlers[signal.SIGTERM]._callback
        loop.remove_signal_handler(signal.SIGTERM)

    asyncio.run(main())
    assert seen == {
        "without_app": "_cancel",
        "after_without_app": False,
        "with_app": "_cancel",
        "after_with_app": app_handler,
    }
    assert signal.getsignal(signal.SIGTERM) == before


def test_async_session_outside_the_main_thread_installs_no_handler() -> None:
    """Signals only reach the main thread: elsewhere the session runs without a handler."""
    ft = FakeTime()
    result: list[bool] = []

    async def main() -> None:
        async with session(Factory("ok"), ft, RecordingAlert()) as ib:
            result.append(ib.isConnected())

    worker = threading.Thread(target=lambda: asyncio.run(main()))
    worker.start()
    worker.join(10)
    assert result == [True]


def test_injected_async_sleep_is_awaited() -> None:
    """``sleep=`` may be an async function for ``async with``: it gets the planned waits."""
    ft = FakeTime()
    awaited: list[float] = []

    async def sleep(seconds: float) -> None:
        awaited.append(seconds)
        ft.advance(seconds)

    async def main() -> None:
        async with ibkr_session(
            ib_factory=Factory(["refused", "refused", "ok"]),
            alert=RecordingAlert(),
            sleep=sleep,
            clock=ft.clock,
            env={},
        ):
            pass

    asyncio.run(main())
    assert awaited == [0.5, 0.5]


@pytest.mark.parametrize(("behaviour", "pinged"), [("ok", "/"), ("refused", "/fail")])
def test_async_form_pings_the_healthcheck_before_its_end_line(behaviour: str, pinged: str) -> None:
    """``/start`` before the first attempt, the outcome ping after; ``ibkr.session.end`` last."""
    ft = FakeTime()
    uuid = "/5f1c2a9e-3b7d-4e10-9c6a-0d2b8e4f7a13"

    async def main(url: str) -> None:
        async with session(
            Factory(behaviour),
            ft,
            RecordingAlert(),
            max_attempts=1,
            env={"IBKR_HEALTHCHECK_URL": url},
        ):
            pass

    with HttpServer([(200, b"OK")], path=uuid) as pings, capture_logs() as logs:
        with contextlib.suppress(ConnectionFailed):
            asyncio.run(main(pings.url))
        routes = [r.route.removeprefix(uuid) or "/" for r in pings.requests]
    assert routes == ["/start", pinged]
    ours = [e["event"] for e in logs if e["event"].startswith("ibkr.")]
    assert ours[-2:] == ["ibkr.healthcheck.sent", "ibkr.session.end"]
