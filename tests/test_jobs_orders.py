"""The order helpers both jobs share: acknowledgement rules and the account to trade."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from ibkr_resilience._app.jobs import orders
from ibkr_resilience._app.jobs.orders import (
    classify,
    order_key,
    paper_account,
    trade_error,
    trade_outcome,
)
from ibkr_resilience.errors import LiveAccountRefused


def trade(status: str, *errors: tuple[int, str]) -> Any:
    log = [SimpleNamespace(errorCode=code, message=msg) for code, msg in errors]
    return SimpleNamespace(orderStatus=SimpleNamespace(status=status), log=log)


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        ("Submitted", "accepted"),
        ("PreSubmitted", "accepted"),
        ("Filled", "accepted"),
        ("Cancelled", "rejected"),
        ("ApiCancelled", "rejected"),
        ("Inactive", "rejected"),
        ("PendingSubmit", "pending"),
        ("", "pending"),
    ],
)
def test_trade_outcome(status: str, outcome: str) -> None:
    """Each order status maps to accepted, rejected or pending as docs/scripts.md says."""
    assert trade_outcome(trade(status)) == outcome


def test_trade_error_is_the_last_error() -> None:
    """The gateway's last error explains a rejection; no error, no text."""
    assert trade_error(trade("Cancelled", (0, "ok"), (201, "margin"), (0, "x"))) == (
        "error 201: margin"
    )
    assert trade_error(trade("Submitted")) == ""


class Asked:
    """A connected client whose ``reqAllOpenOrders`` runs ``then`` (the gateway's say)."""

    def __init__(self, then: Any = None) -> None:
        self.asked = 0
        self.then = then
        self.client = SimpleNamespace(updateReqId=lambda n: None)

    def isConnected(self) -> bool:
        return True

    def reqAllOpenOrders(self) -> list[Any]:
        self.asked += 1
        if self.then is not None:
            self.then()
        return []


def test_acknowledgement_of_a_group_of_orders() -> None:
    """A bracket stands or falls as one: any rejection wins, then any pending leg."""
    ok = trade("Submitted")
    ib = Asked()
    assert classify(ib, [ok, trade("PreSubmitted")], 5) == ("order.submitted", "")
    rejected = trade("Cancelled", (201, "Order rejected"))
    assert classify(ib, [ok, trade("PendingSubmit"), rejected], 5) == (
        "order.rejected",
        "error 201: Order rejected",
    )
    assert ib.asked == 1  # a rejection is confirmed with the gateway first
    assert classify(ib, [trade("Inactive")], 5) == (
        "order.rejected",
        "cancelled by the gateway",
    )
    assert classify(ib, [ok, trade("PendingSubmit")], 2.5) == (
        "order.unconfirmed",
        "no acknowledgement within 2.5 s: check TWS",
    )


def test_informational_notices_are_not_rejections() -> None:
    """10349 makes ib_insync mark an order Cancelled (ib_async #191): still pending; and
    a client-side Cancelled that the gateway contradicts when asked is accepted."""
    notice = trade("Cancelled", (10349, "Order TIF was set to DAY based on order preset."))
    assert trade_outcome(notice) == "pending"
    assert trade_error(notice) == ""
    assert orders.is_informational(2109) and orders.is_informational(2150)
    assert not orders.is_informational(201)
    guessed = trade("Cancelled", (201, "Order rejected"))
    ib = Asked(then=lambda: setattr(guessed.orderStatus, "status", "Submitted"))
    assert classify(ib, [guessed], 5) == ("order.submitted", "")
    read_only = trade("Cancelled", (321, "... The API interface is currently in Read-Only mode."))
    ib = Asked()
    assert classify(ib, [read_only], 5)[0] == "order.rejected"
    assert ib.asked == 0  # a read-only gateway may refuse that request too


def test_paper_account_prefers_a_paper_account() -> None:
    """The first paper account is traded; a gateway with no account at all is refused."""
    ib = SimpleNamespace(managedAccounts=lambda: ["U111", "DU222", "DU333"])
    assert paper_account(ib) == "DU222"
    with pytest.raises(LiveAccountRefused):
        paper_account(SimpleNamespace(managedAccounts=lambda: []))


def test_order_key_prefers_the_permanent_id() -> None:
    """TWS's permId is stable across clients; before it is known, (client, order id)."""
    assert order_key(SimpleNamespace(permId=99, clientId=1, orderId=5)) == 99
    assert order_key(SimpleNamespace(permId=0, clientId=1, orderId=5)) == (1, 5)
