"""History cursors with the broker's semantics (docs/spec.md §8) and the crypto position refresh.

The crypto test runs the real REST adapter against the fake broker. The late-FILL test needs a
broker that lists a FILL *after* a newer one was already read, which the fake (which books each
execution as it happens) cannot do, so there a minimal stand-in serves the two listings; its
FILL objects follow the TradeActivity of https://docs.alpaca.markets/us/docs/account-activities.md.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from time import time_ns
from typing import Any

import aiohttp
import pytest
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import MarketOrderRequest

from coldharbour.broker.convert import CORPORATE_READ, Rejected, convert_position
from coldharbour.broker.rest import BrokerRefused, BrokerRest
from coldharbour.broker.sync import (
    ANNOUNCEMENT_WAIT_NS,
    BUST_SWEEP_EVERY,
    FILL_OVERLAP_NS,
    ORDER_OVERLAP_NS,
    SPINOFF_CLOSES_WAIT_NS,
    AccountSync,
)
from coldharbour.domain.schedule import NEW_YORK
from coldharbour.domain.types import from_datetime
from coldharbour.messages import CorporateActionsPage, FillsPage, SnapshotTaken
from coldharbour.sim.corporate import next_weekday
from tests.broker.support import RecordingSink, account_for
from tests.fixtures.broker import BrokerFactory, FakeBroker

ORDER_ID = "904837e3-3b76-47ec-b432-046db621571b"


@pytest.mark.asyncio
async def test_post_fill_refresh_of_a_crypto_pair_finds_the_position(fake_broker: FakeBroker) -> None:
    fake_broker.set_prices({"BTC/USD": "60000"})
    client: Any = fake_broker.trading_client()
    await asyncio.to_thread(
        client.submit_order,
        MarketOrderRequest(symbol="BTC/USD", qty=0.25, side=OrderSide.BUY, time_in_force=TimeInForce.GTC),
    )

    async with aiohttp.ClientSession() as session:
        rest = BrokerRest(account_for(fake_broker), session, Counter())
        raw = await rest.position("BTC/USD")

    asked = [r["path"] for r in fake_broker.request("GET", "/sim/log", account=None).json()]
    assert raw is not None
    # the position endpoint's form (https://docs.alpaca.markets/docs/positions: crypto positions say BTCUSD)
    assert asked[-1] == "/v2/positions/BTCUSD"
    position = convert_position(raw)
    assert not isinstance(position, Rejected)
    assert (position.symbol, str(position.qty)) == ("BTC/USD", "0.25")


def _fill(suffix: str, stamp: str, cum_qty: str) -> dict[str, Any]:
    return {
        "activity_type": "FILL", "id": f"20240301100000300::{suffix}", "cum_qty": cum_qty, "leaves_qty": "0",
        "price": "10", "qty": "1", "side": "buy", "symbol": "AAPL", "transaction_time": stamp,
        "order_id": ORDER_ID, "type": "partial_fill",
    }  # fmt: skip


class ListingBroker:
    """Serves FILL listings filtered by ``after`` like Alpaca; no orders, no positions."""

    slug = "demo"

    def __init__(self) -> None:
        self.fills: list[dict[str, Any]] = []
        self.fill_afters: list[int | None] = []
        self.order_afters: list[int | None] = []
        self.refuse_corporate = False

    def urgent(self) -> ListingBroker:
        return self  # one client: no budget here

    async def wait_ready(self) -> None:
        return None

    async def positions(self) -> list[Any]:
        return []

    async def account(self) -> Any:
        return {"cash": "1000", "equity": "1000"}

    async def open_orders(self) -> list[Any]:
        return []

    async def order(self, order_id: str) -> Any:
        raise AssertionError(order_id)

    async def order_pages(self, status: str, after_ns: int | None) -> AsyncIterator[list[Any]]:
        self.order_afters.append(after_ns)
        if False:
            yield []

    async def activity_pages(
        self, activity_type: str, *, after_id: str | None = None, after_ns: int | None = None
    ) -> AsyncIterator[list[Any]]:
        if activity_type != "FILL":
            if self.refuse_corporate:
                raise BrokerRefused("invalid activity type", 422)
            return
        self.fill_afters.append(after_ns)
        page = [
            f for f in sorted(self.fills, key=lambda f: f["id"])
            if after_ns is None or from_datetime(datetime.fromisoformat(f["transaction_time"])) > after_ns
        ]  # fmt: skip
        if page:
            yield page


@pytest.mark.asyncio
async def test_late_fill_same_millisecond_smaller_id_is_not_skipped() -> None:
    broker = ListingBroker()
    sink = RecordingSink()
    sync = AccountSync(broker, sink, Counter(), clock_ns=lambda: 1_709_287_200_000_000_000)  # type: ignore[arg-type]
    broker.fills.append(_fill("ffff0000-0000-4000-8000-000000000002", "2024-03-01T15:00:00.300400Z", "2"))

    await sync.full("test")
    broker.fills.append(_fill("0000aaaa-0000-4000-8000-000000000001", "2024-03-01T15:00:00.300100Z", "1"))
    await sync.full("test")
    await sync.full("test")

    published = [r.id.split("::")[1][:8] for page in sink.of(FillsPage) for r in page.activities]
    assert published == ["ffff0000", "0000aaaa"]  # each once, the late one not skipped
    newest = from_datetime(datetime.fromisoformat("2024-03-01T15:00:00.300400+00:00"))
    assert sync.fill_cursor_ns == newest
    assert broker.fill_afters[1] == newest - FILL_OVERLAP_NS
    assert sum(len(p.fills) for p in sink.of(FillsPage)) == 2


@pytest.mark.asyncio
async def test_order_cursor_follows_submitted_at_with_overlap(fake_broker: FakeBroker) -> None:
    fake_broker.set_prices({"AAPL": 100})
    client: Any = fake_broker.trading_client()
    submitted = await asyncio.to_thread(
        client.submit_order,
        MarketOrderRequest(symbol="AAPL", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.DAY),
    )

    async with aiohttp.ClientSession() as session:
        rest = BrokerRest(account_for(fake_broker), session, Counter())
        sync = AccountSync(rest, RecordingSink(), Counter())
        await sync.backfill(1)

    assert submitted.submitted_at < submitted.created_at
    assert sync.order_cursor_ns == from_datetime(submitted.submitted_at)
    assert ORDER_OVERLAP_NS >= 170_000_000


def _carries(page: CorporateActionsPage) -> bool:
    """A page with actions, legs, problems or cancellations (every read also sends its watermark page)."""
    return bool(page.actions or page.activities or page.problems or page.canceled)


def _corporate_pages(sink: RecordingSink) -> list[CorporateActionsPage]:
    return [page for page in sink.of(CorporateActionsPage) if _carries(page)]


@pytest.mark.asyncio
async def test_corporate_action_published_once_before_the_snapshot(fake_broker: FakeBroker) -> None:
    fake_broker.set_prices({"AAPL": 100})
    fake_broker.request("POST", "/v2/orders", json={"symbol": "AAPL", "qty": "10", "side": "buy", "type": "market",
                                                    "time_in_force": "day"})  # fmt: skip
    sink = RecordingSink()
    async with aiohttp.ClientSession() as session:
        sync = AccountSync(BrokerRest(account_for(fake_broker), session, Counter()), sink, Counter())
        await sync.backfill(1)
        split = fake_broker.request("POST", "/sim/corporate-actions", account=None,
                                    json={"type": "forward_split", "symbol": "AAPL", "old_rate": "1", "new_rate": "2"})
        await sync.full("test")
        await sync.full("test")

    assert split.status_code == 200
    kinds = [type(m).__name__ for _, m in sink.items
             if isinstance(m, SnapshotTaken) or (isinstance(m, CorporateActionsPage) and _carries(m))]
    assert kinds == ["CorporateActionsPage", "SnapshotTaken", "SnapshotTaken"]
    (page,) = _corporate_pages(sink)
    (action,) = page.actions
    assert (action.type, action.symbol, action.ratio) == ("split", "AAPL", Decimal(2))
    assert [a.activity_type for a in page.activities] == ["SPLIT", "SPLIT"]
    assert page.problems == ()


@pytest.mark.asyncio
async def test_refused_corporate_read_never_blocks_the_snapshot() -> None:
    broker = ListingBroker()
    broker.refuse_corporate = True
    sink = RecordingSink()
    counters: Counter[str] = Counter()
    sync = AccountSync(broker, sink, counters, clock_ns=lambda: 1_709_287_200_000_000_000)  # type: ignore[arg-type]

    await sync.full("test")

    assert len(sink.of(SnapshotTaken)) == 1
    assert counters["corporate_code_refused"] == len(CORPORATE_READ)


@pytest.mark.asyncio
async def test_a_refused_activity_code_leaves_the_other_codes_working(fake_broker: FakeBroker) -> None:
    """A broker that refuses one filter value (422 "invalid activity type", the answer of
    https://docs.alpaca.markets/us/docs/account-activities.md to a value outside its filter
    list) hides only that code's legs: the NC symbol change is booked, the SPLIT waits, is
    counted and shown (heartbeat details), and is booked once the code is read again."""
    fake_broker.set_prices({"AAPL": 100, "FB": 50})
    for symbol in ("AAPL", "FB"):
        fake_broker.request("POST", "/v2/orders", json={"symbol": symbol, "qty": "10", "side": "buy",
                                                        "type": "market", "time_in_force": "day"})  # fmt: skip
    fake_broker.request("POST", "/sim/config", account=None, json={"refused_activity_types": ["SPLIT"]})
    sink = RecordingSink()
    counters: Counter[str] = Counter()
    details: dict[str, str] = {}
    async with aiohttp.ClientSession() as session:
        sync = AccountSync(BrokerRest(account_for(fake_broker), session, Counter()), sink, counters, details=details)
        await sync.backfill(1)
        split = {"type": "forward_split", "symbol": "AAPL", "old_rate": "1", "new_rate": "2"}
        fake_broker.request("POST", "/sim/corporate-actions", account=None, json=split)
        fake_broker.request("POST", "/sim/corporate-actions", account=None,
                            json={"type": "name_change", "symbol": "FB", "new_symbol": "META"})  # fmt: skip
        await sync.full("test")
        refused_then = dict(details)
        fake_broker.request("POST", "/sim/config", account=None, json={"refused_activity_types": []})
        await sync.full("test")

    first, second = _corporate_pages(sink)
    assert [(a.type, a.symbol, a.new_symbol) for a in first.actions] == [("symbol_change", "FB", "META")]
    assert {a.activity_type for a in first.activities} == {"NC"}
    assert counters["corporate_code_refused"] == 2  # the backfill's read and the first snapshot's
    assert refused_then == {f"corporate_refused_{sync.slug}": "SPLIT:422"}
    assert [(a.type, a.symbol, a.ratio) for a in second.actions] == [("split", "AAPL", Decimal(2))]
    assert details == {}


@pytest.mark.asyncio
async def test_corporate_codes_are_one_listing_unless_one_is_refused(fake_broker: FakeBroker) -> None:
    """Every code in one ``activity_types=CIL,MA,…`` listing (the key's budget,
    docs/broker-budget.md); when the broker refuses one, that code alone is read apart."""

    def corporate_reads() -> list[str]:
        log = fake_broker.request("GET", "/sim/log", account=None).json()
        return [e["path"] + "?" + e["query"] for e in log if "/account/activities" in e["path"]
                and "FILL" not in e["path"]]  # fmt: skip

    async with aiohttp.ClientSession() as session:
        sync = AccountSync(BrokerRest(account_for(fake_broker), session, Counter()), RecordingSink(), Counter())
        await sync.full("test")
        together = corporate_reads()
        fake_broker.request("POST", "/sim/config", account=None, json={"refused_activity_types": ["SPLIT"]})
        await sync.full("test")  # the list is refused: code by code, SPLIT refused
        await sync.full("test")  # the six others together, SPLIT tried alone
        later = corporate_reads()[len(together):]

    assert len(together) == 1
    assert f"activity_types={','.join(CORPORATE_READ)}&" in together[0]
    assert len(later) == 1 + len(CORPORATE_READ) + 2
    assert later[-1].startswith("/v2/account/activities/SPLIT?")


@pytest.mark.asyncio
async def test_bust_of_an_older_fill_is_found_by_the_lookback_and_published_once() -> None:
    """Issue 12: the FILL cursor re-reads only ``FILL_OVERLAP_NS``, and a bust (the FILL listed
    again with ``status`` ``canceled``) usually comes minutes or hours later: every
    ``BUST_SWEEP_EVERY`` snapshots the last ``BUST_LOOKBACK_NS`` are read again for busts."""
    broker = ListingBroker()
    sink = RecordingSink()
    sync = AccountSync(broker, sink, Counter(), clock_ns=lambda: 1_709_287_200_000_000_000)  # type: ignore[arg-type]
    old = _fill("aaaa0000-0000-4000-8000-000000000001", "2024-03-01T15:00:00.100000Z", "1")
    broker.fills += [old, _fill("bbbb0000-0000-4000-8000-000000000002", "2024-03-01T15:10:00.000000Z", "2")]
    await sync.full("test")
    old["status"] = "canceled"  # the broker busts the older execution after the cursor moved on

    for _ in range(2 * BUST_SWEEP_EVERY):
        await sync.full("test")

    busted = [fill for page in sink.of(FillsPage) for fill in page.busted]
    assert [fill.order_id for fill in busted] == [ORDER_ID]
    assert sync.counters["bust_sweeps"] == 2
    assert sync.counters["busts_found_by_sweep"] == 1


@pytest.mark.asyncio
async def test_a_canceled_and_rebooked_action_is_published_as_canceled_then_new(fake_broker: FakeBroker) -> None:
    """The fake's ``/cancel`` with ``rebook`` lists the first legs again with ``status``
    ``canceled`` (the NonTradeActivity status of the account-activities page) and books new legs:
    the snapshot publishes the first action's id as canceled, the legs' new status, and the new action."""
    fake_broker.set_prices({"AAPL": 100})
    fake_broker.request("POST", "/v2/orders", json={"symbol": "AAPL", "qty": "10", "side": "buy", "type": "market",
                                                    "time_in_force": "day"})  # fmt: skip
    sink = RecordingSink()
    async with aiohttp.ClientSession() as session:
        sync = AccountSync(BrokerRest(account_for(fake_broker), session, Counter()), sink, Counter())
        await sync.backfill(1)
        wrong = {"type": "forward_split", "symbol": "AAPL", "old_rate": "1", "new_rate": "3"}
        first = fake_broker.request("POST", "/sim/corporate-actions", account=None, json=wrong).json()
        await sync.full("test")
        fake_broker.request("POST", f"/sim/corporate-actions/{first['id']}/cancel", account=None,
                            json={"rebook": {**wrong, "new_rate": "2"}})  # fmt: skip
        await sync.full("test")
        await sync.full("test")

    booked, corrected = _corporate_pages(sink)
    (wrong_action,) = booked.actions
    (right_action,) = corrected.actions
    assert (wrong_action.ratio, right_action.ratio) == (Decimal(3), Decimal(2))
    assert wrong_action.id in corrected.canceled  # (with the in-leg's id, which formed no action)
    assert len(corrected.canceled) == 2
    assert sorted((a.qty, a.status) for a in corrected.activities) == [
        (Decimal(-10), "canceled"), (Decimal(-10), "executed"), (Decimal(20), "executed"), (Decimal(30), "canceled"),
    ]  # fmt: skip


@pytest.mark.asyncio
async def test_legs_take_effect_when_the_announcement_says_and_wait_for_it(fake_broker: FakeBroker) -> None:
    """Legs stamped on the payable date are booked at the start of the ex-date the announcement
    states (``GET /v1/corporate-actions``, alpaca-py's ``forward_splits`` shape); when the
    announcements cannot be read, the legs wait (their symbol pending, not reconciled, shown)
    for ``ANNOUNCEMENT_WAIT_NS``, then are booked on their own stamps."""
    fake_broker.set_prices({"AAPL": 100, "MSFT": 50})
    for symbol in ("AAPL", "MSFT"):
        fake_broker.request("POST", "/v2/orders", json={"symbol": symbol, "qty": "10", "side": "buy",
                                                        "type": "market", "time_in_force": "day"})  # fmt: skip
    today = datetime.now(UTC).astimezone(NEW_YORK).date()
    ex_date = next_weekday(next_weekday(today))
    split = {"type": "forward_split", "old_rate": "1", "new_rate": "2", "ex_date": ex_date.isoformat(),
             "payable_date": today.isoformat(), "legs": "payable_date"}  # fmt: skip
    now = [time_ns()]
    sink = RecordingSink()
    details: dict[str, str] = {}
    async with aiohttp.ClientSession() as session:
        account = account_for(fake_broker)
        announced = AccountSync(BrokerRest(account, session, Counter()), sink, Counter(),
                                announcements=BrokerRest(account, session, Counter(), version="/v1"))  # fmt: skip
        unreadable = AccountSync(BrokerRest(account, session, Counter()), RecordingSink(), Counter(), details=details,
                                 clock_ns=lambda: now[0],
                                 announcements=BrokerRest(account, session, Counter(), version="/v9"))  # fmt: skip
        await announced.backfill(1)
        await unreadable.backfill(1)
        fake_broker.request("POST", "/sim/corporate-actions", account=None, json={**split, "symbol": "AAPL"})
        await announced.full("test")
        await unreadable.full("test")
        waiting = (unreadable.pending_symbols, dict(details))
        now[0] += ANNOUNCEMENT_WAIT_NS + 1
        await unreadable.full("test")

    (page,) = [p for p in sink.of(CorporateActionsPage) if p.actions]
    (action,) = page.actions
    start_of_ex_date = from_datetime(datetime.combine(ex_date, time(0), tzinfo=NEW_YORK))
    assert (action.type, action.ratio, action.ts) == ("split", Decimal(2), start_of_ex_date - 1_000)
    assert announced.pending_symbols == ()
    assert sink.of(SnapshotTaken)[-1].pending_symbols == ()
    pending = [{"symbol": "AAPL", "type": "split", "effective": today.isoformat(),
                "waits_for": "its announcement (up to a day)"}]  # the dashboard's panel
    assert waiting == (("AAPL",), {f"corporate_held_{unreadable.slug}": "pending: AAPL",
                                   f"corporate_refused_{unreadable.slug}": "announcements:404",
                                   f"corporate_pending_{unreadable.slug}": json.dumps(pending, separators=(",", ":"))})
    (late,) = [a for p in unreadable._sink.of(CorporateActionsPage) for a in p.actions]  # type: ignore[attr-defined]
    assert late.ts < start_of_ex_date - 86_400 * 10**9  # its own stamp: the payable date
    assert unreadable.pending_symbols == ()


@pytest.mark.asyncio
async def test_an_order_the_stream_reported_final_is_not_read_again_by_id(fake_broker: FakeBroker) -> None:
    """Stream payloads instead of reads (docs/broker-budget.md): of two limit orders open at one
    snapshot and filled before the next, the one whose final state came through the trade stream
    (``note_update``) is not fetched by id; the other, with no report, still is."""
    from coldharbour.broker.convert import convert_orders

    fake_broker.set_prices({"AAPL": 100, "MSFT": 100})
    ids = []
    for symbol in ("AAPL", "MSFT"):
        answer = fake_broker.request("POST", "/v2/orders", json={"symbol": symbol, "qty": "1", "side": "buy",
                                                                 "type": "limit", "limit_price": "90",
                                                                 "time_in_force": "day"})  # fmt: skip
        ids.append(answer.json()["id"])
    counters: Counter[str] = Counter()
    async with aiohttp.ClientSession() as session:
        sync = AccountSync(BrokerRest(account_for(fake_broker), session, Counter()), RecordingSink(), counters)
        await sync.full("test")  # both open
        fake_broker.set_prices({"AAPL": 89, "MSFT": 89})  # both fill
        reported = fake_broker.request("GET", f"/v2/orders/{ids[0]}").json()
        converted, _ = convert_orders([reported])
        sync.note_update(converted[0].order)  # what trades published for the first
        before = len(fake_broker.request("GET", "/sim/log", account=None).json())
        await sync.full("test")
        log = fake_broker.request("GET", "/sim/log", account=None).json()[before:]

    by_id = [entry["path"] for entry in log if entry["path"].startswith("/v2/orders/")]
    assert converted[0].order.status == "filled"
    assert by_id == [f"/v2/orders/{ids[1]}"]
    assert counters["order_reads_saved_by_stream"] == 1


class PositionsBroker(ListingBroker):
    """``ListingBroker`` whose ``GET /v2/positions`` answers the objects the test gives."""

    def __init__(self, positions: list[dict[str, Any]]) -> None:
        super().__init__()
        self.listed = positions

    async def positions(self) -> list[Any]:
        return self.listed


def _position(symbol: str, **fields: str) -> dict[str, Any]:
    """A position object as ``GET /v2/positions`` lists it (docs.alpaca.markets/reference/getallopenpositions)."""
    return {"symbol": symbol, "qty": "30", "side": "long", "avg_entry_price": "60.08", "current_price": "61.5",
            "asset_class": "us_equity", "exchange": "NASDAQ", **fields}


@pytest.mark.asyncio
async def test_a_position_with_a_refused_booked_field_is_unknown_and_a_long_mark_is_rounded() -> None:
    """After a 3-for-1 split: AAPL's mark has 26 decimals (shown only: rounded), MSFT's cost is garbage
    (booked: refused). The snapshot lists AAPL, names MSFT unknown, and says the fills are complete."""
    broker = PositionsBroker([_position("AAPL", current_price="61.66666666666666666666666667"),
                              _position("MSFT", avg_entry_price="not a number")])
    sink = RecordingSink()
    counters: Counter[str] = Counter()
    sync = AccountSync(broker, sink, counters, clock_ns=lambda: 1_709_287_200_000_000_000)  # type: ignore[arg-type]

    await sync.full("test")

    (snapshot,) = sink.of(SnapshotTaken)
    assert [(p.symbol, p.current_price) for p in snapshot.positions] == [("AAPL", Decimal("61.66666666666666666667"))]
    assert snapshot.unknown_symbols == ("MSFT",)
    assert counters["rejects"] == 1
    last = sink.of(FillsPage)[-1]
    assert (last.is_last, last.complete_to_ns, last.is_from_floor) == (True, 1_709_287_200_000_000_000, True)


@pytest.mark.asyncio
async def test_a_refused_position_without_a_usable_symbol_withholds_the_snapshot() -> None:
    broker = PositionsBroker([_position("AAPL"), {**_position("X"), "symbol": None, "qty": "x"}])
    sink = RecordingSink()
    counters: Counter[str] = Counter()
    sync = AccountSync(broker, sink, counters, clock_ns=lambda: 1_709_287_200_000_000_000)  # type: ignore[arg-type]

    await sync.full("test")

    assert sink.of(SnapshotTaken) == []  # nothing unlisted could be called flat
    assert counters["snapshots_withheld"] == 1


@pytest.mark.asyncio
async def test_a_spinoff_waits_for_the_ex_date_closes_then_goes_out_allocated_by_them_not_the_later_price(
        fake_broker_factory: BrokerFactory) -> None:
    """A spin-off (SPIN leg priced 0; the spin_offs announcement of alpaca-py's SpinOff model) with
    ex-date Wednesday 2026-11-11, legs listed as real accounts list them (04:00 New York on the
    ex-date). On the ex-date GE trades at 90 and GEHC at 20; the day after at 80 and 30 (the
    positions' ``current_price`` then). During the ex-date the spin-off waits (its close is not
    out), GEHC pending; the next day it goes out allocated by the ex-date's daily closes read from
    the data API's ``GET /v2/stocks/bars`` (alpaca-py ``get_stock_bars``): 5 GE x 90 against
    1 GEHC x 20, not 5 x 80 against 30. Without readable announcements it waits
    ``SPINOFF_CLOSES_WAIT_NS``, then goes out as it is (held by ``state``)."""
    now = [datetime(2026, 11, 10, 10, 0, tzinfo=NEW_YORK)]
    fake_broker = fake_broker_factory(clock=lambda: now[0].astimezone(UTC))
    fake_broker.set_prices({"GE": 100})
    fake_broker.request("POST", "/v2/orders", json={"symbol": "GE", "qty": "10", "side": "buy", "type": "market",
                                                    "time_in_force": "day"})  # fmt: skip
    sink, other, counters = RecordingSink(), RecordingSink(), Counter[str]()
    async with aiohttp.ClientSession() as session:
        account = account_for(fake_broker)

        def sync(sink: RecordingSink, version: str, counters: Counter[str]) -> AccountSync:
            return AccountSync(BrokerRest(account, session, Counter()), sink, counters,
                               clock_ns=lambda: from_datetime(now[0]),
                               announcements=BrokerRest(account, session, Counter(), version=version),
                               bars=BrokerRest(account, session, Counter()))  # fmt: skip

        announced, unreadable = sync(sink, "/v1", counters), sync(other, "/v9", Counter())
        await announced.backfill(1)
        await unreadable.backfill(1)
        fake_broker.request("POST", "/sim/corporate-actions", account=None, json={
            "type": "spin_off", "symbol": "GE", "new_symbol": "GEHC", "source_rate": "5", "new_rate": "1",
            "ex_date": "2026-11-11", "legs": "ex_date"})  # fmt: skip
        now[0] = datetime(2026, 11, 11, 10, 0, tzinfo=NEW_YORK)
        fake_broker.set_prices({"GE": 90, "GEHC": 20})
        await announced.full("test")
        await unreadable.full("test")
        waiting = (announced.pending_symbols, [a for p in sink.of(CorporateActionsPage) for a in p.actions])
        now[0] = datetime(2026, 11, 12, 10, 0, tzinfo=NEW_YORK)
        fake_broker.set_prices({"GE": 80, "GEHC": 30})
        await announced.full("test")
        await unreadable.full("test")
        held_first = [a for p in other.of(CorporateActionsPage) for a in p.actions]
        now[0] += timedelta(microseconds=SPINOFF_CLOSES_WAIT_NS // 1000)
        await unreadable.full("test")

    assert waiting == (("GEHC",), [])
    (action,) = [a for p in sink.of(CorporateActionsPage) for a in p.actions]
    assert (action.type, action.symbol, action.new_symbol, action.qty) == ("spinoff", "GE", "GEHC", Decimal(2))
    assert action.basis_share == Decimal(450) / Decimal(470)  # the ex-date closes (80 and 30: 400/430)
    assert announced.pending_symbols == ()
    assert counters["spinoff_bases_allocated"] == 1
    assert held_first == []
    (late,) = [a for p in other.of(CorporateActionsPage) for a in p.actions]
    assert (late.symbol, late.new_symbol, late.price, late.basis_share) == ("GEHC", "GEHC", None, Decimal(1))


@pytest.mark.asyncio
async def test_legs_that_disagree_with_the_announced_rates_are_held_whole_until_the_broker_rebooks(
        fake_broker: FakeBroker) -> None:
    """An announced 2-for-1 split (alpaca-py's ``forward_splits`` shape) whose SPLIT legs say 3 for 1
    (the legs of https://docs.alpaca.markets/us/docs/account-activities.md, posted on their own):
    the action is held whole (not published, its legs not stored, AAPL pending and shown) until
    the broker cancels those legs and lists the right ones."""
    fake_broker.set_prices({"AAPL": 100})
    fake_broker.request("POST", "/v2/orders", json={"symbol": "AAPL", "qty": "10", "side": "buy", "type": "market",
                                                    "time_in_force": "day"})  # fmt: skip
    sink, counters, details = RecordingSink(), Counter[str](), dict[str, str]()
    async with aiohttp.ClientSession() as session:
        account = account_for(fake_broker)
        sync = AccountSync(BrokerRest(account, session, Counter()), sink, counters, details=details,
                           announcements=BrokerRest(account, session, Counter(), version="/v1"))  # fmt: skip
        await sync.backfill(1)
        split = fake_broker.request("POST", "/sim/corporate-actions", account=None, json={
            "type": "forward_split", "symbol": "AAPL", "old_rate": "1", "new_rate": "2",
            "position": "before_legs"}).json()  # fmt: skip
        text = "Split: 3 for 1 AAPL"
        wrong = fake_broker.post_activities([
            {"activity_type": "SPLIT", "symbol": "AAPL", "qty": "-10", "price": "100", "net_amount": "0",
             "description": text},
            {"activity_type": "SPLIT", "symbol": "AAPL", "qty": "30", "price": "33.333333333", "net_amount": "0",
             "description": text}])  # fmt: skip
        await sync.full("test")
        held = ([a for p in sink.of(CorporateActionsPage) for a in p.actions],
                {r.id for p in sink.of(CorporateActionsPage) for r in p.activities}, sync.pending_symbols,
                counters["corporate_mismatches"], details.get(f"corporate_mismatch_{sync.slug}", ""),
                json.loads(details[f"corporate_pending_{sync.slug}"]))  # fmt: skip
        fake_broker.post_activities([{"id": leg["id"], "status": "canceled"} for leg in wrong])
        fake_broker.request("POST", f"/sim/corporate-actions/{split['id']}/complete", account=None)
        await sync.full("test")

    actions, stored, pending, mismatches, shown, panel = held
    assert actions == []
    assert not stored & {leg["id"] for leg in wrong}
    assert (pending, mismatches) == (("AAPL",), 1)
    assert "the legs state 30 AAPL for 10 held" in shown
    assert "implies 20" in shown
    assert [(p["symbol"], p["type"]) for p in panel] == [("AAPL", "split")]
    assert panel[0]["waits_for"].startswith("the broker's correction")
    (booked,) = [a for p in sink.of(CorporateActionsPage) for a in p.actions]
    assert (booked.type, booked.ratio) == ("split", Decimal(2))
    assert (sync.pending_symbols, counters["corporate_mismatches"]) == ((), 0)
    assert f"corporate_mismatch_{sync.slug}" not in details


@pytest.mark.asyncio
async def test_still_after_two_full_snapshots_of_a_flat_account_that_found_nothing_new(fake_broker: FakeBroker) -> None:
    """``still`` (docs/scaling.md "snapshot"): nothing held, nothing open, the same cash and
    equity and nothing new at this full snapshot and the one before; an open order, its end, a
    deposit or a position each make the account not still for the full snapshot that sees it."""
    fake_broker.set_prices({"AAPL": 100})
    seen: list[bool] = []
    async with aiohttp.ClientSession() as session:
        sync = AccountSync(BrokerRest(account_for(fake_broker), session, Counter()), RecordingSink(), Counter())
        await sync.backfill(1)

        async def full() -> None:
            await sync.full("test")
            seen.append(sync.still)

        await full()  # nothing to compare with yet
        await full()
        order = {"symbol": "AAPL", "qty": "1", "side": "buy", "type": "limit", "limit_price": "90",
                 "time_in_force": "day"}  # fmt: skip
        order_id = fake_broker.request("POST", "/v2/orders", json=order).json()["id"]
        await full()  # an order open (and new)
        fake_broker.request("DELETE", f"/v2/orders/{order_id}")
        await full()  # its family left the open list
        await full()
        # a cash deposit (CSD, https://docs.alpaca.markets/us/docs/account-activities.md)
        fake_broker.post_activities([{"activity_type": "CSD", "net_amount": "500"}])
        await full()  # cash moved
        await full()
        market = {"symbol": "AAPL", "qty": "1", "side": "buy", "type": "market", "time_in_force": "day"}
        fake_broker.request("POST", "/v2/orders", json=market)
        await full()  # a position (and a fill)
        await full()

    assert seen == [False, True, False, False, True, False, True, False, False]
    assert sync.full_started_ns is not None
