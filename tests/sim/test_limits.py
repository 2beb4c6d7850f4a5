"""The fake broker's per-key REST limit (429 + Alpaca's X-RateLimit-* headers), its request
counts, and the data host's multi-symbol snapshot route.

Shapes: the rate-limit headers are those Alpaca documents for its APIs ("X-RateLimit-Limit",
"X-RateLimit-Remaining", "X-RateLimit-Reset" in Unix seconds; docs.alpaca.markets "Rate
limit"); the snapshot is what alpaca-py's ``StockHistoricalDataClient.get_stock_snapshot``
requests (``GET /v2/stocks/snapshots?symbols=…``, ``alpaca/data/historical/stock.py``) and
parses (``alpaca/data/models/snapshots.py``: ``latestTrade``, ``latestQuote``, ``minuteBar``,
``dailyBar``, ``prevDailyBar``).
"""

from __future__ import annotations

import time

import pytest
from alpaca.common.exceptions import APIError
from alpaca.data.requests import StockSnapshotRequest
from alpaca.trading.client import TradingClient

from coldharbour.sim.limits import RestLimits
from tests.fixtures.broker import BrokerFactory, FakeBroker


def test_limit_window_and_headers() -> None:
    limits = RestLimits(rest_per_min=3, data_per_min=1)
    verdicts = [limits.check("k", "/v2/positions", 1000.0 + i) for i in range(4)]
    assert [v.allowed for v in verdicts] == [True, True, True, False]
    assert [v.headers["X-RateLimit-Remaining"] for v in verdicts] == ["2", "1", "0", "0"]
    assert verdicts[3].headers["X-RateLimit-Reset"] == "1060"  # the oldest request ages out then
    assert verdicts[0].headers["X-RateLimit-Limit"] == "3"
    assert limits.check("other", "/v2/positions", 1003.5).allowed  # per key
    assert limits.check("k", "/v2/stocks/snapshots", 1003.5).allowed  # the data host counts apart
    assert not limits.check("k", "/v2/stocks/snapshots", 1004.0).allowed
    assert limits.check("k", "/v2/account", 1060.5).allowed  # the window slid past the first request
    counts = limits.counts(since=1001.0, until=1061.0)
    assert {k: v for k, v in counts["k"].items() if k != "agents"} == {
        "trading": 3, "data": 1, "trading_refused": 1, "data_refused": 1,
    }  # fmt: skip
    assert counts["k"]["agents"] == {"unknown": {"trading": 3, "data": 1}}
    assert counts["other"]["trading"] == 1


def test_fake_answers_429_with_headers_and_counts_per_key(fake_broker_factory: BrokerFactory) -> None:
    broker = fake_broker_factory(accounts=["demo", "bot"])
    assert broker.configure(rest_limit_per_min=5)["rest_limit_per_min"] == 5
    started = time.time()
    answers = [broker.request("GET", "/v2/account") for _ in range(6)]
    assert [a.status_code for a in answers] == [200] * 5 + [429]
    assert answers[0].headers["X-RateLimit-Limit"] == "5"
    assert answers[4].headers["X-RateLimit-Remaining"] == "0"
    refused = answers[5]
    assert refused.json() == {"code": 42910000, "message": "rate limit exceeded"}
    assert int(refused.headers["X-RateLimit-Reset"]) >= int(started)
    assert broker.request("GET", "/v2/account", account="bot").status_code == 200  # another key
    # alpaca-py sees Alpaca's 429 (its own retries exhausted quickly here)
    client: TradingClient = broker.trading_client()
    client._retry = 0  # alpaca-py's private retry count
    with pytest.raises(APIError) as caught:
        client.get_account()
    assert caught.value.status_code == 429
    key_id, _ = broker.keys()
    counts = broker.request("GET", "/sim/requests", account=None, params={"since": str(started - 1)}).json()
    assert counts["keys"][key_id]["trading"] == 5
    assert counts["keys"][key_id]["trading_refused"] == 2
    assert counts["keys"][broker.keys("bot")[0]]["trading"] == 1
    # by User-Agent product: the five let through were the test's own (alpaca-py's try was refused)
    assert counts["keys"][key_id]["agents"] == {"python-requests": {"trading": 5, "data": 0}}
    broker.configure(rest_limit_per_min=0)  # off
    assert broker.request("GET", "/v2/account").status_code == 200


def test_config_rejects_a_bad_limit(fake_broker: FakeBroker) -> None:
    answer = fake_broker.request("POST", "/sim/config", account=None, json={"rest_limit_per_min": -1})
    assert answer.status_code == 422


def test_stock_snapshot_in_alpaca_py_shape(fake_broker: FakeBroker) -> None:
    fake_broker.set_prices({"AAPL": 187.25, "MSFT": 410})
    fake_broker.set_prices({"AAPL": 188.5})
    request = StockSnapshotRequest(symbol_or_symbols=["AAPL", "MSFT", "NVDA"])
    snapshots = fake_broker.data_client().get_stock_snapshot(request)
    assert isinstance(snapshots, dict)
    assert sorted(snapshots) == ["AAPL", "MSFT"]  # never priced: left out
    aapl = snapshots["AAPL"]
    assert aapl.latest_trade is not None
    assert aapl.latest_trade.price == 188.5
    assert aapl.daily_bar is not None
    assert aapl.daily_bar.close == 188.5
    assert snapshots["MSFT"].latest_trade is not None
    assert snapshots["MSFT"].latest_trade.price == 410
    raw = fake_broker.request("GET", "/v2/stocks/snapshots", params={"symbols": "AAPL", "feed": "iex"})
    assert set(raw.json()["AAPL"]) == {"latestTrade", "latestQuote", "minuteBar", "dailyBar", "prevDailyBar"}
    assert "X-RateLimit-Limit" in raw.headers
    assert fake_broker.request("GET", "/v2/stocks/snapshots").status_code == 422  # symbols required


def test_crypto_snapshot(fake_broker: FakeBroker) -> None:
    fake_broker.set_prices({"BTC/USD": 65000})
    raw = fake_broker.request("GET", "/v1beta3/crypto/us/snapshots", params={"symbols": "BTC/USD,ETH/USD"}).json()
    assert list(raw["snapshots"]) == ["BTC/USD"]
    assert raw["snapshots"]["BTC/USD"]["latestTrade"]["p"] == 65000
