"""How loud each TWS message code is, for the client library's own log records.

ib_insync/ib_async log every gateway message through their ``*.wrapper`` logger, as
``Warning <code>, reqId <id>: <text>`` at INFO for the codes they think harmless
(2100-2199 and a few more) and ``Error <code>, ...`` at ERROR for the rest. That puts
the nightly "IB unreachable" (1100) and "restored" (1102) at ERROR, and a broken data-farm
link (2103, 2105, 2157) at INFO next to the routine "data farm connection is OK" notices
(2104, 2106, 2158). Alerting on ``level=error`` then fires every night and misses the
broken links. :class:`TwsLevels` re-levels those records by code (TWS API "Message
Codes" page): broken links WARNING, restorations and OK notices INFO.
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
_CODE = re.compile(r"^(?:Warning|Error) (\d+), reqId")
WRAPPER_LOGGERS = ("ib_insync.wrapper", "ib_async.wrapper")


class TwsLevels(logging.Filter):
    """A logger filter that sets the level of a gateway message record from its code."""

    def filter(self, record: logging.LogRecord) -> bool:
        match = _CODE.match(str(record.msg))
        level = LEVEL_BY_CODE.get(int(match.group(1))) if match else None
        if level is not None:
            record.levelno, record.levelname = level, logging.getLevelName(level)
        return True


def install(loggers: tuple[str, ...] = WRAPPER_LOGGERS) -> None:
    """Add one :class:`TwsLevels` to each wrapper logger (idempotent)."""
    for name in loggers:
        logger = logging.getLogger(name)
        if not any(isinstance(f, TwsLevels) for f in logger.filters):
            logger.addFilter(TwsLevels())
