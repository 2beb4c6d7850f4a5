"""From the fake broker's wire payloads to the ledger: corporate-action legs become ledger
events, a busted FILL leaves the history, and the result is what the broker holds.

The payloads are the fake broker's own (``coldharbour/sim``), whose shapes follow Alpaca's
account-activities page (https://docs.alpaca.markets/us/docs/account-activities.md).
"""

from __future__ import annotations

from collections import Counter
from datetime import date
from decimal import Decimal
from typing import Any

import aiohttp
import msgspec
import pytest

from coldharbour.broker.convert import ConvertedActivity, convert_activity, convert_orders
from coldharbour.broker.rest import BrokerRest
from coldharbour.broker.sync import AccountSync
from coldharbour.domain.corporate import (
    actions_from_legs,
    check_announced,
    corporate_legs,
    parse_announcements,
    remove_busted,
    retime_legs,
    spinoff_by_announcement,
)
from coldharbour.domain.ledger import rebuild
from coldharbour.messages import FillsPage
from coldharbour.sim.corporate import list_announcements
from tests.broker.support import RecordingSink, account_for
from tests.fixtures.broker import FakeBroker
from tests.sim.builders import at, make_engine, order_body, price


def _ledger_inputs(
    activities: list[dict[str, object]], *, held: int = 0
) -> tuple[list[Any], list[Any], list[Any]]:
    converted = [convert_activity(a) for a in activities]
    assert all(isinstance(c, ConvertedActivity) for c in converted)
    items = [c for c in converted if isinstance(c, ConvertedActivity)]
    fills = [c.fill for c in items if c.fill is not None]
    busted = [c.busted for c in items if c.busted is not None]
    actions, problems = actions_from_legs(corporate_legs([c.record for c in items]))
    assert len(problems) == held
    return fills, busted, actions


_SPLIT = {"type": "forward_split", "symbol": "AAPL", "old_rate": "1", "new_rate": "2"}


@pytest.mark.parametrize(
    ("body", "symbol", "qty", "cost", "pnl"),
    [
        (_SPLIT, "AAPL", Decimal(20), Decimal(1000), []),
        ({**_SPLIT, "type": "reverse_split", "old_rate": "10", "new_rate": "1"}, "AAPL", Decimal(1), Decimal(1000), []),
        # 10 -> 2.5 new shares: 0.5 is paid in cash (CIL), closed as CORPORATE at the new price.
        ({**_SPLIT, "type": "reverse_split", "old_rate": "4", "new_rate": "1"}, "AAPL", Decimal(2), Decimal(800),
         [Decimal(0)]),
        ({"type": "name_change", "symbol": "AAPL", "new_symbol": "APPL"}, "APPL", Decimal(10), Decimal(1000), []),
        ({"type": "stock_merger", "symbol": "AAPL", "acquirer_symbol": "ACQ", "acquirer_rate": "1",
          "acquiree_rate": "2"}, "ACQ", Decimal(5), Decimal(1000), []),
        # two legs: shares out (net 0) and the cash (qty 0)
        ({"type": "cash_merger", "symbol": "AAPL", "rate": "125"}, None, Decimal(0), Decimal(0), [Decimal(250)]),
        ({"type": "redemption", "symbol": "AAPL", "rate": "99"}, None, Decimal(0), Decimal(0), [Decimal(-10)]),
        ({"type": "worthless_removal", "symbol": "AAPL"}, None, Decimal(0), Decimal(0), [Decimal(-1000)]),
        # one SPLIT leg in: 2.5 new shares, 2 kept, 0.5 in lieu at 100 (its basis 40 over 12.5 shares)
        ({"type": "stock_dividend", "symbol": "AAPL", "rate": "0.25"}, "AAPL", Decimal(12), Decimal(960),
         [Decimal(10)]),
    ],
)
def test_fake_broker_corporate_action_books_like_the_broker_holds(
    body: dict[str, str], symbol: str | None, qty: Decimal, cost: Decimal, pnl: list[Decimal]
) -> None:
    """Leg shapes: docs/corporate-actions.md "Legs" (the fake's, sim/corporate.py)."""
    engine = make_engine()
    engine.set_prices({"AAPL": price("100")}, at(0))
    order, _ = engine.submit_order("demo", order_body(qty=10), at(1))
    engine.corporate_action(body, at(60))
    orders, _ = convert_orders([engine.order_json(order, nested=True)])

    fills, _, actions = _ledger_inputs(list(engine.accounts["demo"].activities))
    ledger = rebuild([o.order for o in orders], fills, actions)

    held = {s: p.qty for s, p in engine.accounts["demo"].positions.items()}
    assert {s: ledger.net(s) for s in ledger.held_symbols()} == held
    lots = list(ledger.lots.values())
    assert [(lot.symbol, lot.qty, lot.qty * lot.avg_fill) for lot in lots] == ([(symbol, qty, cost)] if symbol else [])
    assert [s.pnl_cash for s in ledger.slices.values()] == pnl
    assert all(s.exit_type == "CORPORATE" for s in ledger.slices.values())


def test_unit_split_and_stock_and_cash_merger_book_like_the_broker_holds() -> None:
    """Three legs each (docs/corporate-actions.md "Legs"): the unit split's basis goes to the two
    symbols by the values the legs state (60:40), no P&L; the stock-and-cash merger closes at the
    deal's value (10 cash + 0.5 x 150) as CORPORATE and opens the acquirer's lot at 150."""
    engine = make_engine()
    engine.set_prices({"AAPL": price("100"), "UNIT": price("100"), "UA": price("60"), "UW": price("40"),
                       "ACQ": price("150")}, at(0))  # fmt: skip
    first, _ = engine.submit_order("demo", order_body(qty=10), at(1))
    second, _ = engine.submit_order("demo", order_body(symbol="UNIT", qty=10), at(2))
    engine.corporate_action({"type": "unit_split", "symbol": "UNIT", "old_rate": "1", "new_symbol": "UA",
                             "new_rate": "1", "alternate_symbol": "UW", "alternate_rate": "1"}, at(60))  # fmt: skip
    engine.corporate_action({"type": "stock_and_cash_merger", "symbol": "AAPL", "acquirer_symbol": "ACQ",
                             "acquirer_rate": "1", "acquiree_rate": "2", "cash_rate": "10"}, at(61))  # fmt: skip
    orders, _ = convert_orders([engine.order_json(o, nested=True) for o in (first, second)])

    fills, _, actions = _ledger_inputs(list(engine.accounts["demo"].activities))
    ledger = rebuild([o.order for o in orders], fills, actions)

    held = {s: p.qty for s, p in engine.accounts["demo"].positions.items()}
    assert {s: ledger.net(s) for s in ledger.held_symbols()} == held
    assert {lot.symbol: lot.qty * lot.avg_fill for lot in ledger.lots.values()} == {
        "UA": Decimal(600), "UW": Decimal(400), "ACQ": Decimal(750)}
    assert [(s.qty, s.pnl_cash, s.exit_type) for s in ledger.slices.values()] == [(Decimal(10), Decimal(-150),
                                                                                  "CORPORATE")]


def test_an_action_whose_legs_cannot_be_booked_whole_is_held_whole() -> None:
    """A unit split whose legs state no values (no price for the new symbols) is never read as a
    pair plus a leftover: every leg is reported and the ledger keeps the units (reconciliation,
    flagged)."""
    engine = make_engine()
    engine.set_prices({"AAPL": price("100")}, at(0))
    order, _ = engine.submit_order("demo", order_body(qty=10), at(1))
    engine.corporate_action({"type": "unit_split", "symbol": "AAPL", "old_rate": "1", "new_symbol": "UA",
                             "new_rate": "1", "alternate_symbol": "UW", "alternate_rate": "1"}, at(60))  # fmt: skip
    orders, _ = convert_orders([engine.order_json(order, nested=True)])

    fills, _, actions = _ledger_inputs(list(engine.accounts["demo"].activities), held=3)
    ledger = rebuild([o.order for o in orders], fills, actions)

    assert actions == []
    assert ledger.net("AAPL") == Decimal(10)
    assert ledger.slices == {}


def test_fake_broker_bust_leaves_the_history() -> None:
    engine = make_engine()
    engine.set_prices({"AAPL": price("100")}, at(0))
    engine.submit_order("demo", order_body(qty=10), at(1))
    engine.submit_order("demo", order_body(qty=4, side="sell"), at(2))
    sell = next(a for a in engine.accounts["demo"].activities if a["side"] == "sell")
    engine.post_activity("demo", {"id": sell["id"], "status": "canceled"}, at(3))

    fills, busted, _ = _ledger_inputs(list(engine.accounts["demo"].activities))
    ledger = rebuild([], remove_busted(fills, [b.key for b in busted]))

    assert [b.qty for b in busted] == [Decimal(4)]
    assert ledger.net("AAPL") == engine.accounts["demo"].positions["AAPL"].qty == Decimal(10)
    assert ledger.slices == {}


@pytest.mark.asyncio
async def test_sync_publishes_a_bust_seen_on_re_read(fake_broker: FakeBroker) -> None:
    fake_broker.set_prices({"AAPL": 100})
    fake_broker.request(
        "POST", "/v2/orders", json={"symbol": "AAPL", "qty": "2", "side": "buy", "type": "market",
                                    "time_in_force": "day"},
    )  # fmt: skip
    sink = RecordingSink()
    async with aiohttp.ClientSession() as session:
        sync = AccountSync(BrokerRest(account_for(fake_broker), session, Counter()), sink, Counter())
        await sync.backfill(1)
        (fill,) = [a for a in fake_broker.state()["accounts"]["demo"]["activities"] if a["activity_type"] == "FILL"]
        fake_broker.post_activities([{"id": fill["id"], "status": "canceled"}])
        await sync.full("test")

    pages = sink.of(FillsPage)
    assert [len(p.fills) for p in pages if p.fills] == [1]
    assert [b.qty for p in pages for b in p.busted] == [Decimal(2)]


def test_fake_broker_spinoff_leg_priced_0_is_held_not_booked_at_zero_basis() -> None:
    """A real spin-off leg has price 0 (no basis stated): never a zero-basis lot."""
    engine = make_engine()
    engine.set_prices({"PAR": price("20")}, at(0))
    order, _ = engine.submit_order("demo", order_body(symbol="PAR", qty=10), at(1))
    engine.corporate_action({"type": "spin_off", "symbol": "PAR", "new_symbol": "KID", "source_rate": "5",
                             "new_rate": "1"}, at(60))  # fmt: skip
    orders, _ = convert_orders([engine.order_json(order, nested=True)])

    fills, _, actions = _ledger_inputs(list(engine.accounts["demo"].activities))
    ledger = rebuild([o.order for o in orders], fills, actions)

    assert [(a.type, a.new_symbol, a.qty, a.price) for a in actions] == [("spinoff", "KID", Decimal(2), None)]
    assert (ledger.net("PAR"), ledger.net("KID")) == (Decimal(10), Decimal(0))


def test_fake_broker_spinoff_allocated_by_its_announcement_and_the_two_prices() -> None:
    """The spin-off as the fake lists it (SPIN leg priced 0, the spin_offs announcement of alpaca-py's
    ``alpaca/data/models/corporate_actions.py`` SpinOff) booked with the default allocation:
    market values 5 PAR x 20 against 1 KID x 25, the parent keeps 100/125 of its basis."""
    engine = make_engine()
    engine.set_prices({"PAR": price("20"), "KID": price("25")}, at(0))
    order, _ = engine.submit_order("demo", order_body(symbol="PAR", qty=10), at(1))
    engine.corporate_action({"type": "spin_off", "symbol": "PAR", "new_symbol": "KID", "source_rate": "5",
                             "new_rate": "1"}, at(60))  # fmt: skip
    orders, _ = convert_orders([engine.order_json(order, nested=True)])
    body = list_announcements(engine.corporate_announcements(), {"start": "2024-02-01", "end": "2024-04-01"},
                              date(2024, 3, 1))  # fmt: skip
    fills, _, [bare] = _ledger_inputs(list(engine.accounts["demo"].activities))

    spin = spinoff_by_announcement(bare, parse_announcements(body), {"PAR": Decimal(20), "KID": Decimal(25)})
    assert spin is not None
    ledger = rebuild([o.order for o in orders], fills, [spin])

    cost = {s: sum((lot.entry_cost for lot in ledger.lots.values() if lot.symbol == s), Decimal(0))
            for s in ("PAR", "KID")}
    assert (spin.symbol, spin.new_symbol, spin.basis_share) == ("PAR", "KID", Decimal("0.8"))
    assert (ledger.net("PAR"), ledger.net("KID")) == (Decimal(10), Decimal(2))
    assert cost == {"PAR": Decimal(160), "KID": Decimal(40)}
    assert ledger.slices == {}


def _timed_ledger(engine: Any, orders: list[Any], *, announced: bool) -> tuple[Any, list[Any]]:
    records = [c.record for c in map(convert_activity, engine.accounts["demo"].activities)
               if isinstance(c, ConvertedActivity)]  # fmt: skip
    body = list_announcements(engine.corporate_announcements(), {"start": "2024-02-01", "end": "2024-04-01"},
                              date(2024, 3, 1))  # fmt: skip
    unexplained: list[Any] = []
    if announced:
        records, unexplained = retime_legs(records, parse_announcements(body))
    fills = [c.fill for c in map(convert_activity, engine.accounts["demo"].activities)
             if isinstance(c, ConvertedActivity) and c.fill is not None]  # fmt: skip
    actions, _ = actions_from_legs(corporate_legs(records))
    converted, _ = convert_orders([engine.order_json(o, nested=True) for o in orders])
    return rebuild([o.order for o in converted], fills, actions), unexplained


@pytest.mark.parametrize(
    ("legs", "ex_date", "late_buy"),
    [
        ("payable_date", "2024-03-04", False),  # legs dated the payable date, before that day's buy
        ("ex_date", "2024-03-04", True),  # before the open of the ex-date
        ("executed_at", "2024-03-04", True),  # midday of the ex-date, after that morning's buy
    ],
)
def test_the_announcement_says_when_the_split_takes_effect_whatever_the_legs_stamp(
    legs: str, ex_date: str, late_buy: bool
) -> None:
    """Leg timings of a real account (docs/corporate-actions.md "Announcements"); the
    announcement in alpaca-py's ``forward_splits`` shape (``alpaca/data/models/corporate_actions.py``)."""
    engine = make_engine()
    engine.set_prices({"AAPL": price("100")}, at(0))
    first, _ = engine.submit_order("demo", order_body(qty=10), at(1))
    engine.corporate_action({"type": "forward_split", "symbol": "AAPL", "old_rate": "1", "new_rate": "2",
                             "ex_date": ex_date, "payable_date": "2024-03-01", "legs": legs}, at(60))  # fmt: skip
    orders = [first]
    if late_buy:  # the ex-date's morning, at the split price (10:00 New York on 2024-03-04)
        second, _ = engine.submit_order("demo", order_body(qty=5), at(3 * 86400))
        orders.append(second)

    wrong, _ = _timed_ledger(engine, orders, announced=False)
    right, unexplained = _timed_ledger(engine, orders, announced=True)

    held = engine.accounts["demo"].positions["AAPL"]
    cost = sum(lot.qty * lot.avg_fill for lot in right.lots.values())
    assert unexplained == []
    assert (right.net("AAPL"), cost) == (held.qty, Decimal(1000) + (Decimal(250) if late_buy else 0))
    if legs != "ex_date":  # the legs' own stamp books the wrong fills
        assert wrong.net("AAPL") != held.qty


@pytest.mark.parametrize(
    ("body", "held"),
    [
        ({"type": "forward_split", "symbol": "AAPL", "old_rate": "2", "new_rate": "3"}, "7"),
        ({"type": "reverse_split", "symbol": "AAPL", "old_rate": "3", "new_rate": "1"}, "10"),  # CIL of 1/3
        ({"type": "reverse_split", "symbol": "AAPL", "old_rate": "3", "new_rate": "1"}, "10.5"),  # a fraction kept
        ({"type": "name_change", "symbol": "AAPL", "new_symbol": "APPL"}, "10"),
        ({"type": "stock_merger", "symbol": "AAPL", "acquirer_symbol": "ACQ", "acquirer_rate": "1",
          "acquiree_rate": "4"}, "10"),
        ({"type": "stock_and_cash_merger", "symbol": "AAPL", "acquirer_symbol": "ACQ", "acquirer_rate": "1",
          "acquiree_rate": "3", "cash_rate": "10"}, "10"),
        ({"type": "stock_and_cash_merger", "symbol": "AAPL", "acquirer_symbol": "ACQ", "acquirer_rate": "1",
          "acquiree_rate": "3", "cash_rate": "10.005"}, "3.333333333"),  # a fraction kept, the cash to the cent
        ({"type": "stock_and_cash_merger", "symbol": "AAPL", "acquirer_symbol": "ACQ", "acquirer_rate": "2",
          "acquiree_rate": "1", "cash_rate": "0.75"}, "7"),  # no fraction, no CIL
        ({"type": "unit_split", "symbol": "AAPL", "old_rate": "1", "new_symbol": "UA", "new_rate": "1",
          "alternate_symbol": "UW", "alternate_rate": "0.5"}, "10"),
        ({"type": "spin_off", "symbol": "AAPL", "new_symbol": "KID", "source_rate": "3", "new_rate": "1"}, "10"),
        ({"type": "cash_merger", "symbol": "AAPL", "rate": "54.205"}, "3.333333333"),  # the cash to the cent
        ({"type": "redemption", "symbol": "AAPL", "rate": "25.5"}, "10"),
    ],
)
def test_the_fake_brokers_legs_agree_with_its_announced_rates(body: dict[str, str], held: str) -> None:
    """Every shape the fake books (whole shares kept, the fraction in lieu; a fraction kept by a
    holder of a fraction) agrees with the rates it announces (alpaca-py's field names):
    docs/corporate-actions.md "Rates against quantities"."""
    engine = make_engine()
    engine.set_prices({"AAPL": price("100"), "ACQ": price("150"), "UA": price("60"), "UW": price("40"),
                       "KID": price("25")}, at(0))  # fmt: skip
    engine.submit_order("demo", order_body(qty=held), at(1))
    engine.corporate_action(body, at(60))
    announcements = parse_announcements(list_announcements(
        engine.corporate_announcements(), {"start": "2024-02-01", "end": "2024-04-01"}, date(2024, 3, 1)))
    records = [c.record for a in engine.accounts["demo"].activities
               if isinstance(c := convert_activity(a), ConvertedActivity)]  # fmt: skip
    matched, unexplained = retime_legs(records, announcements)
    actions, problems = actions_from_legs(corporate_legs(matched))
    if body["type"] == "spin_off":
        actions = [spinoff_by_announcement(a, announcements, {"AAPL": Decimal(100), "KID": Decimal(25)}) or a
                   for a in actions]  # fmt: skip

    assert (unexplained, problems) == ([], [])
    assert actions
    out = {r.id: -r.qty for r in matched if r.qty is not None and r.qty < 0}
    for action in actions:
        shares = Decimal(held) if action.type == "spinoff" else out[action.id]
        assert check_announced(action, shares, announcements) is None
        cash = action.cash_per_share
        doubled = msgspec.structs.replace(action, ratio=action.ratio * 2, qty=None,
                                          cash_per_share=None if cash is None else cash * 2)  # fmt: skip
        assert check_announced(doubled, shares, announcements) is not None  # twice the shares (cash): held whole
        if cash is not None:  # twice the cash alone (a stock-and-cash merger's shares right): held whole too
            paid_twice = msgspec.structs.replace(action, cash_per_share=cash * 2)
            assert check_announced(paid_twice, shares, announcements) is not None
