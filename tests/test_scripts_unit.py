"""The scripts' pure parts: the closing order's date, symbol and option parsing."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from freezegun import freeze_time

from ibkr_resilience._app.jobs.close import close_ref, parse_symbols, trading_date
from ibkr_resilience._app.jobs.close import main as close_main
from ibkr_resilience._app.jobs.kit import UsageError, ack_timeout
from ibkr_resilience._app.jobs.submit import main as submit_main
from ibkr_resilience.errors import ConfigError


@pytest.mark.parametrize(
    ("utc", "exchange_day"),
    [
        ("2024-05-06 13:30:00", date(2024, 5, 6)),  # New York morning
        ("2024-05-07 01:30:00", date(2024, 5, 6)),  # 21:30 in New York (EDT): still the 6th
        ("2024-01-16 04:59:00", date(2024, 1, 15)),  # 23:59 in New York (EST)
        ("2024-01-16 05:00:00", date(2024, 1, 16)),  # midnight in New York
    ],
)
def test_closing_date_is_the_exchange_date(utc: str, exchange_day: date) -> None:
    with freeze_time(utc):
        assert trading_date() == exchange_day
        assert close_ref("AAPL", trading_date()) == f"close:{exchange_day.isoformat()}:AAPL"


def test_trading_date_of_an_explicit_moment() -> None:
    assert trading_date(datetime(2024, 5, 7, 3, 59, tzinfo=UTC)) == date(2024, 5, 6)
    assert trading_date(datetime(2024, 5, 7, 4, 0, tzinfo=UTC)) == date(2024, 5, 7)


def test_parse_symbols() -> None:
    assert parse_symbols(None) == []
    assert parse_symbols(["aapl,MSFT", "spy", "AAPL"]) == ["AAPL", "MSFT", "SPY"]
    assert parse_symbols(["BRK B"]) == ["BRK B"]
    with pytest.raises(UsageError, match="'no way!'"):
        parse_symbols(["AAPL,no way!"])
    with pytest.raises(UsageError, match="no symbol"):
        parse_symbols([","])


def test_ack_timeout_option_then_environment_then_default() -> None:
    assert ack_timeout(2.5, {"IBKR_ACK_TIMEOUT": "7"}) == 2.5
    assert ack_timeout(None, {"IBKR_ACK_TIMEOUT": "7"}) == 7.0
    assert ack_timeout(None, {"IBKR_ACK_TIMEOUT": " "}) == 10.0
    for bad in ("0", "-1", "nan", "inf", "soon"):
        with pytest.raises(ConfigError, match="IBKR_ACK_TIMEOUT"):
            ack_timeout(None, {"IBKR_ACK_TIMEOUT": bad})


@pytest.mark.parametrize(
    ("job", "argv", "needle"),
    [
        (
            "submit",
            ["--plan", "p.csv", "--port", "70000"],
            "--port='70000': expected an integer port",
        ),
        ("submit", ["--plan", "p.csv", "--client-id", "99999999999"], "between 0 and 2147483647"),
        ("submit", ["--plan", "p.csv", "--ack-timeout", "-3"], "--ack-timeout='-3'"),
        ("submit", [], "required: --plan"),
        ("close", ["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_a_usage_mistake_is_one_line_and_exit_2(
    job: str, argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    main = submit_main if job == "submit" else close_main
    assert main(argv, env={}) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and needle in err[0] and err[0].endswith("(see --help)"), err
