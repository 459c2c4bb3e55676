"""How a connect attempt can fail: the classes that drive the retry schedule and the hints.

The TWS error codes that decide a class are named here, each with its meaning from IB's
"TWS API error codes" page.
"""

from __future__ import annotations

from enum import StrEnum

CLIENT_ID_IN_USE = 326
"""TWS 326: "Unable to connect as the client id is already in use"."""
READ_ONLY_API = 321
"""TWS 321: "Error validating request ... The API interface is currently in Read-Only mode"
(only with that text: 321 is any request validation error)."""
CONNECTIVITY_LOST = 1100
"""TWS 1100: "Connectivity between IB and Trader Workstation has been lost"."""
CONNECTIVITY_RESTORED = frozenset({1101, 1102})
"""TWS 1101 (restored, data lost: resubscribe) and 1102 (restored, data maintained)."""


class FailureClass(StrEnum):
    """Why an attempt failed (see ``docs/logging.md`` for each class and its schedule)."""

    REFUSED = "refused"
    TIMEOUT = "timeout"
    CLOSED = "closed"
    NOT_LOGGED_IN = "not_logged_in"
    REJECTED = "rejected"
    READ_ONLY = "read_only"
    IB_OFFLINE = "ib_offline"
    INCOMPLETE_SYNC = "incomplete_sync"
    ERROR = "error"


class AttemptFailed(Exception):
    """One attempt failed; carries the class that drives the retry schedule."""

    def __init__(
        self,
        failure_class: FailureClass,
        error: BaseException,
        detail: str | None = None,
        *,
        final: bool = False,
    ) -> None:
        super().__init__(f"{failure_class}: {type(error).__name__}: {error}")
        self.failure_class = failure_class
        self.error = error
        self.detail = detail
        self.final = final
        """The attempt already spent its share of the budget on the one thing a retry
        could wait for (an IB outage at connect): give up now, do not reconnect."""


def is_read_only_error(code: object, message: object) -> bool:
    """Whether a gateway error is the Read-Only API refusal (321 with IB's wording)."""
    return code == READ_ONLY_API and "read-only" in str(message).lower()
