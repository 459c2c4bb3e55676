"""The retry schedule, driven by ``backoff``, with an injected clock and sleep.

Attempts are run by ``backoff.on_exception``: it counts tries (``max_tries``), asks our
``giveup`` predicate about the total budget, sends each failure into our wait generator
(backoff 2.x does ``wait.send(exception)``) and calls the handlers that write the log
lines. What backoff cannot do is decided here:

* **The delay depends on the failure class.** A refused connection costs the gateway
  nothing, so while the port is closed we retry at a short fixed interval and connect
  within about that interval of the gateway coming back. Failures where the gateway
  answered but misbehaved get exponential backoff with full jitter (``backoff.expo``
  and ``backoff.full_jitter``), capped, so a struggling gateway is not hammered.
* **The budget is measured on a monotonic clock.** backoff's own ``max_time`` reads
  ``datetime.now()``, which NTP steps and DST distort and freezegun freezes; it is not
  used. Every delay and every attempt's timeout is clamped to what is left.
* **Sleeping goes through an injected function when one is given.** backoff hard-codes
  ``time.sleep``. With no injected sleep, the generator yields the real delay and
  backoff sleeps it itself (so code that patches ``time.sleep``, like old callers'
  tests, sees exactly one ``time.sleep(delay)`` per retry). With an injected sleep the
  generator yields ``0`` to backoff and the ``on_backoff`` handler, after logging the
  planned delay, calls the injected sleep with it: tests then use a fake clock and fake
  sleep and never wait, without patching backoff's globals.

**One schedule, two forms.** :func:`connect_with_retries` retries a plain function;
:func:`connect_with_retries_async` retries a coroutine function in the running event
loop (``async with ibkr_session()``). Both are the same :class:`_Run`: the same budget,
wait generator, fail-fast counting and log lines, handed to the same
``backoff.on_exception`` call; backoff picks its coroutine loop for a coroutine target
(``backoff._async``), which awaits ``asyncio.sleep(seconds)`` where the sync loop calls
``time.sleep``. The injected sleep of the async form is an async function, awaited by
the async ``on_backoff`` handler.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Generator, Iterator, Mapping
from typing import Any, Generic, NamedTuple, TypeVar

import backoff

from .._core.log import get_logger
from ..errors import ConnectionFailed
from .failures import AttemptFailed, FailureClass
from .hints import hint_for

log = get_logger("ibkr_resilience.connect")

T = TypeVar("T")

SHORT_INTERVAL_CLASSES = frozenset(
    {FailureClass.REFUSED, FailureClass.CLOSED, FailureClass.REJECTED}
)
"""Classes retried at the short ``refused_interval``: each costs the gateway nothing.

* ``refused``: the port is closed (the gateway is restarting);
* ``closed``: accepted and closed before any handshake byte. That is what a Docker
  image's socat relay does while the gateway behind it restarts (every nightly restart),
  and also what a gateway with the API disabled or this host untrusted does: the two
  are indistinguishable on the wire, so it is retried for the whole budget;
* ``rejected``: error 326, client id in use. Right after a gateway restart the gateway
  still holds the ids of sessions it has not torn down, for a few seconds; then the same
  id works. Retried only during ``client_id_grace``, then given up (``fail_fast``): a
  process that really holds the id will not let go by itself."""

GIVE_UP_AT_ONCE = frozenset({FailureClass.READ_ONLY})
"""Classes a retry cannot fix: a gateway setting someone has to change (TWS 321)."""

MIN_ATTEMPT_WINDOW = 0.1
"""An attempt gets at least this long; the budget is not spent on shorter ones."""


class RetryPolicy(NamedTuple):
    """How many attempts, how long in total, and how long between them."""

    max_attempts: int
    max_time: float | None
    retry_delay: float
    max_retry_delay: float
    refused_interval: float
    fixed_delay: bool = False
    """Legacy schedule: every retry waits exactly ``retry_delay``, whatever the class."""
    client_id_grace: float = 30.0
    """Seconds from the first attempt during which error 326 is retried (then fail fast)."""
    jitter: Callable[[float], float] = backoff.full_jitter


class Target(NamedTuple):
    """Where to connect, and the per-attempt bound; carried into every log line."""

    host: str
    port: int
    client_id: int
    timeout: float


class _Run(Generic[T]):
    """The state of one retry loop: budget, attempt number, the planned next delay.

    ``sleep`` is the injected sleep: a plain function for :meth:`run`, an async one for
    :meth:`run_async` (``None``: backoff sleeps the planned delay itself).
    """

    def __init__(
        self,
        *,
        policy: RetryPolicy,
        target: Target,
        clock: Callable[[], float],
        sleep: Callable[[float], Any] | None,
        describe: Callable[[T], Mapping[str, Any]],
    ) -> None:
        self.policy = policy
        self.target = target
        self.clock = clock
        self.sleep = sleep
        self.describe = describe
        self.log = log.bind(host=target.host, port=target.port, client_id=target.client_id)
        self.start = clock()
        self.deadline = None if policy.max_time is None else self.start + policy.max_time
        self.attempts = 0
        self.attempt_started = self.start
        self.planned_delay = 0.0
        self.last: AttemptFailed | None = None
        self.result: T | None = None

    # -- budget -----------------------------------------------------------------------
    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - self.clock()

    def elapsed_ms(self) -> float:
        return round((self.clock() - self.start) * 1000, 1)

    def budget_exhausted(self, _failure: Exception) -> bool:
        remaining = self.remaining()
        return remaining is not None and remaining < MIN_ATTEMPT_WINDOW

    def give_up(self, failure: Exception) -> bool:
        """backoff's ``giveup`` predicate: the budget, a setting retrying cannot change
        (Read-Only API), an attempt that already waited out its share (1100 at connect),
        or error 326 past its grace period."""
        if self.budget_exhausted(failure):
            return True
        failure_class = getattr(failure, "failure_class", None)
        if not self.policy.fixed_delay and failure_class in GIVE_UP_AT_ONCE:
            return True
        if getattr(failure, "final", False):  # an IB outage already waited out (1100)
            return True
        return (
            not self.policy.fixed_delay
            and getattr(failure, "failure_class", None) == FailureClass.REJECTED
            and self.clock() - self.start + self.policy.refused_interval
            >= self.policy.client_id_grace
        )

    # -- backoff hooks ----------------------------------------------------------------
    def wait_gen(self) -> Generator[float, Any, None]:
        expo = backoff.expo(factor=self.policy.retry_delay, max_value=self.policy.max_retry_delay)
        next(expo)  # advance past expo's priming yield
        failure = yield 0.0  # backoff primes us with send(None)
        while True:
            failure_class = getattr(failure, "failure_class", FailureClass.ERROR)
            if self.policy.fixed_delay:
                planned = self.policy.retry_delay
            elif failure_class in SHORT_INTERVAL_CLASSES:
                planned = self.policy.refused_interval
            else:
                planned = self.policy.jitter(next(expo))
            remaining = self.remaining()
            if remaining is not None:
                planned = max(0.0, min(planned, remaining - MIN_ATTEMPT_WINDOW))
            self.planned_delay = planned
            failure = yield (planned if self.sleep is None else 0.0)

    def on_backoff(self, details: Mapping[str, Any]) -> None:
        self._log_failure(details["exception"], next_delay=self.planned_delay)
        if self.sleep is not None:
            self.sleep(self.planned_delay)

    async def on_backoff_async(self, details: Mapping[str, Any]) -> None:
        """:meth:`on_backoff` of the async form: the injected sleep is awaited."""
        self._log_failure(details["exception"], next_delay=self.planned_delay)
        if self.sleep is not None:
            await self.sleep(self.planned_delay)

    def on_giveup(self, details: Mapping[str, Any]) -> None:
        failure = details["exception"]
        self._log_failure(failure, next_delay=None)
        if self.attempts >= self.policy.max_attempts:
            reason = "max_attempts"
        elif self.budget_exhausted(failure):
            reason = "max_time"
        else:
            reason = "fail_fast"
        self.log.error(
            "ibkr.connect.gave_up",
            attempts=self.attempts,
            max_attempts=self.policy.max_attempts,
            max_time_s=self.policy.max_time,
            reason=reason,
            elapsed_ms=self.elapsed_ms(),
            failure_class=str(failure.failure_class),
            error_type=type(failure.error).__name__,
            error=str(failure.error),
            hint=hint_for(failure.failure_class, self.target.client_id),
        )

    def on_success(self, details: Mapping[str, Any]) -> None:
        result = self.result
        info = dict(self.describe(result)) if result is not None else {}
        self.log.info(
            "ibkr.connect.success",
            attempt=self.attempts,
            max_attempts=self.policy.max_attempts,
            attempt_ms=round((self.clock() - self.attempt_started) * 1000, 1),
            elapsed_ms=self.elapsed_ms(),
            **info,
        )

    def _log_failure(self, failure: AttemptFailed, next_delay: float | None) -> None:
        # A failure that is retried is routine (a gateway restart gives dozens): INFO.
        # The last one is a WARNING, and ``ibkr.connect.gave_up`` the ERROR to alert on.
        emit = self.log.info if next_delay is not None else self.log.warning
        emit(
            "ibkr.connect.failed",
            attempt=self.attempts,
            max_attempts=self.policy.max_attempts,
            failure_class=str(failure.failure_class),
            error_type=type(failure.error).__name__,
            error=str(failure.error),
            detail=failure.detail,
            attempt_ms=round((self.clock() - self.attempt_started) * 1000, 1),
            elapsed_ms=self.elapsed_ms(),
            next_delay_s=None if next_delay is None else round(next_delay, 3),
            hint=hint_for(failure.failure_class, self.target.client_id),
        )

    # -- the target backoff retries ---------------------------------------------------
    def begin_attempt(self) -> float:
        """Count and log the attempt; return its timeout, clamped to the budget left."""
        self.attempts += 1
        timeout = self.target.timeout
        remaining = self.remaining()
        if remaining is not None:
            timeout = max(MIN_ATTEMPT_WINDOW, min(timeout, remaining))
        self.attempt_started = self.clock()
        self.log.info(
            "ibkr.connect.attempt",
            attempt=self.attempts,
            max_attempts=self.policy.max_attempts,
            timeout_s=round(timeout, 3),
        )
        return timeout

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        """Remember a failed attempt (and count fail-fast classes) on its way to backoff."""
        try:
            yield
        except AttemptFailed as failure:
            self.last = failure
            raise

    def retrying(
        self, target: Callable[[], Any], on_backoff: Callable[[Mapping[str, Any]], Any]
    ) -> Callable[[], Any]:
        """``target`` wrapped in backoff's retry loop (its coroutine loop for a coroutine)."""
        return backoff.on_exception(
            self.wait_gen,
            AttemptFailed,
            max_tries=self.policy.max_attempts,
            giveup=self.give_up,
            on_backoff=on_backoff,
            on_giveup=self.on_giveup,
            on_success=self.on_success,
            jitter=None,  # jitter is applied per class inside wait_gen
            logger=None,  # our handlers write the log lines
        )(target)

    def run(self, attempt: Callable[[int, float], T]) -> T:
        """Retry ``attempt(n, timeout)`` until it returns; raise ConnectionFailed on give-up."""

        def one_attempt() -> T:
            timeout = self.begin_attempt()
            with self.recording():
                self.result = attempt(self.attempts, timeout)
            return self.result

        try:
            result: T = self.retrying(one_attempt, self.on_backoff)()
        except AttemptFailed as failure:
            raise self.failed(failure) from failure.error
        return result

    async def run_async(self, attempt: Callable[[int, float], Awaitable[T]]) -> T:
        """:meth:`run` for a coroutine function, in the running event loop."""

        async def one_attempt() -> T:
            timeout = self.begin_attempt()
            with self.recording():
                self.result = await attempt(self.attempts, timeout)
            return self.result

        try:
            result: T = await self.retrying(one_attempt, self.on_backoff_async)()
        except AttemptFailed as failure:
            raise self.failed(failure) from failure.error
        return result

    def failed(self, failure: AttemptFailed) -> ConnectionFailed:
        """The error a caller gets once backoff gave up."""
        elapsed = self.clock() - self.start
        t = self.target
        return ConnectionFailed(
            f"could not connect to {t.host}:{t.port} with client id {t.client_id}: "
            f"{self.attempts} attempt(s) in {elapsed:.1f} s, last failure "
            f"{failure.failure_class}: {type(failure.error).__name__}: {failure.error}",
            attempts=self.attempts,
            elapsed=elapsed,
            last_error=failure.error,
            failure_class=str(failure.failure_class),
        )


def connect_with_retries(
    attempt: Callable[[int, float], T],
    *,
    policy: RetryPolicy,
    target: Target,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], object] | None = None,
    describe: Callable[[T], Mapping[str, Any]] = lambda _result: {},
) -> T:
    """Call ``attempt(n, timeout)`` until it succeeds; raise ConnectionFailed on give-up.

    ``n`` counts from 1; ``timeout`` is in seconds, already clamped to the budget left.
    ``attempt`` raises :class:`AttemptFailed` to ask for a retry; anything else (a
    ``KeyboardInterrupt``, the ``SystemExit`` raised on SIGTERM) ends the loop at once.
    ``clock`` returns monotonic seconds; ``sleep(seconds)`` replaces the real wait.
    """
    run = _Run(policy=policy, target=target, clock=clock, sleep=sleep, describe=describe)
    return run.run(attempt)


async def connect_with_retries_async(
    attempt: Callable[[int, float], Awaitable[T]],
    *,
    policy: RetryPolicy,
    target: Target,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[object]] | None = None,
    describe: Callable[[T], Mapping[str, Any]] = lambda _result: {},
) -> T:
    """:func:`connect_with_retries` for a coroutine function, awaited in the running loop.

    Same attempts, bounds, log lines and :class:`ConnectionFailed`; waits never block the
    loop: ``await sleep(seconds)`` when a sleep is injected, else backoff awaits
    ``asyncio.sleep(seconds)``. A cancellation (``asyncio.CancelledError``) ends the loop
    at once and propagates.
    """
    run = _Run(policy=policy, target=target, clock=clock, sleep=sleep, describe=describe)
    return await run.run_async(attempt)
