"""The initial sync of a connect: which requests were answered, and which are optional.

``IB.connectAsync`` sends positions, open orders, completed orders and account updates
concurrently, each under the connect's ``timeout``, then executions. A gateway that
leaves one of them unanswered makes the whole connect wait out the bound, and the only
trace is ib_insync's "<name> request timed out" line. :func:`track_sync` wraps those
request methods *on the instance* for one attempt, so that:

* every request still pending is known by name (``Progress.pending``): a sync cut at the
  bound says which requests got no answer;
* an optional request is bounded shorter and answered empty when the gateway stays
  silent. Completed orders are optional: nothing in this package uses them (exactly-once
  comes from open orders and executions), and some gateways never answer that request
  (ib_insync issues #224, #355).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from .watch import Progress

# IB method -> the name ib_insync uses for it in its "request timed out" lines.
SYNC_REQUESTS: dict[str, str] = {
    "reqPositionsAsync": "positions",
    "reqOpenOrdersAsync": "open orders",
    "reqCompletedOrdersAsync": "completed orders",
    "reqAccountUpdatesAsync": "account updates",
    "reqAccountUpdatesMultiAsync": "account updates for {0}",
    "reqExecutionsAsync": "executions",
}
OPTIONAL = frozenset({"reqCompletedOrdersAsync"})
OPTIONAL_SHARE = 0.5
"""An optional request gets this share of the attempt's bound, so the rest of the
connect (the executions round trip after it) still fits inside the bound."""


def track_sync(ib: Any, progress: Progress, timeout: float) -> None:
    """Wrap ``ib``'s sync request methods for this attempt (``timeout``: the bound, s)."""
    for method, label in SYNC_REQUESTS.items():
        original = getattr(ib, method, None)
        if callable(original):
            setattr(ib, method, _tracked(original, label, method in OPTIONAL, progress, timeout))


def _tracked(
    original: Callable[..., Awaitable[Any]],
    label: str,
    optional: bool,
    progress: Progress,
    timeout: float,
) -> Callable[..., Awaitable[Any]]:
    def request(*args: Any, **kwargs: Any) -> Awaitable[Any]:
        name = label.format(*args)
        future = asyncio.ensure_future(original(*args, **kwargs))
        progress.pending[name] = future
        future.add_done_callback(lambda _f: progress.pending.pop(name, None))
        if optional:
            return _optional(future, name, progress, timeout * OPTIONAL_SHARE)
        return future

    return request


async def _optional(
    future: asyncio.Future[Any], name: str, progress: Progress, bound: float
) -> Any:
    try:
        return await asyncio.wait_for(future, bound)
    except TimeoutError:
        progress.unanswered_optional.append(name)
        return []
