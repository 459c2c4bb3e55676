"""Port constants and every setting, parsed and validated in exactly one place.

Cron lines tune the library through environment variables, and a typo there must fail
the job at once with a message that says which variable is wrong and what it should
be, instead of surfacing later as an odd retry schedule. So all parsing and all checks
go through :func:`_convert`, and the only error type is :class:`ConfigError`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, TypeVar

from ..errors import ConfigError
from .redact import scrub
from .validators import VALIDATORS

PAPER_PORT = 7497
"""TWS, paper trading."""
LIVE_PORT = 7496
"""TWS, live trading."""
GATEWAY_PAPER_PORT = 4002
"""IB Gateway, paper trading."""
GATEWAY_LIVE_PORT = 4001
"""IB Gateway, live trading."""
DEFAULT_CLIENT_ID = 10
DEFAULT_HOST = "127.0.0.1"
DEFAULT_TELEGRAM_API_URL = "https://api.telegram.org"
DEFAULT_MAX_ORDER_QUANTITY = 10_000
"""Shares per plan row; no ordinary paper plan comes near it."""
DEFAULT_MAX_ORDER_NOTIONAL = 1_000_000.0
"""Currency units per priced plan row (quantity x limit or stop price)."""
DEFAULT_ALERT_TIMEOUT = 5.0
"""Seconds any one alert or healthcheck ping may take, DNS included."""
DEFAULT_ALERT_REPEAT_INTERVAL = 1800.0
"""Seconds between reminders while a connection failure persists (Alertmanager-style)."""
DEFAULT_ACK_TIMEOUT = 10.0
"""Seconds the trading jobs wait for the gateway to confirm each order or cancel."""
DEFAULT_OUTAGE_WAIT = 300.0
"""Seconds the trading jobs wait for IB to come back after error 1100 (socket still up)."""
DEFAULT_LOCK_WAIT = 60.0
"""Seconds a trading job waits for another run's lock on the same gateway."""
DEFAULT_ORDER_WINDOW = 8
"""Plan rows a trading job keeps sent and unacknowledged at once (1: one at a time)."""


_Kind = Literal[
    "host",
    "port",
    "client_id",
    "count",
    "window",
    "positive",
    "non_negative",
    "amount",
    "bool",
    "log_format",
    "log_level",
    "url",
    "secret_url",
    "path",
    "text",
    "secret",
    "telegram_token",
    "chat_id",
    "client_library",
]


_Settings = TypeVar("_Settings", "SessionConfig", "JobSettings")

_DEFAULT_REFUSED_INTERVAL = 0.5


@dataclass(frozen=True)
class SessionConfig:
    """Every setting of a session, frozen so a running session cannot be re-tuned midway.

    The defaults are chosen to ride out a daily IB Gateway restart (a minute or more of
    closed port and login) inside one cron run: a 120 s budget, refused connections
    retried every 0.5 s because a closed port costs the gateway nothing, and an attempt
    count high enough that the budget, not the count, is what ends the retries.
    """

    host: str = DEFAULT_HOST
    port: int = PAPER_PORT
    client_id: int = DEFAULT_CLIENT_ID
    timeout: float = 15.0
    max_attempts: int = 500
    max_time: float = 120.0
    retry_delay: float = 1.0
    max_retry_delay: float = 15.0
    refused_retry_interval: float = _DEFAULT_REFUSED_INTERVAL
    client_id_grace: float = 30.0
    """Seconds during which error 326 (client id in use) is retried, inside ``max_time``."""
    ib_offline_wait: float | None = None
    """Seconds a connect that finds IB's servers unreachable (TWS 1100) waits for
    1101/1102 on that connection; ``None``: the rest of ``max_time``. The scripts set it
    to ``IBKR_OUTAGE_WAIT``, the wait they also apply to an outage mid-run."""
    alert_timeout: float = DEFAULT_ALERT_TIMEOUT
    paper_only: bool = True
    readonly: bool = False
    """Skip the order requests of the initial sync (``IB.connect(readonly=True)``)."""
    allow_live: bool = False
    telegram_token: str | None = field(default=None, repr=False)
    telegram_chat_id: str | None = None
    telegram_api_url: str = DEFAULT_TELEGRAM_API_URL
    log_format: str | None = None
    log_file: str | None = None
    log_level: str = "INFO"
    log_stderr_level: str | None = None
    """Threshold of the stderr sink; ``None``: WARNING with a log file, else ``log_level``."""
    alert_state_file: str | None = None
    """De-duplication state; ``None``: the default path when de-dup is on (see docs/alerts.md)."""
    alert_repeat_interval: float = DEFAULT_ALERT_REPEAT_INTERVAL
    healthcheck_url: str | None = field(default=None, repr=False)
    """healthchecks.io-style ping URL; holds a secret UUID, hence not in ``repr``."""

    def __post_init__(self) -> None:
        _check_fields(self, _SESSION_SPECS)
        self._check_relations()

    def _check_relations(self) -> None:
        """The checks between fields, once each field is valid on its own."""
        if self.refused_retry_interval == _DEFAULT_REFUSED_INTERVAL > self.max_time:
            # A budget shorter than the default interval (IBKR_CONNECT_MAX_TIME=0.3) is
            # valid: retry a refused port within the budget, not after it.
            object.__setattr__(self, "refused_retry_interval", self.max_time)
        if self.refused_retry_interval > self.max_time:
            raise ConfigError(
                f"refused_retry_interval={self.refused_retry_interval!r}: expected a value "
                f"no larger than max_time ({self.max_time!r})"
            )

    @property
    def live_allowed(self) -> bool:
        """Whether the paper guard is off, by argument or by ``IBKR_ALLOW_LIVE``."""
        return self.allow_live or not self.paper_only

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> SessionConfig:
        """Build a config from the environment, then apply keyword overrides.

        An override of ``None`` means "not given" so that ``ibkr_session(port=None)``
        falls back to the environment and then to the default, as documented. An empty
        environment variable counts as unset (``IBKR_PORT= ./job`` in a crontab).
        """
        return _load(SessionConfig, _SESSION_SPECS, os.environ if env is None else env, overrides)

    def replace(self, **overrides: Any) -> SessionConfig:
        """Return a copy with the non-``None`` overrides applied and validated."""
        return _load(SessionConfig, _SESSION_SPECS, {}, overrides, base=self)


@dataclass(frozen=True)
class JobSettings:
    """The trading jobs' own settings (``submit_orders``, ``close_positions``).

    Kept out of :class:`SessionConfig`, whose fields are the library's public API and
    describe a connection, not an order run; read through the same table and checks, so
    a bad ``IBKR_ACK_TIMEOUT`` fails the same way as a bad ``IBKR_PORT``.
    """

    ack_timeout: float = DEFAULT_ACK_TIMEOUT
    """Seconds to wait for the gateway to confirm each order or cancel (> 0)."""
    journal: str | None = None
    """``$IBKR_JOURNAL`` as written; ``None``: the default path (see docs/order-plan.md)."""
    max_order_quantity: int = DEFAULT_MAX_ORDER_QUANTITY
    """Fat-finger guard: the most shares one plan row may order."""
    max_order_notional: float = DEFAULT_MAX_ORDER_NOTIONAL
    """Fat-finger guard: the most one priced row may be worth (quantity x limit/stop price)."""
    outage_wait: float = DEFAULT_OUTAGE_WAIT
    """Seconds to wait for 1101/1102 after error 1100 before giving up (>= 0)."""
    metrics_dir: str | None = None
    """``$IBKR_METRICS_DIR``: node-exporter textfile directory; ``None``: no metrics."""
    lock_wait: float = DEFAULT_LOCK_WAIT
    """Seconds to wait for another run's lock on the same gateway before exit 6 (>= 0)."""
    order_window: int = DEFAULT_ORDER_WINDOW
    """Orders sent and not yet acknowledged at once, 1 to 100: plan rows (a bracket is one)
    for ``submit_orders``, closing orders for ``close_positions``."""

    def __post_init__(self) -> None:
        _check_fields(self, _JOB_SPECS)

    def _check_relations(self) -> None:
        """No checks between the job settings' fields."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> JobSettings:
        """The environment's values, then the non-``None`` overrides (the command line)."""
        return _load(JobSettings, _JOB_SPECS, os.environ if env is None else env, overrides)


class _Spec(NamedTuple):  # not a frozen dataclass: ~2 M instructions less at import
    field: str
    env: str | None
    kind: _Kind
    optional: bool = False
    owner: Literal["session", "job", "process"] = "session"
    """Which settings class the field belongs to: ``SessionConfig`` or ``JobSettings``;
    ``process``: neither, read once per process through :func:`env_value`."""


_SPECS: tuple[_Spec, ...] = (
    _Spec("host", "IBKR_HOST", "host"),
    _Spec("port", "IBKR_PORT", "port"),
    _Spec("client_id", None, "client_id"),
    _Spec("timeout", "IBKR_CONNECT_TIMEOUT", "positive"),
    _Spec("max_attempts", "IBKR_CONNECT_MAX_RETRIES", "count"),
    _Spec("max_time", "IBKR_CONNECT_MAX_TIME", "positive"),
    _Spec("retry_delay", "IBKR_CONNECT_RETRY_DELAY", "non_negative"),
    _Spec("max_retry_delay", None, "non_negative"),
    _Spec("refused_retry_interval", None, "non_negative"),
    _Spec("client_id_grace", "IBKR_CLIENT_ID_GRACE", "non_negative"),
    _Spec("ib_offline_wait", None, "non_negative", optional=True),
    _Spec("alert_timeout", "IBKR_ALERT_TIMEOUT", "positive"),
    _Spec("paper_only", None, "bool"),
    _Spec("readonly", None, "bool"),
    _Spec("allow_live", "IBKR_ALLOW_LIVE", "bool"),
    _Spec("telegram_token", "IFDS_TELEGRAM_BOT_TOKEN", "telegram_token", optional=True),
    _Spec("telegram_chat_id", "IFDS_TELEGRAM_CHAT_ID", "chat_id", optional=True),
    _Spec("telegram_api_url", "IFDS_TELEGRAM_API_URL", "url"),
    _Spec("log_format", "IBKR_LOG_FORMAT", "log_format", optional=True),
    _Spec("log_file", "IBKR_LOG_FILE", "text", optional=True),
    _Spec("log_level", "IBKR_LOG_LEVEL", "log_level"),
    _Spec("log_stderr_level", "IBKR_LOG_STDERR_LEVEL", "log_level", optional=True),
    _Spec("alert_state_file", "IBKR_ALERT_STATE_FILE", "path", optional=True),
    _Spec("alert_repeat_interval", "IBKR_ALERT_REPEAT_INTERVAL", "positive"),
    _Spec("healthcheck_url", "IBKR_HEALTHCHECK_URL", "secret_url", optional=True),
    _Spec("ack_timeout", "IBKR_ACK_TIMEOUT", "positive", owner="job"),
    # "text", not "path": kept as written (the journal expands "~"), so that an error
    # quotes the crontab's value.
    _Spec("journal", "IBKR_JOURNAL", "text", optional=True, owner="job"),
    _Spec("max_order_quantity", "IBKR_MAX_ORDER_QUANTITY", "count", owner="job"),
    _Spec("max_order_notional", "IBKR_MAX_ORDER_NOTIONAL", "amount", owner="job"),
    _Spec("outage_wait", "IBKR_OUTAGE_WAIT", "non_negative", owner="job"),
    _Spec("metrics_dir", "IBKR_METRICS_DIR", "path", optional=True, owner="job"),
    _Spec("lock_wait", "IBKR_LOCK_WAIT", "non_negative", owner="job"),
    _Spec("order_window", "IBKR_ORDER_WINDOW", "window", owner="job"),
    # Read once, when the client library is loaded (_connect/compat.py, on first use).
    _Spec("client_library", "IBKR_CLIENT_LIBRARY", "client_library", True, "process"),
)
_SESSION_SPECS = tuple(spec for spec in _SPECS if spec.owner == "session")
_JOB_SPECS = tuple(spec for spec in _SPECS if spec.owner == "job")
_BY_FIELD = {spec.field: spec for spec in _SPECS}
_BY_ENV = {spec.env: spec for spec in _SPECS if spec.env}


def env_value(name: str, env: Mapping[str, str] | None = None) -> Any:
    """Parse one environment variable by its name; ``None`` when unset or empty.

    For callers that need a single setting (logging setup, the legacy module's
    constants) without failing on an unrelated bad variable.
    """
    spec = _BY_ENV[name]
    raw = (os.environ if env is None else env).get(name)
    if raw is None or raw.strip() == "":
        return None
    return _convert(spec, raw, name)


def _load(
    cls: type[_Settings],
    specs: tuple[_Spec, ...],
    env: Mapping[str, str],
    overrides: Mapping[str, Any],
    base: _Settings | None = None,
) -> _Settings:
    """``base`` (or the defaults), then ``env``, then the non-``None`` ``overrides``."""
    by_field = {spec.field: spec for spec in specs}
    values: dict[str, Any] = {}
    if base is not None:
        values.update({f.name: getattr(base, f.name) for f in dataclasses.fields(base)})
    for spec in specs:
        raw = env.get(spec.env) if spec.env else None
        if raw is not None and raw.strip() != "":
            values[spec.field] = _convert(spec, raw, spec.env or spec.field)
    for key, value in overrides.items():
        if key not in by_field:
            raise TypeError(f"unknown setting {key!r}")
        if value is not None:
            values[key] = _convert(by_field[key], value, key)
    return _build(cls, values)


def _build(cls: type[_Settings], values: Mapping[str, Any]) -> _Settings:
    """``cls`` from values already checked one by one: no second pass over every field.

    ``cls(**values)`` would run ``__post_init__``, which checks every field again (the
    defaults included) for callers that build a settings object directly. The defaults
    are valid by construction (tests/test_perf_paths.py), so only the checks between
    fields remain.
    """
    settings = object.__new__(cls)
    for f in dataclasses.fields(cls):
        object.__setattr__(settings, f.name, values.get(f.name, f.default))
    settings._check_relations()
    return settings


def _check_fields(settings: object, specs: tuple[_Spec, ...]) -> None:
    """Validate (and normalise) the fields of a frozen settings object in place."""
    for spec in specs:
        value = getattr(settings, spec.field)
        if value is None and spec.optional:
            continue
        converted = _convert(spec, value, spec.field)
        if converted != value:
            object.__setattr__(settings, spec.field, converted)


def _show(label: str, value: object, spec: _Spec) -> str:
    if spec.kind in ("secret", "secret_url", "telegram_token"):
        return f"{label} (value hidden)"
    # A URL may wrongly carry ``bot<token>`` (a pasted sendMessage URL): scrub it.
    return f"{label}={scrub(repr(value))}"


def _convert(spec: _Spec, value: object, label: str) -> Any:
    """Parse (when given a string) and validate one setting; the only place checks live."""
    parse, expected = VALIDATORS[spec.kind]
    try:
        return parse(value)
    except (ValueError, TypeError):
        raise ConfigError(f"{_show(label, value, spec)}: expected {expected}") from None


def check_setting(name: str, value: object, *, label: str | None = None) -> Any:
    """Validate one programmatic setting by its field name (same rules, same error).

    ``label`` names the value in the error instead of the field (``--ack-timeout``).
    """
    return _convert(_BY_FIELD[name], value, label or name)
