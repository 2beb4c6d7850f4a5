"""The minimal broker client against the fake broker: activity paging, calendar, daily bars, errors."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from coldharbour.broker.reads import BrokerReads, data_url, parse_daily_equity, parse_last_equity
from coldharbour.config import AccountSettings, Secret
from coldharbour.errors import BrokerError


def _account(base_url: str, secret: str = "demo-secret") -> AccountSettings:
    return AccountSettings(
        name="demo", slug="demo", api_key=Secret("demo-key"), secret_key=Secret(secret), base_url=base_url
    )


@pytest.mark.asyncio
async def test_activities_follow_page_tokens_past_one_page(fake_broker) -> None:
    fake_broker.post_activities(
        [{"activity_type": "DIV", "net_amount": f"{i}.01", "symbol": "MSFT"} for i in range(130)]
    )

    async with BrokerReads(_account(fake_broker.base_url)) as broker:
        activities = await broker.activities(None)

    ids = [str(a["id"]) for a in activities]
    assert len([a for a in activities if a["activity_type"] == "DIV"]) == 130
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


@pytest.mark.asyncio
async def test_calendar_and_daily_closes(fake_broker) -> None:
    async with BrokerReads(_account(fake_broker.base_url)) as broker:
        calendar = await broker.calendar(date(2024, 11, 27), date(2024, 12, 2))
        closes = await broker.daily_closes(["AAPL", "MSFT"], date(2024, 3, 11), date(2024, 3, 12))

    assert [(row["date"], row["close"]) for row in calendar] == [
        ("2024-11-27", "16:00"), ("2024-11-29", "13:00"), ("2024-12-02", "16:00"),
    ]  # fmt: skip
    assert sorted(closes) == [date(2024, 3, 11), date(2024, 3, 12)]
    assert sorted(closes[date(2024, 3, 12)]) == ["AAPL", "MSFT"]


@pytest.mark.asyncio
async def test_a_refused_request_is_a_broker_error_without_the_secret(fake_broker) -> None:
    async with BrokerReads(_account(fake_broker.base_url, secret="wrong-secret-XYZ")) as broker:
        with pytest.raises(BrokerError) as caught:
            await broker.calendar(date(2024, 3, 1), date(2024, 3, 5))

    assert "account=demo call=GET /calendar" in str(caught.value)
    assert "wrong-secret-XYZ" not in str(caught.value)


def test_data_url_is_alpaca_data_for_alpaca_hosts_else_the_same_origin() -> None:
    assert data_url("https://paper-api.alpaca.markets") == "https://data.alpaca.markets"
    assert data_url("http://127.0.0.1:8080/") == "http://127.0.0.1:8080"
    assert data_url("https://api.alpaca.markets") == "https://data.alpaca.markets"


@pytest.mark.asyncio
async def test_daily_equity_reads_the_brokers_1d_portfolio_history(fake_broker) -> None:
    async with BrokerReads(_account(fake_broker.base_url)) as broker:
        equity = await broker.daily_equity(date(2024, 3, 7), date(2024, 3, 11))

    # The fake's default account: $100,000 and no trading; one point per session (no weekend).
    assert equity == {date(2024, 3, 7): 100000, date(2024, 3, 8): 100000, date(2024, 3, 11): 100000}


def test_parse_daily_equity_reads_ny_or_utc_midnight_stamps_and_skips_nulls() -> None:
    # Shape: docs/broker.md §3 "Portfolio history" (alpaca-py PortfolioHistory: timestamp, equity lists).
    body = {
        "timestamp": [1709874000, 1710129600, 1710201600],  # 03-08 00:00 NY, 03-11 00:00 NY, 03-12 00:00 UTC
        "equity": [100000.0, None, 100047.6],
        "profit_loss": [0, 0, 47.6],
        "timeframe": "1D",
    }

    assert parse_daily_equity(body) == {date(2024, 3, 8): Decimal("100000.00"), date(2024, 3, 12): Decimal("100047.60")}
    refusal = "GET /v2/account/portfolio/history: expected equal 'timestamp' and 'equity' lists"
    with pytest.raises(BrokerError, match=refusal):
        parse_daily_equity({"timestamp": [1], "equity": []})


@pytest.mark.asyncio
async def test_last_equity_reads_the_accounts_previous_close(fake_broker) -> None:
    """``GET /v2/account`` carries ``last_equity`` as a decimal string (Alpaca's account object,
    alpaca-py ``TradeAccount.last_equity``); the fake's default account: $100,000."""
    async with BrokerReads(_account(fake_broker.base_url)) as broker:
        assert await broker.last_equity() == Decimal("100000.00")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("100047.6", Decimal("100047.60")),
        ("0", Decimal("0.00")),
        (None, None),
        ("NaN", None),
        ("x", None),
        (True, None),
    ],
)
def test_parse_last_equity_is_none_when_absent_or_unreadable(value: object, expected: Decimal | None) -> None:
    assert parse_last_equity({"last_equity": value}) == expected
    assert parse_last_equity({}) is None
