"""The operator's next step for each failure class, in one wording for logs and alerts.

Each hint names the setting to check, in the words of the TWS / IB Gateway dialogs
(Configure > API > Settings) and of IBC's ``config.ini``, because the person reading
the alert at 7 a.m. fixes it there.
"""

from __future__ import annotations

from .failures import FailureClass

_HINTS: dict[str, str] = {
    FailureClass.REJECTED: (
        "another process probably holds client id {client_id} (TWS error 326): a previous "
        "run that did not disconnect, or a second job with the same id (326 persisted "
        "past the grace period, IBKR_CLIENT_ID_GRACE)"
    ),
    FailureClass.NOT_LOGGED_IN: (
        "the API port is open but the API did not start: is the gateway logged in?"
    ),
    FailureClass.REFUSED: (
        "nothing listens on the port: is the gateway running, and is the port right?"
    ),
    FailureClass.CLOSED: (
        "the connection was closed before the API handshake: either the gateway behind "
        "a relay (the socat of a Docker image) is restarting, or the API is off or this "
        "host is not trusted: check 'Enable ActiveX and Socket Clients' and 'Trusted IPs' "
        "(Configure > API > Settings; IBC: TrustedTwsApiIps)"
    ),
    FailureClass.TIMEOUT: (
        "the port accepts connections but the gateway never answered the API handshake: "
        "is an 'Accept incoming connection' dialog waiting on the gateway's screen (add "
        "this host to 'Trusted IPs', or IBC: AcceptIncomingConnectionAction=accept), or "
        "is the gateway hung?"
    ),
    FailureClass.INCOMPLETE_SYNC: (
        "the gateway started the API but did not answer the initial sync (the error "
        "names the requests that got no answer)"
    ),
    FailureClass.READ_ONLY: (
        "the gateway is in Read-Only API mode (TWS error 321): untick 'Read-Only API' "
        "in Configure > API > Settings (IBC: ReadOnlyApi=no), or connect jobs that only "
        "read with ibkr_session(..., readonly=True)"
    ),
    FailureClass.IB_OFFLINE: (
        "the gateway is up but has lost its connection to IB's servers (TWS 1100; IB "
        "resets them nightly) and did not report them back (1101/1102) while the session "
        "waited (the scripts: IBKR_OUTAGE_WAIT; else the rest of IBKR_CONNECT_MAX_TIME): "
        "check IB's system status and the gateway's internet link"
    ),
}


def hint_for(failure_class: str, client_id: int) -> str | None:
    """What the operator should check for ``failure_class``; ``None`` where we do not know."""
    template = _HINTS.get(failure_class)
    return None if template is None else template.format(client_id=client_id)


def alert_hint(failure_class: str, client_id: int) -> str | None:
    """:func:`hint_for` as a sentence for an alert's notes."""
    hint = hint_for(failure_class, client_id)
    return None if hint is None else hint[0].upper() + hint[1:] + "."
