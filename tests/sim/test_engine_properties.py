"""Hypothesis properties of the matching engine: money is conserved, nothing fills twice."""

from __future__ import annotations

import math
from collections import defaultdict
from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from coldharbour.sim import accounts as ledger
from coldharbour.sim.engine import Engine, TradeUpdate
from coldharbour.sim.wire import SimError
from tests.sim.builders import at, make_engine, order_body

SYMBOLS = ["AAPL", "MSFT"]
prices = st.decimals(min_value=Decimal(5), max_value=Decimal(500), places=2)
quantities = st.integers(min_value=1, max_value=40)


def _equity_at(engine: Engine) -> Decimal:
    return ledger.equity(engine.accounts["demo"], engine.prices)


@given(
    st.lists(
        st.tuples(st.sampled_from(SYMBOLS), st.sampled_from(["buy", "sell"]), quantities, prices),
        min_size=1,
        max_size=25,
    )
)
def test_fills_at_the_mark_price_conserve_cash_plus_position_value(
    trades: list[tuple[str, str, int, Decimal]],
) -> None:
    engine = make_engine()
    for step, (symbol, side, qty, price) in enumerate(trades):
        engine.set_prices({symbol: price}, at(step))
        before = _equity_at(engine)
        try:
            engine.submit_order("demo", order_body(symbol=symbol, side=side, qty=qty), at(step))
        except SimError:
            continue  # a refusal changes nothing, which the next check also covers
        assert _equity_at(engine) == before


order_bodies = st.one_of(
    st.builds(lambda side, qty: order_body(side=side, qty=qty), st.sampled_from(["buy", "sell"]), quantities),
    st.builds(
        lambda side, qty, limit: order_body(side=side, qty=qty, type="limit", limit_price=str(limit)),
        st.sampled_from(["buy", "sell"]),
        quantities,
        prices,
    ),
    st.builds(
        lambda side, qty, stop: order_body(side=side, qty=qty, type="stop", stop_price=str(stop)),
        st.sampled_from(["buy", "sell"]),
        quantities,
        prices,
    ),
    st.builds(
        lambda qty, entry, gap: order_body(
            qty=qty,
            type="limit",
            limit_price=str(entry),
            time_in_force="gtc",
            order_class="bracket",
            take_profit={"limit_price": str(entry + gap)},
            stop_loss={"stop_price": str(entry - gap)},
        ),
        quantities,
        st.decimals(min_value=Decimal(50), max_value=Decimal(400), places=2),
        st.decimals(min_value=Decimal(1), max_value=Decimal(40), places=2),
    ),
)

actions = st.one_of(
    st.tuples(st.just("price"), prices),
    st.tuples(st.just("submit"), order_bodies),
    st.tuples(st.just("cancel"), st.integers(min_value=0, max_value=50)),
    st.tuples(st.just("replace"), st.integers(min_value=0, max_value=50), quantities),
)


def _apply(engine: Engine, action: tuple[Any, ...], step: int) -> list[TradeUpdate]:
    kind = action[0]
    now = at(step)
    order_ids = list(engine.orders)
    try:
        if kind == "price":
            return engine.set_prices({"AAPL": action[1]}, now)
        if kind == "submit":
            return engine.submit_order("demo", action[1], now)[1]
        if not order_ids:
            return []
        order_id = order_ids[action[1] % len(order_ids)]
        if kind == "cancel":
            return engine.cancel_order("demo", order_id, now)
        return engine.replace_order("demo", order_id, {"qty": action[2]}, now)[1]
    except SimError:
        return []


@given(st.lists(actions, min_size=1, max_size=40), st.booleans())
def test_no_order_fills_twice_and_the_book_matches_its_executions(
    script: list[tuple[Any, ...]], partial_fills: bool
) -> None:
    engine = make_engine(partial_fills=partial_fills, slices=2)
    executed: dict[str, Decimal] = defaultdict(Decimal)
    final_fills: dict[str, int] = defaultdict(int)
    execution_ids: set[str] = set()
    cash = Decimal(100_000)
    position = Decimal(0)
    for step, action in enumerate(script):
        for update in _apply(engine, action, step):
            data = update.data
            if data["event"] not in {"fill", "partial_fill"}:
                continue
            order = data["order"]
            assert isinstance(order, dict)
            order_id = str(order["id"])
            assert final_fills[order_id] == 0, f"order {order_id} executed after its final fill"
            qty, price = Decimal(str(data["qty"])), Decimal(str(data["price"]))
            signed = qty if order["side"] == "buy" else -qty
            executed[order_id] += qty
            final_fills[order_id] += data["event"] == "fill"
            execution_ids.add(str(data["execution_id"]))
            cash -= signed * price
            position += signed
            assert Decimal(str(data["position_qty"])) == position
    book = engine.accounts["demo"]
    assert book.cash == cash
    assert book.positions.get("AAPL", ledger.SimPosition("AAPL", Decimal(0), Decimal(0))).qty == position
    assert len(execution_ids) == sum(1 for a in book.activities if a["activity_type"] == "FILL")
    for order in engine.orders.values():
        assert executed[order.id] == order.filled_qty
        assert order.qty is None or order.filled_qty <= order.qty
        assert final_fills[order.id] == (1 if order.status == "filled" else 0)


@given(quantities, st.integers(min_value=1, max_value=7), st.lists(prices, min_size=1, max_size=3))
def test_partial_fills_sum_to_the_order_qty(qty: int, slices: int, path: list[Decimal]) -> None:
    engine = make_engine(partial_fills=True, slices=slices)
    engine.set_prices({"AAPL": path[0]}, at(0))
    order, updates = engine.submit_order("demo", order_body(qty=qty), at(0))
    step = 1
    while order.status != "filled":
        updates += engine.set_prices({"AAPL": path[step % len(path)]}, at(step))
        step += 1

    fills = [u.data for u in updates if u.data["event"] in {"fill", "partial_fill"}]
    assert sum(Decimal(str(f["qty"])) for f in fills) == qty
    slice_size = max(1, math.ceil(qty / slices))
    assert len(fills) == math.ceil(qty / slice_size)
    assert [f["event"] for f in fills][-1] == "fill"


multi_actions = st.one_of(
    st.tuples(st.just("prices"), st.dictionaries(st.sampled_from(["AAPL", "MSFT", "TSLA"]), prices, min_size=1)),
    st.tuples(st.just("submit"), st.sampled_from(["AAPL", "MSFT", "TSLA"]), st.sampled_from(["buy", "sell"]),
              quantities),
)


@given(st.lists(multi_actions, min_size=1, max_size=40))
def test_the_equity_trail_refreshed_per_symbol_equals_the_full_valuation(script: list[tuple[Any, ...]]) -> None:
    """``record_equity`` revalues only the symbols that moved or filled; its sample stays ``equity``."""
    engine = make_engine()
    book = engine.accounts["demo"]
    for step, action in enumerate(script):
        try:
            if action[0] == "prices":
                engine.set_prices(action[1], at(step))
            else:
                engine.submit_order("demo", order_body(symbol=action[1], side=action[2], qty=action[3]), at(step))
        except SimError:
            pass
        # The trail's latest value (the starting equity before the first sample, as history reads it).
        latest = book.equity_samples[-1][1] if book.equity_samples else book.initial_equity
        assert latest == ledger.equity(book, engine.prices)
