"""Reconciliation of broker position snapshots against the lots (docs/spec.md §3 invariant)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coldharbour.domain.ledger import Ledger, apply_delta, plan_fills
from coldharbour.domain.orders import OrderBook
from coldharbour.domain.reconcile import Reconciliation, lot_signed_qty, reconcile
from coldharbour.domain.types import BrokerPosition, Fill
from tests.domain.builders import at, make_fill

D = Decimal
NOW = at(1000)


def ledger_with(*fills: Fill) -> Ledger:
    ledger = Ledger()
    apply_delta(ledger, plan_fills(ledger, fills, OrderBook()))
    return ledger


def position(symbol: str, qty: str, avg: str = "100", price: str | None = None) -> BrokerPosition:
    return BrokerPosition(symbol=symbol, qty=D(qty), avg_entry_price=D(avg),
                          current_price=D(price) if price is not None else None)


def settle(ledger: Ledger, result: Reconciliation) -> None:
    apply_delta(ledger, result.delta)


def test_matching_snapshot_books_nothing_and_updates_wac() -> None:
    ledger = ledger_with(make_fill(order_id="A", qty=10, price=100, ts=at(0)))
    result = reconcile(ledger, [position("AAPL", "10", "101.5")], OrderBook(), now=NOW,
                       wac={"AAPL": D(100), "MSFT": D(300)})
    assert result.is_clean
    assert not result.delta.has_row_changes
    assert result.wac_updates == (("AAPL", D("101.5")),)
    assert result.wac_removals == ("MSFT",)


def test_broker_holds_more_books_a_reconciliation_lot_at_wac() -> None:
    ledger = ledger_with(make_fill(order_id="A", qty=10, price=100, ts=at(0)))
    result = reconcile(ledger, [position("AAPL", "15", "102")], OrderBook(), now=NOW, wac={})
    settle(ledger, result)
    recon = ledger.lots[f"recon:AAPL:{NOW}"]
    assert (recon.side, recon.qty, recon.avg_fill) == ("long", D(5), D(102))
    assert result.corrections[0].ledger_qty == D(10)
    assert result.corrections[0].broker_qty == D(15)


def test_broker_holds_less_books_a_fifo_exit_at_current_price() -> None:
    ledger = ledger_with(make_fill(order_id="A", qty=10, price=100, ts=at(0)),
                         make_fill(order_id="B", qty=10, price=120, ts=at(5)))
    result = reconcile(ledger, [position("AAPL", "8", "110", price="125")], OrderBook(),
                       now=NOW, wac={})
    settle(ledger, result)
    exit_id = f"recon:AAPL:{NOW}"
    assert list(ledger.lots) == ["B"]
    assert ledger.lots["B"].qty == D(8)
    assert ledger.slices[("A", exit_id)].pnl_cash == D(250)
    assert ledger.slices[("B", exit_id)].qty == D(2)
    assert ledger.slices[("A", exit_id)].exit_type == "MANUAL"


def test_symbol_the_broker_no_longer_holds_is_removed_after_restart() -> None:
    """docs/defects.md D41: rows loaded at start for a position closed while down are removed."""
    ledger = ledger_with(make_fill(order_id="A", symbol="TSLA", qty=3, price=200, ts=at(0)))
    result = reconcile(ledger, [], OrderBook(), now=NOW, wac={"TSLA": D(200)},
                       marks={"TSLA": D(210)})
    settle(ledger, result)
    assert result.delta.lot_deletes == ("A",)
    assert ledger.lots == {}
    assert ledger.slices[("A", f"recon:TSLA:{NOW}")].pnl_cash == D(30)
    assert result.wac_removals == ("TSLA",)


def test_flat_symbol_without_any_price_closes_at_entry_for_zero_pnl() -> None:
    ledger = ledger_with(make_fill(order_id="A", qty=10, price=100, ts=at(0)))
    settle(ledger, reconcile(ledger, [], OrderBook(), now=NOW, wac={}))
    assert ledger.slices[("A", f"recon:AAPL:{NOW}")].pnl_cash == D(0)


def test_broker_on_other_side_closes_lots_and_opens_short() -> None:
    ledger = ledger_with(make_fill(order_id="A", qty=10, price=100, ts=at(0)))
    result = reconcile(ledger, [position("AAPL", "-4", "99", price="98")], OrderBook(),
                       now=NOW, wac={})
    settle(ledger, result)
    recon_id = f"recon:AAPL:{NOW}"
    assert [f.side for f in result.corrections[0].fills] == ["sell", "sell"]
    assert ledger.slices[("A", recon_id)].pnl_cash == D(-20)
    assert (ledger.lots[recon_id].side, ledger.lots[recon_id].qty) == ("short", D(4))
    assert ledger.lots[recon_id].avg_fill == D(99)


def test_new_symbol_from_broker_opens_lot_and_short_positions_work() -> None:
    ledger = Ledger()
    result = reconcile(ledger, [position("MSFT", "-7", "300")], OrderBook(), now=NOW, wac={})
    settle(ledger, result)
    assert ledger.net("MSFT") == D(-7)
    assert ledger.lots[f"recon:MSFT:{NOW}"].side == "short"


def test_skipped_symbols_are_left_alone() -> None:
    ledger = ledger_with(make_fill(order_id="A", qty=10, price=100, ts=at(0)))
    result = reconcile(ledger, [], OrderBook(), now=NOW, wac={}, skip={"AAPL"})
    assert result.is_clean


def test_second_identical_snapshot_is_a_no_op() -> None:
    ledger = ledger_with(make_fill(order_id="A", qty=10, price=100, ts=at(0)))
    snapshot = [position("AAPL", "12", "101")]
    settle(ledger, reconcile(ledger, snapshot, OrderBook(), now=NOW, wac={}))
    again = reconcile(ledger, snapshot, OrderBook(), now=NOW + 60, wac={"AAPL": D(101)})
    assert again.is_clean
    assert again.wac_updates == ()
    assert not again.delta.has_row_changes


@pytest.mark.parametrize("qty", ["0.5", "3", "12", "-2"])
def test_correction_after_latest_fill_never_replays(qty: str) -> None:
    late_fill = make_fill(order_id="A", qty=10, price=100, ts=NOW + 5)
    ledger = ledger_with(late_fill)
    result = reconcile(ledger, [position("AAPL", qty)], OrderBook(), now=NOW, wac={})
    assert result.corrections[0].fills[0].ts == NOW + 6
    assert result.delta.needs_rebuild == ()


lots_strategy = st.lists(
    st.tuples(st.sampled_from(["AAPL", "MSFT", "TSLA"]), st.sampled_from(["buy", "sell"]),
              st.integers(1, 20), st.integers(90, 110)),
    max_size=12)
positions_strategy = st.dictionaries(st.sampled_from(["AAPL", "MSFT", "TSLA", "NVDA"]),
                                     st.integers(-30, 30), max_size=4)


@given(trades=lots_strategy, broker=positions_strategy)
def test_after_reconcile_every_symbol_matches_the_broker(
        trades: list[tuple[str, str, int, int]], broker: dict[str, int]) -> None:
    fills = [make_fill(order_id=f"o{n}", symbol=s, side=side, qty=q, price=p, ts=at(n))
             for n, (s, side, q, p) in enumerate(trades)]
    ledger = ledger_with(*fills)
    snapshot = [position(s, str(q), "100", "101") for s, q in broker.items() if q != 0]
    settle(ledger, reconcile(ledger, snapshot, OrderBook(), now=NOW, wac={}))
    for symbol in {"AAPL", "MSFT", "TSLA", "NVDA"}:
        expected = D(broker.get(symbol, 0))
        assert ledger.net(symbol) == expected
        assert lot_signed_qty(ledger, symbol) == expected
