"""The one door to the client library: ``ib_insync``, or its maintained fork ``ib_async``.

Every module of this package, and every test, takes the client library's names from
here and never imports the library itself, for three reasons:

* **The event loop.** ``ib_insync`` 0.9.86 pulls in ``eventkit`` 1.0.3, which calls
  ``asyncio.get_event_loop()`` at import time: with no current loop that is a
  ``DeprecationWarning`` on Python 3.12/3.13 (fatal under ``-W error``) and a
  ``RuntimeError`` on 3.14. :func:`ensure_event_loop` runs first, exactly once, and
  never asks the (3.14-deprecated) event loop policy itself.
* **The choice.** ``ib_insync`` when it is importable (``pip install ibkr_resilience``
  installs it), else ``ib_async``. ``IBKR_CLIENT_LIBRARY=ib_insync|ib_async`` forces one;
  a forced library that is not installed is a one-line :class:`ConfigError`.
* **The differences.** The session, the jobs and the tests must behave the same on
  both, so each difference is absorbed here, once:

  ===============================  =========================  ===========================
  behaviour                        ib_insync 0.9.86           ib_async 2.x
  ===============================  =========================  ===========================
  logger names                     ``ib_insync.*``            ``ib_async.*``
                                   (:data:`LOGGER_PREFIX`, :data:`IB_LOGGER`)
  stalled initial sync             logs "... request timed    logs them all, returns
                                   out", executions raises    (``ConnectionError`` only
                                   ``TimeoutError``           with ``raiseSyncErrors``)
                                   (``_connect.attempt`` watches :data:`IB_LOGGER` for
                                   those lines: the same ``incomplete_sync`` on both)
  unknown contract                 ``qualifyContracts`` ->    ``[None]``
                                   ``[]``  (:func:`qualified`)
  error 202 (order cancelled)      a warning: status kept     marks the order
                                   until ``orderStatus``      ``Cancelled`` at once
                                   (kept: the same end, sooner; left out of
                                   :func:`order_errors`)
  errors 105/321/329               mark the order             status ``ValidationError``
                                   ``Cancelled``
  warnings 110/399/2100-2199 ...   logged only                status ``ValidationError``
                                   (:func:`order_status`, :func:`order_errors`)
  ``OrderStatus.DoneStates``       Filled, Cancelled,         + ``Inactive``
                                   ApiCancelled               (:data:`DONE_STATES`,
                                                              :func:`is_done`)
  ``IB.disconnect()``              ``None``; state kept       a status string; all
                                                              session state cleared
  ===============================  =========================  ===========================

  The order helpers read a trade the way ib_insync would have left it, from the
  trade's own log; with ib_insync they return what the trade says.

Nothing else in the package may name either library: a string or logger name of one
library only would silently do nothing on the other.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import threading
import warnings
from collections.abc import Iterable, Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final

from .._core.config import env_value
from .._core.validators import CLIENT_LIBRARIES
from ..errors import ConfigError

LIBRARY_ENV: Final = "IBKR_CLIENT_LIBRARY"


def _current_loop() -> asyncio.AbstractEventLoop | None:
    """This thread's current event loop, or ``None``: never creates one, never asks the
    event loop policy (deprecated on 3.14).

    ``asyncio.get_event_loop()`` with no current loop creates one implicitly in the main
    thread on 3.11, does the same with a ``DeprecationWarning`` on 3.12/3.13, and raises
    ``RuntimeError`` on 3.14 (and in other threads on every version). The warning is
    turned into an error here and caught, so nothing is created behind our back.
    """
    if threading.current_thread() is not threading.main_thread():
        try:
            return asyncio.get_event_loop()
        except RuntimeError:
            return None
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        try:
            return asyncio.get_event_loop()
        except (DeprecationWarning, RuntimeError):
            return None


def ensure_event_loop() -> asyncio.AbstractEventLoop:
    """Return the current thread's event loop, creating and setting one if none exists.

    A running loop is returned as is; a loop the caller already set is kept; a closed
    current loop is replaced (as ib_async's ``util.getLoop`` does), so that this and
    the client library always agree on the loop.
    """
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        pass
    loop = _current_loop()
    if loop is None or loop.is_closed():
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
    return loop


def choose_library(env: Mapping[str, str] | None = None) -> str:
    """The client library to use: ``$IBKR_CLIENT_LIBRARY`` if set, else the first of
    :data:`CLIENT_LIBRARIES` that is installed."""
    forced: str | None = env_value(LIBRARY_ENV, env)
    if forced is not None:
        if importlib.util.find_spec(forced) is None:
            raise ConfigError(f"{LIBRARY_ENV}={forced!r}: {forced} is not installed")
        return forced
    for name in CLIENT_LIBRARIES:
        if importlib.util.find_spec(name) is not None:
            return name
    raise ModuleNotFoundError(
        "no IB client library installed: pip install ib_insync (or ib_async)",
        name=CLIENT_LIBRARIES[0],
    )


def _import(name: str) -> ModuleType:
    """Import the client library after the loop guard, hiding only its dependency's
    warning: eventkit 1.0.3 calls ``asyncio.get_event_loop_policy()`` at import, which
    Python 3.14 deprecates."""
    ensure_event_loop()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"eventkit(\..*)?\Z")
        return importlib.import_module(name)


LIBRARY: Final[str] = choose_library()
"""``"ib_insync"`` or ``"ib_async"``: the client library this process runs on."""
library: Final[ModuleType] = _import(LIBRARY)
"""The client library's module, for what is not re-exported below (tests, examples)."""

LOGGER_PREFIX: Final[str] = library.__name__
"""The client library's loggers are ``<prefix>.client``, ``<prefix>.ib``, ``<prefix>.wrapper``."""
IB_LOGGER: Final[str] = f"{LOGGER_PREFIX}.ib"
"""The logger that reports "<request> request timed out" during the initial sync."""

# The client library's classes. ``IB`` is typed as the installed library's own class
# (ib_insync's when both are installed, as at run time), so that a user's type checker
# sees what ``ibkr_session`` yields; the rest are ``Any``: the two libraries' stubs
# differ, and the package only relies on what both have.
if TYPE_CHECKING:
    try:
        from ib_insync import IB
    except ImportError:  # only ib_async installed
        from ib_async import IB  # type: ignore[assignment, no-redef, import-not-found, unused-ignore]
    Contract = Any
    Stock = Any
    Order = Any
    MarketOrder = Any
    LimitOrder = Any
    StopOrder = Any
    StopLimitOrder = Any
    Trade = Any
    Event: type[Any]  # eventkit's Event in both (a class: isinstance checks use it)
else:
    IB = library.IB
    Contract = library.Contract
    Stock = library.Stock
    Order = library.Order
    MarketOrder = library.MarketOrder
    LimitOrder = library.LimitOrder
    StopOrder = library.StopOrder
    StopLimitOrder = library.StopLimitOrder
    Trade = library.Trade
    Event = library.Event

UNSET_DOUBLE: Final[float] = float(library.util.UNSET_DOUBLE)
"""TWS's "no value" for a price (``sys.float_info.max``)."""


# -- orders: read a trade the way ib_insync 0.9.86 leaves it -------------------------------
DONE_STATES: Final = frozenset({"Filled", "Cancelled", "ApiCancelled"})
"""ib_insync's ``OrderStatus.DoneStates`` (ib_async adds ``Inactive``)."""

_VALIDATION_ERROR = "ValidationError"  # ib_async's status for some errors and warnings
_INSYNC_WARNINGS = frozenset({110, 165, 202, 399, 404, 434, 492, 10167})
"""Error codes ib_insync only logs, never applying them to an order."""


_CANCELLED = 202  # "Order Canceled - reason: ..."


def _insync_warning(code: int) -> bool:
    return code in _INSYNC_WARNINGS or 2100 <= code < 2200


def _ordinary(entry: Any) -> bool:
    """A log entry of an order status or request (not an error, not a fill)."""
    message = str(getattr(entry, "message", ""))
    return not getattr(entry, "errorCode", 0) and not message.startswith("Fill")


def _status_through(entries: list[Any], status: str) -> str:
    """The status ib_insync would show, given the trade's log and its current status.

    Only the entries the client library made for an error message can differ; a later
    ordinary entry (an ``orderStatus``) wins, as in both libraries.
    """
    index = next(
        (i for i in range(len(entries) - 1, -1, -1) if getattr(entries[i], "errorCode", 0)),
        None,
    )
    if index is None:
        return status
    entry = entries[index]
    if getattr(entry, "status", None) != status or any(_ordinary(e) for e in entries[index + 1 :]):
        return status  # set since by an ordinary message
    if entry.errorCode == _CANCELLED:
        # ib_async cancels at once, ib_insync at the orderStatus that follows (which
        # ib_async may not log, nothing having changed): the same end, only sooner.
        return status
    # Not in the log (an order restored at connect): it was live before the message.
    before = (
        _status_through(entries[:index], getattr(entries[index - 1], "status", ""))
        if index
        else "Submitted"
    )
    if _insync_warning(entry.errorCode):
        return before  # ib_insync only logs it
    if status == _VALIDATION_ERROR:
        return before if before in DONE_STATES else "Cancelled"  # ib_insync cancels
    return status


def order_status(trade: Any) -> str:
    """``trade.orderStatus.status`` as ib_insync would report it (see the table above)."""
    status: str = trade.orderStatus.status
    return _status_through(list(getattr(trade, "log", ())), status)


def is_done(trade: Any) -> bool:
    """ib_insync's ``Trade.isDone()``: filled or cancelled (``Inactive`` is not done)."""
    return order_status(trade) in DONE_STATES


def order_errors(trade: Any) -> list[tuple[int, str]]:
    """The errors ib_insync would have put in the trade's log, oldest first, as
    ``(code, message)``; ib_async's warnings (and error 202) are left out."""
    found: list[tuple[int, str]] = []
    for entry in getattr(trade, "log", ()):
        code = getattr(entry, "errorCode", 0)
        if not code or _insync_warning(code):
            continue
        message = str(entry.message)
        if message.startswith("Warning "):  # ib_async's wording of 105/321/329
            message = "Error " + message.removeprefix("Warning ")
        found.append((code, message))
    return found


def qualified(results: Iterable[Any]) -> list[Any]:
    """What ``qualifyContracts`` returned, as ib_insync returns it: the qualified
    contracts only (ib_async puts ``None``, or a list of candidates, in place of a
    contract it could not qualify)."""
    return [c for c in results if c is not None and not isinstance(c, list)]


__all__ = [
    "DONE_STATES",
    "IB",
    "IB_LOGGER",
    "LIBRARY",
    "LIBRARY_ENV",
    "LOGGER_PREFIX",
    "UNSET_DOUBLE",
    "Contract",
    "Event",
    "LimitOrder",
    "MarketOrder",
    "Order",
    "Stock",
    "StopLimitOrder",
    "StopOrder",
    "Trade",
    "choose_library",
    "ensure_event_loop",
    "is_done",
    "library",
    "order_errors",
    "order_status",
    "qualified",
]
