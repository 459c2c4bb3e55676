"""Import ``ib_insync`` safely on every supported Python.

``ib_insync`` 0.9.86 pulls in ``eventkit``, which calls ``asyncio.get_event_loop()``
at import time. With no current loop that prints a ``DeprecationWarning`` on
Python 3.12/3.13 (fatal under ``-W error``) and raises ``RuntimeError`` on 3.14.
Every module of this package imports ``ib_insync`` through here so that the guard
runs first, exactly once.
"""

from __future__ import annotations

import asyncio
import warnings


def ensure_event_loop() -> asyncio.AbstractEventLoop:
    """Return the current thread's event loop, creating and setting one if none exists.

    A running loop is left alone; otherwise the policy's loop is reused when one is
    set, so that a caller who already set a loop keeps it.
    """
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        pass
    with warnings.catch_warnings():
        # 3.12/3.13 warn when the policy creates the loop implicitly; 3.14 deprecates
        # the policy API itself. Both are about the implicit creation we do on purpose.
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            loop = asyncio.get_event_loop_policy().get_event_loop()
        except RuntimeError:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
    return loop


ensure_event_loop()

import ib_insync  # noqa: E402  (must come after the loop guard)
from ib_insync import IB  # noqa: E402

__all__ = ["IB", "ensure_event_loop", "ib_insync"]
