"""Named fault scenarios of the simulated gateway.

Each scenario imitates one way a real IB Gateway / TWS misbehaves, as seen from a
client; ``FakeGateway.set_scenario`` switches between them while it runs, and the
command line takes them as ``--scenario NAME[:SECONDS]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# name -> what the client sees; a scenario takes seconds exactly when its text says SECONDS.
_TEXTS: dict[str, str] = {
    "normal": "serves everything promptly",
    "down": "port closed: connection refused until the scenario changes",
    "restart": "port closed now, connections dropped, listening again after SECONDS",
    "hang": "accepts TCP, never answers anything (not even the handshake)",
    "close_on_accept": "accepts TCP, then closes at once",
    "not_logged_in": "answers the handshake, never nextValidId/managedAccounts (no API)",
    "client_id_in_use": "answers startApi with error 326 (client id already in use), then closes",
    "stall_sync": "API starts, the initial-sync requests (positions, orders, ...) never answered",
    "slow": "every reply delayed by SECONDS",
    "drop_after": "serves, then cuts each connection SECONDS after it was accepted",
    "reject_orders": "answers placeOrder with error 201 (order rejected)",
    # Incidents of real gateways (simulator/_incidents.py):
    "relay_restart": "a relay before a restarting gateway: accepts and closes for SECONDS",
    "client_id_in_use_for": "error 326 on startApi for the first SECONDS (after a restart)",
    "no_completed_orders": "the completed-orders request (msg 99) is never answered",
    "read_only": "Read-Only API: open orders, placeOrder, cancelOrder get error 321",
    "ib_offline": "IB unreachable: 1100 pushed, orders held; after SECONDS 1102, orders served",
    "silent": "the socket stays open, nothing is answered (frozen gateway, NAT drop)",
    "silent_after_orders": "answers SECONDS (a count N) orders, then goes silent",
    "order_notices": "each order gets informational error 10349 first, then is accepted",
}

SCENARIOS: dict[str, tuple[bool, str]] = {
    name: ("SECONDS" in text, text) for name, text in _TEXTS.items()
}
"""name -> (takes seconds?, what the client sees)."""


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
