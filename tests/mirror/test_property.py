"""The path production takes equals the rebuild: ``AccountMirror`` planning + swap, event by event.

Random histories (brackets with replaced stop legs, simple and manual orders, fills on two
symbols) arrive in any order — a leg after its fill, an exit before its entry, duplicates,
batches of any size — through ``Mirror.plans`` exactly as ``state`` feeds it. At the end the
ledger equals ``rebuild`` of the whole history, and the rows the changes wrote (applied to a
dict by natural key, as the upserts do) equal the rows of that rebuild. With corporate actions
and busts among the events (docs/spec.md §8), in any order, the reference is ``rebuild(orders, fills
without the busted ones, actions)``.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from coldharbour.db import rows as r
from coldharbour.domain import stored as canon
from coldharbour.domain.corporate import CorporateAction, remove_busted
from coldharbour.domain.ledger import rebuild
from coldharbour.domain.types import CLOSED_COLUMNS, Fill, Order
from coldharbour.messages import CorporateActionsPage, FillsPage, Message, OrdersPage
from tests.domain.builders import at, bracket, make_fill, make_order, replace_order
from tests.mirror.support import Driver, oid

SYMBOLS = ("AAPL", "MSFT")
QTYS = tuple(Decimal(q) for q in ("0.5", "1", "2", "3", "5", "10"))
PRICES = tuple(Decimal(p) for p in ("90", "95.5", "100", "104.25", "110"))


def _uuid(order: Order) -> Order:
    """Return ``order`` with every id it holds mapped to a stable UUID (what the store accepts)."""
    def ref(value: str | None) -> str | None:
        return None if value is None else oid(value)

    return msgspec.structs.replace(order, id=oid(order.id), parent_id=ref(order.parent_id),
                                   replaces=ref(order.replaces), replaced_by=ref(order.replaced_by),
                                   legs=tuple(oid(leg) for leg in order.legs))


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[Order], list[Fill]]:
    """Random entries (brackets with replaced legs, simple orders), manual orders and fills."""
    orders: list[Order] = []
    for n in range(draw(st.integers(1, 4))):
        symbol = draw(st.sampled_from(SYMBOLS))
        side = draw(st.sampled_from(["buy", "sell_short"]))
        if draw(st.booleans()):
            entry, take, stop = bracket(f"E{n}", symbol=symbol, side=side, created=at(n))
            orders += [entry, take]
            for k in range(draw(st.integers(0, 2))):
                retired, stop = replace_order(stop, f"E{n}-sl-r{k}", when=at(n + k + 1),
                                              keep_parent=draw(st.booleans()))
                orders.append(retired)
            orders.append(stop)
        else:
            orders.append(make_order(id=f"E{n}", symbol=symbol, side=side))
    for n in range(draw(st.integers(0, 3))):
        orders.append(make_order(id=f"M{n}", symbol=draw(st.sampled_from(SYMBOLS)),
                                 side=draw(st.sampled_from(["buy", "sell"]))))
    fills: list[Fill] = []
    clock = 0
    for n in range(draw(st.integers(1, 20))):
        chosen = draw(st.sampled_from(orders))
        clock += draw(st.integers(0, 3))  # equal timestamps happen: ties break on the key
        fills.append(make_fill(order_id=oid(chosen.id), symbol=chosen.symbol, side=chosen.side,
                               qty=draw(st.sampled_from(QTYS)), price=draw(st.sampled_from(PRICES)),
                               ts=at(clock), execution_id=f"x{n:03d}"))
    return [_uuid(o) for o in orders], [canon.canonical_fill(f)[1] for f in fills]


@settings(max_examples=150, deadline=None)
@given(history=histories(), data=st.data())
def test_property_mirror_event_by_event_equals_rebuild_from_history(
        history: tuple[list[Order], list[Fill]], data: st.DataObject) -> None:
    orders, fills = history
    duplicates = data.draw(st.lists(st.sampled_from(fills), max_size=len(fills)))
    events = data.draw(st.permutations([*orders, *fills, *duplicates]))
    driver = Driver()
    account = driver.mirror.accounts["demo"]
    position = 0
    while position < len(events):
        size = data.draw(st.integers(1, 4))
        batch = events[position:position + size]
        position += size
        driver.feed(*[("orders.demo", OrdersPage(account="demo", orders=(e,))) if isinstance(e, Order)
                      else ("fills.demo", FillsPage(account="demo", fills=(e,))) for e in batch])  # type: ignore[arg-type]

    expected = rebuild(orders, fills)
    assert account.check(orders, fills) == []
    assert driver.store.closed == {key: dict(zip(CLOSED_COLUMNS, r.closed_values(s), strict=True))
                                   for key, s in expected.slices.items()}
    assert {pid: row["qty"] for pid, row in driver.store.open.items()} == {
        pid: lot.qty for pid, lot in expected.lots.items()}


@settings(max_examples=50, deadline=None)
@given(history=histories())
def test_property_replaying_the_whole_history_writes_nothing(history: tuple[list[Order], list[Fill]]) -> None:
    orders, fills = history
    driver = Driver()
    driver.feed(("orders.demo", OrdersPage(account="demo", orders=tuple(orders))),
                ("fills.demo", FillsPage(account="demo", fills=tuple(fills))))

    replay = driver.feed(("orders.demo", OrdersPage(account="demo", orders=tuple(orders))),
                         ("fills.demo", FillsPage(account="demo", fills=tuple(fills))))

    assert Driver.changes(replay) == []


@st.composite
def rewrites(draw: st.DrawFn, fills: list[Fill]) -> tuple[list[CorporateAction], list[Fill]]:
    """Random corporate actions (splits, reverse splits, symbol changes, cash mergers, removals at 0
    or in cash, fees in the coin, spin-offs with an allocated basis, stock dividends with cash in
    lieu) at any instant, and busts."""
    actions: list[CorporateAction] = []
    for n in range(draw(st.integers(0, 3))):
        symbol = draw(st.sampled_from((*SYMBOLS, "NEW0")))
        when = at(draw(st.integers(0, 40))) + 500_000  # between fills (fills are on whole seconds)
        # the instant: between fills, or just before a fill's second, as an action re-timed to
        # the start of its ex-date lands (docs/corporate-actions.md "Announcements")
        if draw(st.booleans()):
            when = at(draw(st.integers(0, 40))) - 1_000
        kind = draw(st.sampled_from(["split", "reverse", "symbol_change", "cash_merger", "removal", "coin_fee",
                                     "unit_split", "stock_cash_merger", "spinoff", "stock_dividend"]))
        if kind == "symbol_change":
            # Into a symbol not held (renaming into a held symbol can make a later fill of the old
            # symbol collide with the moved lot's key: a known limit, see the wiring report).
            target = "NEW0" if symbol != "NEW0" else f"NEW{n + 1}"
            actions.append(CorporateAction(id=f"act{n}", type="symbol_change", symbol=symbol, ts=when,
                                           new_symbol=target))
        elif kind == "unit_split":  # into two symbols not held, the basis split 60:40
            actions.append(CorporateAction(id=f"act{n}", type="unit_split", symbol=symbol, ts=when, ratio=Decimal(1),
                                           new_symbol=f"UA{n}", alternate_symbol=f"UB{n}", alternate_ratio=Decimal(1),
                                           basis_share=Decimal("0.6")))
        elif kind == "spinoff":  # allocated: the parent keeps 70 % of its basis, new shares not held
            actions.append(CorporateAction(id=f"act{n}", type="spinoff", symbol=symbol, ts=when, new_symbol=f"SP{n}",
                                           qty=Decimal(3), basis_share=Decimal("0.7")))
        elif kind == "stock_cash_merger":
            actions.append(CorporateAction(id=f"act{n}", type="stock_cash_merger", symbol=symbol, ts=when,
                                           ratio=Decimal("0.5"), new_symbol=f"ACQ{n}", price=Decimal(120),
                                           cash_per_share=Decimal(5)))
        elif kind == "removal":  # a worthless removal at 0, or a redemption
            cash = draw(st.sampled_from([Decimal(0), Decimal("99.25")]))
            actions.append(CorporateAction(id=f"act{n}", type="removal", symbol=symbol, ts=when, cash_per_share=cash))
        elif kind == "stock_dividend":  # 1.5 new shares, 0.5 of them paid in lieu (a problem when short or flat)
            actions.append(CorporateAction(id=f"act{n}", type="stock_dividend", symbol=symbol, ts=when,
                                           qty=Decimal("1.5"), cash_in_lieu_qty=Decimal("0.5"), price=Decimal(90)))
        elif kind == "coin_fee":  # a fee in the coin (a problem when not held then: on both sides)
            actions.append(CorporateAction(id=f"act{n}", type="coin_fee", symbol=symbol, ts=when,
                                           qty=Decimal("0.25")))
        elif kind == "cash_merger":
            actions.append(CorporateAction(id=f"act{n}", type="cash_merger", symbol=symbol, ts=when,
                                           cash_per_share=Decimal("101.5")))
        else:
            ratio = Decimal(2) if kind == "split" else Decimal("0.5")
            actions.append(CorporateAction(id=f"act{n}", type="split", symbol=symbol, ts=when, ratio=ratio))
    busted = draw(st.lists(st.sampled_from(fills), max_size=3, unique_by=lambda f: f.key)) if fills else []
    return actions, busted


@settings(max_examples=150, deadline=None)
@given(history=histories(), data=st.data())
def test_property_mirror_with_actions_and_busts_equals_rebuild_with_actions(
        history: tuple[list[Order], list[Fill]], data: st.DataObject) -> None:
    orders, fills = history
    actions, busted = data.draw(rewrites(fills))
    # the broker cancels some actions (its legs listed again as canceled): published after them
    canceled = data.draw(st.lists(st.sampled_from(actions), max_size=2, unique_by=lambda a: a.id)) if actions else []
    duplicates = data.draw(st.lists(st.sampled_from(fills), max_size=len(fills)))
    events: list[object] = data.draw(st.permutations([*orders, *fills, *duplicates, *actions,
                                                      *(("bust", f) for f in busted),
                                                      *(("cancel", a) for a in canceled)]))
    for action in canceled:  # a cancel goes out after the action it cancels
        cancel = events.index(("cancel", action))
        if cancel < events.index(action):
            events.insert(events.index(action) + 1, events.pop(cancel))
    driver = Driver()
    account = driver.mirror.accounts["demo"]
    position = 0
    while position < len(events):
        size = data.draw(st.integers(1, 4))
        batch = events[position:position + size]
        position += size
        driver.feed(*[_as_event(e) for e in batch])

    kept = remove_busted(fills, [f.key for f in busted])
    actions = [a for a in actions if a not in canceled]
    expected = rebuild(orders, kept, actions)
    assert account.check(orders, kept, actions) == []
    assert sorted(account.actions) == sorted(a.id for a in actions)
    assert driver.store.closed == {key: dict(zip(CLOSED_COLUMNS, r.closed_values(s), strict=True))
                                   for key, s in expected.slices.items()}
    assert {pid: (row["symbol"], row["qty"]) for pid, row in driver.store.open.items()} == {
        pid: (lot.symbol, lot.qty) for pid, lot in expected.lots.items()}


def _as_event(item: object) -> tuple[str, Message]:
    if isinstance(item, Order):
        return "orders.demo", OrdersPage(account="demo", orders=(item,))
    if isinstance(item, Fill):
        return "fills.demo", FillsPage(account="demo", fills=(item,))
    if isinstance(item, CorporateAction):
        return "fills.demo", CorporateActionsPage(account="demo", actions=(item,))
    assert isinstance(item, tuple)
    if item[0] == "cancel":
        return "fills.demo", CorporateActionsPage(account="demo", actions=(), canceled=(item[1].id,))
    return "fills.demo", FillsPage(account="demo", fills=(), busted=(item[1],))


def _late_fill_after_rename_before_merger(entry: list[Order]) -> list[str]:
    first = make_fill(order_id=entry[0].id, symbol="MSFT", qty="6.5", price=90, ts=at(0))
    late = make_fill(order_id=entry[0].id, symbol="MSFT", qty="0.5", price=90, ts=at(1))
    actions = [CorporateAction(id="act0", type="symbol_change", symbol="MSFT", ts=at(0) + 500_000, new_symbol="NEW0"),
               CorporateAction(id="act1", type="cash_merger", symbol="NEW0", ts=at(1) + 500_000,
                               cash_per_share=Decimal("101.5"))]
    driver = Driver()
    for item in [*entry, first, *actions, late]:  # the late fill arrives after both actions
        driver.feed(_as_event(item))
    return driver.mirror.accounts["demo"].check(entry, [first, late], actions)


def test_a_late_fill_between_a_rename_and_a_merger_of_the_new_symbol_equals_the_rebuild() -> None:
    """Found by the property test above: a fill of MSFT stamped after MSFT became NEW0 and before NEW0's
    cash merger, arriving after both. Its own symbol has no later action, but its order's lot lives under
    NEW0, which a later action closed: booked incrementally it joined the closed lot; the rebuild (what a
    restart computes) gives it a lot of its own."""
    assert _late_fill_after_rename_before_merger([make_order(id=oid("E"), symbol="MSFT", qty=10)]) == []
    assert _late_fill_after_rename_before_merger(bracket(oid("B"), symbol="MSFT")) == []


def test_a_canceled_split_after_a_rename_rebuilds_the_renamed_symbol_too() -> None:
    """Found by the property test above: a bracket on MSFT is entered and partly taken profit at one
    second (the exit's key sorts first), re-entered, renamed MSFT -> NEW0; a split of MSFT a second
    later is then canceled. The cancel rebuilt only MSFT (the symbols linked *after* the split), while
    NEW0 kept a lot of the same order: the entry's lot id and the TP exit came out differently from
    the rebuild (``E#x000`` closed MANUAL instead of ``E`` closed TP). Every linked symbol is now
    rebuilt together."""
    orders = [_uuid(o) for o in bracket("E0", symbol="MSFT", created=at(0))]
    entry, take = oid("E0"), oid("E0-tp")
    fills = [canon.canonical_fill(f)[1] for f in (
        make_fill(order_id=entry, symbol="MSFT", side="buy", qty="0.5", price=90, ts=at(0), execution_id="x000"),
        make_fill(order_id=take, symbol="MSFT", side="sell", qty="0.5", price=90, ts=at(0), execution_id="x001"),
        make_fill(order_id=entry, symbol="MSFT", side="buy", qty="0.5", price=90, ts=at(0), execution_id="x002"))]
    split = CorporateAction(id="act0", type="split", symbol="MSFT", ts=at(1) + 500_000, ratio=Decimal(2))
    rename = CorporateAction(id="act1", type="symbol_change", symbol="MSFT", ts=at(0) + 500_000, new_symbol="NEW0")
    driver = Driver()
    for item in [*orders, *fills, split, rename, ("cancel", split)]:
        driver.feed(_as_event(item))

    expected = rebuild(orders, fills, [rename])
    assert driver.mirror.accounts["demo"].check(orders, fills, [rename]) == []
    assert driver.store.closed == {key: dict(zip(CLOSED_COLUMNS, r.closed_values(s), strict=True))
                                   for key, s in expected.slices.items()}
    assert [s.exit_type for s in expected.slices.values()] == ["TP"]
