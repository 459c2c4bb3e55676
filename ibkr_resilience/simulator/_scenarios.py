"""Named fault scenarios of the simulated gateway.

Each scenario imitates one way a real IB Gateway / TWS misbehaves, as seen from a
client; ``FakeGateway.set_scenario`` switches between them while it runs, and the
command line takes them as ``--scenario NAME[:SECONDS]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# name -> (takes seconds?, what the client sees)
SCENARIOS: dict[str, tuple[bool, str]] = {
    "normal": (False, "serves everything promptly"),
    "down": (False, "port closed: connection refused until the scenario changes"),
    "restart": (
        True,
        "port closed now (connections dropped), listening again after SECONDS, "
        "as during the daily gateway restart",
    ),
    "hang": (False, "accepts TCP, never answers anything (not even the handshake)"),
    "close_on_accept": (False, "accepts TCP, then closes at once"),
    "not_logged_in": (
        False,
        "answers the handshake, never sends nextValidId/managedAccounts (API never starts)",
    ),
    "client_id_in_use": (
        False,
        "answers startApi with error 326 (client id already in use), then closes",
    ),
    "stall_sync": (
        False,
        "API starts, but the initial-sync requests (positions, orders, account, "
        "executions) are never answered",
    ),
    "slow": (True, "every reply delayed by SECONDS"),
    "drop_after": (True, "serves, then cuts each connection SECONDS after it was accepted"),
    "reject_orders": (False, "answers placeOrder with error 201 (order rejected)"),
    # Incidents of real gateways (simulator/_incidents.py):
    "relay_restart": (
        True,
        "a socat relay in front of a restarting gateway: every connection accepted and "
        "closed at once, before any handshake byte, for SECONDS; then normal service",
    ),
    "client_id_in_use_for": (
        True,
        "error 326 on startApi for the first SECONDS (after a restart), then the id works",
    ),
    "no_completed_orders": (False, "the completed-orders request (msg 99) is never answered"),
    "read_only": (
        False,
        "Read-Only API: order requests (open orders, placeOrder, cancelOrder) get error 321",
    ),
    "ib_offline": (
        True,
        "socket up, IB unreachable: 1100 pushed, orders held, after SECONDS 1102 and the "
        "held orders served",
    ),
    "silent": (False, "the socket stays open, nothing is answered (frozen gateway, NAT drop)"),
    "silent_after_orders": (True, "answers SECONDS (a count N) orders, then goes silent"),
    "order_notices": (
        False,
        "each order gets informational error 10349 first, then is accepted",
    ),
}


@dataclass(frozen=True)
class Scenario:
    """One scenario with its parameter, e.g. ``Scenario("restart", 20.0)``."""

    name: str = "normal"
    seconds: float | None = None

    def __post_init__(self) -> None:
        if self.name not in SCENARIOS:
            known = ", ".join(SCENARIOS)
            raise ValueError(f"unknown scenario {self.name!r}; known: {known}")
        takes_seconds = SCENARIOS[self.name][0]
        if takes_seconds:
            if self.seconds is None:
                raise ValueError(f"scenario {self.name!r} needs seconds, e.g. {self.name}:5")
            if not math.isfinite(self.seconds) or self.seconds < 0:
                raise ValueError(
                    f"scenario {self.name!r}: seconds must be a finite number >= 0, "
                    f"got {self.seconds!r}"
                )
        elif self.seconds is not None:
            raise ValueError(f"scenario {self.name!r} takes no seconds")

    @classmethod
    def parse(cls, spec: str) -> Scenario:
        """Parse ``NAME`` or ``NAME:SECONDS`` (the command line's form)."""
        name, sep, arg = spec.strip().partition(":")
        seconds: float | None = None
        if sep:
            try:
                seconds = float(arg)
            except ValueError:
                raise ValueError(f"scenario {spec!r}: {arg!r} is not a number") from None
        return cls(name.strip(), seconds)

    def __str__(self) -> str:
        return self.name if self.seconds is None else f"{self.name}:{self.seconds:g}"
