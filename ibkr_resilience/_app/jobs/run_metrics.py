"""The run's Prometheus textfile (``IBKR_METRICS_DIR``), written once as the run ends.

Set ``IBKR_METRICS_DIR`` to node-exporter's textfile directory and every run of
``submit_orders`` / ``close_positions`` that got past its arguments rewrites
``ibkr_resilience_<job>.prom`` there: exit code, duration, connect attempts, failure
class, orders by outcome, and the time of the last success (docs/operations.md). Like
every side channel it never changes the run's exit code.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..._core.config import env_value
from ...errors import ConfigError

if TYPE_CHECKING:
    from .kit import RunState

FAILURE_BY_EXIT_CODE = {
    1: "lost_gateway",  # a connect failure carries its own class (refused, timeout, ...)
    2: "bad_input",
    3: "orders_failed",
    4: "live_account",
    129: "hung_up",
    130: "interrupted",
    143: "terminated",
}
"""The ``failure_class`` label of a failed run that did not fail to connect."""


def write_run_metrics(state: RunState, code: int, env: Mapping[str, str]) -> None:
    """Write the run's textfile when ``IBKR_METRICS_DIR`` is set; never raises."""
    try:
        directory = env_value("IBKR_METRICS_DIR", env)
    except ConfigError:
        return
    if not directory:
        return
    from ..._notify.metrics import RunMetrics, write_textfile  # only with IBKR_METRICS_DIR

    orders: dict[str, int] = {}
    for outcome in state.outcomes:
        key = outcome.event.removeprefix("order.")
        orders[key] = orders.get(key, 0) + 1
    failure = None
    if code != 0:
        failure = state.failure_class or FAILURE_BY_EXIT_CODE.get(code, "error")
    write_textfile(
        directory,
        RunMetrics(
            job=state.script.removesuffix(".py"),
            finished_at=time.time(),
            exit_code=code,
            duration_s=round(time.monotonic() - state.started, 3),
            connect_attempts=getattr(state.session, "connect_attempts", 0),
            failure_class=failure,
            orders=orders,
        ),
    )
