"""How loud each TWS message code is, for the client library's own log records.

ib_insync/ib_async log every gateway message through their ``*.wrapper`` logger, as
``Warning <code>, reqId <id>: <text>`` at INFO for the codes they think harmless
(2100-2199 and a few more) and ``Error <code>, ...`` at ERROR for the rest. That puts
the nightly "IB unreachable" (1100) and "restored" (1102) at ERROR, and a broken data-farm
link (2103, 2105, 2157) at INFO next to the routine "data farm connection is OK" notices
(2104, 2106, 2158); and the order notices of newer gateways (10349 "Order TIF was set to
DAY based on order preset", ...) at ERROR, although the order goes on and is
acknowledged: every good run would mail cron an error. Alerting on ``level=error`` then
fires every night and misses the broken links. :class:`TwsLevels` re-levels those
records by code (TWS API "Message Codes" page): broken links WARNING, restorations, OK
notices and order notices INFO (the job reports each order's outcome itself).
"""

from __future__ import annotations

import logging
import re

LEVEL_BY_CODE: dict[int, int] = {
    1100: logging.WARNING,  # connectivity between IB and TWS lost
    1101: logging.WARNING,  # restored, data lost: market data must be re-requested
    1102: logging.INFO,  # restored, data maintained
    2103: logging.WARNING,  # market data farm connection is broken
    2105: logging.WARNING,  # historical data farm connection is broken
    2110: logging.WARNING,  # connectivity between TWS and server is broken
    2157: logging.WARNING,  # sec-def data farm connection is broken
    2104: logging.INFO,  # market data farm connection is OK
    2106: logging.INFO,  # historical data farm connection is OK
    2107: logging.INFO,  # historical data farm inactive but available on demand
    2108: logging.INFO,  # market data farm inactive but available on demand
    2158: logging.INFO,  # sec-def data farm connection is OK
}
INFORMATIONAL_ORDER_CODES = frozenset({399, 404, 2109, 10167, 10349})
"""Order-scoped "errors" that are notices: the order goes on and is acknowledged later.

From IB's message codes (https://interactivebrokers.github.io/tws-api/message_codes.html):
399 order warnings ("will not be placed at the exchange until ..."), 404 "shares held
while securities are located", 2109 "Outside Regular Trading Hours is ignored ...
PlaceOrder is now being processed", 10167 delayed market data, 10349 "Order TIF was set
to DAY based on order preset" (newer gateways)."""
LEVEL_BY_CODE.update(dict.fromkeys(INFORMATIONAL_ORDER_CODES, logging.INFO))
_CODE = re.compile(r"^(?:Warning|Error) (\d+), reqId")
_CLIENT_CANCEL = "Canceled order: "
WRAPPER_LOGGERS = ("ib_insync.wrapper", "ib_async.wrapper")


class TwsLevels(logging.Filter):
    """A logger filter that sets the level of a gateway message record from its code.

    ib_insync 0.9.86 follows an order message it does not know as a warning (10349) with
    its own ``Canceled order: Trade(...)`` WARNING: that record, right after such a code
    on the same logger, is re-levelled with it (the order was not cancelled: the job
    reads its real status)."""

    def __init__(self) -> None:
        super().__init__()
        self._after_notice = False

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        match = _CODE.match(text)
        code = int(match.group(1)) if match else None
        level = LEVEL_BY_CODE.get(code) if code is not None else None
        if level is None and self._after_notice and text.startswith(_CLIENT_CANCEL):
            level = logging.INFO
        self._after_notice = code in INFORMATIONAL_ORDER_CODES
        if level is not None:
            record.levelno, record.levelname = level, logging.getLevelName(level)
        return True


def install(loggers: tuple[str, ...] = WRAPPER_LOGGERS) -> None:
    """Add one :class:`TwsLevels` to each wrapper logger (idempotent)."""
    for name in loggers:
        logger = logging.getLogger(name)
        if not any(isinstance(f, TwsLevels) for f in logger.filters):
            logger.addFilter(TwsLevels())
