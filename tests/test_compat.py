"""compat: the one door to the client library, and what it hides of the differences.

The order helpers are checked on trades as each library leaves them after the same
gateway messages (their ``log`` and ``orderStatus``), so both readings are tested in
either environment; the import guards run in fresh interpreters.
"""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
import textwrap
import threading
from types import SimpleNamespace
from typing import Any

import pytest

from ibkr_resilience._connect import compat
from ibkr_resilience._core.validators import CLIENT_LIBRARIES
from ibkr_resilience.errors import ConfigError


def trade(status: str, *log: tuple[str, int] | tuple[str, int, str]) -> Any:
    """A trade with ``orderStatus.status`` and ``log`` entries (status, errorCode[, message])."""
    entries = [
        SimpleNamespace(status=e[0], errorCode=e[1], message=e[2] if len(e) > 2 else "")
        for e in log
    ]
    return SimpleNamespace(orderStatus=SimpleNamespace(status=status), log=entries)


# --------------------------------------------------------------------------- the choice
def test_the_library_in_use_is_one_of_the_two() -> None:
    """The library in use is importable and its loggers carry its name."""
    assert compat.LIBRARY in CLIENT_LIBRARIES
    assert compat.LOGGER_PREFIX == compat.LIBRARY
    assert compat.IB_LOGGER.split(".") == [compat.LIBRARY, "ib"]
    assert compat.IB is compat.library.IB


def test_ib_insync_first_then_ib_async(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unforced, ib_insync wins when installed; ib_async is the fallback."""
    installed = {"ib_insync", "ib_async"}
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: object() if name in installed else None
    )
    assert compat.choose_library({}) == "ib_insync"
    installed.discard("ib_insync")
    assert compat.choose_library({}) == "ib_async"
    assert compat.choose_library({"IBKR_CLIENT_LIBRARY": " "}) == "ib_async"  # empty: unset
    installed.clear()
    with pytest.raises(ModuleNotFoundError, match="pip install ib_insync"):
        compat.choose_library({})


@pytest.mark.parametrize("name", CLIENT_LIBRARIES)
def test_a_forced_library_must_be_installed(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """IBKR_CLIENT_LIBRARY picks the library; one that is not installed is a ConfigError."""
    monkeypatch.setattr(importlib.util, "find_spec", lambda n: object())
    assert compat.choose_library({"IBKR_CLIENT_LIBRARY": name.upper()}) == name
    monkeypatch.setattr(importlib.util, "find_spec", lambda n: None)
    with pytest.raises(ConfigError) as info:
        compat.choose_library({"IBKR_CLIENT_LIBRARY": name})
    assert str(info.value) == f"IBKR_CLIENT_LIBRARY={name!r}: {name} is not installed"


def test_an_unknown_library_name_is_a_config_error() -> None:
    """A value that names neither library fails like every other bad setting."""
    with pytest.raises(ConfigError, match=r"^IBKR_CLIENT_LIBRARY='ib_foo': expected ib_insync"):
        compat.choose_library({"IBKR_CLIENT_LIBRARY": "ib_foo"})


def run_python(code: str, *args: str, env: dict[str, str] | None = None) -> Any:
    return subprocess.run(
        [sys.executable, *args, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def test_importing_with_a_missing_forced_library_fails_in_one_line() -> None:
    """Importing the session with the other library forced, where it is not installed:
    the error's text is the one line naming the variable (a bare ``import
    ibkr_resilience`` loads no client library: its names load on first use)."""
    missing = [n for n in CLIENT_LIBRARIES if importlib.util.find_spec(n) is None]
    if not missing:
        pytest.skip("both client libraries are installed here")
    proc = run_python(
        "from ibkr_resilience import ibkr_session",
        env={"IBKR_CLIENT_LIBRARY": missing[0], "PATH": "/usr/bin"},
    )
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last == (
        f"ibkr_resilience.errors.ConfigError: IBKR_CLIENT_LIBRARY={missing[0]!r}: "
        f"{missing[0]} is not installed"
    )


# --------------------------------------------------------------------------- the event loop
def test_ensure_event_loop_keeps_a_set_loop_and_replaces_a_closed_one() -> None:
    """A loop the caller set is kept; a closed current loop is replaced and set."""
    result: list[object] = []

    def in_thread() -> None:
        mine = asyncio.new_event_loop()
        asyncio.set_event_loop(mine)
        result.append(compat.ensure_event_loop() is mine)
        mine.close()
        fresh = compat.ensure_event_loop()
        result.append(fresh is not mine and not fresh.is_closed())
        result.append(compat.ensure_event_loop() is fresh)
        fresh.close()

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join(10)
    assert result == [True, True, True]


def test_ensure_event_loop_creates_one_in_a_thread_without() -> None:
    """A thread with no loop gets one, set as its current loop."""
    result: list[object] = []

    def in_thread() -> None:
        loop = compat.ensure_event_loop()
        result.append(compat.ensure_event_loop() is loop)
        loop.close()

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join(10)
    assert result == [True]


IMPORT_UNDER_314_RULES = """
    import asyncio, sys, threading, warnings

    # Python 3.14's deprecation of the policy API, for callers outside asyncio.
    _policy = asyncio.get_event_loop_policy
    def get_event_loop_policy():
        warnings.warn("'asyncio.get_event_loop_policy' is deprecated", DeprecationWarning, 2)
        return _policy()
    asyncio.get_event_loop_policy = get_event_loop_policy

    import ibkr_resilience
    from ibkr_resilience._connect import compat
    compat.ensure_event_loop()
    done = []
    thread = threading.Thread(target=lambda: done.append(compat.ensure_event_loop()))
    thread.start(); thread.join()
    assert done and not done[0].is_closed()
    # Only the dependency's warning is hidden, and only during the import:
    try:
        asyncio.get_event_loop_policy()
    except DeprecationWarning:
        print("ok", compat.LIBRARY)
"""


def test_import_under_error_on_deprecation_with_the_policy_api_deprecated() -> None:
    """With every DeprecationWarning an error and the policy API deprecated (3.14),
    the package imports, and neither it nor the loop guard calls that API; the filter
    that hides the dependency's call is gone after the import."""
    proc = run_python(IMPORT_UNDER_314_RULES, "-W", "error::DeprecationWarning")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["ok", compat.LIBRARY]


# --------------------------------------------------------------------------- order statuses
@pytest.mark.parametrize(
    ("ib_insync_trade", "ib_async_trade", "status"),
    [
        pytest.param(
            trade("Submitted", ("PendingSubmit", 0), ("Submitted", 0)),
            trade("Submitted", ("PendingSubmit", 0), ("Submitted", 0)),
            "Submitted",
            id="plain",
        ),
        pytest.param(  # read-only API: ib_insync cancels, ib_async marks ValidationError
            trade("Cancelled", ("PendingSubmit", 0), ("Cancelled", 321, "Error 321, reqId 4: RO")),
            trade(
                "ValidationError",
                ("PendingSubmit", 0),
                ("ValidationError", 321, "Warning 321, reqId 4: RO"),
            ),
            "Cancelled",
            id="321",
        ),
        pytest.param(  # a warning: ib_insync only logs it
            trade("Submitted", ("PendingSubmit", 0), ("Submitted", 0)),
            trade(
                "ValidationError",
                ("PendingSubmit", 0),
                ("Submitted", 0),
                ("ValidationError", 399, "Warning 399, reqId 4: held"),
            ),
            "Submitted",
            id="399",
        ),
        pytest.param(  # a warning before the acknowledgement
            trade("PendingSubmit", ("PendingSubmit", 0)),
            trade("ValidationError", ("PendingSubmit", 0), ("ValidationError", 2109, "W 2109")),
            "PendingSubmit",
            id="2109-pending",
        ),
        pytest.param(  # ... and the acknowledgement after it wins
            trade("Submitted", ("PendingSubmit", 0), ("Submitted", 0)),
            trade(
                "Submitted",
                ("PendingSubmit", 0),
                ("ValidationError", 2109, "W 2109"),
                ("Submitted", 0),
            ),
            "Submitted",
            id="2109-then-ack",
        ),
        pytest.param(
            trade(
                "Cancelled",
                ("PendingSubmit", 0),
                ("Submitted", 0),
                ("PendingCancel", 0),
                ("Cancelled", 0),
            ),
            trade(
                "Cancelled",
                ("PendingSubmit", 0),
                ("Submitted", 0),
                ("PendingCancel", 0),
                ("Cancelled", 202, "Error 202"),
                ("Cancelled", 0),
            ),
            "Cancelled",
            id="202-then-cancelled",
        ),
        pytest.param(  # a rejection: both cancel
            trade("Cancelled", ("PendingSubmit", 0), ("Cancelled", 201, "Error 201: margin")),
            trade("Cancelled", ("PendingSubmit", 0), ("Cancelled", 201, "Error 201: margin")),
            "Cancelled",
            id="201",
        ),
        pytest.param(  # a fill logged after a warning keeps the warning's status
            trade("Submitted", ("PendingSubmit", 0), ("Submitted", 0), ("Submitted", 0, "Fill")),
            trade(
                "ValidationError",
                ("PendingSubmit", 0),
                ("Submitted", 0),
                ("ValidationError", 404, "W 404"),
                ("ValidationError", 0, "Fill"),
            ),
            "Submitted",
            id="404-fill",
        ),
        pytest.param(  # 321 on a filled order: ib_insync leaves it Filled
            trade("Filled", ("PendingSubmit", 0), ("Filled", 0)),
            trade(
                "ValidationError",
                ("PendingSubmit", 0),
                ("Filled", 0),
                ("ValidationError", 321, "Warning 321"),
            ),
            "Filled",
            id="321-after-fill",
        ),
        pytest.param(  # restored at connect (empty log), then a warning
            trade("Submitted"),
            trade("ValidationError", ("ValidationError", 399, "W 399")),
            "Submitted",
            id="restored",
        ),
    ],
)
def test_order_status_reads_both_libraries_alike(
    ib_insync_trade: Any, ib_async_trade: Any, status: str
) -> None:
    """After the same messages, both libraries' trades read as ib_insync's status."""
    assert compat.order_status(ib_insync_trade) == status
    assert compat.order_status(ib_async_trade) == status
    assert compat.is_done(ib_async_trade) == (status in compat.DONE_STATES)


def test_202_cancels_at_once_on_ib_async() -> None:
    """Error 202: ib_async's Cancelled is kept (ib_insync reaches it at the orderStatus
    that follows), and the notice is not an order error."""
    t = trade(
        "Cancelled",
        ("PendingSubmit", 0),
        ("Submitted", 0),
        ("PendingCancel", 0),
        ("Cancelled", 202, "Error 202, reqId 4: Order Canceled"),
    )
    assert compat.order_status(t) == "Cancelled" and compat.is_done(t)
    assert compat.order_errors(t) == []


def test_inactive_is_not_done() -> None:
    """ib_async counts Inactive as done; the package keeps ib_insync's rule."""
    assert not compat.is_done(trade("Inactive", ("PendingSubmit", 0), ("Inactive", 0)))
    assert "Inactive" not in compat.DONE_STATES


def test_order_errors_are_the_ones_ib_insync_logs() -> None:
    """Warnings and 202 are left out; ib_async's "Warning 321" reads as ib_insync's "Error"."""
    t = trade(
        "Cancelled",
        ("PendingSubmit", 0),
        ("ValidationError", 399, "Warning 399, reqId 4: held"),
        ("ValidationError", 321, "Warning 321, reqId 4: read-only"),
        ("Cancelled", 202, "Error 202, reqId 4: Order Canceled"),
        ("Cancelled", 10349, "Error 10349, reqId 4: TIF set to DAY"),
    )
    assert compat.order_errors(t) == [
        (321, "Error 321, reqId 4: read-only"),
        (10349, "Error 10349, reqId 4: TIF set to DAY"),
    ]
    assert compat.order_errors(SimpleNamespace()) == []


def test_qualified_drops_what_could_not_be_qualified() -> None:
    """ib_async's ``None`` (unknown) and candidate lists (ambiguous) are left out."""
    a, b = object(), object()
    assert compat.qualified([a, None, [b], b]) == [a, b]
    assert compat.qualified([]) == []
