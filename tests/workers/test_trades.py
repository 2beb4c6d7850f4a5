"""`trades` in-process: fake broker stream → ``trade.demo`` updates and resync requests."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import MarketOrderRequest

from coldharbour.broker import stream as stream_module
from coldharbour.messages import OrderUpdated, ResyncRequested
from tests.fixtures.broker import FakeBroker
from tests.fixtures.bus import InprocBus, Observer
from tests.support import async_wait_for, make_settings
from tests.workers.broker_support import UNUSED_DSN, InProcessWorker, worker_settings
from workers import trades


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream_module, "BACKOFF_BASE_S", 0.05)
    monkeypatch.setattr(stream_module, "BACKOFF_CAP_S", 0.2)
    monkeypatch.setattr(stream_module, "WATCHDOG_INTERVAL_S", 0.05)


def _resyncs(observer: Observer, reason: str) -> list[ResyncRequested]:
    return [m for m in observer.messages() if isinstance(m, ResyncRequested) and m.reason == reason]


@pytest.mark.asyncio
async def test_trades_fill_published_and_reconnect_resyncs_requested(
    bus: InprocBus, fake_broker: FakeBroker, tmp_path: Path
) -> None:
    updates = bus.observe("trade.demo")
    resyncs = bus.observe("cmd.resync.demo")
    worker = InProcessWorker("trades", trades.amain, worker_settings(bus, tmp_path, fake_broker), bus).start()
    try:
        await async_wait_for(lambda: _resyncs(resyncs, "reconnect"), 10, what="connect resync")
        fake_broker.set_prices({"AAPL": 180.25})
        client = fake_broker.trading_client()
        request = MarketOrderRequest(symbol="AAPL", qty=3, side=OrderSide.BUY, time_in_force=TimeInForce.DAY)
        await asyncio.to_thread(client.submit_order, request)
        await async_wait_for(lambda: [m for m in updates.messages() if isinstance(m, OrderUpdated) and m.fill],
                             10, what="fill update")
        await asyncio.to_thread(fake_broker.drop_stream)
        await async_wait_for(lambda: len(_resyncs(resyncs, "reconnect")) >= 2, 10, what="reconnect resync")
    finally:
        await worker.close()

    fills = [m for m in updates.messages() if isinstance(m, OrderUpdated) and m.fill is not None]
    assert len(fills) == 1
    assert [f.fill.qty for f in fills if f.fill is not None] == [3]
    assert _resyncs(resyncs, "fill") == []  # state asks for the WAC once the fill is committed
    assert worker.ctx.counters["stream_connects"] >= 2
    assert fake_broker.listener_count() == 0


@pytest.mark.asyncio
async def test_trades_stream_disabled_opens_no_connection(
    bus: InprocBus, fake_broker: FakeBroker, tmp_path: Path
) -> None:
    settings = worker_settings(bus, tmp_path, fake_broker, ENABLE_TRADE_STREAM_DEMO="false")
    worker = InProcessWorker("trades", trades.amain, settings, bus).start()
    await worker.close()

    assert fake_broker.state()["stream"]["connections_total"] == 0


@pytest.mark.asyncio
async def test_trades_wrong_secret_never_logged(
    bus: InprocBus, fake_broker: FakeBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "very-wrong-secret-QQQQ9999"
    settings = worker_settings(bus, tmp_path, fake_broker, ALPACA_SECRET_KEY_DEMO=secret)
    worker = InProcessWorker("trades", trades.amain, settings, bus).start()
    try:
        await async_wait_for(lambda: worker.ctx.counters["stream_auth_failures"] >= 2, 10, what="refusals")
    finally:
        await worker.close()

    assert secret not in caplog.text
    assert "stream authentication refused" in caplog.text


@pytest.mark.asyncio
async def test_trades_opens_many_accounts_streams_a_few_at_a_time_and_reports_n_of_n(
    bus: InprocBus, fake_broker_factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = [f"acct{i:02d}" for i in range(12)]
    broker = fake_broker_factory(accounts=names)
    monkeypatch.setattr(trades, "OPENING_AT_ONCE", 3)
    monkeypatch.setattr(trades, "PROGRESS_INTERVAL_S", 0.05)
    env: dict[str, str] = {}
    for name in names:
        key, secret = broker.keys(name)
        suffix = name.upper()
        env |= {f"ALPACA_API_KEY_{suffix}": key, f"ALPACA_SECRET_KEY_{suffix}": secret,
                f"ALPACA_BASE_URL_{suffix}": broker.base_url}
    settings = make_settings(UNUSED_DSN, tmp_path, tuple(names), CHMGR_BUS_IN=bus.bus_in, CHMGR_BUS_OUT=bus.bus_out,
                             ALPACA_REST_BUDGET_PER_MIN="6000", **env)
    progress: list[int] = []
    worker = InProcessWorker("trades", trades.amain, settings, bus).start()
    try:
        def every_stream_open() -> bool:
            progress.append(worker.ctx.counters["streams_open"])
            return worker.ctx.counters["streams_open"] == len(names)

        await async_wait_for(every_stream_open, 30, interval_s=0.01, what="every account streaming")
        total = worker.ctx.counters["streams_total"]
    finally:
        await worker.close()

    assert total == len(names)
    assert broker.listener_count() == 0
    assert worker.ctx.counters["stream_connects"] == len(names)
    assert progress == sorted(progress)  # n of N only grows while they open
