"""Settings: one parser, one error type, messages that name the variable and value."""

from __future__ import annotations

import dataclasses

import pytest

import ibkr_resilience as ir
from ibkr_resilience import ConfigError, SessionConfig
from ibkr_resilience._core.config import JobSettings, check_setting, env_value

TOKEN = "123456789:AAFakeTokenValue_abcdefghijklmnop"


def test_port_constants() -> None:
    assert (ir.PAPER_PORT, ir.LIVE_PORT) == (7497, 7496)
    assert (ir.GATEWAY_PAPER_PORT, ir.GATEWAY_LIVE_PORT) == (4002, 4001)
    assert ir.DEFAULT_CLIENT_ID == 10


def test_defaults_ride_out_a_sixty_second_restart() -> None:
    cfg = SessionConfig.from_env({})
    assert cfg.host == "127.0.0.1" and cfg.port == ir.PAPER_PORT
    assert cfg.max_time >= 120
    # Refused retries every <1 s for the whole budget must fit in the attempt count.
    assert cfg.refused_retry_interval < 1
    assert cfg.max_attempts * cfg.refused_retry_interval >= cfg.max_time
    assert cfg.alert_timeout == 5
    assert cfg.paper_only and not cfg.allow_live and not cfg.live_allowed


def test_every_variable_is_read() -> None:
    env = {
        "IBKR_HOST": "gw.local",
        "IBKR_PORT": "4002",
        "IBKR_CONNECT_TIMEOUT": "2.5",
        "IBKR_CONNECT_MAX_RETRIES": "7",
        "IBKR_CONNECT_RETRY_DELAY": "0.5",
        "IBKR_CONNECT_MAX_TIME": "30",
        "IBKR_ALERT_TIMEOUT": "3",
        "IFDS_TELEGRAM_BOT_TOKEN": TOKEN,
        "IFDS_TELEGRAM_CHAT_ID": "-100123",
        "IFDS_TELEGRAM_API_URL": "http://127.0.0.1:8081/",
        "IBKR_LOG_FORMAT": "Console",
        "IBKR_LOG_FILE": "/tmp/x.jsonl",
        "IBKR_LOG_LEVEL": "debug",
        "IBKR_ALLOW_LIVE": "yes",
    }
    cfg = SessionConfig.from_env(env)
    assert (cfg.host, cfg.port, cfg.timeout, cfg.max_attempts) == ("gw.local", 4002, 2.5, 7)
    assert (cfg.retry_delay, cfg.max_time, cfg.alert_timeout) == (0.5, 30.0, 3.0)
    assert cfg.telegram_token == TOKEN and cfg.telegram_chat_id == "-100123"
    assert cfg.telegram_api_url == "http://127.0.0.1:8081"
    assert (cfg.log_format, cfg.log_file, cfg.log_level) == ("console", "/tmp/x.jsonl", "DEBUG")
    assert cfg.allow_live and cfg.live_allowed


def test_empty_variable_counts_as_unset() -> None:
    assert SessionConfig.from_env({"IBKR_PORT": "", "IBKR_HOST": "  "}).port == 7497


def test_overrides_win_and_none_means_not_given() -> None:
    cfg = SessionConfig.from_env({"IBKR_PORT": "4002"}, port=None, client_id=11, timeout=3)
    assert (cfg.port, cfg.client_id, cfg.timeout) == (4002, 11, 3)
    assert SessionConfig.from_env({"IBKR_PORT": "4002"}, port=4001).port == 4001


@pytest.mark.parametrize(
    ("var", "value", "expected"),
    [
        ("IBKR_PORT", "abc", "integer port"),
        ("IBKR_PORT", "0", "integer port"),
        ("IBKR_PORT", "70000", "integer port"),
        ("IBKR_PORT", "-1", "integer port"),
        ("IBKR_CONNECT_TIMEOUT", "abc", "> 0"),
        ("IBKR_CONNECT_TIMEOUT", "-2", "> 0"),
        ("IBKR_CONNECT_TIMEOUT", "0", "> 0"),
        ("IBKR_CONNECT_TIMEOUT", "nan", "finite"),
        ("IBKR_CONNECT_TIMEOUT", "inf", "finite"),
        ("IBKR_CONNECT_MAX_RETRIES", "0", "integer >= 1"),
        ("IBKR_CONNECT_MAX_RETRIES", "2.5", "integer >= 1"),
        ("IBKR_CONNECT_MAX_RETRIES", "-3", "integer >= 1"),
        ("IBKR_CONNECT_RETRY_DELAY", "-1", ">= 0"),
        ("IBKR_CONNECT_RETRY_DELAY", "NaN", ">= 0"),
        ("IBKR_CONNECT_MAX_TIME", "inf", "> 0"),
        ("IBKR_CONNECT_MAX_TIME", "-inf", "> 0"),
        ("IBKR_ALERT_TIMEOUT", "soon", "> 0"),
        ("IBKR_LOG_FORMAT", "xml", "json or console"),
        ("IBKR_LOG_LEVEL", "LOUD", "DEBUG"),
        ("IBKR_ALLOW_LIVE", "maybe", "true/false"),
        ("IFDS_TELEGRAM_API_URL", "ftp://x", "http"),
        ("IBKR_HOST", "two words", "host name"),
    ],
)
def test_bad_values_raise_one_line_config_error(var: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        SessionConfig.from_env({var: value, "IFDS_TELEGRAM_BOT_TOKEN": TOKEN})
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{var}={value!r}: expected")
    assert expected in message
    assert TOKEN not in message
    assert isinstance(info.value, ValueError)


def test_bad_override_names_the_parameter() -> None:
    with pytest.raises(ConfigError, match=r"^timeout=-1: expected a finite number"):
        SessionConfig.from_env({}, timeout=-1)
    with pytest.raises(ConfigError, match=r"^max_attempts=0"):
        SessionConfig.from_env({}, max_attempts=0)
    with pytest.raises(ConfigError, match=r"^max_time=nan"):
        SessionConfig(max_time=float("nan"))
    with pytest.raises(ConfigError, match=r"^port=True"):
        SessionConfig(port=True)


def test_unknown_override_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="unknown setting 'prot'"):
        SessionConfig.from_env({}, prot=1)


def test_token_is_hidden_from_repr_and_errors() -> None:
    cfg = SessionConfig(telegram_token=TOKEN, telegram_chat_id="1")
    assert TOKEN not in repr(cfg) and "telegram_token" not in repr(cfg)
    assert "telegram_chat_id='1'" in repr(cfg)
    with pytest.raises(ConfigError) as info:
        SessionConfig.from_env({}, telegram_token=123)
    assert "value hidden" in str(info.value) and "123" not in str(info.value)


def test_frozen_and_replace_validates() -> None:
    cfg = SessionConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.port = 1  # type: ignore[misc]
    assert cfg.replace(port=4002, host=None).port == 4002
    with pytest.raises(ConfigError, match=r"^port=99999"):
        cfg.replace(port=99999)


def test_refused_interval_cannot_exceed_budget() -> None:
    with pytest.raises(ConfigError, match="refused_retry_interval"):
        SessionConfig(max_time=1, refused_retry_interval=2)


def test_env_value_reads_one_variable() -> None:
    assert env_value("IBKR_CONNECT_TIMEOUT", {"IBKR_CONNECT_TIMEOUT": "4"}) == 4.0
    assert env_value("IBKR_CONNECT_TIMEOUT", {}) is None
    with pytest.raises(ConfigError, match=r"^IBKR_CONNECT_TIMEOUT='x'"):
        env_value("IBKR_CONNECT_TIMEOUT", {"IBKR_CONNECT_TIMEOUT": "x"})


def test_job_settings_come_from_the_same_table() -> None:
    """The jobs' ack timeout and journal path: environment, then overrides, then defaults."""
    assert JobSettings.from_env({}) == JobSettings(ack_timeout=10.0, journal=None)
    env = {"IBKR_ACK_TIMEOUT": " 7 ", "IBKR_JOURNAL": " ~/j.jsonl "}
    assert JobSettings.from_env(env) == JobSettings(ack_timeout=7.0, journal="~/j.jsonl")
    assert JobSettings.from_env(env, ack_timeout=2.5).ack_timeout == 2.5
    assert JobSettings.from_env({"IBKR_JOURNAL": " "}).journal is None
    assert env_value("IBKR_ACK_TIMEOUT", {"IBKR_ACK_TIMEOUT": "3"}) == 3.0
    with pytest.raises(ConfigError, match=r"^IBKR_ACK_TIMEOUT='0': expected a finite number"):
        JobSettings.from_env({"IBKR_ACK_TIMEOUT": "0"})
    with pytest.raises(ConfigError, match=r"^ack_timeout=-1: expected"):
        JobSettings(ack_timeout=-1)
    with pytest.raises(TypeError, match="unknown setting 'port'"):
        JobSettings.from_env({}, port=1)


def test_job_settings_stay_out_of_the_session_config() -> None:
    """A session never carries order settings: its fields are the library's public API."""
    config = SessionConfig.from_env({"IBKR_ACK_TIMEOUT": "7", "IBKR_JOURNAL": "/j"})
    assert not {"ack_timeout", "journal"} & {f.name for f in dataclasses.fields(config)}


def test_check_setting_can_name_the_option() -> None:
    """An option's value is checked by the variable's rule but named as the option."""
    assert check_setting("ack_timeout", "2", label="--ack-timeout") == 2.0
    with pytest.raises(ConfigError, match=r"^--ack-timeout='-1': expected"):
        check_setting("ack_timeout", "-1", label="--ack-timeout")


@pytest.mark.parametrize("token", ["abc", "123456", "123:abc def", ":abc", "123:abc/x"])
def test_bot_token_must_look_like_one(token: str) -> None:
    """A malformed token would only show when the alert is needed: refuse it up front."""
    with pytest.raises(ConfigError) as info:
        SessionConfig.from_env({"IFDS_TELEGRAM_BOT_TOKEN": token})
    assert str(info.value).startswith("IFDS_TELEGRAM_BOT_TOKEN (value hidden): expected")
    assert token not in str(info.value)


@pytest.mark.parametrize("chat_id", ["my chat", "12a", "@", "@ chan", "--5"])
def test_chat_id_must_be_numeric_or_a_channel(chat_id: str) -> None:
    with pytest.raises(ConfigError, match=r"^IFDS_TELEGRAM_CHAT_ID="):
        SessionConfig.from_env({"IFDS_TELEGRAM_CHAT_ID": chat_id})


def test_valid_telegram_settings_are_accepted() -> None:
    for chat_id in ("42", "-1001234567890", "@my_channel"):
        cfg = SessionConfig.from_env(
            {"IFDS_TELEGRAM_BOT_TOKEN": " 123456:AA-b_c ", "IFDS_TELEGRAM_CHAT_ID": chat_id}
        )
        assert (cfg.telegram_token, cfg.telegram_chat_id) == ("123456:AA-b_c", chat_id)


@pytest.mark.parametrize("value", ["0.3", "0.01", "1e-3"])
def test_max_time_accepts_any_positive_budget(value: str) -> None:
    """docs/configuration.md: IBKR_CONNECT_MAX_TIME is any number > 0; a budget below the
    default refused interval shortens that interval instead of failing the job."""
    cfg = SessionConfig.from_env({"IBKR_CONNECT_MAX_TIME": value})
    assert cfg.max_time == float(value)
    assert cfg.refused_retry_interval == float(value)
