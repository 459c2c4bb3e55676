"""What the session tells its side channels: small frozen records, one per kind of event.

The session does not word alerts, decide about de-duplication or ping anything: it hands
one of these records to :class:`.notifier.Notifier`, which does all three. The records
carry facts only (where, which client id, how long), so a new channel reads the same
facts the Telegram text is built from.

They are named tuples, not frozen dataclasses: every session imports this module, and
creating a frozen dataclass costs about 3.3 M instructions against 1.2 M for a named
tuple (docs/performance.md, section 5). Nothing compares or hashes them; the notifier
routes on ``type(event)``.
"""

from __future__ import annotations

from typing import NamedTuple

from ..errors import ConnectionFailed


class Gateway(NamedTuple):
    """Which session: ``host``, ``port`` and the API ``client_id``."""

    host: str
    port: int
    client_id: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class SessionStarted(NamedTuple):
    """A session began (before its first connect attempt)."""

    gateway: Gateway


class Connected(NamedTuple):
    """A connect succeeded: an alerted outage of this gateway and client id has ended."""

    gateway: Gateway


class ConnectGaveUp(NamedTuple):
    """Every connect attempt failed; ``max_attempts`` is the configured attempt count."""

    gateway: Gateway
    error: ConnectionFailed
    max_attempts: int


class LiveAccountFound(NamedTuple):
    """The gateway offers no paper account and live trading is not allowed."""

    gateway: Gateway
    accounts: tuple[str, ...]


class ConnectionLost(NamedTuple):
    """The gateway dropped the connection inside the block (not reconnected)."""

    gateway: Gateway
    connected_s: float | None


class BlockFailed(NamedTuple):
    """An exception escaped the session (``phase``: ``connect`` or ``block``)."""

    gateway: Gateway
    phase: str
    error_type: str
    error: str
    connected_s: float | None


class SessionEnded(NamedTuple):
    """The session is over; ``outcome`` as in ``ibkr.session.end`` (``ok``, ``lost``...)."""

    gateway: Gateway
    outcome: str
    duration_s: float
    signalled: bool
    """Ended by SIGTERM: never a success, whatever the block did."""


SessionEvent = (
    SessionStarted
    | Connected
    | ConnectGaveUp
    | LiveAccountFound
    | ConnectionLost
    | BlockFailed
    | SessionEnded
)
