"""A small asyncio bot: connect with ``async with ibkr_session()``, read, log, exit.

    IBKR_PORT=4002 python docs/examples/async_bot.py             # IB Gateway, paper
    python -m ibkr_resilience.simulator --port 4002 &            # or the simulated one

It connects (retries, bounds, paper guard and alerts as the sync form), reads the
positions ib_insync synced at connect and asks the gateway for its open orders, logs
both as JSON lines, and exits: 0 on success, 1 when it could not connect or the gateway
offered no paper account (already logged and alerted by the session). Settings come
from the environment (``IBKR_HOST``, ``IBKR_PORT``, ``IBKR_LOG_FILE``, ...; see
docs/configuration.md). Other tasks of the bot keep running while it connects: the
session never blocks the event loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from ibkr_resilience import (
    ConnectionFailed,
    LiveAccountRefused,
    configure_logging,
    ibkr_session,
)

log = structlog.get_logger("async_bot")


def position_fields(position: Any) -> dict[str, Any]:
    """One ``ib_insync.Position`` as plain JSON fields."""
    return {
        "account": position.account,
        "symbol": position.contract.symbol,
        "quantity": float(position.position),
        "avg_cost": float(position.avgCost),
    }


def order_fields(trade: Any) -> dict[str, Any]:
    """One open ``ib_insync.Trade`` as plain JSON fields."""
    return {
        "order_id": trade.order.orderId,
        "symbol": trade.contract.symbol,
        "action": trade.order.action,
        "quantity": float(trade.order.totalQuantity),
        "status": trade.orderStatus.status,
    }


async def main() -> int:
    try:
        async with ibkr_session(client_id=10) as ib:
            positions = [position_fields(p) for p in ib.positions()]
            log.info("bot.positions", count=len(positions), positions=positions)
            trades = await ib.reqOpenOrdersAsync()
            orders = [order_fields(t) for t in trades]
            log.info("bot.open_orders", count=len(orders), orders=orders)
    except (ConnectionFailed, LiveAccountRefused):
        return 1  # the session logged why and sent the alert
    return 0


if __name__ == "__main__":
    configure_logging()
    raise SystemExit(asyncio.run(main()))
