"""Encoders for the gateway's replies at server version 157.

Each function returns the field list of one message; ``_protocol.frame`` puts it on
the wire. Field counts matter: ib_insync unpacks by position, so a missing or extra
field shifts everything after it. The layouts follow ib_insync 0.9.86's decoder.
"""

from __future__ import annotations

from datetime import UTC, datetime

from . import _protocol as p
from ._protocol import Field
from ._state import SimContract, SimExecution, SimOrder, SimPosition

UNSET = None  # an unset numeric field goes on the wire as an empty string


def ib_time(when: datetime) -> str:
    """TWS's ``YYYYMMDD HH:MM:SS <zone>`` format, always in UTC here."""
    return when.astimezone(UTC).strftime("%Y%m%d %H:%M:%S") + " UTC"


def _contract(con_id: int, symbol: str, sec_type: str, exchange: str, currency: str) -> list[Field]:
    """The contract block of position, portfolio, openOrder and execDetails: conId,
    symbol, secType, lastTradeDate, strike, right, multiplier, exchange (the primary
    exchange in portfolio values), currency, localSymbol, tradingClass."""
    return [con_id, symbol, sec_type, "", 0.0, "", "", exchange, currency, symbol, symbol]


def handshake_reply(server_version: int, now: datetime) -> list[Field]:
    return [server_version, ib_time(now)]


def next_valid_id(order_id: int) -> list[Field]:
    return [p.OUT_NEXT_VALID_ID, 1, order_id]


def managed_accounts(accounts: list[str]) -> list[Field]:
    return [p.OUT_MANAGED_ACCOUNTS, 1, ",".join(accounts)]


def error(req_id: int, code: int, text: str) -> list[Field]:
    # Server version 157 < 166: no advancedOrderRejectJson field.
    return [p.OUT_ERROR, 2, req_id, code, text]


def current_time(now: datetime) -> list[Field]:
    return [p.OUT_CURRENT_TIME, 1, int(now.timestamp())]


def position(pos: SimPosition) -> list[Field]:
    return [
        p.OUT_POSITION,
        3,
        pos.account,
        *_contract(pos.con_id, pos.symbol, pos.sec_type, pos.exchange, pos.currency),
        pos.quantity,
        pos.avg_cost,
    ]


def position_end() -> list[Field]:
    return [p.OUT_POSITION_END, 1]


def account_values(account: str, cash: float) -> list[list[Field]]:
    values = [
        ("AccountCode", account, ""),
        ("AccountType", "INDIVIDUAL", ""),
        ("NetLiquidation", f"{cash:.2f}", "USD"),
        ("TotalCashValue", f"{cash:.2f}", "USD"),
        ("BuyingPower", f"{cash * 4:.2f}", "USD"),
    ]
    return [[p.OUT_ACCOUNT_VALUE, 2, k, v, cur, account] for k, v, cur in values]


def portfolio_value(pos: SimPosition, price: float) -> list[Field]:
    return [
        p.OUT_PORTFOLIO_VALUE,
        8,
        *_contract(pos.con_id, pos.symbol, pos.sec_type, "", pos.currency),
        pos.quantity,
        price,
        pos.quantity * price,
        pos.avg_cost,
        (price - pos.avg_cost) * pos.quantity,
        0.0,
        pos.account,
    ]


def account_update_time(now: datetime) -> list[Field]:
    return [p.OUT_ACCOUNT_UPDATE_TIME, 1, now.astimezone(UTC).strftime("%H:%M")]


def account_download_end(account: str) -> list[Field]:
    return [p.OUT_ACCOUNT_DOWNLOAD_END, 1, account]


def account_update_multi(req_id: int, account: str, key: str, value: str) -> list[Field]:
    return [p.OUT_ACCOUNT_UPDATE_MULTI, 1, req_id, account, "", key, value, "USD"]


def account_update_multi_end(req_id: int) -> list[Field]:
    return [p.OUT_ACCOUNT_UPDATE_MULTI_END, 1, req_id]


def open_order_end() -> list[Field]:
    return [p.OUT_OPEN_ORDER_END, 1]


def completed_orders_end() -> list[Field]:
    return [p.OUT_COMPLETED_ORDERS_END]


def execution_end(req_id: int) -> list[Field]:
    return [p.OUT_EXECUTION_DATA_END, 1, req_id]


def contract_details_end(req_id: int) -> list[Field]:
    return [p.OUT_CONTRACT_DATA_END, 1, req_id]


def contract_details(req_id: int, c: SimContract) -> list[Field]:
    # Server version < 164: a message version field after the id, and the obsolete
    # mdSizeMultiplier after minTick.
    return [
        p.OUT_CONTRACT_DATA,
        8,
        req_id,
        c.symbol,
        c.sec_type,
        "",
        0.0,
        "",
        "SMART",
        c.currency,
        c.symbol,
        "NMS",
        c.symbol,
        c.con_id,
        0.01,
        1,
        "",
        "ACTIVETIM,AD,ADJUST,ALERT,ALGO,ALLOC,AVGCOST,BASKET,DAY,GTC,LMT,LOC,MKT,MOC,"
        "OPG,STP,STPLMT,TRAIL",
        "SMART,AMEX,NYSE,ARCA,NASDAQ,ISLAND",
        1,
        0,
        c.long_name,
        c.primary_exchange,
        "",
        "Technology",
        "Computers",
        "Computers",
        "US/Eastern",
        "",
        "",
        "",
        "",
        0,  # no secIds
        1,
        "",
        "",
        "26",
        "",
        "COMMON",
    ]


def order_status(o: SimOrder) -> list[Field]:
    return [
        p.OUT_ORDER_STATUS,
        o.order_id,
        o.status,
        o.filled,
        o.remaining,
        o.avg_fill_price,
        o.perm_id,
        o.parent_id,
        o.avg_fill_price,
        o.client_id,
        "",
        0.0,
    ]


def open_order(o: SimOrder) -> list[Field]:
    """openOrder for a plain (non-combo, non-algo, unconditioned) order."""
    return [
        p.OUT_OPEN_ORDER,
        o.order_id,
        *_contract(o.con_id, o.symbol, o.sec_type, o.exchange, o.currency),
        # order basics
        o.action,
        o.quantity,
        o.order_type,
        o.lmt_price,
        o.aux_price,
        o.tif,
        "",
        o.account,
        "",
        0,
        o.order_ref,
        o.client_id,
        o.perm_id,
        False,
        False,
        0.0,
        "",
        "",  # sharesAllocation (deprecated)
        "",
        "",
        "",
        "",
        "",  # FA group/method/percentage/profile, modelCode
        "",
        "",
        UNSET,
        "",
        0,
        "",
        -1,  # goodTillDate, rule80A, percentOffset, ...
        0,
        UNSET,
        UNSET,
        UNSET,
        UNSET,
        UNSET,  # auction strategy .. stockRangeUpper
        UNSET,
        0,
        False,
        False,
        UNSET,
        3,
        False,
        False,
        UNSET,
        o.parent_id,
        0,  # parentId, triggerMethod
        UNSET,
        UNSET,
        "",
        UNSET,  # volatility, volatilityType, deltaNeutral type/aux
        False,
        UNSET,
        UNSET,
        UNSET,
        UNSET,
        UNSET,
        "",  # continuousUpdate .. comboLegsDescrip
        0,
        0,
        0,  # combo legs, order combo legs, smart combo routing params
        UNSET,
        UNSET,
        UNSET,  # scale init/subs level size, price increment
        "",  # hedgeType
        False,
        "",
        "",
        False,  # optOutSmartRouting, clearing account/intent, notHeld
        False,  # no delta-neutral contract
        "",  # algoStrategy
        False,
        False,  # solicited, whatIf
        o.status,
        "",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
        "",  # margin before/change/after
        UNSET,
        UNSET,
        UNSET,
        "",
        "",  # commission, min, max, currency, warning
        False,
        False,  # randomizeSize, randomizePrice
        0,  # conditions
        "",
        UNSET,
        UNSET,
        UNSET,
        UNSET,
        UNSET,
        UNSET,
        0,  # adjusted order fields
        "",
        "",
        "",  # soft dollar tier name, value, display name
        UNSET,
        False,
        False,
        False,
        "",  # cashQty .. usePriceMgmtAlgo
    ]


def execution(req_id: int, e: SimExecution) -> list[Field]:
    # Server version >= 136: no message version field.
    return [
        p.OUT_EXECUTION_DATA,
        req_id,
        e.order_id,
        *_contract(e.con_id, e.symbol, e.sec_type, e.exchange, e.currency),
        e.exec_id,
        ib_time(e.time),
        e.account,
        e.exchange,
        e.side,
        e.shares,
        e.price,
        e.perm_id,
        e.client_id,
        0,
        e.shares,
        e.price,
        e.order_ref,
        "",
        "",
        "",
        1,
    ]


def commission_report(e: SimExecution) -> list[Field]:
    commission = max(1.0, 0.005 * e.shares)
    return [p.OUT_COMMISSION_REPORT, 1, e.exec_id, commission, e.currency, UNSET, UNSET, UNSET]
